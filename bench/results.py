"""Saved benchmark results: each benchmark writes ``bench/results/<name>.json``, ``bench/report.py`` reads.

A figure is one number with what it is measured against (the baseline of the same run) and its goal, so the
report can put them side by side without knowing any benchmark.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str = ""
    baseline: float | None = None  # the same-run baseline the value is compared with, in the same unit
    baseline_name: str = ""
    goal: str = ""  # as said in the issue, e.g. "<= 1.3x baseline"
    met: bool | None = None  # None: no goal


def percentile(values: list[float], share: float) -> float:
    """The value at ``share`` (0-1) of the sorted values, the nearest rank (no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@dataclass
class Result:
    benchmark: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    # Series for plots and anything else worth keeping: {"latency_ms": [...], "cameras": [1, 4, 8, 16]}.
    data: dict[str, Any] = field(default_factory=dict)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "arch": platform.machine(),
        "python": platform.python_version(),
        "load_1m": os.getloadavg()[0],
    }


def save(result: Result, directory: Path = RESULTS_DIR) -> Path:
    """Write the result with the machine and the time; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result.benchmark}.json"
    record = {
        "benchmark": result.benchmark,
        "command": result.command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "figures": [asdict(figure) for figure in result.figures],
        "data": result.data,
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def load(directory: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every saved result, by benchmark name."""
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def replace_part(benchmark: str, prefix: str, figures: list[Figure], directory: Path = RESULTS_DIR) -> Path:
    """Put one part's figures (each named ``prefix...``) into a saved result, in place of that part's
    earlier ones, leaving the rest of the run as it was; the part's date is kept beside them."""
    path = directory / f"{benchmark}.json"
    record = json.loads(path.read_text())
    kept = [figure for figure in record["figures"] if not figure["name"].startswith(prefix)]
    record["figures"] = kept + [asdict(figure) for figure in figures]
    record.setdefault("parts", {})[prefix] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
