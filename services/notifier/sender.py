"""A sender thread per channel (email, each push URL): sends that channel's pending alerts from the outbox,
retrying with backoff, giving up old ones. Channels never wait for each other."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from services.common.database import STORE_ERRORS
from services.notifier.const import EMAIL_CHANNEL, OUTBOX_RETRY_S
from services.notifier.mailer import Mailer, SendError
from services.notifier.outbox import Alert, Outbox
from services.notifier.settings import NotifierSettings


def retry_delay(attempts: int, minimum: float, maximum: float) -> float:
    """Exponential backoff: minimum, 2x, 4x ... capped at maximum (``attempts`` failures so far, >= 1)."""
    return float(min(maximum, minimum * 2 ** min(attempts - 1, 30)))


class Transport(Protocol):
    """One channel's way out: ``send`` raises SendError when the alert was not accepted."""

    key: str  # the outbox's channel
    to: str  # in log lines after "sending alert <id>": "" for email, " to push 1 (ntfy)"
    done: str  # "emailed", "sent to push 1 (ntfy)"

    def send(self, alert: Alert) -> None: ...


class EmailTransport:
    key = EMAIL_CHANNEL
    to = ""
    done = "emailed"

    def __init__(self, settings: NotifierSettings, logger: logging.Logger) -> None:
        self._mailer = Mailer(settings)
        self._logger = logger

    def send(self, alert: Alert) -> None:
        refused = self._mailer.send(alert)
        if refused:
            self._logger.error("alert %s: the server refused recipients %s", alert.event_id, sorted(refused))


class Sender:
    """Drains one channel's rows of the outbox on its own thread (``run``) until ``stop`` is set; ``wake``
    says an alert is new."""

    def __init__(
        self,
        settings: NotifierSettings,
        outbox: Outbox,
        transport: Transport,
        logger: logging.Logger,
        stop: threading.Event,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._transport = transport
        self._logger = logger
        self._stop = stop
        self._wake = threading.Event()
        # Alerts the SMTP server accepted that the outbox could not mark sent yet (a full disk): alert id ->
        # (event id, when). Marked before anything else is sent, and never emailed again meanwhile.
        self._unmarked: dict[int, tuple[str, float]] = {}

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._send_due()
                next_at = self._outbox.next_attempt_at(self._transport.key)
            except STORE_ERRORS as error:
                # The alerts stay pending in the outbox; the sender must live on to send them later.
                self._logger.error("outbox failed: %s; sending again in %g s", error, OUTBOX_RETRY_S)
                next_at = time.time() + OUTBOX_RETRY_S
            self._wake.wait(None if next_at is None else max(0.0, next_at - time.time()))

    def _send_due(self) -> None:
        for alert_id, (event_id, sent_at) in list(self._unmarked.items()):
            self._outbox.mark_sent(alert_id, sent_at)  # still failing: the run loop tries again later
            del self._unmarked[alert_id]
            self._logger.info("alert %s recorded as %s", event_id, self._transport.done)
        for alert in self._outbox.due(self._transport.key, time.time()):
            if self._stop.is_set():
                return
            self._deliver(alert)

    def _deliver(self, alert: Alert) -> None:
        age = time.time() - alert.started_at
        if age > self._settings.notify_max_age:
            self._outbox.give_up(alert.id, f"older than NOTIFY_MAX_AGE; last error: {alert.reason}")
            self._logger.error(
                "gave up the alert%s for %s on %s (%s) after %d attempts: %.0f s old, over"
                " NOTIFY_MAX_AGE=%g s; last error: %s",
                self._transport.to,
                alert.label,
                alert.camera,
                alert.event_id,
                alert.attempts,
                age,
                self._settings.notify_max_age,
                alert.reason,
            )
            return
        try:
            self._transport.send(alert)
        except SendError as error:
            self._retry_later(alert, str(error))
            return
        except Exception:
            # A bug must not stop the sender thread or lose the alert; it stays pending.
            self._logger.exception(
                "unexpected failure sending alert %s%s", alert.event_id, self._transport.to
            )
            self._retry_later(alert, "unexpected error")
            return
        sent_at = time.time()
        try:
            self._outbox.mark_sent(alert.id, sent_at)
        except STORE_ERRORS:
            # Still pending in the outbox, but emailed: remembered, so that it is marked later, not resent.
            self._unmarked[alert.id] = (alert.event_id, sent_at)
            self._logger.error(
                "alert %s %s, but the outbox could not record that yet", alert.event_id, self._transport.done
            )
            raise
        self._logger.info(
            "alert %s %s (%s on %s, attempt %d)",
            alert.event_id,
            self._transport.done,
            alert.label,
            alert.camera,
            alert.attempts + 1,
        )

    def _retry_later(self, alert: Alert, error: str) -> None:
        attempts = alert.attempts + 1
        delay = retry_delay(attempts, self._settings.notify_retry_min, self._settings.notify_retry_max)
        self._outbox.retry_later(alert.id, time.time() + delay, error)
        self._logger.warning(
            "sending alert %s%s failed (attempt %d): %s; retrying in %.1f s",
            alert.event_id,
            self._transport.to,
            attempts,
            error,
            delay,
        )
