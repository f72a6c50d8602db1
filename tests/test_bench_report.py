"""bench/report.py: saved results of the benchmarks become docs/benchmarks.md's generated part and plots,
and nothing else of the page changes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bench.report import DOC, END, START, write
from bench.results import Figure, Result, save

INTRO = "# Benchmarks\n\nSpeed is measured by the scripts in `bench/`.\n\n"
HAND_WRITTEN = (
    "## Detector (`bench/detector.py`)\n\n"
    "Command: `.venv/bin/python -m bench.detector`. The reading, by hand.\n"
)


def saved_results(directory: Path) -> None:
    save(
        Result(
            "detector",
            "python -m bench.detector",
            [Figure("latency p50", 13.2, "ms", 5.5, "bare inference", "<= inference + 15 ms", True)],
            data={"latency_ms": [11.0, 12.5, 13.2, 14.0, 13.1, 24.4, 12.9, 13.3]},
        ),
        directory,
    )
    save(
        Result(
            "scale",
            "python -m bench.scale",
            [Figure("time to alert, max, 4 cameras", 1200.0, "ms", 650.0, "1 camera", "< 1000 ms", False)],
            data={
                "cameras": [1, 4],
                "fps_inferred": [[4.1], [3.9, 3.8, 3.7, 3.6]],
                "time_to_alert_ms": [[640.0, 650.0], [700.0, 1200.0, 810.0]],
            },
        ),
        directory,
    )
    save(
        Result(
            "soak",
            "python -m bench.soak",
            [Figure("start events", 32, goal="> 0", met=True)],
            data={"t_s": [0.0, 10.0, 20.0], "warmup_s": 10, "rss_mb": {"web": [90.0, 90.2, 90.1]}},
        ),
        directory,
    )


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_the_report_writes_tables_and_plots_between_the_markers_only(tmp_path: Path) -> None:
    results, images, doc = tmp_path / "results", tmp_path / "img", tmp_path / "benchmarks.md"
    saved_results(results)
    doc.write_text(f"{INTRO}{START}\nan older report\n{END}\n\n{HAND_WRITTEN}")

    write(doc, results, images)

    text = doc.read_text()
    assert text.startswith(INTRO + START) and text.endswith(f"{END}\n\n{HAND_WRITTEN}")
    assert "an older report" not in text
    assert "| latency p50 | 13.2 ms | 5.5 ms (bare inference) | <= inference + 15 ms | met |" in text
    assert "| time to alert, max, 4 cameras | 1200 ms | 650 ms (1 camera) | < 1000 ms | **not met** |" in text
    assert "| start events | 32 | — | > 0 | met |" in text
    assert "### recorder\n\nMissing: no saved result." in text
    assert "### camera\n\nMissing: no saved result." in text
    for picture in ("detector-latency", "scale", "soak-memory"):
        assert f"![{picture}](img/{picture}.png)" in text
        assert_png(images / f"{picture}.png")

    write(doc, results, images)
    assert doc.read_text() == text, "a second report of the same results must be the same page"


def test_a_page_without_markers_gets_them_after_its_introduction(tmp_path: Path) -> None:
    results, doc = tmp_path / "results", tmp_path / "benchmarks.md"
    results.mkdir()
    doc.write_text(INTRO + HAND_WRITTEN)

    write(doc, results, tmp_path / "img")

    text = doc.read_text()
    assert text.startswith(INTRO + START) and text.endswith(f"{END}\n\n{HAND_WRITTEN}")
    assert "### scale\n\nMissing: no saved result." in text
    assert not (tmp_path / "img").exists(), "no result, no plot"


def test_the_benchmarks_page_has_the_report_markers_once() -> None:
    text = DOC.read_text()
    assert text.count(START) == 1 and text.count(END) == 1 and text.index(START) < text.index(END)
