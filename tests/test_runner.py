"""The run command's runner: a real broker and the camera as child processes, stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from scripts.localbroker import free_port
from services.common import topics
from tests.support import PERSON_VIDEO, REPO_ROOT, service_env


class Runner:
    """``python -m scripts.runner`` in its own process group, so a SIGINT to the group is a Ctrl-C."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.run_dir = tmp_path / "run"
        env = service_env({"SENTRYCAM_RUN_DIR": str(self.run_dir), **settings})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scripts.runner"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, (
                f"runner exited with {self.process.returncode}:\n{self.output}"
            )
            assert time.monotonic() < deadline, f"{text!r} not in the runner's output:\n{self.output}"
            time.sleep(0.05)

    def descendants(self) -> set[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                children.setdefault(int(stat[1]), []).append(int(entry))
        found: set[int] = set()
        todo = [self.process.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.add(child)
                todo.append(child)
        return found

    def ctrl_c(self, timeout: float = 30.0) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def admin_client(run_dir: Path, filters: list[str]) -> tuple[mqtt.Client, list[mqtt.MQTTMessage]]:
    """A subscriber logged in with the admin login the runner leaves in its run dir."""
    login = dict(line.split("=", 1) for line in (run_dir / "admin.env").read_text().splitlines())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(login["MQTT_USERNAME"], login["MQTT_PASSWORD"])
    received: list[mqtt.MQTTMessage] = []
    client.on_message = lambda _c, _u, message: received.append(message)
    client.connect(login["MQTT_HOST"], int(login["MQTT_PORT"]))
    client.subscribe([(f, 1) for f in filters])
    client.loop_start()
    return client, received


def wait_until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


@pytest.fixture
def runners(tmp_path):
    made: list[Runner] = []

    def make(**settings: str) -> Runner:
        made.append(Runner(tmp_path, **settings))
        return made[-1]

    yield make
    for runner in made:
        runner.kill()


def test_runs_broker_and_camera_and_ctrl_c_stops_everything(runners) -> None:
    camera = "runner-cam"
    port = free_port()
    runner = runners(
        SENTRYCAM_BROKER_PORT=str(port),
        SENTRYCAM_SERVICES="camera",
        CAMERA_SOURCE=str(PERSON_VIDEO),
        CAMERA_LOOP="true",
        CAMERA_ID=camera,
    )
    runner.wait_for_output(f"mosquitto on 127.0.0.1:{port}")
    runner.wait_for_output("admin login for watching it")
    client, received = admin_client(runner.run_dir, [topics.frame(camera), topics.status(camera)])
    try:
        wait_until(lambda: sum(m.topic == topics.frame(camera) for m in received) >= 3, what="frames")
        children = runner.descendants()
        assert len(children) >= 2  # the broker and the camera

        assert runner.ctrl_c() == 0
        # The camera stopped before the broker did, so it could still say goodbye itself.
        statuses = [bytes(m.payload) for m in received if m.topic == topics.status(camera)]
        assert statuses[-1] == b"offline"
    finally:
        client.loop_stop()
    assert not [pid for pid in children if alive(pid)]
    # The camera's log, prefixed with its (coloured) name.
    assert re.search(r"camera(\x1b\[0m)? \| .* streaming from ", runner.output)


def test_without_a_camera_source_or_webcam_it_says_how_to_use_a_video_file(runners, tmp_path) -> None:
    runner = runners(
        SENTRYCAM_SERVICES="camera",
        SENTRYCAM_WEBCAM=str(tmp_path / "no-such-webcam"),
        CAMERA_SOURCE="",
    )
    runner.wait_for_output("starting the other services without a camera")
    assert "CAMERA_SOURCE=../shared/media/video/one-by-one-person-detection.mp4" in runner.output
    children = runner.descendants()
    assert runner.ctrl_c() == 0
    assert not [pid for pid in children if alive(pid)]


def test_an_unknown_service_or_a_bad_port_exits_2(tmp_path) -> None:
    for settings, message in (
        ({"SENTRYCAM_SERVICES": "camera,toaster"}, "no such service toaster"),
        ({"SENTRYCAM_BROKER_PORT": "70000"}, "SENTRYCAM_BROKER_PORT=70000"),
    ):
        env = service_env({"SENTRYCAM_RUN_DIR": str(tmp_path / "run"), **settings})
        result = subprocess.run(
            [sys.executable, "-m", "scripts.runner"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 2
        assert message in result.stderr


def test_a_runner_started_by_a_test_never_takes_a_port_the_test_handed_out() -> None:
    """The test's process owns its block of ports; a runner it starts (which inherits the worker's name)
    takes its own from the kernel, so its broker's admin listener cannot land on the port the test gave the
    runner's broker (which happened: mosquitto exited with 'Address already in use')."""
    handed_out = {free_port() for _ in range(200)}
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from scripts.localbroker import free_port;"
            " print(json.dumps([free_port() for _ in range(200)]))",
        ],
        cwd=REPO_ROOT,
        env=service_env({}),
        capture_output=True,
        text=True,
        check=True,
    )
    taken = set(json.loads(child.stdout))
    assert not taken & handed_out
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert all(port < low for port in handed_out), sorted(handed_out)[-5:]  # the test's own block
    assert all(low <= port <= high for port in taken), sorted(taken)[:5]  # the kernel's own choice
