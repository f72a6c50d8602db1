"""Run SentryCam on this machine: a local Mosquitto with the project's config plus every service, each as
a child process with prefixed logs. Ctrl-C stops them all, services first, the broker last.

Settings come from the environment and ``.env`` as for the services themselves; the runner only adds the
broker address and each service's broker login. Its own settings:

- ``SENTRYCAM_RUN_DIR``: where the broker's files and ``admin.env`` go (default ``.run/``).
- ``SENTRYCAM_BROKER_PORT``: the local broker's port (default: a free one).
- ``SENTRYCAM_SERVICES``: which services to start, comma-separated (default: every one that exists).
- ``SENTRYCAM_WEBCAM``: the webcam used when ``CAMERA_SOURCE`` is unset and it exists (default /dev/video0).

``<run dir>/admin.env`` holds an all-powerful broker login (MQTT_HOST, MQTT_PORT, MQTT_USERNAME,
MQTT_PASSWORD) for watching the traffic, e.g. with mosquitto_sub; it is made anew on every run. Its port is
the local broker's admin listener, where several such clients may be connected at once (on the services'
port each login has one connection: see scripts/localbroker.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from dotenv import dotenv_values

from scripts.localbroker import ADMIN_USER, MOSQUITTO_MISSING, LocalBroker, find_mosquitto, free_port
from services.common.service import stop_on_signals

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = REPO_ROOT / ".run"
DEFAULT_WEBCAM = "/dev/video0"
EXIT_BAD_SETTINGS = 2
DEFAULT_CAMERA_ID = "front"
STOP_TIMEOUT_S = 15
COLOURS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m")
RESET = "\033[0m"

NO_CAMERA_HINT = (
    "no camera: set CAMERA_SOURCE to a webcam (0 or /dev/video0), an RTSP URL, or a video file, e.g.\n"
    "  CAMERA_SOURCE=../shared/media/video/one-by-one-person-detection.mp4 CAMERA_LOOP=true scripts/run\n"
    "starting the other services without a camera."
)


def settings() -> dict[str, str]:
    """What the services will see: ``.env`` overridden by the environment."""
    from_file = {k: v for k, v in dotenv_values(REPO_ROOT / ".env").items() if v is not None}
    return {**from_file, **os.environ}


def camera_env(broker: LocalBroker, config: dict[str, str]) -> dict[str, str] | None:
    webcam = config.get("SENTRYCAM_WEBCAM") or DEFAULT_WEBCAM
    source = config.get("CAMERA_SOURCE") or (webcam if Path(webcam).exists() else "")
    if not source:
        print(NO_CAMERA_HINT, flush=True)
        return None
    camera_id = config.get("CAMERA_ID") or DEFAULT_CAMERA_ID
    return {"CAMERA_SOURCE": source, "CAMERA_ID": camera_id, **broker.camera_env(camera_id)}


def record_dir(broker: LocalBroker, config: dict[str, str]) -> str:
    """RECORD_DIR, else <run dir>/recordings: the recorder writes it, the relay plays from it."""
    path = Path(config.get("RECORD_DIR") or broker.workdir.parent / "recordings")
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def recorder_env(broker: LocalBroker, config: dict[str, str]) -> dict[str, str] | None:
    return {**broker.env("recorder"), "RECORD_DIR": record_dir(broker, config)}


def web_env(broker: LocalBroker, config: dict[str, str]) -> dict[str, str] | None:
    # The broker lives in <run dir>/broker; the relay's events and key go beside it.
    data_dir = config.get("WEB_DATA_DIR") or str(broker.workdir.parent / "web")
    env = {**broker.env("web"), "WEB_DATA_DIR": data_dir}
    env["WEB_RECORD_DIR"] = config.get("WEB_RECORD_DIR") or record_dir(broker, config)
    if not (config.get("WEB_PASSWORD") or config.get("WEB_PASSWORD_HASH")):
        # A fresh password for this run, shown once; set WEB_PASSWORD in .env to keep one.
        env["WEB_PASSWORD"] = secrets.token_urlsafe(12)
        user = config.get("WEB_USERNAME", "admin")
        print(
            f"web: log in as {user} with password {env['WEB_PASSWORD']} (set WEB_PASSWORD to choose one)",
            flush=True,
        )
    return env


SHARED_MODEL = REPO_ROOT.parent / "shared" / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"
NO_MODEL_HINT = (
    "no detection model: run `python -m scripts.fetch_model --dest models` (or set DETECTOR_MODEL);\n"
    "starting the other services without the detector."
)


def detector_env(broker: LocalBroker, config: dict[str, str]) -> dict[str, str] | None:
    """The detector's login, plus a model: DETECTOR_MODEL, models/detect.tflite, or the shared dev model."""
    # Zones saved from the web page's editor go next to the broker's files, in the run dir.
    data_dir = config.get("DETECTOR_DATA_DIR") or str(broker.workdir.parent / "detector")
    env = {**broker.env("detector"), "DETECTOR_DATA_DIR": data_dir}
    if config.get("DETECTOR_MODEL") or (REPO_ROOT / "models" / "detect.tflite").is_file():
        return env
    if SHARED_MODEL.is_file():
        return {**env, "DETECTOR_MODEL": str(SHARED_MODEL)}
    if Path("/models/detect.tflite").is_file():
        return env
    print(NO_MODEL_HINT, flush=True)
    return None


def service_user_env(user: str) -> Callable[[LocalBroker, dict[str, str]], dict[str, str] | None]:
    return lambda broker, _config: broker.env(user)


# How each service logs in to the local broker; a service returns None when it cannot run here.
SERVICE_ENV: dict[str, Callable[[LocalBroker, dict[str, str]], dict[str, str] | None]] = {
    "camera": camera_env,
    "detector": detector_env,
    "notifier": lambda broker, config: {
        **broker.env("notifier"),
        # The outbox next to the broker's files, in the run dir (SENTRYCAM_RUN_DIR).
        "NOTIFY_DATA_DIR": config.get("NOTIFY_DATA_DIR") or str(broker.workdir.parent / "notifier"),
    },
    "recorder": recorder_env,
    "web": web_env,
}


def existing_services() -> list[str]:
    return [name for name in SERVICE_ENV if (REPO_ROOT / "services" / name / "__main__.py").exists()]


def chosen_services(config: dict[str, str]) -> list[str]:
    """The services to start; ValueError naming the unknown ones."""
    existing = existing_services()
    wanted = [name.strip() for name in config.get("SENTRYCAM_SERVICES", "").split(",") if name.strip()]
    unknown = [name for name in wanted if name not in existing]
    if unknown:
        raise ValueError(
            f"SENTRYCAM_SERVICES: no such service {', '.join(unknown)} (have {', '.join(existing)})"
        )
    return wanted or existing


def write_admin_login(broker: LocalBroker, run_dir: Path) -> Path:
    """The admin login, readable only by its owner, for whoever wants to watch the local broker."""
    path = run_dir / "admin.env"
    path.unlink(missing_ok=True)
    lines = [f"{key}={value}" for key, value in broker.env(ADMIN_USER).items()]
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def relay_output(name: str, colour: str, stream: object) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sys.stdout.write(f"{colour}{name:>8}{RESET} | {raw.decode(errors='replace')}")
        sys.stdout.flush()


def start_service(name: str, env: dict[str, str], colour: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the runner only; it stops the services in order.
    )
    threading.Thread(target=relay_output, args=(name, colour, process.stdout), daemon=True).start()
    return process


def stop_all(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for name, process in processes.items():
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in {STOP_TIMEOUT_S} s; killing it", flush=True)
            # Its whole session: a service's own children (the alarm player) must not outlive it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def broker_port(config: dict[str, str]) -> int:
    text = config.get("SENTRYCAM_BROKER_PORT", "").strip()
    if not text:
        return free_port()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"SENTRYCAM_BROKER_PORT={text}: not a TCP port (1-65535)")
    return int(text)


def main() -> int:
    try:
        find_mosquitto()
    except FileNotFoundError:
        print(MOSQUITTO_MISSING, file=sys.stderr)
        return 1
    config = settings()
    try:
        services = chosen_services(config)
        port = broker_port(config)
    except ValueError as error:
        print(f"sentrycam-run: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    run_dir = Path(config.get("SENTRYCAM_RUN_DIR") or DEFAULT_RUN_DIR).resolve()

    # Handlers first: a Ctrl-C at any point below must still stop what has been started.
    stopping = stop_on_signals()
    broker = LocalBroker(run_dir / "broker", port=port)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        broker.start()
        print(f"broker: mosquitto on {broker.host}:{broker.port}, logs in {broker.log_file}", flush=True)
        print(f"admin login for watching it: {write_admin_login(broker, run_dir)}", flush=True)
        for index, name in enumerate(services):
            if stopping.is_set():
                break
            try:
                env = SERVICE_ENV[name](broker, config)
            except ValueError as error:
                print(f"sentrycam-run: {name}: {error}", file=sys.stderr)
                return EXIT_BAD_SETTINGS
            if env is not None:
                processes[name] = start_service(name, env, COLOURS[index % len(COLOURS)])
        return supervise(processes, stopping)
    finally:
        stop_all(processes)
        broker.stop()


def supervise(processes: dict[str, subprocess.Popen[bytes]], stopping: threading.Event) -> int:
    """Wait for Ctrl-C (exit 0) or for a service to end on its own (its exit code, at least 1)."""
    while not stopping.wait(0.5):
        ended = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
        if ended:
            print(f"stopping everything: {ended} exited", flush=True)
            return max(ended.values()) or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
