"""Run SentryCam on this machine: a local Mosquitto with the project's config plus every service, each as
a child process with prefixed logs. Ctrl-C stops them all, services first, the broker last.

Settings come from the environment and ``.env`` as for the services themselves; the runner only adds the
broker address and each service's broker login.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from dotenv import dotenv_values

from scripts.localbroker import MOSQUITTO_MISSING, LocalBroker, find_mosquitto, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = REPO_ROOT / ".run"
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
    source = config.get("CAMERA_SOURCE") or ("0" if Path("/dev/video0").exists() else "")
    if not source:
        print(NO_CAMERA_HINT, flush=True)
        return None
    camera_id = config.get("CAMERA_ID", DEFAULT_CAMERA_ID)
    return {"CAMERA_SOURCE": source, "CAMERA_ID": camera_id, **broker.camera_env(camera_id)}


SHARED_MODEL = REPO_ROOT.parent / "shared" / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"
NO_MODEL_HINT = (
    "no detection model: run `python -m scripts.fetch_model --dest models` (or set DETECTOR_MODEL);\n"
    "starting the other services without the detector."
)


def detector_env(broker: LocalBroker, config: dict[str, str]) -> dict[str, str] | None:
    """The detector's login, plus a model: DETECTOR_MODEL, models/detect.tflite, or the shared dev model."""
    env = broker.env("detector")
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
    "notifier": service_user_env("notifier"),
    "web": service_user_env("web"),
}


def existing_services() -> list[str]:
    return [name for name in SERVICE_ENV if (REPO_ROOT / "services" / name / "__main__.py").exists()]


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
            process.kill()


def main() -> int:
    try:
        find_mosquitto()
    except FileNotFoundError:
        print(MOSQUITTO_MISSING, file=sys.stderr)
        return 1
    config = settings()
    port = int(config.get("SENTRYCAM_BROKER_PORT", "0")) or free_port()
    broker = LocalBroker(RUN_DIR / "broker", port=port)
    broker.start()
    print(f"broker: mosquitto on {broker.host}:{broker.port}, logs in {broker.log_file}", flush=True)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    processes: dict[str, subprocess.Popen[bytes]] = {}
    exit_code = 0
    try:
        for index, name in enumerate(existing_services()):
            env = SERVICE_ENV[name](broker, config)
            if env is not None:
                processes[name] = start_service(name, env, COLOURS[index % len(COLOURS)])
        while not stopping.wait(0.5):
            ended = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
            if ended:
                print(f"stopping everything: {ended} exited", flush=True)
                exit_code = max(ended.values()) or 1
                break
    finally:
        stop_all(processes)
        broker.stop()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
