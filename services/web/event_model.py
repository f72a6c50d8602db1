"""An event as the store keeps it, and which events to list."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.common import topics
from services.web.const import EVENTS_PAGE_SIZE

EVENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def matching(pattern: re.Pattern[str], problem: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(problem)
        return value

    return check


class EventFilter(BaseModel):
    """Which events to list: the timeline's filters and its paging, as the query string gives them."""

    model_config = ConfigDict(frozen=True)

    camera: Annotated[str | None, AfterValidator(matching(topics.CAMERA_ID_RE, "bad camera id"))] = None
    label: Annotated[str | None, AfterValidator(matching(topics.LABEL_RE, "bad label"))] = None
    # YYYY-MM-DD, the server's local time
    day: Annotated[str | None, AfterValidator(matching(DAY_RE, "day must be YYYY-MM-DD"))] = None
    # started_at of the last event of the previous page
    before: float | None = Field(None, allow_inf_nan=False)
    # A bigger page is cut to the page size rather than refused: links from older pages keep working.
    limit: Annotated[int, Field(ge=1), AfterValidator(lambda limit: min(limit, EVENTS_PAGE_SIZE))] = (
        EVENTS_PAGE_SIZE
    )


@dataclass(frozen=True)
class StoredEvent:
    """One event as the store keeps it: the detector's start, updates and end folded into one row."""

    event_id: str
    camera: str
    label: str
    day: str  # YYYY-MM-DD of started_at, the server's local time
    started_at: float
    ended_at: float | None
    updated_at: float
    score: float
    top_score: float
    box: tuple[float, ...]
    zones: tuple[str, ...]
    # File names in the snapshot directory; the app shows URLs instead.
    snapshot: str | None
    thumbnail: str | None

    @property
    def has_snapshot(self) -> bool:
        return self.snapshot is not None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StoredEvent:
        return cls(
            event_id=row["event_id"],
            camera=row["camera"],
            label=row["label"],
            day=row["day"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            updated_at=row["updated_at"],
            score=row["score"],
            top_score=row["top_score"],
            box=tuple(json.loads(row["box"])),
            zones=tuple(json.loads(row["zones"])),
            snapshot=row["snapshot"],
            thumbnail=row["thumbnail"],
        )
