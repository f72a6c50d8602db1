"""The recorder as a process on the real broker, fed real footage: event clips with their seconds before and
after, labels, bad frames, SIGKILL mid-clip, a full and a read-only disk, retention; and its settings."""

from __future__ import annotations

import logging
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.common.logs import RateLimitedLog
from services.recorder.camera import CameraWorker
from services.recorder.clips import Writing
from services.recorder.const import SERVICE
from services.recorder.files import Disk
from services.recorder.retention import DAY_S, Retention
from services.recorder.ring import Frame
from services.recorder.settings import RecorderSettings
from services.recorder.stats import Counters
from tests.detector_support import FramePublisher, close_up_cut, detector_env, events, wait_online
from tests.recorder_support import (
    INTERVAL_MS,
    Scene,
    clips,
    frame_times,
    latest_stats,
    recorder_env,
)
from tests.support import (
    CAR_VIDEO,
    Collector,
    ServiceProcess,
    detection_event,
    footage_frames,
    jpeg,
    read_frames,
    wait_until,
)

Service = Callable[..., ServiceProcess]
STATUS = topics.service_status(SERVICE)


def new_camera(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def start_recorder(service: Service, collector: Collector, env: dict[str, str], **kw: bool) -> ServiceProcess:
    since = time.time()
    recorder = service("recorder", env, **kw)
    collector.online(STATUS, since)
    return recorder


def car_frames() -> tuple[bytes, ...]:
    return tuple(jpeg(cv2.resize(image, (640, 480))) for image in read_frames(CAR_VIDEO, 100, 139))


def forged_huge_jpeg(real: bytes) -> bytes:
    """A real JPEG whose frame header claims 20000x20000 pixels: refused before any decode."""
    at = real.index(b"\xff\xc0") + 5
    return real[:at] + (20000).to_bytes(2, "big") * 2 + real[at + 4 :]


def test_an_event_clip_holds_the_seconds_before_and_after_with_true_timing(
    broker: LocalBroker, collector: Callable[..., Collector], service: Service, tmp_path: Path
) -> None:
    camera, car_camera = new_camera("rec"), new_camera("reccar")
    watch = collector(topics.ALL_CLIPS, topics.RECORDER_STATS, STATUS)
    env = recorder_env(broker, tmp_path / "rec", record_pre_s=2, record_post_s=2, record_labels="person")
    start_recorder(service, watch, env)
    # Frames 30-34 are dropped by the camera: the clip must keep the gap, not close it up.
    scene = Scene(watch, camera, footage_frames(count=40, step=2), int(time.time() * 1000) - 60_000)
    scene.dropped = frozenset(range(30, 35))
    scene.publish_until(45)
    scene.event(
        "ev-a", "start", start=40
    )  # published a little after its first sighting, as the detector does
    scene.publish_until(50)
    scene.event("ev-b", "start", start=50)  # overlapping: the same clip
    small = jpeg(cv2.resize(read_frames(CAR_VIDEO, 0, 0)[0], (320, 240)))
    for bad in (b"not a jpeg at all", forged_huge_jpeg(scene.frames[0]), small):  # each refused, counted
        watch.frame(camera, bad, scene.at(50) + 50)
    scene.publish_until(62)
    scene.event("ev-b", "end", start=50, end=60)
    scene.publish_until(75)
    scene.event("ev-a", "end", start=40, end=70)
    scene.publish_until(100)

    done = watch.wait_for(topics.clip(camera), lambda m: b'"done"' in m.payload, what="clip done")
    clip = clips(watch, camera, "done")[0]
    assert done and clip.event_ids == ["ev-a", "ev-b"]
    assert clips(watch, camera)[0].state == "recording"
    expected = scene.published(20, 90)  # RECORD_PRE_S before ev-a's start to RECORD_POST_S after its end
    assert clip.started_at == scene.at(20) / 1000 and clip.ended_at == scene.at(90) / 1000
    assert clip.duration_s == pytest.approx(7.0)
    path = tmp_path / "rec" / clip.path
    assert clip.path.startswith(f"events/{camera}/") and path.name == f"{clip.clip_id}.mp4"
    assert clip.bytes == path.stat().st_size
    times = frame_times(path)
    assert times == [(index - 20) * INTERVAL_MS for index in expected]  # count, order and the true gap
    # The bounds: from RECORD_PRE_S (less a frame) before started_at to RECORD_POST_S after ended_at.
    assert scene.at(20) <= scene.at(40) - 2000 + INTERVAL_MS
    assert scene.at(20) + times[-1] >= scene.at(70) + 2000 - INTERVAL_MS

    # A car event on another camera makes no clip with RECORD_LABELS=person; a person event after it does
    # (so the car event was seen and passed over, not missed).
    cars = Scene(watch, car_camera, car_frames(), int(time.time() * 1000) - 30_000)
    cars.publish_until(20)
    cars.event("car-1", "start", start=15, label="car")
    cars.publish_until(30)
    cars.event("car-1", "end", start=15, end=25, label="car")
    cars.publish_until(60)
    cars.event("walker", "start", start=60)
    cars.event("walker", "end", start=60, end=61)
    cars.publish_until(100)
    watch.wait_for(topics.clip(car_camera), lambda m: b'"done"' in m.payload, what="the person clip")
    assert [c.event_ids for c in clips(watch, car_camera, "done")] == [["walker"]]
    assert clips(watch, car_camera, "done")[0].started_at == cars.at(40) / 1000

    since = time.time()  # stats counted after both clips
    stats = wait_until(lambda: latest_stats(watch, since), what="stats")
    assert stats.cameras[camera].frames_bad == 3
    assert stats.cameras[camera].frames_dropped == 0
    assert stats.cameras[camera].frames_written == len(expected)
    assert stats.cameras[car_camera].events == 1  # the person; the car is not among RECORD_LABELS
    assert stats.disk_ok


def test_a_clip_cut_by_sigkill_plays_to_the_kill_and_the_restarted_recorder_records(
    broker: LocalBroker, collector: Callable[..., Collector], service: Service, tmp_path: Path
) -> None:
    camera = new_camera("reckill")
    watch = collector(topics.ALL_CLIPS, topics.RECORDER_STATS, STATUS)
    env = recorder_env(broker, tmp_path / "rec", record_pre_s=1, record_post_s=1)  # every label: cars too
    recorder = start_recorder(service, watch, env)
    scene = Scene(watch, camera, car_frames(), int(time.time() * 1000) - 60_000)
    scene.publish_until(12)
    scene.event("car-long", "start", start=10, label="car")
    scene.publish_until(80)
    stats = wait_until(lambda: (s := latest_stats(watch)) and s.cameras[camera].frames_written >= 70 and s)
    written = stats.cameras[camera].frames_written  # frames 0 to 80 from the ring start at frame 0
    recorder.kill()  # SIGKILL: no flush, no remux
    [clip] = clips(watch, camera)
    assert clip.state == "recording"
    times = frame_times(tmp_path / "rec" / clip.path, cut_short=True)
    # Everything up to the last keyframe (one a second) before the kill plays, in order, truly timed.
    assert len(times) >= written - 1000 // INTERVAL_MS - 1
    assert times == [index * INTERVAL_MS for index in range(len(times))]

    start_recorder(service, watch, env)
    # The restarted recorder finishes the clip the kill left open: seekable now, announced done, the same
    # frames in it.
    [finished] = wait_until(lambda: clips(watch, camera, "done"), what="the killed clip finished")
    assert finished.clip_id == clip.clip_id and finished.event_ids == ["car-long"]
    assert frame_times(tmp_path / "rec" / clip.path) == times
    assert finished.duration_s == times[-1] / 1000
    scene.publish_until(90)
    scene.event("car-next", "start", start=88, label="car")
    scene.event("car-next", "end", start=88, end=90, label="car")
    scene.publish_until(110)
    wait_until(lambda: len(clips(watch, camera, "done")) == 2, what="the clip after the restart")
    after = clips(watch, camera, "done")[1]
    assert after.event_ids == ["car-next"] and frame_times(tmp_path / "rec" / after.path)
    assert not list((tmp_path / "rec" / ".open").iterdir())  # no clip is left open


def test_a_full_disk_is_reported_and_recording_resumes_when_it_has_room(
    broker: LocalBroker, collector: Callable[..., Collector], service: Service, tmp_path: Path
) -> None:
    camera = new_camera("recfull")
    watch = collector(topics.ALL_CLIPS, topics.RECORDER_STATS, STATUS)
    env = recorder_env(broker, tmp_path / "rec", record_pre_s=1, record_post_s=1)
    recorder = start_recorder(service, watch, env)
    assert recorder.process is not None
    # As on a full disk: no file may grow past 20 kB (the process's writes fail with EFBIG).
    _soft, hard = resource.prlimit(recorder.process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(recorder.process.pid, resource.RLIMIT_FSIZE, (20_000, hard))
    scene = Scene(watch, camera, footage_frames(count=40, step=2), int(time.time() * 1000) - 60_000)
    scene.publish_until(12)
    scene.event("full", "start", start=10)
    scene.publish_until(40)
    since = time.time()
    failing = wait_until(
        lambda: (s := latest_stats(watch, since)) and not s.disk_ok and s, what="disk_ok false"
    )
    assert failing.write_errors >= 1 and failing.disk_error
    scene.event("full", "end", start=10, end=40)
    scene.publish_until(60)
    resource.prlimit(recorder.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
    scene.event("room", "start", start=60)
    scene.pace_s = 0.1  # real time, for longer than DISK_RETRY_S: the clip begins once a file may be tried
    scene.publish_until(90)
    scene.event("room", "end", start=60, end=90)
    scene.publish_until(100)
    wait_until(lambda: any(c.event_ids == ["room"] for c in clips(watch, camera, "done")), what="new clip")
    assert recorder.process.poll() is None
    since = time.time()
    assert wait_until(lambda: (s := latest_stats(watch, since)) and s.disk_ok, what="disk_ok again")


def test_a_read_only_record_dir_is_reported_not_a_crash(
    broker: LocalBroker, collector: Callable[..., Collector], service: Service
) -> None:
    camera = new_camera("recro")
    watch = collector(topics.ALL_CLIPS, topics.RECORDER_STATS, STATUS)
    outer = Path(tempfile.mkdtemp())
    outer.chmod(0o755)
    record_dir = outer / "recordings"
    record_dir.mkdir(mode=0o555)
    record_dir.chmod(0o555)  # the unprivileged service may read it, not write it
    recorder = start_recorder(service, watch, recorder_env(broker, record_dir), unprivileged=True)
    scene = Scene(watch, camera, footage_frames(count=40, step=2), int(time.time() * 1000) - 60_000)
    scene.publish_until(12)
    scene.event("ro", "start", start=10)
    scene.publish_until(30)
    stats = wait_until(lambda: (s := latest_stats(watch)) and s.cameras.get(camera) and s, what="stats")
    assert not stats.disk_ok and "not writable" in (stats.disk_error or "") + recorder.log
    assert recorder.process is not None and recorder.process.poll() is None
    assert clips(watch, camera) == [] and list(record_dir.iterdir()) == []
    assert recorder.stop() == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [("RECORD_PRE_S", "-1"), ("RECORD_CAMERAS", "Front/Door"), ("RECORD_LABELS", "clip"), ("RECORD_DIR", "")],
)
def test_a_bad_setting_stops_the_recorder_with_one_line(
    broker: LocalBroker, service: Service, tmp_path: Path, setting: str, value: str
) -> None:
    env = recorder_env(broker, tmp_path / "rec")
    if setting == "RECORD_DIR":
        value = str(tmp_path / "a-file")
        Path(value).write_text("not a directory")
    env[setting] = value
    recorder = service("recorder", env)
    assert recorder.wait() == 2
    [line] = recorder.log.strip().splitlines()
    assert line.startswith(f"sentrycam-recorder: invalid setting {setting}=")


def test_retention_deletes_by_age_then_oldest_segments_before_clips_and_never_an_open_file(
    tmp_path: Path,
) -> None:
    now = time.time()

    def stored(relative: str, age_s: float, size: int = 1000) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)
        os.utime(path, (now - age_s, now - age_s))
        return path

    old_segment = stored("continuous/front/2026-01-01/00-00-00.mp4", 3 * DAY_S)
    open_segment = stored("continuous/front/2026-01-04/00-00-00.mp4", 3 * DAY_S)  # being written
    segments = [
        stored(f"continuous/front/2026-01-05/0{hour}-00-00.mp4", (9 - hour) * 3600) for hour in range(3)
    ]
    old_clip = stored("events/front/2025-12-01/front-1.mp4", 31 * DAY_S)
    clips_ = [stored(f"events/front/2026-01-05/front-{hour}.mp4", (24 - hour) * 3600) for hour in range(3)]
    retention = Retention(
        tmp_path, retain_days=2, events_retain_days=30, max_bytes=3500, logger=logging.getLogger("test")
    )
    deleted, used = retention.run(frozenset({open_segment}), now)
    # By age: the old segment and clip (not the open one). By size, 7000 bytes left for 3500: the three
    # segments go before any clip, and then the oldest clip.
    assert not old_segment.exists() and not old_clip.exists() and open_segment.exists()
    assert [p.exists() for p in segments] == [False, False, False]
    assert [p.exists() for p in clips_] == [False, True, True]
    assert (deleted, used) == (6, 3000)
    assert not (tmp_path / "continuous/front/2026-01-01").exists()  # empty date folders go too
    assert not (tmp_path / "events/front/2025-12-01").exists()


def test_the_service_applies_retention_and_keeps_the_segment_it_writes(
    broker: LocalBroker, collector: Callable[..., Collector], service: Service, tmp_path: Path
) -> None:
    camera = new_camera("recret")
    record_dir = tmp_path / "rec"
    old = record_dir / "continuous" / camera / "2026-01-01" / "00-00-00.mp4"
    big = record_dir / "continuous" / camera / "2026-01-02" / "00-00-00.mp4"

    def stored(path: Path, age_s: float) -> None:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\0" * 900_000)
        os.utime(path, (time.time() - age_s, time.time() - age_s))

    stored(old, 3 * DAY_S)  # past RECORD_RETAIN_DAYS: goes at start
    watch = collector(topics.ALL_CLIPS, topics.RECORDER_STATS, STATUS)
    env = recorder_env(
        broker, record_dir, record_continuous="true", record_max_gb="0.0005", record_pre_s=1, record_post_s=1
    )
    env["RECORD_CAMERAS"] = camera
    recorder = start_recorder(service, watch, env)
    wait_until(lambda: not old.exists(), what="the old segment deleted at start")
    stored(big, 3600)  # over RECORD_MAX_GB from now on
    unlisted = new_camera("recnot")  # not in RECORD_CAMERAS: none of its frames is recorded
    first_ms = int(time.time() * 1000) - 60_000
    Scene(watch, unlisted, footage_frames(count=40, step=2), first_ms).publish_until(9)
    scene = Scene(watch, camera, footage_frames(count=40, step=2), first_ms)
    scene.publish_until(30)
    scene.event("ret", "start", start=20)
    scene.event("ret", "end", start=20, end=22)
    scene.publish_until(60)
    done = watch.wait_for(topics.clip(camera), lambda m: b'"done"' in m.payload, what="clip done")
    # The finished clip ran retention while the segment was open: the oldest segment went, then the clip,
    # and the open segment stayed although the directory is still over RECORD_MAX_GB.
    clip = record_dir / clips(watch, camera, "done")[0].path
    wait_until(lambda: not big.exists() and not clip.exists(), what="old segment and clip deleted")
    assert done
    segments = list((record_dir / "continuous" / camera).glob("*/*.mp4"))
    assert len(segments) == 1 and segments[0] != big
    assert recorder.stop() == 0
    assert len(frame_times(segments[0])) == 61  # the open segment was never touched: every frame is there
    assert not (record_dir / "continuous" / unlisted).exists()
    stats = latest_stats(watch)
    assert stats is not None and camera in stats.cameras and unlisted not in stats.cameras


def test_the_real_detectors_person_event_on_the_footage_makes_its_clip(
    broker: LocalBroker, collector: Callable[..., Collector], service: Service, tmp_path: Path
) -> None:
    """The whole path: the footage's empty room, a person at the table, the empty room again, published by a
    camera login at 5 fps; the real detector (TFLite model) makes the person event, the recorder its clip."""
    camera = new_camera("recdet")
    watch = collector(topics.ALL_CLIPS, topics.RECORDER_STATS, STATUS, topics.event(camera, "person"))
    detector_status = collector(topics.service_status("detector"))
    service("detector", detector_env(broker, detector_cameras=camera, detector_end_after="2"))
    wait_online(detector_status)
    start_recorder(service, watch, recorder_env(broker, tmp_path / "rec", record_pre_s=1, record_post_s=1))
    room, person = close_up_cut((640, 360), empty=28, person=15)
    publisher = FramePublisher(broker, camera)
    try:
        publisher.stream(room[:10] + person + room[10:], 5.0)
    finally:
        publisher.close()
    done = watch.wait_for(topics.clip(camera), lambda m: b'"done"' in m.payload, what="the clip")
    clip = schemas.ClipInfo.parse(done.payload)
    [end] = [e for e in events(watch, camera) if e.type == "end"]
    assert clip.event_ids == [end.event_id] and end.ended_at is not None
    captured = sorted(publisher.sent_at.values())
    in_clip = [ms for ms in captured if clip.started_at * 1000 <= ms <= (clip.ended_at or 0) * 1000]
    times = frame_times(tmp_path / "rec" / clip.path)
    assert times == [ms - in_clip[0] for ms in in_clip]  # every frame published in its span, truly timed
    interval_ms = 200
    assert in_clip[0] <= end.started_at * 1000 - 1000 + interval_ms
    assert in_clip[-1] >= end.ended_at * 1000 + 1000 - interval_ms


def test_a_camera_that_went_quiet_is_idle_only_once_its_clip_is_finished(tmp_path: Path) -> None:
    """What the recorder drops after WORKER_IDLE_S: a camera's thread, only when no clip is open."""
    settings = RecorderSettings(record_dir=tmp_path, record_pre_s=1, record_post_s=0)
    logger = logging.getLogger("test-recorder")
    writing = Writing(
        "quiet", settings, Disk(tmp_path, lambda: None), Counters(), RateLimitedLog(logger), logger
    )
    announced: list[schemas.ClipInfo] = []
    worker = CameraWorker(writing, announced.append)
    worker.start()
    first_ms = int(time.time() * 1000) - 10_000
    for index, picture in enumerate(footage_frames(count=10)):
        worker.put_frame(Frame(picture, first_ms + index * INTERVAL_MS, 640, 480))
    start = detection_event("quiet", "q", started_at=(first_ms + 500) / 1000)
    worker.put_event(schemas.DetectionEvent.parse(start), None)
    wait_until(lambda: announced, what="the clip begun")
    assert not worker.idle(0.0)  # quiet, but a clip is open
    end = detection_event(
        "quiet", "q", kind="end", started_at=(first_ms + 500) / 1000, ended_at=first_ms / 1000
    )
    worker.put_event(schemas.DetectionEvent.parse(end), None)
    wait_until(lambda: announced[-1].state == "done", what="the clip finished without a frame to close it")
    assert worker.idle(0.0) and not worker.idle(60.0)
    worker.stop()
    assert len(frame_times(tmp_path / announced[-1].path)) == 10


def test_a_clip_reaching_record_max_s_is_closed_and_the_next_one_goes_on(tmp_path: Path) -> None:
    settings = RecorderSettings(record_dir=tmp_path, record_pre_s=0, record_post_s=0, record_max_s=10)
    logger = logging.getLogger("test-recorder")
    writing = Writing(
        "long", settings, Disk(tmp_path, lambda: None), Counters(), RateLimitedLog(logger), logger
    )
    announced: list[schemas.ClipInfo] = []
    worker = CameraWorker(writing, announced.append)
    worker.start()
    first_ms = int(time.time() * 1000) - 60_000
    worker.put_event(
        schemas.DetectionEvent.parse(detection_event("long", "l", started_at=first_ms / 1000)), None
    )
    pictures = footage_frames(count=40, step=2)
    for index in range(150):  # 15 s; the worker's queue holds 50 frames, so keep pace with it
        while not worker.put_frame(Frame(pictures[index % 40], first_ms + index * INTERVAL_MS, 640, 480)):
            time.sleep(0.01)
    worker.stop()  # finishes the second clip
    done = [clip for clip in announced if clip.state == "done"]
    assert [(clip.started_at, clip.duration_s) for clip in done] == [
        (first_ms / 1000, 10.0),
        ((first_ms + 10_100) / 1000, 4.8),
    ]
    assert [len(frame_times(tmp_path / clip.path)) for clip in done] == [101, 49]
    assert all(clip.event_ids == ["l"] for clip in done)
