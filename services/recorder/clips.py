"""One camera's recordings: ``EventClips`` (the clip state machine around events) and ``Segments``
(continuous recording). Both run on the camera's own thread (services/recorder/camera.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.logs import RateLimitedLog
from services.common.schemas import ClipInfo, DetectionEvent
from services.recorder.const import DISK_RETRY_S, EVENT_SILENCE_S, FRAME_WAIT_S
from services.recorder.files import Disk, clip_path, segment_path
from services.recorder.mp4 import FrameRefused
from services.recorder.recording import WRITE_ERRORS, Recording
from services.recorder.ring import Frame, Ring
from services.recorder.settings import RecorderSettings
from services.recorder.stats import Counters

Announce = Callable[[ClipInfo], None]


@dataclass
class Writing:
    """What a camera's recorders share: where to write, whom to tell, and what to count."""

    camera: str
    settings: RecorderSettings
    disk: Disk
    counters: Counters
    bad_log: RateLimitedLog
    logger: logging.Logger
    retry_after: float = 0.0  # monotonic: no new file before this after a write error

    def may_open(self) -> bool:
        return time.monotonic() >= self.retry_after

    def disk_failed(self, what: str, error: Exception) -> None:
        self.retry_after = time.monotonic() + DISK_RETRY_S
        problem = f"{what}: {error}"
        self.disk.failed(problem)
        self.bad_log.report(f"{self.camera}-disk", f"camera {self.camera}: cannot write {problem}")

    def write(self, recording: Recording, frame: Frame) -> bool:
        """The frame into the file: False when the frame is refused; WRITE_ERRORS go to the caller."""
        try:
            recording.add(frame)
        except FrameRefused as error:
            self.bad_log.report(f"{self.camera}-frame", f"camera {self.camera}: bad frame: {error}")
            return False
        self.disk.wrote()
        return True


@dataclass
class OpenEvent:
    started_ms: int
    heard: float  # monotonic time of its last message


class EventClips:
    """Clips around events: from RECORD_PRE_S before the first start to RECORD_POST_S after the last end;
    overlapping events share one clip, and a clip longer than RECORD_MAX_S is closed and another begun."""

    def __init__(self, writing: Writing, ring: Ring, announce: Announce) -> None:
        self.w = writing
        self.ring = ring
        self.announce = announce
        settings = writing.settings
        self.labels = frozenset(settings.record_labels)
        self.pre_ms = round(settings.record_pre_s * 1000)
        self.post_ms = round(settings.record_post_s * 1000)
        self.max_ms = round(settings.record_max_s * 1000)
        self.events: dict[str, OpenEvent] = {}
        self.clip: Recording | None = None
        self.clip_id = ""
        self.close_at_ms: int | None = None
        self.written_until_ms = -1  # frames up to here are in a clip already (a clip cut at RECORD_MAX_S)
        self.frame_arrived = 0.0  # monotonic

    def on_event(self, event: DetectionEvent) -> None:
        if self.labels and event.label not in self.labels:
            return
        if event.type == "end":
            if self.events.pop(event.event_id, None) is not None and not self.events:
                ended = event.ended_at if event.ended_at is not None else event.frame_time
                self.close_at_ms = round(ended * 1000) + self.post_ms
            return
        known = event.event_id in self.events
        self.events[event.event_id] = OpenEvent(round(event.started_at * 1000), time.monotonic())
        self.close_at_ms = None
        if known:
            return
        self.w.counters.count("events")
        if self.clip is None:
            self._open()
        else:
            self.clip.event_ids.append(event.event_id)
            self._announce("recording")

    def on_frame(self, frame: Frame) -> bool:
        """The newest frame (already in the ring); False when it was refused."""
        self.frame_arrived = time.monotonic()
        if self.clip is None:
            if self.events:
                return self._open()
            return True
        if frame.size != self.clip.size:
            self.w.bad_log.report(
                f"{self.w.camera}-size",
                f"camera {self.w.camera}: frame of {frame.width}x{frame.height} in a "
                f"{self.clip.size[0]}x{self.clip.size[1]} clip",
            )
            return False
        written = self._write(frame)
        if self.clip is not None and self.clip.last_ms is not None:
            elapsed = self.clip.last_ms - (self.clip.writer.first_ms or 0)
            if self.close_at_ms is not None and frame.captured_ms >= self.close_at_ms:
                self._finish()
            elif elapsed >= self.max_ms:
                self._finish()  # the events go on: the next frame begins the next clip
        return written

    def tick(self) -> None:
        """On the camera's thread when the clock moves: events gone silent, and a clip past its end that no
        frame comes to close (the camera stopped): closed once frames stop for FRAME_WAIT_S."""
        now = time.monotonic()
        silent = now - EVENT_SILENCE_S
        for event_id in [key for key, open_event in self.events.items() if open_event.heard < silent]:
            self.w.logger.warning("camera %s: event %s had no end; taken as ended", self.w.camera, event_id)
            del self.events[event_id]
            if not self.events and self.clip is not None:
                self.close_at_ms = self.clip.last_ms
        waited = now - self.frame_arrived > FRAME_WAIT_S
        if self.close_at_ms is not None and waited and time.time() * 1000 > self.close_at_ms:
            if self.clip is not None:
                self._finish()
            self.close_at_ms = None

    def stop(self) -> None:
        if self.clip is not None:
            self._finish()

    def _open(self) -> bool:
        """A clip from the ring's frames since RECORD_PRE_S before the earliest open event."""
        first_ms = min(event.started_ms for event in self.events.values()) - self.pre_ms
        frames = self.ring.since(max(first_ms, self.written_until_ms + 1))
        if not frames or not self.w.may_open():
            return True  # no frame yet: the next one opens the clip
        self.clip_id = f"{self.w.camera}-{frames[0].captured_ms}"
        try:
            relative = clip_path(self.w.camera, self.clip_id, frames[0].captured_ms)
            self.clip = Recording(self.w.disk, relative, frames[0])
        except WRITE_ERRORS as error:
            self.w.disk_failed(f"clip {self.clip_id}", error)
            return True
        self.clip.event_ids = list(self.events)
        self.w.counters.count("clips")
        self.w.counters.set_recording(True)
        written = True
        for frame in frames:
            if self.clip is None:
                break  # the disk failed: the clip was closed with what it had
            written = self._write(frame)
        self._announce("recording")
        return written

    def _write(self, frame: Frame) -> bool:
        clip = self.clip
        assert clip is not None
        try:
            written = self.w.write(clip, frame)
        except WRITE_ERRORS as error:
            self.w.disk_failed(f"clip {self.clip_id}", error)
            clip.abandon()
            self._done()
            return True
        if written:
            self.w.counters.count("frames_written")
            self.written_until_ms = frame.captured_ms
        return written

    def _finish(self) -> None:
        clip = self.clip
        assert clip is not None
        try:
            clip.finish()
        except WRITE_ERRORS as error:
            self.w.disk_failed(f"clip {self.clip_id}", error)
        self._done()

    def _done(self) -> None:
        self._announce("done")
        self.clip = None
        self.close_at_ms = None
        self.w.counters.set_recording(False)

    def _announce(self, state: str) -> None:
        if self.clip is not None:
            self.announce(self.clip.info(self.w.camera, self.clip_id, state))


class Segments:
    """Continuous recording: every frame, in files of RECORD_SEGMENT_S seconds (a new one when the size of
    the frames changes)."""

    def __init__(self, writing: Writing) -> None:
        self.w = writing
        self.segment_ms = round(writing.settings.record_segment_s * 1000)
        self.segment: Recording | None = None

    def on_frame(self, frame: Frame) -> bool:
        segment = self.segment
        if segment is not None:
            first = segment.writer.first_ms or frame.captured_ms
            if frame.size != segment.size or frame.captured_ms - first >= self.segment_ms:
                self.stop()
        if self.segment is None:
            if not self.w.may_open():
                return True
            relative = segment_path(self.w.disk.root, self.w.camera, frame.captured_ms)
            try:
                self.segment = Recording(self.w.disk, relative, frame)
            except WRITE_ERRORS as error:
                self.w.disk_failed(f"segment {relative}", error)
                return True
            self.w.counters.count("segments")
        try:
            return self.w.write(self.segment, frame)
        except WRITE_ERRORS as error:
            self.w.disk_failed(f"segment {self.segment.relative}", error)
            self.segment.abandon()
            self.segment = None
            return True

    def stop(self) -> None:
        if self.segment is None:
            return
        try:
            self.segment.finish()
        except WRITE_ERRORS as error:
            self.w.disk_failed(f"segment {self.segment.relative}", error)
        self.segment = None
