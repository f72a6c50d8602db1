"""The report's pictures, drawn from the saved results' ``data`` with matplotlib (Agg: no display needed).

Each function takes one saved result (as ``bench.results.load`` gives it) and a PNG path, and returns the
path, or None when the result lacks the series the plot needs.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

GOAL_MS = 1000.0


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def latency(result: dict[str, Any], path: Path) -> Path | None:
    """Histogram of the detector's capture -> ``start`` latencies, with p50 and p95 marked."""
    values = [float(v) for v in result["data"].get("latency_ms", [])]
    if not values:
        return None
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.hist(values, bins=min(30, max(5, len(values) // 2)), color="tab:blue")
    for share, style in ((0.5, "-"), (0.95, "--")):
        mark = float(np.percentile(values, share * 100))  # as bench/detector.py computes them
        axes.axvline(mark, color="black", linestyle=style, label=f"p{share * 100:.0f} {mark:.1f} ms")
    axes.set_xlabel("capture of the confirming frame -> start event (ms)")
    axes.set_ylabel("events")
    axes.set_title(f"Detector latency ({len(values)} events, {result['date']})")
    axes.legend()
    return _save(figure, path)


def scale(result: dict[str, Any], path: Path) -> Path | None:
    """Inferred fps per camera and time to alert against the camera count, side by side."""
    data = result["data"]
    cameras = [int(n) for n in data.get("cameras", [])]
    if not cameras:
        return None
    figure, (fps_axes, alert_axes) = plt.subplots(1, 2, figsize=(10, 3.8))
    fps = [[float(v) for v in per_camera] for per_camera in data["fps_inferred"]]
    fps_axes.plot(cameras, [statistics.mean(v) for v in fps], "o-", label="mean")
    fps_axes.plot(cameras, [min(v) for v in fps], "s--", label="slowest camera")
    fps_axes.axhline(5.0, color="grey", linestyle=":", label="camera rate (5 fps)")
    fps_axes.set_xlabel("cameras")
    fps_axes.set_ylabel("inferred frames per second, per camera")
    fps_axes.set_ylim(bottom=0)
    fps_axes.legend()
    alerts = [[float(v) for v in per_count] for per_count in data["time_to_alert_ms"]]
    for n, values in zip(cameras, alerts, strict=True):
        alert_axes.scatter([n] * len(values), values, s=12, alpha=0.5, color="tab:blue")
    alert_axes.plot(
        cameras, [statistics.median(v) if v else float("nan") for v in alerts], "o-", label="median"
    )
    alert_axes.plot(cameras, [max(v, default=float("nan")) for v in alerts], "s--", label="max")
    alert_axes.axhline(GOAL_MS, color="red", linestyle=":", label="goal (1 s)")
    alert_axes.set_xlabel("cameras")
    alert_axes.set_ylabel("time to alert (ms)")
    alert_axes.set_ylim(bottom=0)
    alert_axes.legend()
    for axes in (fps_axes, alert_axes):
        axes.set_xticks(cameras)
    figure.suptitle(f"One detector, N cameras at 5 fps ({result['date']})")
    return _save(figure, path)


def soak(result: dict[str, Any], path: Path) -> Path | None:
    """Each service's resident memory over the run."""
    data = result["data"]
    times = [float(t) / 60 for t in data.get("t_s", [])]
    if not times:
        return None
    figure, axes = plt.subplots(figsize=(8, 4))
    for name, values in sorted(data["rss_mb"].items()):
        axes.plot(times[: len(values)], values, label=name)
    axes.axvline(float(data.get("warmup_s", 0)) / 60, color="grey", linestyle=":", label="end of warm-up")
    axes.set_xlabel("minutes")
    axes.set_ylabel("resident memory (MB)")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize="small", ncol=2)
    axes.set_title(f"Soak: memory of each service ({result['date']})")
    return _save(figure, path)


# benchmark name -> [(picture name, plot function)]
PLOTS = {
    "detector": [("detector-latency", latency)],
    "scale": [("scale", scale)],
    "soak": [("soak-memory", soak)],
}
