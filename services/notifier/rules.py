"""NOTIFY_RULES: per camera, which events alert, where, for how long and when (docs/notifier.md).

    cameras:
      front:
        labels: [person]
        required_zones: [porch]
        min_dwell_s: 5
        schedule:
          - days: [mon, tue, wed, thu, fri]
            from: "08:00"
            to: "18:00"
    default:
      labels: [person, car]

Read once at start; a mistake stops the notifier with one line naming the file, the place and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.common import schemas
from services.common.yamlfile import load_model

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
# The longest loitering time worth waiting for: an open event is tracked no longer than its detector sends it.
MAX_DWELL_S = 24 * 3600


class RulesError(ValueError):
    pass


def clock(value: Any) -> time:
    """``"08:00"`` as a time. YAML reads an unquoted 18:00 as the number 1080 (base 60): said plainly."""
    if not isinstance(value, str):
        raise ValueError('write the time in quotes, "HH:MM" (YAML reads an unquoted 18:00 as a number)')
    match = _CLOCK_RE.fullmatch(value.strip())
    if not match:
        raise ValueError(f'{value!r} is not a time "HH:MM" (00:00 to 23:59)')
    return time(int(match[1]), int(match[2]))


class Window(BaseModel):
    """Hours on some days in the notifier's local time; ``from`` included, ``to`` not. A window whose ``to``
    is not after its ``from`` crosses midnight and belongs to the day it starts on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    start: time = Field(alias="from")
    end: time = Field(alias="to")

    @field_validator("start", "end", mode="before")
    @classmethod
    def hh_mm(cls, value: Any) -> time:
        return clock(value)

    @model_validator(mode="after")
    def not_empty(self) -> Window:
        if self.start == self.end:
            raise ValueError("from and to are the same: the window is empty")
        return self

    def holds(self, moment: datetime) -> bool:
        now, today = moment.time(), DAYS[moment.weekday()]
        if self.start < self.end:
            return today in self.days and self.start <= now < self.end
        # After midnight the window is still the previous day's.
        yesterday = DAYS[(moment.weekday() - 1) % 7]
        return (today in self.days and now >= self.start) or (yesterday in self.days and now < self.end)


def in_schedule(schedule: Sequence[Window] | None, moment: datetime) -> bool:
    """No schedule: always."""
    return schedule is None or any(window.holds(moment) for window in schedule)


class CameraRule(BaseModel):
    """One camera's rule; everything left out alerts as without the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[schemas.LabelSlug] | None = Field(None, min_length=1)
    required_zones: list[schemas.Name] = Field(default_factory=list, max_length=schemas.MAX_ZONES)
    min_dwell_s: float = Field(0.0, ge=0.0, le=MAX_DWELL_S)
    schedule: list[Window] | None = Field(None, min_length=1)

    def alerts_for(self, label: str) -> bool:
        return self.labels is None or label in self.labels


class AlertRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cameras: dict[schemas.CameraId, CameraRule] = Field(default_factory=dict)
    default: CameraRule = Field(default_factory=CameraRule)

    def of(self, camera: str) -> CameraRule:
        return self.cameras.get(camera, self.default)

    def unwatched_label(self, watched: Sequence[str]) -> str | None:
        """The first place naming a label the notifier does not listen to (NOTIFY_OBJECTS): it would never
        alert, which is a mistake worth stopping for."""
        sections = {f"cameras.{camera}": rule for camera, rule in self.cameras.items()}
        for where, rule in {**sections, "default": self.default}.items():
            for label in rule.labels or []:
                if label not in watched:
                    return f"{where}.labels: {label} is not in NOTIFY_OBJECTS ({', '.join(watched)})"
        return None


def load_rules(path: Path | None, watched: Sequence[str]) -> AlertRules:
    """The rules of ``path`` (none: every event alerts); RulesError with one line on a mistake."""
    if path is None:
        return AlertRules()
    rules = load_model(path, AlertRules, RulesError)
    unwatched = rules.unwatched_label(watched)
    if unwatched:
        raise RulesError(f"{path}: {unwatched}")
    return rules
