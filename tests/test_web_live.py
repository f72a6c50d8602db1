"""The shared newest-frame slot: every viewer gets the newest frame, a slow one skips, memory stays flat."""

from __future__ import annotations

import threading

from services.common import schemas
from services.web.live import FrameHub, mjpeg_stream
from tests.support import footage_frames


def seq_of(part: bytes) -> int:
    return int(part.split(b"X-Frame-Seq: ", 1)[1].split(b"\r\n", 1)[0])


def put(hub: FrameHub, camera: str, seq: int) -> None:
    frames = footage_frames()
    meta = schemas.FrameMeta(captured_ms=seq, seq=seq, width=640, height=480)
    hub.put(camera, frames[seq % len(frames)], meta)


def test_a_slow_viewer_skips_to_the_newest_frame_while_a_fast_one_gets_all() -> None:
    hub = FrameHub()
    put(hub, "slow", 0)
    fast, slow = mjpeg_stream(hub, "slow"), mjpeg_stream(hub, "slow")
    assert seq_of(next(fast)) == 0 and seq_of(next(slow)) == 0
    fast_seen = []
    for seq in range(1, 11):
        put(hub, "slow", seq)
        fast_seen.append(seq_of(next(fast)))  # reads every frame as it comes
    assert fast_seen == list(range(1, 11))
    # The slow viewer did not read while ten frames passed: it gets the newest, not a backlog.
    assert seq_of(next(slow)) == 10
    # Nothing was queued for it: the hub holds one frame per camera.
    assert hub.cameras() == ["slow"]
    latest = hub.latest("slow")
    assert latest is not None and latest.meta is not None and latest.meta.seq == 10


def test_viewers_wait_for_a_newer_frame_and_stop_with_the_hub() -> None:
    hub = FrameHub()
    put(hub, "wait", 0)
    stream = mjpeg_stream(hub, "wait")
    next(stream)
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(seq_of(next(stream))))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive() and got == []  # no newer frame yet: it waits, it does not repeat
    put(hub, "wait", 1)
    reader.join(5)
    assert got == [1]
    hub.close()
    assert list(stream) == []  # the stream ends when the relay stops


def test_a_stream_of_a_camera_without_frames_ends_instead_of_holding_a_thread(monkeypatch) -> None:
    monkeypatch.setattr("services.web.live.FRAME_WAIT_S", 0.2)
    hub = FrameHub()
    assert list(mjpeg_stream(hub, "silent")) == []
