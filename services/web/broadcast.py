"""Server-Sent Event fan-out from the MQTT side to every open page."""

from __future__ import annotations

import contextlib
import queue
import threading

from services.web.const import SSE_QUEUE_LENGTH

# What an open page is told: its kind ("camera", "event", ...) and its data. The data is turned into JSON
# by the page's own stream, in its request, because only a request can build the URLs an event shows.
Message = tuple[str, object]


class Broadcaster:
    """One bounded queue per open page; a page that stops reading loses the oldest messages, never
    blocks the MQTT thread."""

    def __init__(self) -> None:
        self._queues: set[queue.Queue[Message]] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> queue.Queue[Message]:
        listener: queue.Queue[Message] = queue.Queue(SSE_QUEUE_LENGTH)
        with self._lock:
            self._queues.add(listener)
        return listener

    def unsubscribe(self, listener: queue.Queue[Message]) -> None:
        with self._lock:
            self._queues.discard(listener)

    def send(self, kind: str, data: object) -> None:
        message = (kind, data)
        with self._lock:
            listeners = list(self._queues)
        for listener in listeners:
            while True:
                try:
                    listener.put_nowait(message)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        listener.get_nowait()
