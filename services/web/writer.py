"""Events are stored by a thread of their own and acknowledged to the broker only once stored.

The thread keeps fsyncs on a slow SD card from delaying the frames that share paho's network thread. An
event the store could not take (a locked database, a full disk) is not acknowledged: the broker keeps it in
the relay's session and sends it again, and the store takes a repeated event as the same row.

The recorder's clip announcements are stored by the same thread, and acknowledged the same way.

A label's state going OFF closes that label's open events through the same queue, so that it is applied
after every event message that came before it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from services.common import schemas, topics
from services.common.acks import PendingAck
from services.common.database import STORE_ERRORS
from services.web.event_model import StoredEvent
from services.web.events import EventStore


@dataclass(frozen=True)
class ReceivedEvent:
    event: schemas.DetectionEvent
    ack: PendingAck


@dataclass(frozen=True)
class ReceivedClip:
    clip: schemas.ClipInfo
    ack: PendingAck


@dataclass(frozen=True)
class LabelOff:
    """``cam/<camera>/<label>/state`` said OFF: no event of that label is open."""

    camera: str
    label: str
    ack: PendingAck


class EventWriter:
    def __init__(
        self,
        store: EventStore,
        logger: logging.Logger,
        on_stored: Callable[[StoredEvent], None],
        on_bad: Callable[[str, str], None],
    ) -> None:
        self._store = store
        self._logger = logger
        self._on_stored = on_stored
        self._on_bad = on_bad
        # None asks the thread to finish.
        self._queue: queue.Queue[ReceivedEvent | ReceivedClip | LabelOff | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)

    def put(self, event: schemas.DetectionEvent, ack: PendingAck) -> None:
        self._queue.put(ReceivedEvent(event, ack))

    def put_clip(self, clip: schemas.ClipInfo, ack: PendingAck) -> None:
        self._queue.put(ReceivedClip(clip, ack))

    def label_off(self, camera: str, label: str, ack: PendingAck) -> None:
        self._queue.put(LabelOff(camera, label, ack))

    def start(self) -> None:
        self._thread.start()

    def drain(self) -> None:
        """Write every event already received, then end the thread. Called once the client has stopped,
        so that nothing more comes; the acknowledgements then reach no broker, and the broker sends those
        events again at the next start, which the store takes as the same rows."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (received := self._queue.get()) is not None:
            if isinstance(received, LabelOff):
                self._close(received)
            elif isinstance(received, ReceivedClip):
                self._write_clip(received)
            else:
                self._write(received)

    def _close(self, off: LabelOff) -> None:
        try:
            closed = self._store.close_label(off.camera, off.label)
        except STORE_ERRORS as error:
            off.ack.failed(f"closing {off.camera}/{off.label}: {error}")
            return
        except Exception:
            self._logger.exception("could not close the events of %s/%s", off.camera, off.label)
        else:
            for event in closed:
                self._on_stored(event)
        off.ack.done()

    def _write(self, received: ReceivedEvent) -> None:
        event = received.event
        topic = topics.event(event.camera, event.label)
        try:
            stored = self._store.record(event, refused=lambda why: self._on_bad(topic, why))
        except STORE_ERRORS as error:
            received.ack.failed(f"event {event.event_id}: {error}")
            return
        except schemas.BadPayload as error:
            self._on_bad(topic, str(error))
        except Exception:
            # A bug must neither end the writer nor bring the same event back forever.
            self._logger.exception("could not record event %s", event.event_id)
        else:
            self._on_stored(stored)
        received.ack.done()

    def _write_clip(self, received: ReceivedClip) -> None:
        clip = received.clip
        try:
            event_ids = self._store.clips.record(clip)
            # Open pages show the clip on its events that are here already (the others get it when they come).
            linked = [event for event_id in event_ids if (event := self._store.get(event_id)) is not None]
        except STORE_ERRORS as error:
            received.ack.failed(f"clip {clip.clip_id}: {error}")
            return
        except Exception:
            self._logger.exception("could not record clip %s", clip.clip_id)
        else:
            for event in linked:
                self._on_stored(event)
        received.ack.done()
