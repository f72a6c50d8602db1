"""YAML settings files (DETECTOR_CONFIG, NOTIFY_RULES): what went wrong in them, on one line."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def load_model(path: Path, model: type[Model], error: type[Exception]) -> Model:
    """The file at ``path`` read as ``model``; ``error`` with one line naming the file on any mistake."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return model.model_validate(data)
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"cannot read {path}: {problem}") from problem
    except yaml.YAMLError as problem:
        raise error(f"{path}: {yaml_problem(problem)}") from problem
    except ValidationError as problem:
        raise error(f"{path}: {validation_problem(problem)}") from problem


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message on one line: where, and what is wrong there (its own message spans several)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None and error.problem:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return " ".join(str(error).split())


def validation_problem(error: ValidationError) -> str:
    """The first mistake pydantic found, on one line: its place in the file (``cameras.front.labels``) and
    what is wrong there."""
    first = error.errors()[0]
    # A bad mapping key (a camera id) is placed at the key itself, not at pydantic's "[key]" below it.
    where = ".".join(str(part) for part in first["loc"] if part != "[key]")
    return f"{where}: {first['msg']}" if where else str(first["msg"])
