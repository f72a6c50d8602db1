"""Part 6 of ``bench/detector.py``, in-process (no broker): what decoding no larger than needed saves.

Per camera size, on the same real frames in the same run: a whole colour decode (the baseline: what the
detector did for every inferred frame before issue 16) against the decode the detector now makes for the
model (``services.detector.decode.for_model``: the largest JPEG reduction still covering 300x300) and the
grey decode of the motion gate, plus the gate's whole cost per skipped frame. Then whether the model finds
the same people on the reduced decode: person frames (>= 0.5) over the whole footage, reduced against whole.
Sizes above the footage's own 768x432 are the real frames enlarged, as a camera of that size would send
them (the detail is the footage's; the decode cost is the size's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from services.detector import decode
from services.detector.model import Detector
from services.detector.motion import MotionGate
from tests.support import jpeg

SIZES = ((768, 432), (1280, 720), (1920, 1080))
PERSON_SCORE = 0.5
Work = Callable[[bytes], object]


@dataclass(frozen=True)
class DecodeCost:
    size: tuple[int, int]
    factor: int  # the reduction for_model picks
    whole_ms: float
    model_ms: float  # for_model: the reduced colour decode
    gate_ms: float  # for_gate: the grey decode
    skipped_ms: float  # a frame the gate skips: grey decode + gate


def per_call_ms(works: dict[str, Work], payloads: list[bytes], min_seconds: float) -> dict[str, float]:
    """Per work, the median over rounds of its mean time per payload. Every payload goes through every
    work in turn, so a busy moment of the (shared) machine falls on all of them alike."""
    rounds: dict[str, list[float]] = {name: [] for name in works}
    deadline = time.perf_counter() + min_seconds
    while time.perf_counter() < deadline or len(rounds[next(iter(works))]) < 5:
        spent = dict.fromkeys(works, 0.0)
        for payload in payloads:
            for name, work in works.items():
                started = time.perf_counter()
                work(payload)
                spent[name] += time.perf_counter() - started
        for name, total in spent.items():
            rounds[name].append(total / len(payloads) * 1000)
    return {name: float(np.median(times)) for name, times in rounds.items()}


def resized(frames: list[np.ndarray], size: tuple[int, int]) -> list[bytes]:
    if frames[0].shape[1::-1] == size:
        return [jpeg(frame) for frame in frames]
    return [jpeg(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)) for frame in frames]


def skipping_gate(first: bytes) -> Work:
    """A frame through a motion gate that has learnt the room from ``first``: what a skipped frame costs."""
    gate = MotionGate(0.12, 0.005, force_interval_s=1e9)
    gate.should_infer(decode.for_gate(first), 0.0, tracking=False)
    return lambda payload: gate.should_infer(decode.for_gate(payload), 1.0, tracking=False)


def decode_costs(frames: list[np.ndarray], static: list[np.ndarray], seconds: float) -> list[DecodeCost]:
    """``frames``: footage with people (decode cost); ``static``: the empty room (a skipped frame)."""
    costs = []
    cv2.setNumThreads(1)  # one core, as the detector's preparing thread has
    for size in SIZES:
        payloads, room = resized(frames, size), resized(static, size)
        _, factor = decode.for_model(payloads[0], 300, 300)
        works: dict[str, Work] = {
            "whole": decode.whole,
            "model": lambda p: decode.for_model(p, 300, 300),
            "gate": decode.for_gate,
        }
        times = per_call_ms(works, payloads, seconds)
        skipped = per_call_ms({"skipped": skipping_gate(room[0])}, room, seconds / 3)["skipped"]
        costs.append(DecodeCost(size, factor, times["whole"], times["model"], times["gate"], skipped))
    cv2.setNumThreads(-1)
    return costs


@dataclass(frozen=True)
class Quality:
    frames: int
    native: int  # person frames at the footage's own size (the reference in shared/media/README.md)
    whole: int  # at 1280x720, decoded whole
    reduced: int  # at 1280x720, decoded at half size
    differing: int  # frames where the two 1280x720 decodes disagree
    mean_score_difference: float


def best_person_score(detector: Detector, image: np.ndarray) -> float:
    scores = [d.score for d in detector.detect(image, 0.3) if d.label == "person"]
    return max(scores, default=0.0)


def quality(detector: Detector, frames: list[np.ndarray]) -> Quality:
    native, whole, reduced = [], [], []
    for frame in frames:
        native.append(best_person_score(detector, frame))
        payload = jpeg(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR))
        whole.append(best_person_score(detector, decode.for_model(payload, 300, 300, reduce=False)[0]))
        reduced.append(best_person_score(detector, decode.for_model(payload, 300, 300)[0]))
    n, w, r = (np.array(scores) for scores in (native, whole, reduced))
    return Quality(
        frames=len(frames),
        native=int((n >= PERSON_SCORE).sum()),
        whole=int((w >= PERSON_SCORE).sum()),
        reduced=int((r >= PERSON_SCORE).sum()),
        differing=int(((w >= PERSON_SCORE) != (r >= PERSON_SCORE)).sum()),
        mean_score_difference=float(np.abs(w - r).mean()),
    )
