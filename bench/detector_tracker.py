"""Part of bench/detector.py: what following the objects costs per inference, against the inference itself.

Ten people walking across a camera with three zones (made-up boxes moving a little each frame, a few
coming and going) go through the detector's own CameraTracker, as the worker calls it after each inference;
the baseline is the bare interpreter on a real frame, in the same run. Quality is measured on the footage:
the six people of the person clip should be six long-lived objects (tests/test_detector_objects.py).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench.results import Figure
from services.detector.model import Detection, Detector
from services.detector.scene import CameraConfig
from services.detector.settings import DetectorSettings
from services.detector.startup import confirmation
from services.detector.tracker import CameraTracker

OBJECTS = 10
FRAMES = 3000
ZONES = {
    "door": [(0.0, 0.5), (0.3, 0.5), (0.3, 1.0), (0.0, 1.0)],
    "porch": [(0.3, 0.5), (0.7, 0.5), (0.7, 1.0), (0.3, 1.0)],
    "drive": [(0.7, 0.2), (1.0, 0.2), (1.0, 1.0), (0.7, 0.6), (0.8, 0.4)],
}
RULES = confirmation(DetectorSettings())  # the defaults, as the service takes them


def walkers(frames: int, objects: int) -> list[list[Detection]]:
    """``objects`` boxes walking back and forth across the frame at different speeds; every 50th frame
    one of them is missed (a dropout)."""
    rng = np.random.default_rng(7)
    speed = rng.uniform(0.002, 0.01, objects)
    start = rng.uniform(0.0, 0.9, objects)
    rows = np.linspace(0.05, 0.55, objects)
    sequence = []
    for index in range(frames):
        found = []
        for n in range(objects):
            if index % 50 == n:
                continue
            x = abs((start[n] + speed[n] * index) % 1.8 - 0.9)
            found.append(Detection("person", 0.8, (x, rows[n], x + 0.08, rows[n] + 0.4)))
        sequence.append(found)
    return sequence


def observe_ms(sequence: list[list[Detection]]) -> list[float]:
    config = CameraConfig(("person",), 0.5, 0.002, 1.0, zones=ZONES)
    tracker = CameraTracker("bench", RULES, config)
    costs = []
    for index, found in enumerate(sequence):
        at = index * 0.2
        started = time.perf_counter()
        tracker.observe(found, at, at)
        tracker.expire(at)
        costs.append((time.perf_counter() - started) * 1000)
    return costs


def inference_ms(detector: Detector, frame: np.ndarray, count: int = 100) -> float:
    prepared = detector.prepare(frame)
    detector.infer(prepared, 0.4)
    costs = []
    for _ in range(count):
        started = time.perf_counter()
        detector.infer(prepared, 0.4)
        costs.append((time.perf_counter() - started) * 1000)
    return statistics.median(costs)


def part_tracker(detector: Detector, frame: np.ndarray) -> list[Figure]:
    bare = inference_ms(detector, frame)
    figures = []
    for objects in (1, OBJECTS):
        costs = sorted(observe_ms(walkers(FRAMES, objects)))
        median, p95 = statistics.median(costs), costs[int(0.95 * len(costs))]
        print(
            f"tracker, {objects} objects, 3 zones: median {median:.3f} ms, p95 {p95:.3f} ms per inference "
            f"({median / bare:.3f} of a {bare:.1f} ms inference)",
            flush=True,
        )
        goal = "< 0.5 ms" if objects == OBJECTS else ""
        figures.append(
            Figure(
                f"tracker: cost per inference, {objects} objects, 3 zones (median)",
                round(median, 3),
                "ms",
                round(bare, 2),
                "bare inference, same run",
                goal,
                median < 0.5 if goal else None,
            )
        )
        figures.append(Figure(f"tracker: cost per inference, {objects} objects (p95)", round(p95, 3), "ms"))
    return figures
