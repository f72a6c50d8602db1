"""The benchmark report: the saved results (``bench/results/*.json``) as tables and plots in
``docs/benchmarks.md``.

    .venv/bin/python -m bench.report [--run scale soak ...]

``--run NAME...`` runs those benchmarks first (``python -m bench.NAME``, one after the other, as they are
slow and noisy side by side); by default only the saved results are read. The generated part goes between
the markers ``<!-- report:start -->`` and ``<!-- report:end -->`` (put after the page's introduction if the
page has none yet); everything outside them, the hand-written section of each benchmark, is left as it is.
Per benchmark: its date, machine and command, each figure beside its baseline and goal, met or not; a
benchmark without a saved result is said to be missing. Plots go to ``docs/img/`` (``bench/plots.py``).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import plots
from bench.results import RESULTS_DIR, load

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC = REPO_ROOT / "docs" / "benchmarks.md"
IMAGES = REPO_ROOT / "docs" / "img"
START, END = "<!-- report:start -->", "<!-- report:end -->"
# Every benchmark that saves a result, in the order of the report.
BENCHMARKS = ("camera", "detector", "notifier", "web", "recorder", "scale", "soak")


def run(names: list[str]) -> dict[str, int]:
    """Each benchmark as ``python -m bench.NAME`` with its defaults; its exit code."""
    codes = {}
    for name in names:
        print(f"== running bench.{name}", flush=True)
        codes[name] = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=REPO_ROOT).returncode
    return codes


def number(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):  # nothing was measured
        return "none measured"
    text = f"{value:g}" if isinstance(value, int | float) else str(value)
    return f"{text} {unit}".strip()


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "—"}[met]


def machine(record: dict[str, Any]) -> str:
    m = record.get("machine", {})
    return (
        f"{m.get('cpus', '?')} CPUs ({m.get('cpu') or 'unknown CPU'}, {m.get('arch', '?')}), "
        f"Python {m.get('python', '?')}, load average {m.get('load_1m', 0):.1f} at the end"
    )


def table(record: dict[str, Any]) -> list[str]:
    lines = ["| figure | value | baseline | goal | met |", "| --- | --- | --- | --- | --- |"]
    for figure in record["figures"]:
        baseline = number(figure.get("baseline"), figure.get("unit", ""))
        if figure.get("baseline") is not None and figure.get("baseline_name"):
            baseline += f" ({figure['baseline_name']})"
        lines.append(
            f"| {figure['name']} | {number(figure['value'], figure.get('unit', ''))} | {baseline} "
            f"| {figure.get('goal') or '—'} | {verdict(figure.get('met'))} |"
        )
    return lines


def pictures(record: dict[str, Any], images: Path, doc: Path) -> list[str]:
    """Draws the benchmark's plots; Markdown image links relative to the page."""
    lines = []
    for picture, plot in plots.PLOTS.get(record["benchmark"], []):
        path = plot(record, images / f"{picture}.png")
        if path is None:
            lines.append(f"(No plot {picture}: the saved result has no data for it.)")
        else:
            lines.append(f"![{picture}]({Path(os.path.relpath(path, doc.parent)).as_posix()})")
    return lines


def section(name: str, record: dict[str, Any] | None, images: Path, doc: Path) -> list[str]:
    lines = [f"### {name}", ""]
    if record is None:
        return [*lines, f"Missing: no saved result. Run `.venv/bin/python -m bench.report --run {name}`.", ""]
    lines += [
        f"{record['date']}, `{record['command']}`, on {machine(record)}.",
        "",
        *table(record),
        "",
    ]
    drawn = pictures(record, images, doc)
    return [*lines, *(f"{line}\n" for line in drawn)] if drawn else lines


def generated(records: dict[str, dict[str, Any]], images: Path, doc: Path) -> str:
    names = list(BENCHMARKS) + sorted(set(records) - set(BENCHMARKS))
    lines = [
        START,
        "## Summary (generated)",
        "",
        "Written by `.venv/bin/python -m bench.report` from the saved results in `bench/results/`; edit the "
        "benchmarks or the hand-written sections below, not this part. Each figure stands beside the "
        "baseline measured in the same run and its goal.",
        "",
    ]
    for name in names:
        lines += section(name, records.get(name), images, doc)
    return "\n".join([*lines, END])


def place(text: str, part: str) -> str:
    """``text`` with ``part`` between the markers, or after the introduction (before the first ``## ``)."""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        return head + part + rest.split(END, 1)[1]
    at = text.find("\n## ")
    if at < 0:
        return text.rstrip("\n") + "\n\n" + part + "\n"
    return text[: at + 1] + part + "\n\n" + text[at + 1 :]


def write(doc: Path = DOC, results: Path = RESULTS_DIR, images: Path = IMAGES) -> Path:
    records = {record["benchmark"]: record for record in load(results)}
    doc.write_text(place(doc.read_text(), generated(records, images, doc)))
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", nargs="+", default=[], metavar="NAME", help="benchmarks to run first")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--images", type=Path, default=IMAGES)
    args = parser.parse_args()
    unknown = [name for name in args.run if not (REPO_ROOT / "bench" / f"{name}.py").exists()]
    if unknown:
        parser.error(f"no benchmark bench/{unknown[0]}.py")
    failed = {name: code for name, code in run(args.run).items() if code != 0}
    print(f"wrote {write(args.doc, args.results, args.images)}")
    if failed:
        print(f"benchmarks that failed (their older results, if any, were reported): {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
