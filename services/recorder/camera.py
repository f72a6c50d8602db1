"""``CameraWorker``: one camera's thread. The network thread only queues frames and events here, in their
order; this thread keeps the ring, writes the files, and acknowledges each event once its clip is begun or
marked for closing."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from services.common.acks import PendingAck
from services.common.schemas import DetectionEvent
from services.recorder.clips import Announce, EventClips, Segments, Writing
from services.recorder.const import INBOX_MAX_FRAMES, RING_MAX_BYTES, RING_SLACK_S, TICK_S
from services.recorder.ring import Frame, Ring


@dataclass(frozen=True)
class EventItem:
    event: DetectionEvent
    pending: PendingAck | None


class CameraWorker:
    """A camera's ring, event clips and continuous segments, on a thread of their own."""

    def __init__(self, writing: Writing, announce: Announce) -> None:
        self.writing = writing
        settings = writing.settings
        self.ring = Ring(round((settings.record_pre_s + RING_SLACK_S) * 1000), RING_MAX_BYTES)
        self.clips = EventClips(writing, self.ring, announce)
        self.segments = Segments(writing) if settings.record_continuous else None
        self._inbox: deque[Frame | EventItem] = deque()
        self._frames_queued = 0
        self._ready = threading.Condition()
        self._stopping = False
        self._last_input = time.monotonic()  # written by the network thread
        self._thread = threading.Thread(target=self._run, name=f"record-{writing.camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put_frame(self, frame: Frame) -> bool:
        """Queue a frame; False (dropped) when the thread is that far behind."""
        self._last_input = time.monotonic()
        with self._ready:
            if self._frames_queued >= INBOX_MAX_FRAMES:
                return False
            self._frames_queued += 1
            self._inbox.append(frame)
            self._ready.notify()
        return True

    def put_event(self, event: DetectionEvent, pending: PendingAck | None) -> None:
        """Events are never dropped: there are few, and each is acknowledged only once handled."""
        self._last_input = time.monotonic()
        with self._ready:
            self._inbox.append(EventItem(event, pending))
            self._ready.notify()

    def idle(self, idle_s: float) -> bool:
        """Nothing came for ``idle_s`` seconds and no clip is open (its events ended or went silent)."""
        quiet = time.monotonic() - self._last_input > idle_s
        return quiet and not self.clips.events and self.clips.clip is None

    def stop(self) -> None:
        """Handle what is queued, finish the open files, and end the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join()

    def _next(self) -> Frame | EventItem | None:
        with self._ready:
            if not self._inbox and not self._stopping:
                self._ready.wait(TICK_S)
            if not self._inbox:
                return None
            item = self._inbox.popleft()
            if isinstance(item, Frame):
                self._frames_queued -= 1
            return item

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None and self._stopping:
                break
            try:
                self._handle(item)
            except Exception:  # a bug: logged, and the thread goes on with the next frame
                self.writing.logger.exception("camera %s: recording failed", self.writing.camera)
        self.clips.stop()
        if self.segments is not None:
            self.segments.stop()

    def _handle(self, item: Frame | EventItem | None) -> None:
        if isinstance(item, Frame):
            self._frame(item)
        elif isinstance(item, EventItem):
            try:
                self.clips.on_event(item.event)
            finally:
                if item.pending is not None:
                    item.pending.done()
        self.clips.tick()

    def _frame(self, frame: Frame) -> None:
        self.ring.add(frame)
        usable = self.clips.on_frame(frame)
        if self.segments is not None:
            usable = self.segments.on_frame(frame) and usable
        if not usable:
            self.writing.counters.count("frames_bad")
