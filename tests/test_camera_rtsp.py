"""The camera service reading a real RTSP camera: GStreamer's RTSP server serving the shared footage as H.264
(tests/rtsp_server.py), through the real broker."""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.camera.probe import explain_stream_failure
from services.common import topics
from services.common.schemas import CameraInfo
from tests.camera_support import MARK_MODULO, camera_settings, decode, info_is, meta, rate, read_mark
from tests.rtsp_support import RtspServer, marked_footage
from tests.support import Received

USER, PASSWORD = "admin", "hunter2"
# Short enough to keep the tests quick (the defaults are 10 s and 30 s), long enough for FFmpeg to open a
# stream here: it buffers about 3 s of frames before it says it is open.
TIMEOUT_S, RECONNECT_MAX_S = 5, 2


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[Callable[..., RtspServer]]:
    """Start RTSP servers on the marked footage; stopped after the test."""
    frames = marked_footage(tmp_path / "frames")
    started: list[RtspServer] = []

    def start(**options: object) -> RtspServer:
        started.append(RtspServer(frames, **options).start())  # type: ignore[arg-type]
        return started[-1]

    yield start
    for server in started:
        server.stop()


def rtsp_camera_settings(broker, camera: str, url: str, timeout_s: float = TIMEOUT_S) -> dict[str, str]:
    return camera_settings(
        broker, camera, url, CAMERA_TIMEOUT=str(timeout_s), CAMERA_RECONNECT_MAX=str(RECONNECT_MAX_S)
    )


def error_matches(pattern: str) -> Callable[[Received], bool]:
    def check(message: Received) -> bool:
        info = CameraInfo.parse(message.payload)
        return info.state == "reconnecting" and re.search(pattern, info.error or "") is not None

    return check


def test_an_rtsp_camera_streams_at_the_set_rate_and_comes_back_after_a_restart(
    broker, collector, service, rtsp
):
    camera = "rtsp-live"
    server = rtsp(user=USER, password=PASSWORD)
    watch = collector(f"cam/{camera}/#")
    process = service("camera", rtsp_camera_settings(broker, camera, server.url(f"{USER}:{PASSWORD}@")))

    frames = watch.wait_count(topics.frame(camera), 12, timeout=30)[1:12]
    assert rate(frames) == pytest.approx(5, rel=0.15)
    for before, after in itertools.pairwise(frames):
        # True capture times: the time between two captures is the time between the frames they show
        # (the server numbers its 10 fps frames), give or take a frame.
        shown_s = (read_mark(decode(after)) - read_mark(decode(before))) % MARK_MODULO / 10
        captured_s = (meta(after).captured_ms - meta(before).captured_ms) / 1000
        assert shown_s == pytest.approx(captured_s, abs=0.11)
        assert 0 <= after.at * 1000 - meta(after).captured_ms < 1000
    assert decode(frames[0]).shape == (432, 768, 3)
    info = CameraInfo.parse(watch.wait_for(topics.info(camera), info_is("streaming")).payload)
    assert (info.source_kind, info.source) == ("stream", server.url(f"{USER}:***@"))
    assert (info.width, info.height, info.source_fps) == (768, 432, 10)

    server.stop()
    gone = watch.wait_for(topics.info(camera), error_matches("connection refused"), timeout=TIMEOUT_S + 8)
    assert f"127.0.0.1:{server.port}" in (CameraInfo.parse(gone.payload).error or "")
    time.sleep(RECONNECT_MAX_S * 2)  # retried meanwhile, at most RECONNECT_MAX_S apart
    server.start()
    back = watch.wait_for(topics.frame(camera), lambda m: m.at > server.started_at, timeout=15)
    # Within one reconnect wait and the time FFmpeg takes to open the stream (about 3 s).
    assert back.at - server.started_at < RECONNECT_MAX_S + TIMEOUT_S + 2
    watch.wait_for(topics.info(camera), lambda m: info_is("streaming")(m) and m.at > server.started_at)
    assert meta(back).seq > meta(frames[-1]).seq  # the same process carried on
    assert process.process.poll() is None
    assert len(re.findall(r"connection refused .*reopening in 2 s", process.log)) >= 2
    published = b"".join(m.payload for m in watch.on(topics.info(camera)))
    assert PASSWORD.encode() not in published and PASSWORD not in process.log


FAILURES = {
    "wrong path": r"has no stream at '/nothing' \(404 Not Found\): check the path",
    "wrong password": r"refused the login \(401 Unauthorized\): check the user and password",
    "no login": r"wants a login \(401 Unauthorized\)",
    # The check behind these messages logs in as FFmpeg does: a Digest camera's login is taken, so the
    # message is about the path and not about the login.
    "wrong path, digest login": r"has no stream at '/nothing' \(404 Not Found\)",
    "silent stream": r"sent no video within 1 s",
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_camera_that_cannot_stream_is_reported_clearly_and_retried(broker, collector, service, rtsp, case):
    expected = FAILURES[case]
    camera = "rtsp-" + re.sub("[^a-z]+", "-", case)
    if case == "silent stream":
        url = rtsp(silent=True).url()
    elif case == "wrong path, digest login":
        url = rtsp(user=USER, password=PASSWORD, digest=True).url(f"{USER}:{PASSWORD}@", path="/nothing")
    else:
        server = rtsp(user=USER, password=PASSWORD)
        url = {
            "wrong path": server.url(f"{USER}:{PASSWORD}@", path="/nothing"),
            "wrong password": server.url(f"{USER}:hunter3@"),
            "no login": server.url(),
        }[case]
    watch = collector(topics.info(camera), topics.frame(camera))
    # A silent stream costs a timeout per attempt (to open, then to read): a short one here.
    timeout_s = 1 if case == "silent stream" else TIMEOUT_S
    process = service("camera", rtsp_camera_settings(broker, camera, url, timeout_s))

    failed = watch.wait_for(topics.info(camera), error_matches(expected), timeout=timeout_s * 3 + 5)
    assert CameraInfo.parse(failed.payload).source == url.replace(PASSWORD, "***").replace("hunter3", "***")
    # Logged, and tried again rather than given up on.
    pattern = expected + r".*reopening in \d s"
    process.wait_for_log(pattern, timeout=5)
    wait_log_count(process, pattern, 2, timeout=timeout_s * 3 + RECONNECT_MAX_S + 5)
    assert process.process.poll() is None
    assert watch.on(topics.frame(camera)) == []
    assert "hunter" not in process.log
    assert all(b"hunter" not in m.payload for m in watch.on(topics.info(camera)))


def wait_log_count(process, pattern: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, process.log)) < count:
        assert time.monotonic() < deadline, f"{pattern!r} not {count} times in:\n{process.log[-3000:]}"
        time.sleep(0.1)


@pytest.mark.parametrize("behaviour", ["floods", "drips"])
def test_the_failure_check_reads_a_bounded_answer_in_bounded_time(behaviour: str) -> None:
    """A camera that answers DESCRIBE with endless headers, or one byte at a time, cannot make the check
    (run on the capture loop) take more than its timeout or its 16 KiB."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):
            connection.recv(4096)
            if behaviour == "floods":
                connection.sendall(b"RTSP/1.0 200 OK\r\n" + b"X-Filler: " + b"x" * 100_000)
            while True:
                connection.sendall(b"x")
                time.sleep(0.1)

    threading.Thread(target=serve, daemon=True).start()
    started = time.monotonic()
    message = explain_stream_failure(f"rtsp://127.0.0.1:{port}/stream", timeout_s=1)
    assert time.monotonic() - started < 2
    listener.close()
    expected = "does not answer as an RTSP camera: answer too long" if behaviour == "floods" else "no answer"
    assert expected in message, message
