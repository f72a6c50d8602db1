"""Where and what each camera looks for: the YAML file in DETECTOR_CONFIG (zones, masks and overrides of
the defaults), merged with the DETECTOR_* settings once at start into one :class:`CameraConfig` per camera.

    cameras:
      front:
        objects: [person, car]
        threshold: 0.6
        zones:
          door: [[0.1, 0.4], [0.6, 0.4], [0.6, 1.0], [0.1, 1.0]]
        masks:
          - [[0.8, 0.0], [1.0, 0.0], [1.0, 0.3], [0.8, 0.3]]

Coordinates are normalized (x, y from the top-left corner, 0-1). An object counts when the bottom-centre
of its box (where it stands) is inside a zone (any zone when none are given) and outside every mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.common import schemas, topics
from services.detector.model import Detection

Point = tuple[Annotated[float, Field(ge=0.0, le=1.0)], Annotated[float, Field(ge=0.0, le=1.0)]]
Polygon = Annotated[list[Point], Field(min_length=3)]
# Zone names go into every event message, whose zones list and names are bounded (docs/mqtt.md).
ZoneName = Annotated[str, Field(min_length=1, max_length=schemas.MAX_NAME_CHARS)]


class CameraRules(BaseModel):
    """One camera's section; anything left out falls back to the DETECTOR_* settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objects: list[str] | None = None
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    min_area: float | None = Field(None, ge=0.0, le=1.0)
    max_area: float | None = Field(None, gt=0.0, le=1.0)
    zones: dict[ZoneName, Polygon] = Field(default_factory=dict, max_length=schemas.MAX_ZONES)
    masks: list[Polygon] = Field(default_factory=list)

    @field_validator("objects")
    @classmethod
    def labels(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [topics.label_slug(label) for label in value]


class SceneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cameras: dict[str, CameraRules] = Field(default_factory=dict)

    @field_validator("cameras")
    @classmethod
    def camera_ids(cls, value: dict[str, CameraRules]) -> dict[str, CameraRules]:
        for camera in value:
            topics.validate_camera_id(camera)
        return value


class SceneConfigError(ValueError):
    pass


@dataclass(frozen=True)
class CameraConfig:
    """What one camera looks for and where: the DETECTOR_* settings with the camera's DETECTOR_CONFIG
    section over them. The tracker, the pipeline and the Home Assistant labels all read this one."""

    objects: tuple[str, ...]
    threshold: float
    min_area: float
    max_area: float
    zones: Mapping[str, Polygon] = field(default_factory=dict)
    masks: Sequence[Polygon] = ()

    def overridden_by(self, rules: CameraRules) -> CameraConfig:
        return CameraConfig(
            objects=tuple(rules.objects) if rules.objects else self.objects,
            threshold=self.threshold if rules.threshold is None else rules.threshold,
            min_area=self.min_area if rules.min_area is None else rules.min_area,
            max_area=self.max_area if rules.max_area is None else rules.max_area,
            zones=rules.zones,
            masks=tuple(rules.masks),
        )


@dataclass(frozen=True)
class CameraConfigs:
    """Every camera's config, resolved once at start: the cameras of DETECTOR_CONFIG, and the defaults
    for any other camera."""

    default: CameraConfig
    cameras: Mapping[str, CameraConfig]

    @classmethod
    def resolve(cls, default: CameraConfig, scene: SceneConfig) -> CameraConfigs:
        return cls(default, {camera: default.overridden_by(rules) for camera, rules in scene.cameras.items()})

    def of(self, camera: str) -> CameraConfig:
        return self.cameras.get(camera, self.default)


def load_scene_config(path: Path | None) -> SceneConfig:
    if path is None:
        return SceneConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return SceneConfig.model_validate(data)
    except (OSError, UnicodeDecodeError) as error:
        raise SceneConfigError(f"cannot read {path}: {error}") from error
    except yaml.YAMLError as error:
        raise SceneConfigError(f"{path}: {yaml_problem(error)}") from error
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SceneConfigError(f"{path}: {where}: {first['msg']}") from error


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message on one line: where, and what is wrong there (its own message spans several)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None and error.problem:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return " ".join(str(error).split())


def inside(point: tuple[float, float], polygon: Sequence[Point]) -> bool:
    """Even-odd ray casting: is the point inside the polygon? There is no tolerance: from the strict
    comparisons, a point exactly on an edge is inside when the polygon lies to its right (below it, for a
    horizontal edge) and outside otherwise, so a rectangle keeps its left and top edges but not its right
    and bottom ones."""
    x, y = point
    result = False
    j = len(polygon) - 1
    for i, (xi, yi) in enumerate(polygon):
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            result = not result
        j = i
    return result


def zones_of(detection: Detection, rules: CameraConfig | CameraRules) -> list[str] | None:
    """The zones the object stands in, ``[]`` when the camera has no zones, or None when the object is
    outside every zone or inside a mask (it does not count). ``rules``: the camera's config, or just its
    DETECTOR_CONFIG section."""
    foot = detection.foot
    # A foot on the frame's bottom edge (y = 1.0) would be outside a zone drawn down to that edge (the
    # bottom edge of a polygon is outside, see inside()): count it just above the edge.
    foot = (foot[0], min(foot[1], 0.999))
    if any(inside(foot, mask) for mask in rules.masks):
        return None
    if not rules.zones:
        return []
    names = [name for name, polygon in rules.zones.items() if inside(foot, polygon)]
    return names or None
