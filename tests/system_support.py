"""Helpers for the whole-system tests (tests/test_system.py): every service as a real process with its
output read through a pipe, a camera scene the test controls, an MQTT watcher that survives broker restarts,
the relay's timeline over HTTP, and the counts that must match (starts, emails, timeline entries)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scripts.localbroker import ADMIN_USER, LocalBroker, free_port
from services.common import topics
from tests.camera_support import MjpegCamera
from tests.detector_support import MODEL
from tests.notifier_support import Mail
from tests.support import PERSON_VIDEO, Collector, read_frames, service_env

PERSON = "person"
WEB_USER = "owner"
WEB_PASSWORD = "correct horse battery staple"
SERVICE_STATUSES = tuple(topics.service_status(name) for name in ("detector", "notifier", "web"))
# Where the shared clip shows what (checked with the model): the room empty in frames 0-61, one person
# in view without a break from 62 to 196.
EMPTY_FRAMES = (0, 55)
PERSON_FRAMES = (100, 159)


def scene_frames() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(empty room, a person in it): real frames of the shared person clip, each a 5.6 to 6 s loop."""
    return read_frames(PERSON_VIDEO, *EMPTY_FRAMES), read_frames(PERSON_VIDEO, *PERSON_FRAMES)


class Scene(MjpegCamera):
    """An MJPEG IP camera looking at a room the test fills: ``show(frames)`` changes what every open
    stream sends from its next frame on, so the test decides when a person comes and goes."""

    def show(self, frames: list[np.ndarray]) -> None:
        self._frames = frames

    def _endless(self) -> Iterator[np.ndarray]:
        index = 0
        while True:
            frames = self._frames
            yield frames[index % len(frames)]
            index += 1


class ServiceRun:
    """``python -m services.<name>`` as a child process, as run_service starts it in a container. Its
    output goes through a pipe read by a thread (a file size limit set on the process must fail its stores,
    not its logging); every line of every run is kept in ``lines``, and in ``<workdir>/<name>.log``."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = env
        self.workdir = workdir
        self.lines: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.runs = 0

    def start(self) -> ServiceRun:
        assert not self.running(), f"{self.name} is running"
        self.runs += 1
        self.lines.append(f"---- {self.name} run {self.runs}\n")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            env=service_env(self.env),
            cwd=self.workdir,  # no .env there: only the given settings count
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        return self

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with (self.workdir / f"{self.name}.log").open("ab") as copy:
            for raw in iter(process.stdout.readline, b""):
                copy.write(raw)
                copy.flush()
                self.lines.append(raw.decode(errors="replace"))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log))

    def wait_for_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> None:
        """Until ``pattern`` has matched ``count`` times in all the runs' output."""
        deadline = time.monotonic() + timeout
        while self.count(pattern) < count:
            assert self.running(), f"{self.name} exited:\n{self.tail()}"
            assert time.monotonic() < deadline, (
                f"{pattern!r} found {self.count(pattern)} of {count} times in the {self.name} log "
                f"within {timeout} s:\n{self.tail()}"
            )
            time.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        return "".join(self.lines[-lines:])

    def kill(self) -> None:
        """SIGKILL: nothing flushed, nothing said on the way out."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self._wait()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as ``docker stop`` sends it; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self._wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self._wait()
            raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.tail()}") from None

    def _wait(self, timeout: float | None = None) -> int:
        assert self.process is not None and self._reader is not None
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def limit_file_size(self, size: int | None) -> None:
        """The process may not write past ``size`` bytes of any file (None: no limit), as on a full disk:
        its writes fail with EFBIG (Python ignores SIGXFSZ), which SQLite reports as "disk I/O error" (a
        real full disk, ENOSPC, as "database or disk is full"). The soft limit only: it can be raised again
        without privileges."""
        soft = resource.RLIM_INFINITY if size is None else size
        _old_soft, hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (soft, hard))


class Timeline:
    """The relay's timeline as the owner's browser gets it: logged in over HTTP, /api/events as JSON."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._username = username
        self._password = password
        self._opener: urllib.request.OpenerDirector | None = None

    def _log_in(self) -> urllib.request.OpenerDirector:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        html = opener.open(f"{self.base}/login", timeout=10).read().decode()
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, "no CSRF token on the login form"
        form = {"username": self._username, "password": self._password, "csrf_token": match.group(1)}
        opener.open(f"{self.base}/login", data=urllib.parse.urlencode(form).encode(), timeout=30).read()
        return opener

    def get(self, path: str) -> tuple[str, bytes]:
        """Content type and body of a GET; logs in (again) when needed: a restarted relay keeps its
        sessions, but the test's first call needs one."""
        if self._opener is None:
            self._opener = self._log_in()
        with self._opener.open(f"{self.base}{path}", timeout=10) as response:
            return response.headers.get_content_type(), response.read()

    def events(self, camera: str) -> list[dict[str, Any]]:
        _type, body = self.get(f"/api/events?camera={camera}&limit=100")
        listed: list[dict[str, Any]] = json.loads(body)
        return listed

    def events_or_none(self, camera: str) -> list[dict[str, Any]] | None:
        """None while the relay does not answer (down, or starting)."""
        try:
            return self.events(camera)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def snapshot(self, event: dict[str, Any]) -> bytes:
        """The event's snapshot as its snapshot_url serves it; asserts it is a decodable JPEG."""
        url = event.get("snapshot_url")
        assert url, f"event {event['event_id']} has no snapshot_url: {event}"
        content_type, body = self.get(url)
        assert content_type == "image/jpeg", f"{url} served {content_type}"
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.size > 0, f"{url} is not a decodable JPEG"
        return body


def mail_ids(mails: list[Mail]) -> list[str]:
    """The event id of each email (its Message-ID is <event id@sentrycam>), in the order they came."""
    return [str(mail.message["Message-ID"]).strip("<>").removesuffix("@sentrycam") for mail in mails]


def detector_env(broker: LocalBroker, **settings: str) -> dict[str, str]:
    return {**broker.env("detector"), "DETECTOR_MODEL": str(MODEL), **settings}


def run_dir_login(run_dir: Path) -> dict[str, str]:
    """The admin login the runner leaves in its run dir (MQTT_HOST, MQTT_PORT, MQTT_USERNAME, ...)."""
    return dict(line.split("=", 1) for line in (run_dir / "admin.env").read_text().splitlines())


def started(camera: str, label: str = PERSON) -> str:
    """The detector's log line of an event start on ``camera`` (services/detector/events.py)."""
    return rf"INFO .* start {label} on {camera}: score"


def ended(camera: str, label: str = PERSON) -> str:
    return rf"INFO .* end {label} on {camera}: score"


class System:
    """Every service as a process on a broker of the test's own (production config), around one camera
    that watches a ``Scene``: the detector, the notifier on a real SMTP server, the web relay.
    ``start()`` brings them up one after the other and waits until each is connected."""

    def __init__(self, workdir: Path, broker: LocalBroker, smtp_env: dict[str, str], camera: str) -> None:
        self.workdir = workdir
        self.broker = broker
        self.camera_id = camera
        self.empty, self.person = scene_frames()
        self.scene = Scene(self.empty, fps=10)
        self.scene.start()
        self.watcher = Collector(
            broker.env(ADMIN_USER),
            *SERVICE_STATUSES,
            f"cam/{camera}/#",
            "sentrycam/armed/#",
        )
        port = free_port()
        self.timeline = Timeline(port, WEB_USER, WEB_PASSWORD)
        self.detector = ServiceRun(
            "detector",
            detector_env(broker, DETECTOR_CAMERAS=camera, DETECTOR_END_AFTER="3"),
            workdir,
        )
        self.notifier = ServiceRun(
            "notifier",
            {
                **broker.env("notifier"),
                **smtp_env,
                "NOTIFY_DATA_DIR": str(workdir / "notifier"),
                "NOTIFY_COOLDOWN": "0",  # every start is emailed: one email per event
                "NOTIFY_RETRY_MIN": "0.5",
                "NOTIFY_RETRY_MAX": "2",
            },
            workdir,
        )
        self.web = ServiceRun(
            "web",
            {
                **broker.env("web"),
                "WEB_DATA_DIR": str(workdir / "web"),
                "WEB_HOST": "127.0.0.1",
                "WEB_PORT": str(port),
                "WEB_USERNAME": WEB_USER,
                "WEB_PASSWORD": WEB_PASSWORD,
            },
            workdir,
        )
        self.camera = ServiceRun(
            "camera",
            {
                **broker.camera_env(camera),
                "CAMERA_ID": camera,
                "CAMERA_SOURCE": self.scene.url(),
                "CAMERA_FPS": "5",
            },
            workdir,
        )

    def configure(self, run: ServiceRun, **settings: str) -> None:
        """Settings of one service for its next start."""
        run.env = {**run.env, **{key.upper(): value for key, value in settings.items()}}

    @property
    def services(self) -> list[ServiceRun]:
        return [self.detector, self.notifier, self.web, self.camera]

    def start(self) -> None:
        since = time.time()
        for run in (self.detector, self.notifier, self.web):
            run.start()
        for name in ("detector", "notifier", "web"):
            self.watcher.online(topics.service_status(name), since, timeout=30)
        self.camera.start()
        self.watcher.online(topics.status(self.camera_id), since)
        # The detector has seen the camera's first frame: it said its labels OFF.
        self.watcher.wait_for(topics.label_state(self.camera_id, PERSON), lambda m: m.at >= since, timeout=15)
        # Armed by default, stored by the notifier: alerts are emailed.
        self.watcher.wait_for(
            topics.ARMED_STATE, lambda m: m.payload == b"ON", what="armed by default", timeout=15
        )

    def comes(self, starts: int, timeout: float = 20.0) -> None:
        """A person walks into view; returns once the detector has started its ``starts``-th event."""
        self.scene.show(self.person)
        self.detector.wait_for_log(started(self.camera_id), timeout, count=starts)

    def leaves(self, ends: int, timeout: float = 20.0) -> None:
        """The person leaves; returns once the detector has ended its ``ends``-th event."""
        self.scene.show(self.empty)
        self.detector.wait_for_log(ended(self.camera_id), timeout, count=ends)

    def close(self) -> None:
        for run in self.services:
            if run.running():
                run.kill()
        self.scene.stop()
        self.watcher.close()
