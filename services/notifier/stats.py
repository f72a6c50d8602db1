"""``sentrycam/notifier/stats``: each channel's queue (pending, failed, sent, the last send and the last
error), retained, so that the web relay's system page shows it. Channels are named as in the log (``email``,
``push 2 (tgram)``), never by their URL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.common import schemas, topics
from services.common.database import STORE_ERRORS
from services.common.mqtt import MqttClient
from services.notifier.const import STATS_CHECK_S
from services.notifier.outbox import Outbox

# Errors are shortened to what the schema takes; push errors are scrubbed of their URL already (push.py).
_ERROR_CHARS = schemas.MAX_TEXT_CHARS


def short(text: str | None) -> str | None:
    if text is None or len(text) <= _ERROR_CHARS:
        return text
    return text[: _ERROR_CHARS - 1] + "…"


class StatsPublisher:
    """Reads the outbox every STATS_CHECK_S on its own thread (``run``) and publishes the figures when they
    changed; ``publish`` sends them whatever they are (on every connect)."""

    def __init__(
        self,
        outbox: Outbox,
        client: MqttClient,
        names: dict[str, str],
        bad_input: Callable[[], int],
        logger: logging.Logger,
    ) -> None:
        self._outbox = outbox
        self._client = client
        self._names = names  # outbox channel key -> the name said
        self._bad_input = bad_input
        self._logger = logger
        self._lock = threading.Lock()
        self._last: schemas.NotifierStats | None = None

    def figures(self) -> schemas.NotifierStats:
        known = self._outbox.channel_figures()
        channels = []
        for key, name in self._names.items():
            pending, failed, sent, last_sent_at, error = known.get(key, (0, 0, 0, None, None))
            channels.append(
                schemas.NotifierChannelStats(
                    channel=name,
                    pending=pending,
                    failed=failed,
                    sent=sent,
                    last_sent_at=last_sent_at,
                    last_error=short(error),
                )
            )
        return schemas.NotifierStats(published_at=time.time(), channels=channels, bad_input=self._bad_input())

    def publish(self, *, only_changed: bool = False) -> None:
        try:
            stats = self.figures()
        except STORE_ERRORS as error:
            self._logger.warning("stats not published this time: %s", error)
            return
        with self._lock:
            if only_changed and self._last is not None and _same(stats, self._last):
                return
            self._last = stats
        self._client.publish(topics.NOTIFIER_STATS, stats.to_json(), qos=1, retain=True)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(STATS_CHECK_S):
            if self._client.connected.is_set():
                self.publish(only_changed=True)


def _same(one: schemas.NotifierStats, other: schemas.NotifierStats) -> bool:
    return one.model_copy(update={"published_at": 0.0}) == other.model_copy(update={"published_at": 0.0})
