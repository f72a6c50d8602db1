"""Scale: how many cameras one detector carries on this machine.

    .venv/bin/python -m bench.scale [--cameras 1,4,8,16] [--seconds 90]

For each camera count, a fresh detector (``python -m services.detector``, default settings but
``DETECTOR_END_AFTER=2`` so that an event ends between two people) on a real Mosquitto with the project's
config, and that many camera-like publishers in this process, each replaying the shared person footage at
5 fps in real time (every second frame of the 10 fps clip) from its own point of the clip, with true capture
times. Per camera count:

- inferred fps per camera and the share of frames dropped as stale (the detector's own stats);
- time to alert: for every person appearance a camera showed (the ranges of ``shared/media/README.md``), the
  capture time of the first frame of that range the camera published -> the ``start`` event at a
  subscriber. An appearance without a start of its own is counted as missed;
- the detector's CPU (cores in use) and resident memory at the end.

Baseline: the 1-camera run of the same invocation. Goal: 16 cameras with every time to alert under 1 s; the
largest count that holds it is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from bench.detector import cpu_seconds, rss_mb, start_detector, stats_of
from bench.results import Figure, Result, save
from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from tests.detector_support import FramePublisher
from tests.support import PERSON_VIDEO, Collector, jpeg

# Source frames that show a person (shared/media/README.md, checked with the model at 0.5).
PERSON_RANGES = ((62, 195), (229, 444), (504, 694), (745, 863), (925, 1194), (1237, 1357))
FPS = 5.0
STEP = 2  # source frames per published frame: the 10 fps clip at 5 fps, in real time
GOAL_MS = 1000.0
MATCH_BEFORE_S = 1.0  # a start may rest on a sighting just before the README's first frame (score 0.4-0.5)
TAIL_S = 3.0  # an appearance that began this close to the end of publishing is not judged


@dataclass(frozen=True)
class Appearance:
    first: float  # capture time (epoch s) of the first frame of the range this camera published
    last: float


@dataclass
class CountResult:
    cameras: int
    fps_inferred: list[float]
    stale_share: list[float]
    time_to_alert_ms: list[float]
    missed: int
    cpu_cores: float
    rss_mb: float

    @property
    def tta_max(self) -> float:
        return max(self.time_to_alert_ms, default=float("nan"))

    @property
    def holds(self) -> bool:
        return self.missed == 0 and bool(self.time_to_alert_ms) and self.tta_max < GOAL_MS


@dataclass
class Camera:
    publisher: FramePublisher
    offset: int  # index into the published frames (every STEP-th source frame) where it starts
    shown: list[int] = field(default_factory=list)  # source frame of each seq


def clip_jpegs() -> Iterator[bytes]:
    """Every STEP-th frame of the clip as the camera would publish it (JPEG q80), read once."""
    capture = cv2.VideoCapture(str(PERSON_VIDEO))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % STEP == 0:
            yield jpeg(frame)
        index += 1
    capture.release()


def in_person_range(source: int) -> int | None:
    return next((i for i, (lo, hi) in enumerate(PERSON_RANGES) if lo <= source <= hi), None)


def appearances(camera: Camera) -> list[Appearance]:
    """Each stretch of frames one person range this camera published, entered after the camera started
    (a range already in view at its first frame has no first frame to time)."""
    found: list[Appearance] = []
    previous: int | None = in_person_range(camera.shown[0]) if camera.shown else None
    start_seq: int | None = None
    sent = camera.publisher.sent_at
    for seq, source in enumerate(camera.shown):
        current = in_person_range(source)
        if current != previous:
            if start_seq is not None:
                found.append(Appearance(sent[start_seq] / 1000, sent[seq - 1] / 1000))
            start_seq = seq if current is not None else None
        previous = current
    if start_seq is not None:
        found.append(Appearance(sent[start_seq] / 1000, sent[len(camera.shown) - 1] / 1000))
    return found


def publish(cameras: list[Camera], payloads: list[bytes], seconds: float) -> None:
    """Every camera at FPS, their frames spread evenly over each frame interval, until ``seconds``."""
    started = time.monotonic()
    frames = int(seconds * FPS)
    for k in range(frames):
        for i, camera in enumerate(cameras):
            due = started + (k + i / len(cameras)) / FPS
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            index = (camera.offset + k) % len(payloads)
            camera.shown.append(index * STEP)
            camera.publisher.send(payloads[index])


def times_to_alert(camera: Camera, starts: list[tuple[float, float]], end: float) -> tuple[list[float], int]:
    """(time to alert in ms per appearance, appearances missed). ``starts``: (arrival, started_at)."""
    alerts, missed = [], 0
    for seen in appearances(camera):
        if seen.first > end - TAIL_S:
            continue
        arrivals = [at for at, began in starts if seen.first - MATCH_BEFORE_S <= began <= seen.last]
        if arrivals:
            alerts.append((min(arrivals) - seen.first) * 1000)
        else:
            missed += 1
    return alerts, missed


def run_count(
    broker: LocalBroker, workdir: Path, payloads: list[bytes], count: int, seconds: float
) -> CountResult:
    names = [f"scale-{count}-{i}" for i in range(count)]
    watch = Collector(broker, topics.DETECTOR_STATS, topics.all_events("person"))
    detector = start_detector(broker, workdir, detector_end_after="2", detector_stats_interval="5")
    assert detector.process is not None
    # Each camera starts at its own point of the clip, spread evenly over it.
    cameras = [
        Camera(FramePublisher(broker, name), offset=i * len(payloads) // count)
        for i, name in enumerate(names)
    ]
    began, cpu_began = time.time(), cpu_seconds(detector.process.pid)
    publish(cameras, payloads, seconds)
    ended, cpu_ended = time.time(), cpu_seconds(detector.process.pid)
    rss = rss_mb(detector.process.pid)
    time.sleep(5.5)  # the last starts, and stats covering the end
    fps, stale, alerts, missed = [], [], [], 0
    for camera, name in zip(cameras, names, strict=True):
        # Counters since the detector started, from stats sent after the last frame was published.
        _at, stats = stats_of(watch, name)[-1]
        fps.append(stats.inferences / (ended - began))
        stale.append(stats.frames_stale / max(stats.frames_in, 1))
        starts = [
            (m.at, event.started_at)
            for m in watch.on(topics.event(name, "person"))
            if (event := schemas.DetectionEvent.parse(m.payload)).type == "start"
        ]
        found, lost = times_to_alert(camera, starts, ended)
        alerts += found
        missed += lost
        camera.publisher.close()
    detector.stop()
    watch.close()
    return CountResult(count, fps, stale, alerts, missed, (cpu_ended - cpu_began) / (ended - began), rss)


def show(result: CountResult) -> None:
    alerts = result.time_to_alert_ms
    p50 = statistics.median(alerts) if alerts else float("nan")
    print(
        f"| {result.cameras} | {statistics.mean(result.fps_inferred):.2f} / {min(result.fps_inferred):.2f} "
        f"| {statistics.mean(result.stale_share):.1%} / {max(result.stale_share):.1%} "
        f"| {p50:.0f} / {result.tta_max:.0f} ({len(alerts)} appearances, {result.missed} missed) "
        f"| {result.cpu_cores:.2f} | {result.rss_mb:.0f} | {'yes' if result.holds else 'no'} |",
        flush=True,
    )


def figures(results: list[CountResult]) -> list[Figure]:
    """Per camera count its figures beside the 1-camera run; then the largest count that holds the goal."""
    base = results[0]
    found: list[Figure] = []
    for r in results:
        n = f"{r.cameras} camera{'s' if r.cameras > 1 else ''}"
        b = f"{base.cameras} camera"
        found += [
            Figure(
                f"time to alert, max, {n}",
                round(r.tta_max, 1),
                "ms",
                round(base.tta_max, 1),
                b,
                f"< {GOAL_MS:.0f} ms, none missed",
                r.holds,
            ),
            Figure(
                f"inferred fps per camera, mean, {n}",
                round(statistics.mean(r.fps_inferred), 2),
                "fps",
                round(statistics.mean(base.fps_inferred), 2),
                b,
            ),
            Figure(
                f"dropped as stale, mean, {n}",
                round(statistics.mean(r.stale_share) * 100, 1),
                "%",
                round(statistics.mean(base.stale_share) * 100, 1),
                b,
            ),
            Figure(f"detector CPU, {n}", round(r.cpu_cores, 2), "cores", round(base.cpu_cores, 2), b),
            Figure(f"detector memory (VmRSS), {n}", round(r.rss_mb), "MB", round(base.rss_mb), b),
        ]
    holding = [r.cameras for r in results if r.holds]
    largest = max(holding, default=0)
    found.append(
        Figure(
            "largest camera count with every time to alert < 1 s",
            largest,
            goal=">= 16",
            met=largest >= 16,
        )
    )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cameras", default="1,4,8,16", help="camera counts, comma-separated, first = baseline"
    )
    parser.add_argument("--seconds", type=float, default=90.0, help="publishing time per camera count")
    args = parser.parse_args()
    counts = [int(n) for n in args.cameras.split(",")]
    payloads = list(clip_jpegs())
    print(
        f"{len(payloads)} frames of {PERSON_VIDEO.name} at {FPS:g} fps, {args.seconds:g} s per camera count"
    )
    print(
        "| cameras | inferred fps per camera, mean / min | stale, mean / max "
        "| time to alert p50 / max ms | detector CPU cores | detector RSS MB | goal held |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = LocalBroker(workdir / "broker")
        broker.start()
        try:
            for count in counts:
                results.append(run_count(broker, workdir, payloads, count, args.seconds))
                show(results[-1])
        finally:
            broker.stop()
    result = Result(
        "scale",
        f"python -m bench.scale --cameras {args.cameras} --seconds {args.seconds:g}",
        figures(results),
        data={
            "cameras": [r.cameras for r in results],
            "fps_inferred": [r.fps_inferred for r in results],
            "stale_share": [r.stale_share for r in results],
            "time_to_alert_ms": [r.time_to_alert_ms for r in results],
            "missed": [r.missed for r in results],
            "cpu_cores": [r.cpu_cores for r in results],
            "rss_mb": [r.rss_mb for r in results],
        },
    )
    print(f"largest camera count with every time to alert < 1 s: {figures(results)[-1].value:g}")
    print(f"saved {save(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
