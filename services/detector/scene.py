"""Where and what each camera looks for: the YAML file in DETECTOR_CONFIG (zones, masks and overrides of
the defaults), merged with the DETECTOR_* settings once at start into one :class:`CameraConfig` per camera.

    cameras:
      front:
        objects: [person, car]
        threshold: 0.6
        zones:
          door: [[0.1, 0.4], [0.6, 0.4], [0.6, 1.0], [0.1, 1.0]]
        masks:
          street: [[0.8, 0.0], [1.0, 0.0], [1.0, 0.3], [0.8, 0.3]]

``masks`` may also be a list of polygons (the form before masks had names): they are then named
"mask 1", "mask 2"... in order.

Coordinates are normalized (x, y from the top-left corner, 0-1). An object counts when the bottom-centre
of its box (where it stands) is inside a zone (any zone when none are given) and outside every mask.

A camera's ``cam/<id>/config/set`` message (services/detector/live_config.py) goes over its section of the
file, checked by the same :func:`resolved`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common import schemas, topics
from services.common.yamlfile import load_model

# The same polygons as a camera's config/set message (schemas.CameraConfigSet), so that the file and the
# topic accept the same zones and masks.
Point = schemas.Point
Polygon = schemas.Polygon
# A polygon with less area than this (a fraction of the frame) is a line or a dot: nothing stands in it.
MIN_POLYGON_AREA = 1e-4


class CameraRules(BaseModel):
    """One camera's section; anything left out falls back to the DETECTOR_* settings. Checked further, the
    same way as a config/set message, by :func:`resolved`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objects: list[schemas.LabelSlug] | None = None
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    min_area: float | None = Field(None, ge=0.0, le=1.0)
    max_area: float | None = Field(None, gt=0.0, le=1.0)
    # Zone names go into every event message, whose zones list and names are bounded (docs/mqtt.md).
    zones: dict[schemas.Name, Polygon] = Field(default_factory=dict, max_length=schemas.MAX_ZONES)
    masks: dict[schemas.Name, Polygon] = Field(default_factory=dict, max_length=schemas.MAX_ZONES)

    @field_validator("masks", mode="before")
    @classmethod
    def mask_names(cls, value: object) -> object:
        """The older list of masks: each named by its place, "mask 1" first."""
        if isinstance(value, list):
            return {default_mask_name(index): polygon for index, polygon in enumerate(value)}
        return value


# What can override a camera's config: its DETECTOR_CONFIG section, or its config/set message.
Overrides = CameraRules | schemas.CameraConfigSet


class SceneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cameras: dict[schemas.CameraId, CameraRules] = Field(default_factory=dict)


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
    masks: Mapping[str, Polygon] = field(default_factory=dict)


def resolved(base: CameraConfig, rules: Overrides, labels: Set[str] | None = None) -> CameraConfig:
    """``base`` with ``rules`` over it, checked: one check for a DETECTOR_CONFIG section and a config/set
    message. Raises ValueError saying what is wrong. ``labels``: the model's labels (None: not checked)."""
    objects = base.objects if rules.objects is None else slugs(rules.objects)
    if labels is not None and (unknown := unknown_labels(objects, labels)):
        raise ValueError(f"objects: the model has no label {unknown}")
    config = CameraConfig(
        objects=tuple(dict.fromkeys(objects)),
        threshold=base.threshold if rules.threshold is None else rules.threshold,
        min_area=base.min_area if rules.min_area is None else rules.min_area,
        max_area=base.max_area if rules.max_area is None else rules.max_area,
        zones=base.zones if rules.zones is None else dict(rules.zones),
        masks=base.masks if rules.masks is None else dict(rules.masks),
    )
    if config.min_area >= config.max_area:
        raise ValueError(f"min_area {config.min_area} must be smaller than max_area {config.max_area}")
    for kind, polygons in (("zone", config.zones), ("mask", config.masks)):
        for name, polygon in polygons.items():
            if not name.strip():
                raise ValueError(f"{kind}s: a {kind} name must not be blank")
            if area(polygon) < MIN_POLYGON_AREA:
                raise ValueError(f"{kind}s.{name}: the polygon has no area (its points are on one line)")
    return config


def unknown_labels(objects: Iterable[str], labels: Set[str]) -> str:
    """The labels of ``objects`` that the model's ``labels`` lack, as a list for an error line."""
    return ", ".join(sorted(set(objects) - labels))


def default_mask_name(index: int) -> str:
    """The name of the mask at ``index`` (from 0) of a DETECTOR_CONFIG list of masks."""
    return f"mask {index + 1}"


def slugs(labels: Sequence[str]) -> tuple[str, ...]:
    if not labels:
        raise ValueError("objects: name at least one label, or leave objects out")
    try:
        return tuple(topics.label_slug(label) for label in labels)
    except ValueError as error:
        raise ValueError(f"objects: {error}") from error


def area(polygon: Sequence[Point]) -> float:
    """The shoelace formula; a polygon whose edges cross may come out smaller than it looks, never larger."""
    pairs = zip(polygon, [*polygon[1:], polygon[0]], strict=True)
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in pairs)) / 2


@dataclass(frozen=True)
class CameraConfigs:
    """Every camera's config, resolved once at start: the cameras of DETECTOR_CONFIG, and the defaults
    for any other camera."""

    default: CameraConfig
    cameras: Mapping[str, CameraConfig]

    @classmethod
    def resolve(
        cls, default: CameraConfig, scene: SceneConfig, labels: Set[str] | None = None
    ) -> CameraConfigs:
        """Raises SceneConfigError naming the camera whose section is wrong."""
        cameras = {}
        for camera, rules in scene.cameras.items():
            try:
                cameras[camera] = resolved(default, rules, labels)
            except ValueError as error:
                raise SceneConfigError(f"camera {camera}: {error}") from error
        return cls(default, cameras)

    def of(self, camera: str) -> CameraConfig:
        return self.cameras.get(camera, self.default)


def load_scene_config(path: Path | None) -> SceneConfig:
    if path is None:
        return SceneConfig()
    return load_model(path, SceneConfig, SceneConfigError)


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
