"""The TFLite model: finding it, loading it with LiteRT (or tflite-runtime), and running it on an image.

Output tensors are matched by name and shape, then by their values, never by position: the 2018 COCO SSD
orders them boxes, classes, scores, count; TF2 SSD and EfficientDet-Lite exports order them scores, boxes,
count, classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from services.common import topics
from services.detector.const import DEFAULT_MODEL_DIRS, FETCH_HINT, LABEL_FILES, MODEL_FILE

logger = logging.getLogger(__name__)

# A decoded picture as OpenCV and the interpreter take it: height x width x 3 bytes (BGR or RGB).
Image = npt.NDArray[Any]

# Names label files give to class ids that are no object (the background, unused ids).
PLACEHOLDER_LABELS = {"???", "n/a", "background", "__background__"}


class ModelError(Exception):
    """The model cannot be found, read or used; the service stops at start with this message."""


class Interpreter(Protocol):
    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def set_tensor(self, index: int, value: npt.NDArray[Any]) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, index: int) -> npt.NDArray[Any]: ...


# x_min, y_min, x_max, y_max, normalized and clipped to 0-1.
Box = tuple[float, float, float, float]


def box_area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: Box

    @property
    def area(self) -> float:
        return box_area(self.box)


@dataclass(frozen=True)
class OutputMap:
    boxes: int
    classes: int
    scores: int
    count: int | None


def resolve_model(configured: Path | None) -> Path:
    """DETECTOR_MODEL, else the first default location that has the model, else a clear error."""
    if configured is not None:
        if not configured.is_file():
            raise ModelError(f"no such file: {configured} ({FETCH_HINT})")
        return configured
    for directory in DEFAULT_MODEL_DIRS:
        if (directory / MODEL_FILE).is_file():
            return directory / MODEL_FILE
    searched = ", ".join(str(d / MODEL_FILE) for d in DEFAULT_MODEL_DIRS)
    raise ModelError(f"not set, and no model at {searched}: {FETCH_HINT}")


def resolve_labels(configured: Path | None, model_path: Path) -> Path:
    if configured is not None:
        return configured
    for name in LABEL_FILES:
        if (model_path.parent / name).is_file():
            return model_path.parent / name
    raise ModelError(f"not set, and no label file next to {model_path} ({', '.join(LABEL_FILES)})")


def read_labels(path: Path) -> dict[int, str]:
    """Class id -> label. Handles the three usual layouts: ``labelmap.txt`` (first line ``???`` is the
    background, so class id = line - 1), ``coco_labels.txt`` (class id = line) and ``<id> <label>`` lines."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise ModelError(f"cannot read label file {path}: {error}") from error
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ModelError(f"label file {path} is empty")
    first = lines[0].split(maxsplit=1)
    if len(first) == 2 and first[0].isdigit():
        return numbered_labels(path, lines)
    offset = 1 if lines[0].lower() in {"???", "background", "__background__"} else 0
    return {number - offset: name for number, name in enumerate(lines) if number >= offset}


def numbered_labels(path: Path, lines: list[str]) -> dict[int, str]:
    """``<id> <label>`` lines; any other line makes the whole file unusable."""
    labels = {}
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        pair = line.split(maxsplit=1)
        if len(pair) != 2 or not pair[0].isdigit():
            raise ModelError(f"label file {path}, line {number}: expected `<class id> <label>`, got {line!r}")
        labels[int(pair[0])] = pair[1]
    return labels


def topic_labels(labels: dict[int, str]) -> dict[int, str]:
    """Labels as they appear in topics (``traffic light`` -> ``traffic_light``); placeholders and labels
    that cannot be a topic level dropped."""
    usable = {}
    for number, name in labels.items():
        if name.lower() in PLACEHOLDER_LABELS:
            continue
        try:
            usable[number] = topics.label_slug(name)
        except ValueError:
            continue
    return usable


def load_interpreter(model_path: Path, threads: int) -> tuple[Interpreter, str]:
    """LiteRT when installed, else tflite-runtime; returns the interpreter and the runtime's name."""
    try:
        from ai_edge_litert.interpreter import Interpreter as LiteRtInterpreter  # noqa: PLC0415

        factory: Any = LiteRtInterpreter
        runtime = "ai-edge-litert"
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter as TfliteInterpreter  # noqa: PLC0415
        except ImportError as error:
            raise ModelError(
                "no TFLite runtime: pip install ai-edge-litert (or tflite-runtime with numpy<2)"
            ) from error
        factory = TfliteInterpreter
        runtime = "tflite-runtime"
    if not model_path.is_file():
        raise ModelError(f"model {model_path} does not exist: {FETCH_HINT}")
    try:
        model_bytes = model_path.read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read model {model_path}: {error}") from error
    try:
        interpreter: Interpreter = factory(model_content=model_bytes, num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError, SystemError, AttributeError) as error:
        # tflite-runtime 2.14 under numpy 2 fails here with AttributeError/SystemError (_ARRAY_API).
        hint = ""
        if runtime == "tflite-runtime" and int(np.__version__.split(".")[0]) >= 2:
            hint = f' (tflite-runtime needs numpy<2, this is numpy {np.__version__}: pip install "numpy<2")'
        raise ModelError(f"{runtime} cannot load {model_path}: {error}{hint}") from error
    return interpreter, runtime


def _by_name(outputs: list[dict[str, Any]]) -> OutputMap | None:
    """TFLite_Detection_PostProcess names its outputs ``name``, ``name:1``, ``:2``, ``:3`` = boxes,
    classes, scores, count; other exports sometimes name them plainly."""
    names = {str(o["name"]).lower(): int(o["index"]) for o in outputs}
    post = [n for n in names if n.startswith("tflite_detection_postprocess")]
    if len(post) == 4:
        suffix = {n.rpartition(":")[2] if ":" in n else "0": names[n] for n in post}
        if set(suffix) == {"0", "1", "2", "3"}:
            return OutputMap(suffix["0"], suffix["1"], suffix["2"], suffix["3"])

    def find(word: str) -> int | None:
        hits = [index for name, index in names.items() if word in name]
        return hits[0] if len(hits) == 1 else None

    boxes, classes, scores = find("box"), find("class"), find("score")
    if boxes is not None and classes is not None and scores is not None:
        return OutputMap(boxes, classes, scores, find("num"))
    return None


def map_outputs(outputs: list[dict[str, Any]], values: dict[int, npt.NDArray[Any]]) -> OutputMap:
    """Which output is which: by name when the names say it, else by shape (boxes end in 4, count has one
    value) and values (class ids are whole numbers, scores are fractions in 0-1)."""
    named = _by_name(outputs)
    if named is not None:
        return named
    boxes = [int(o["index"]) for o in outputs if len(o["shape"]) == 3 and int(o["shape"][-1]) == 4]
    count = [int(o["index"]) for o in outputs if int(np.prod(o["shape"])) == 1]
    rest = [int(o["index"]) for o in outputs if int(o["index"]) not in boxes + count]
    if len(boxes) != 1 or len(rest) != 2:
        shapes = [list(o["shape"]) for o in outputs]
        raise ModelError(f"unsupported model outputs {shapes}: expected SSD-style boxes, classes, scores")
    whole = [i for i in rest if np.all(np.mod(values[i], 1.0) == 0)]
    fractional = [i for i in rest if i not in whole]
    if len(whole) != 1 or len(fractional) != 1:
        raise ModelError("cannot tell the class output from the score output of this model")
    return OutputMap(boxes[0], whole[0], fractional[0], count[0] if count else None)


class Detector:
    """One loaded model. The interpreter is not thread-safe: one thread at a time calls :meth:`infer`.
    :meth:`prepare` does not touch the interpreter and may run on another thread meanwhile."""

    def __init__(self, model_path: Path, labels_path: Path, threads: int) -> None:
        names = read_labels(labels_path)
        self.labels = topic_labels(names)
        for number, name in names.items():
            if number not in self.labels and name.lower() not in PLACEHOLDER_LABELS:
                logger.warning("label %r cannot be a topic level; its detections are ignored", name)
        self.interpreter, self.runtime = load_interpreter(model_path, threads)
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or int(inputs[0]["shape"][3]) != 3:
            raise ModelError(f"unsupported model input {[list(i['shape']) for i in inputs]}: need [1,H,W,3]")
        self._input = inputs[0]
        self.height, self.width = int(inputs[0]["shape"][1]), int(inputs[0]["shape"][2])
        self._dtype = inputs[0]["dtype"]
        if self._dtype not in (np.uint8, np.float32):
            raise ModelError(f"unsupported model input type {self._dtype}: need uint8 or float32")
        outputs = self.interpreter.get_output_details()
        if len(outputs) not in (3, 4):
            raise ModelError(f"unsupported model: {len(outputs)} outputs, need SSD post-processing (4)")
        # One run on a black image checks the model works and shows the outputs' values for mapping.
        try:
            self._run(np.zeros((self.height, self.width, 3), np.uint8))
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"{self.runtime} cannot run {model_path}: {error}") from error
        values = {int(o["index"]): self.interpreter.get_tensor(int(o["index"])) for o in outputs}
        self.outputs = map_outputs(outputs, values)

    def _run(self, rgb: Image) -> None:
        tensor: npt.NDArray[Any] = rgb[np.newaxis]
        if self._dtype == np.float32:
            # Float SSD exports take pixels scaled to -1..1.
            tensor = (tensor.astype(np.float32) - 127.5) / 127.5
        self.interpreter.set_tensor(int(self._input["index"]), tensor)
        self.interpreter.invoke()

    def prepare(self, bgr: Image) -> Image:
        """The image as the model wants it: RGB, stretched to the input size (as the model was trained)."""
        # Bilinear, as in the reference measurements of the model (models/README.md in the shared data).
        resized = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        rgb: Image = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        return rgb

    def infer(self, rgb: Image, min_score: float) -> list[Detection]:
        """Run the model on a prepared image; detections from ``min_score`` up with a known label."""
        self._run(rgb)
        get = self.interpreter.get_tensor
        boxes, classes, scores = (
            get(self.outputs.boxes)[0],
            get(self.outputs.classes)[0],
            get(self.outputs.scores)[0],
        )
        count = len(scores) if self.outputs.count is None else int(get(self.outputs.count).reshape(-1)[0])
        found = []
        for k in range(min(count, len(scores))):
            score = float(scores[k])
            label = self.labels.get(int(classes[k]))
            if score < min_score or label is None:
                continue
            y_min, x_min, y_max, x_max = (float(v) for v in np.clip(boxes[k], 0.0, 1.0))
            found.append(Detection(label, score, (x_min, y_min, x_max, y_max)))
        return found

    def detect(self, bgr: Image, min_score: float) -> list[Detection]:
        """Prepare and infer in one call, for the tests and the benchmark. The service does the two on
        separate threads (services/detector/pipeline.py) so that preparing overlaps inference."""
        return self.infer(self.prepare(bgr), min_score)
