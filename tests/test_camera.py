"""The camera service as a real process publishing real footage through the real broker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from services.camera.handler import written_or_lost
from services.common import topics
from services.common.schemas import CameraInfo
from tests.camera_support import MjpegCamera, camera_settings, decode, info_is, meta, rate
from tests.support import PERSON_VIDEO, REPO_ROOT, Received, read_frames, service_env, write_clip


def is_payload(payload: bytes) -> Callable[[Received], bool]:
    return lambda message: message.payload == payload


def test_publishes_valid_jpegs_at_the_capped_rate_and_says_online_then_offline(broker, collector, service):
    camera = "rate"
    watch = collector(f"cam/{camera}/#")
    started_ms = time.time() * 1000
    process = service("camera", camera_settings(broker, camera, CAMERA_FPS="5"))
    assert watch.wait_for(topics.status(camera)).payload == b"online"

    frames = watch.wait_count(topics.frame(camera), 21, timeout=15)[:21]
    assert rate(frames) == pytest.approx(5, rel=0.15)
    seqs = [meta(frame).seq for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + 21))
    for frame in frames:
        found = meta(frame)
        assert not frame.retain
        # Captured after the camera started and before the frame arrived, and not long before.
        assert started_ms <= found.captured_ms <= frame.at * 1000 + 50
        assert frame.at * 1000 - found.captured_ms < 2000
        image = decode(frame)
        assert image.shape == (found.height, found.width, 3) == (432, 768, 3)

    info = CameraInfo.parse(watch.wait_for(topics.info(camera), info_is("streaming")).payload)
    assert (info.source_kind, info.source, info.fps, info.source_fps) == ("file", str(PERSON_VIDEO), 5, 10)
    assert (info.width, info.height) == (768, 432)

    assert process.stop() == 0
    watch.wait_for(topics.status(camera), is_payload(b"offline"))
    watch.wait_for(topics.info(camera), info_is("stopped"))
    assert [m.payload for m in watch.on(topics.status(camera))] == [b"online", b"offline"]


def test_never_publishes_faster_than_the_source_and_resizes_keeping_the_aspect(broker, collector, service):
    camera = "fast-small"
    watch = collector(topics.frame(camera))
    service("camera", camera_settings(broker, camera, CAMERA_FPS="30", CAMERA_WIDTH="320"))
    frames = watch.wait_count(topics.frame(camera), 31, timeout=15)[:31]
    # The video has 10 frames per second; a cap of 30 must not invent more.
    assert rate(frames) == pytest.approx(10, rel=0.15)
    for frame in frames[:5]:
        assert decode(frame).shape == (180, 320, 3)
        assert (meta(frame).width, meta(frame).height) == (320, 180)


def test_offline_via_the_will_when_killed(broker, collector, service):
    camera = "killed"
    watch = collector(topics.status(camera), topics.frame(camera))
    process = service("camera", camera_settings(broker, camera))
    watch.wait_for(topics.frame(camera))
    process.kill()
    watch.wait_for(topics.status(camera), is_payload(b"offline"))


def test_waits_for_a_broker_that_is_not_up_yet(own_broker, collector, service):
    camera = "late-broker"
    env = camera_settings(own_broker, camera)
    own_broker.stop()
    process = service("camera", env)
    time.sleep(3)
    assert process.process.poll() is None, process.log
    own_broker.start()
    watch = collector(topics.frame(camera), topics.status(camera), topics.info(camera), on=own_broker)
    watch.wait_for(topics.frame(camera), timeout=15)
    assert watch.wait_for(topics.status(camera)).payload == b"online"
    # Frames flowed before the broker was there: the size is said all the same (it was once null).
    info = CameraInfo.parse(watch.wait_for(topics.info(camera), info_is("streaming")).payload)
    assert (info.width, info.height) == (768, 432)
    assert process.process.poll() is None


def test_resumes_publishing_within_5_s_of_a_broker_restart(own_broker, collector, service):
    camera = "broker-restart"
    process = service("camera", camera_settings(own_broker, camera, CAMERA_FPS="5"))
    before = collector(topics.frame(camera), on=own_broker)
    last_seq = meta(before.wait_count(topics.frame(camera), 3)[-1]).seq
    before.close()

    own_broker.restart(down_s=1)
    after = collector(topics.frame(camera), on=own_broker)
    resumed = after.wait_for(topics.frame(camera), timeout=5)
    # Same process, same sequence: it carried on instead of restarting.
    assert meta(resumed).seq > last_seq
    assert process.process.poll() is None


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("CAMERA_ID", "Front/door"),
        ("CAMERA_FPS", "0"),
        ("CAMERA_SOURCE", "/nonexistent/door.mp4"),
        ("CAMERA_SOURCE", str(REPO_ROOT / "README.md")),
        ("CAMERA_SOURCE", "ftp://camera.local/live"),
        ("CAMERA_SOURCE", "rtsp://admin:hunter2@camera.local:99999/live"),
        ("CAMERA_SOURCE", "/dev/video97"),
        ("CAMERA_SOURCE", "picamera"),
        ("CAMERA_JPEG_QUALITY", "101"),
        ("CAMERA_TIMEOUT", "0"),
        ("CAMERA_RECONNECT_MAX", "forever"),
        ("CAMERA_WIDTH", "wide"),
        ("ALARM_SOUND", "/nonexistent/siren.wav"),
        ("MQTT_PORT", "70000"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line(setting: str, value: str, tmp_path: Path) -> None:
    env = service_env({"CAMERA_SOURCE": str(PERSON_VIDEO), setting: value})
    result = subprocess.run(
        [sys.executable, "-m", "services.camera"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sentrycam-camera: invalid setting {setting}="), lines[0]
    assert "hunter2" not in lines[0]  # a URL's password is never shown


def test_the_picamera_error_says_what_to_install(tmp_path: Path) -> None:
    env = service_env({"CAMERA_SOURCE": "picamera"})
    result = subprocess.run(
        [sys.executable, "-m", "services.camera"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "picamera2" in result.stderr and "apt install python3-picamera2" in result.stderr


def test_a_file_that_ends_without_loop_is_reopened(broker, collector, service, tmp_path):
    camera = "file-ends"
    clip = write_clip(tmp_path / "clip.mp4", read_frames(PERSON_VIDEO, 100, 107), fps=10)
    watch = collector(f"cam/{camera}/#")
    process = service("camera", camera_settings(broker, camera, clip, CAMERA_FPS="10"))

    reconnecting = CameraInfo.parse(watch.wait_for(topics.info(camera), info_is("reconnecting")).payload)
    assert "end of file" in (reconnecting.error or "")
    first_run = [meta(m).seq for m in watch.on(topics.frame(camera))]
    # The whole clip, less a first frame or so read before the broker connection was up.
    assert first_run == list(range(len(first_run)))
    assert len(first_run) >= 6
    # Reopened after the backoff: streaming again, frames continue the sequence.
    again = watch.wait_for(topics.frame(camera), lambda m: meta(m).seq >= len(first_run), timeout=10)
    assert meta(again).seq == len(first_run)
    assert process.process.poll() is None
    process.wait_for_log(r"end of file .*reopening in 1 s")


def test_a_looped_file_plays_on_without_reconnecting(broker, collector, service, tmp_path):
    camera = "file-loops"
    clip = write_clip(tmp_path / "clip.mp4", read_frames(PERSON_VIDEO, 100, 104), fps=10)
    watch = collector(f"cam/{camera}/#")
    service("camera", camera_settings(broker, camera, clip, CAMERA_FPS="10", CAMERA_LOOP="true"))
    frames = watch.wait_count(topics.frame(camera), 16, timeout=10)[:16]
    # Three times through a 5-frame clip, at the clip's own pace, with no gap at the seams.
    assert rate(frames) == pytest.approx(10, rel=0.15)
    assert [meta(m).seq for m in frames] == list(range(16))
    states = {CameraInfo.parse(m.payload).state for m in watch.on(topics.info(camera))}
    assert states == {"streaming"}


def test_an_ip_camera_stream_is_followed_live_reopened_when_dropped_and_its_password_kept(
    broker, collector, service
):
    camera = "ipcam"
    ipcam = MjpegCamera(read_frames(PERSON_VIDEO, 300, 319), fps=10)
    ipcam.start()
    try:
        url = ipcam.url("admin:hunter2@") + "?user=admin&password=hunter3"
        watch = collector(f"cam/{camera}/#")
        process = service("camera", camera_settings(broker, camera, url, CAMERA_FPS="4"))
        frames = watch.wait_count(topics.frame(camera), 13, timeout=20)[1:13]
        # The live source is drained continuously; the capped rate takes the newest frames: each published
        # frame is one of the last few the stream sent, never an ever older one from a backlog.
        assert rate(frames) == pytest.approx(4, rel=0.15)
        lags = [ipcam.lag(decode(frame), frame.at) for frame in frames]
        assert max(lags) <= 3, lags
        info = CameraInfo.parse(watch.wait_for(topics.info(camera), info_is("streaming")).payload)
        assert info.source_kind == "stream"
        assert "hunter" not in info.source and "admin:***@" in info.source

        ipcam.stop()
        dropped = CameraInfo.parse(
            watch.wait_for(topics.info(camera), info_is("reconnecting"), timeout=15).payload
        )
        assert dropped.error
        seen = len(watch.on(topics.frame(camera)))
        ipcam.start()
        watch.wait_count(topics.frame(camera), seen + 3, timeout=20)
        assert process.process.poll() is None
        assert "hunter" not in process.log
    finally:
        ipcam.stop()


def test_a_network_slower_than_the_frames_drops_frames_instead_of_queueing_them(
    own_broker, collector, service
):
    camera = "slow-net"
    # 4K frames at 10 fps: far more than the socket buffers hold while the broker reads nothing.
    process = service("camera", camera_settings(own_broker, camera, CAMERA_FPS="10", CAMERA_WIDTH="3840"))
    watch = collector(topics.frame(camera), on=own_broker)
    watch.wait_count(topics.frame(camera), 2, timeout=15)
    own_broker.pause()
    try:
        process.wait_for_log(r"the network is slower than the frames; \d+ dropped", timeout=15)
    finally:
        own_broker.resume()
    seen = len(watch.on(topics.frame(camera)))
    watch.wait_count(topics.frame(camera), seen + 3, timeout=15)
    assert process.process.poll() is None


def test_a_webcam_that_is_not_there_is_retried_and_reported_not_fatal(broker, collector, service):
    camera = "no-webcam"
    watch = collector(topics.info(camera), topics.status(camera))
    process = service("camera", camera_settings(broker, camera, "7"))  # no /dev/video7 on this machine
    info = CameraInfo.parse(watch.wait_for(topics.info(camera), info_is("reconnecting")).payload)
    assert (info.source_kind, info.source) == ("device", "7")
    assert "cannot open the webcam" in (info.error or "")
    assert watch.wait_for(topics.status(camera)).payload == b"online"
    process.wait_for_log(r"cannot open the webcam .*reopening in 2 s")
    assert process.stop() == 0


def test_a_frame_lost_with_the_broker_is_forgotten_not_fatal() -> None:
    """When the broker goes away, paho marks the frames it had not written yet as failed, and asking
    whether such a frame was sent raises: the camera forgets it and goes on (it once stopped the camera
    service in the middle of a broker restart)."""
    lost = mqtt.MQTTMessageInfo(1)
    lost.rc = mqtt.MQTT_ERR_CONN_LOST  # what paho sets on the frames it drops with the connection
    with pytest.raises(RuntimeError):
        lost.is_published()
    assert written_or_lost(lost)
    written = mqtt.MQTTMessageInfo(2)
    written._set_as_published()  # what paho's network loop does once the frame is on the socket
    assert written_or_lost(written)
    assert not written_or_lost(mqtt.MQTTMessageInfo(3))  # still queued: the next frame waits
