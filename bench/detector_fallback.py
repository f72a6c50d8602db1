"""Checks the tflite-runtime fallback for real, in two throw-away virtualenvs without ai-edge-litert.

    .venv/bin/python -m bench.detector_fallback [--venvs /tmp/sentrycam-tflite]

1. ``tflite-runtime==2.14.0 "numpy<2" opencv-python-headless==4.11.0.86``: the detector's model code must
   pick tflite-runtime, find a person on astronaut.png, and report its invoke time next to LiteRT's.
2. ``tflite-runtime==2.14.0`` with numpy 2 (what pip picks without a pin): the import works, creating the
   interpreter fails; the detector must stop with its clear "cannot load" message, not a traceback.

Not part of the test suite because it installs packages (about a minute); its result is in docs/detector.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from pathlib import Path

from tests.support import MEDIA_DIR, MODEL_DIR, REPO_ROOT

PROBE = """
import json, statistics, time, cv2
from services.detector.model import Detector, ModelError
try:
    detector = Detector(MODEL / "detect.tflite", MODEL / "labelmap.txt", 1)
except ModelError as error:
    print(json.dumps({"error": str(error)[:300]}))
    raise SystemExit(0)
frame = cv2.imread(str(IMAGE), cv2.IMREAD_COLOR)
rgb = detector.prepare(frame)
times = []
for _ in range(15):
    start = time.perf_counter()
    found = detector.infer(rgb, 0.3)
    times.append((time.perf_counter() - start) * 1000)
import numpy
print(json.dumps({"runtime": detector.runtime, "numpy": numpy.__version__,
                  "person": max((d.score for d in found if d.label == "person"), default=0.0),
                  "invoke_ms": statistics.median(times)}))
"""

SETUPS = {
    "tflite-runtime + numpy<2": ["tflite-runtime==2.14.0", "numpy<2", "opencv-python-headless==4.11.0.86"],
    "tflite-runtime + numpy 2": ["tflite-runtime==2.14.0", "numpy>=2", "opencv-python-headless"],
}


def probe(python: Path) -> dict[str, object]:
    image = MEDIA_DIR / "images" / "astronaut.png"
    code = (
        f"from pathlib import Path\nMODEL = Path({str(MODEL_DIR)!r})\nIMAGE = Path({str(image)!r})\n{PROBE}"
    )
    result = subprocess.run(
        [str(python), "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    last = result.stdout.strip().splitlines()[-1:] or ["{}"]
    if result.returncode != 0:
        return {"crash": result.stderr.strip().splitlines()[-1:]}
    parsed: dict[str, object] = json.loads(last[0])
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--venvs", type=Path, default=Path("/tmp/sentrycam-tflite"))
    args = parser.parse_args()
    print(f"LiteRT (this venv): {probe(Path(sys.executable))}")
    for index, (name, packages) in enumerate(SETUPS.items()):
        target = args.venvs / f"venv{index}"
        if not (target / "bin" / "python").exists():
            venv.create(target, with_pip=True)
            subprocess.run([str(target / "bin" / "pip"), "install", "-q", *packages], check=True)
        print(f"{name}: {probe(target / 'bin' / 'python')}")


if __name__ == "__main__":
    main()
