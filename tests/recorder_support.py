"""Helpers for the recorder's tests and benchmark: its settings, a scene of frames and events, and reading
back what it wrote."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import av

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from tests.support import Collector, detection_event

INTERVAL_MS = 100  # the scenes' frames are 10 fps in capture time, whatever speed they are published at


def recorder_env(broker: LocalBroker, record_dir: Path, **settings: object) -> dict[str, str]:
    """A recorder's settings on its own login (one per RECORD_DIR): two recorders of two tests never share
    a client id. ``record_pre_s=2`` becomes ``RECORD_PRE_S=2``."""
    digest = hashlib.sha256(str(record_dir.resolve()).encode()).hexdigest()[:8]
    env = broker.env(broker.login_like("recorder", f"recorder-{digest}"))
    env.update(RECORD_DIR=str(record_dir), RECORD_STATS_INTERVAL="0.5")
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


@dataclass
class Scene:
    """Frames of one camera published with capture times ``first_ms + i * INTERVAL_MS`` (frame i), as fast
    as the broker takes them, and events whose times are those of frames."""

    publisher: Collector
    camera: str
    frames: tuple[bytes, ...]
    first_ms: int
    sent: int = 0
    pace_s: float = 0.02  # 50 fps: a few times real time, well within what the recorder writes
    dropped: frozenset[int] = frozenset()  # frames the camera "dropped": never published

    def published(self, first: int, last: int) -> list[int]:
        """The indexes of frames ``first`` to ``last`` that were (or will be) published."""
        return [index for index in range(first, last + 1) if index not in self.dropped]

    def at(self, index: int) -> int:
        """Capture time (ms) of frame ``index``."""
        return self.first_ms + index * INTERVAL_MS

    def publish_until(self, index: int) -> None:
        """Frames up to and including ``index``."""
        while self.sent <= index:
            if self.sent not in self.dropped:
                picture = self.frames[self.sent % len(self.frames)]
                self.publisher.frame(self.camera, picture, self.at(self.sent))
                time.sleep(self.pace_s)
            self.sent += 1

    def event(
        self, event_id: str, kind: str, start: int, end: int | None = None, label: str = "person"
    ) -> None:
        """``kind`` of an event that started at frame ``start`` (and ended at frame ``end``)."""
        ended_at = None if end is None else self.at(end) / 1000
        payload = detection_event(
            self.camera, event_id, kind=kind, label=label, started_at=self.at(start) / 1000, ended_at=ended_at
        )
        self.publisher.publish(topics.event(self.camera, label), payload)


def clips(collector: Collector, camera: str, state: str | None = None) -> list[schemas.ClipInfo]:
    found = [schemas.ClipInfo.parse_on(m.topic, m.payload) for m in collector.on(topics.clip(camera))]
    return [clip for clip in found if state is None or clip.state == state]


def latest_stats(collector: Collector, since: float = 0.0) -> schemas.RecorderStats | None:
    received = collector.on(topics.RECORDER_STATS, since)
    return schemas.RecorderStats.parse(received[-1].payload) if received else None


def frame_times(path: Path, *, cut_short: bool = False) -> list[int]:
    """Presentation times (ms from the clip's start) of every frame that decodes, in order. ``cut_short``:
    the file was cut mid-fragment (a crash), and what decodes before the cut counts, as a player shows it."""
    times: list[int] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        scale = float(stream.time_base) * 1000
        try:
            for packet in container.demux(stream):
                times += [round((frame.pts or 0) * scale) for frame in packet.decode()]
        except av.InvalidDataError:
            if not cut_short:
                raise
    return times
