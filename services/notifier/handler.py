"""The policy engine: detection events in, alert emails and deterrent commands out, arming owned here."""

from __future__ import annotations

import logging
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.mqtt import MqttClient, RateLimitedLog, Redeliver, Route
from services.common.service import Presence, ServiceHandler, StartupError
from services.notifier.const import (
    ARMED_SETTLE_S,
    BAD_INPUT_LOG_INTERVAL_S,
    CLIENT_ID,
    OUTBOX_FILE,
    PERSON,
    SERVICE,
    SESSION_EXPIRY_S,
)
from services.notifier.outbox import Outbox
from services.notifier.sender import Sender
from services.notifier.settings import NotifierSettings, QuietRange

ARMED_KEY = "armed"


def in_quiet_hours(ranges: list[QuietRange], moment: datetime) -> bool:
    now = moment.time()
    for start, end in ranges:
        inside = start <= now < end if start < end else now >= start or now < end
        if inside:
            return True
    return False


def parse_event(message: mqtt.MQTTMessage) -> tuple[schemas.DetectionEvent, bytes | None]:
    """The event and its snapshot JPEG, or BadPayload."""
    event = schemas.DetectionEvent.parse_on(message.topic, bytes(message.payload))
    snapshot = event.snapshot_jpeg()
    if snapshot is not None and not schemas.looks_like_jpeg(snapshot):
        raise schemas.BadPayload("snapshot is not a JPEG")
    return event, snapshot


def open_outbox(data_dir: Path) -> Outbox:
    """The outbox in ``data_dir``, made if needed; StartupError when the directory cannot hold it."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return Outbox(data_dir / OUTBOX_FILE)
    except (OSError, sqlite3.Error) as error:
        raise StartupError("NOTIFY_DATA_DIR", str(error), data_dir) from error


@contextmanager
def redeliver_unless_stored(what: str) -> Iterator[None]:
    """An outbox write that failed (locked, disk full) leaves the message unacknowledged: the broker sends
    it again, instead of it being acknowledged and lost."""
    try:
        yield
    except (sqlite3.Error, OSError) as error:
        raise Redeliver(f"{what}: {error}") from error


class Notifier(ServiceHandler[NotifierSettings]):
    """The event and arming handlers run on paho's network thread and store each message in the outbox
    before it is acknowledged. A sender thread (only with email on) drains the outbox, and a short-lived
    thread arms by default once connected when no state is known. The main thread only waits for the stop.
    """

    service = SERVICE

    @classmethod
    def presence(cls, settings: NotifierSettings) -> Presence:
        return Presence(CLIENT_ID, topics.service_status(SERVICE), persistent_session_s=SESSION_EXPIRY_S)

    def __init__(self, settings: NotifierSettings, client: MqttClient, logger: logging.Logger) -> None:
        super().__init__(settings, client, logger)
        self._outbox = open_outbox(settings.notify_data_dir)
        self._stop = threading.Event()
        # None: email is off (alerts left pending by an earlier run stay for a run with email).
        self._sender = self._make_sender() if settings.email_enabled else None
        self._quiet_hours = settings.quiet_hours
        self._bad_log = RateLimitedLog(logger, BAD_INPUT_LOG_INTERVAL_S)
        self.bad_input = 0
        stored = self._outbox.get_state(ARMED_KEY)
        # None until known: the outbox remembers it; on a fresh data dir the retained state decides.
        self._armed: bool | None = None if stored is None else stored == topics.ON
        self._arming_lock = threading.Lock()
        self._last_alert = self._outbox.last_alert_times()
        self._threads: list[threading.Thread] = []

    def _make_sender(self) -> Sender:
        try:
            return Sender(self.settings, self._outbox, self.logger, self._stop)
        except ssl.SSLError as error:
            ca_file = self.settings.smtp_ca_file
            raise StartupError("SMTP_CA_FILE", f"not a CA certificate: {error}", ca_file) from error

    def routes(self) -> Mapping[str, Route]:
        events = {
            topics.all_events(label): Route(self._on_event, qos=1) for label in self.settings.notify_objects
        }
        return {
            **events,
            topics.ARMED_SET: Route(self._on_armed_set, qos=1),
            topics.ARMED_STATE: Route(self._on_armed_state, qos=1),
        }

    def start(self) -> None:
        if self._sender is None:
            self.logger.warning("email is off: SMTP_HOST is not set (see docs/notifier.md to set it up)")
        pruned = self._outbox.prune(time.time())
        if pruned:
            self.logger.info("removed %d old alerts from the outbox", pruned)
        self._run_thread(self._default_arming, "default-arming")
        if self._sender is not None:
            self._run_thread(self._sender.run, "sender")
        pending = self._outbox.counts().get("pending", 0)
        self.logger.info(
            "watching %s; email %s; %d unsent alerts in the outbox",
            ", ".join(self.settings.notify_objects),
            f"to {len(self.settings.email_to)} recipients" if self._sender else "off",
            pending,
        )

    def _run_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._sender is not None:
            self._sender.wake()
        for thread in self._threads:
            thread.join(timeout=self.settings.smtp_timeout + 5)

    def close(self) -> None:
        self._outbox.close()

    # ---- arming

    def on_connect(self) -> None:
        """On every (re)connect, before ``online``: a broker that lost its retained messages learns the
        state again, and whoever reacts to ``online`` finds it."""
        with self._arming_lock:
            if self._armed is not None:
                self._publish_armed(self._armed)

    def _default_arming(self) -> None:
        """Armed by default when neither our outbox nor the broker knew the state."""
        while not self.client.connected.wait(0.5):
            if self._stop.is_set():
                return
        # The retained state arrives right after our subscription; give it a moment to do so.
        if self._stop.wait(ARMED_SETTLE_S):
            return
        with self._arming_lock:
            if self._armed is None:
                self.logger.info("no arming state stored or retained: armed (the default)")
                try:
                    self._set_armed(True)
                except (sqlite3.Error, OSError) as error:
                    # Still unknown, and an unknown state is handled as armed; the next start tries again.
                    self.logger.error("could not store the default arming state: %s", error)

    def _armed_of(self, message: mqtt.MQTTMessage) -> bool | None:
        """The ON/OFF of an arming message; None (counted and logged) when it is neither."""
        try:
            return schemas.parse_on_off(bytes(message.payload))
        except schemas.BadPayload as error:
            self._bad_input(message.topic, str(error))
            return None

    def _on_armed_set(self, message: mqtt.MQTTMessage) -> None:
        if (armed := self._armed_of(message)) is None:
            return
        with self._arming_lock, redeliver_unless_stored("arming state"):
            self._set_armed(armed)
        self.logger.info("%s", "armed" if armed else "disarmed: no alerts and no deterrent until re-armed")

    def _on_armed_state(self, message: mqtt.MQTTMessage) -> None:
        """Only used to restore the state when our own data dir does not have it; we own the topic."""
        if (armed := self._armed_of(message)) is None:
            return
        with self._arming_lock, redeliver_unless_stored("arming state"):
            if self._armed is None:
                self._set_armed(armed)
                self.logger.info("restored arming state from the broker: %s", schemas.on_off(armed))

    def _set_armed(self, armed: bool) -> None:
        """Stored first: a state that could not be stored is not taken (the caller decides what then)."""
        self._outbox.set_state(ARMED_KEY, schemas.on_off(armed))
        self._armed = armed
        self._publish_armed(armed)

    def _publish_armed(self, armed: bool) -> None:
        self.client.publish(topics.ARMED_STATE, schemas.on_off(armed), qos=1, retain=True)

    # ---- events

    def _bad_input(self, topic: str, error: str) -> None:
        self.bad_input += 1
        self._bad_log.report(topic, f"ignored a bad message on {topic} ({self.bad_input} so far): {error}")

    def _on_event(self, message: mqtt.MQTTMessage) -> None:
        try:
            event, snapshot = parse_event(message)
        except schemas.BadPayload as error:
            self._bad_input(message.topic, str(error))
            return
        if event.type != "start":
            return
        armed = self._armed is not False
        reason = self._reason_not_to_email(event) if armed else "disarmed"
        # Acknowledged only once the row is committed: an event the outbox could not take comes again.
        with redeliver_unless_stored(f"event {event.event_id}"):
            stored = self._outbox.record(
                event_id=event.event_id,
                camera=event.camera,
                label=event.label,
                score=event.top_score,
                started_at=event.started_at,
                snapshot=snapshot,
                status="suppressed" if reason else "pending",
                reason=reason,
                now=time.time(),
            )
        if not stored:
            self.logger.info("event %s was delivered again; already handled", event.event_id)
            return
        if reason:
            self.logger.info(
                "%s on %s (%s): recorded, not emailed: %s", event.label, event.camera, event.event_id, reason
            )
        else:
            self._last_alert[event.camera] = event.started_at
            self.logger.info("%s on %s (%s): alert queued", event.label, event.camera, event.event_id)
            if self._sender is not None:
                self._sender.wake()
        if armed and event.label == PERSON and self.settings.deterrent_for(event.camera):
            self._sound_deterrent(event.camera)

    def _reason_not_to_email(self, event: schemas.DetectionEvent) -> str | None:
        if self._sender is None:
            return "email is off"
        if in_quiet_hours(self._quiet_hours, datetime.fromtimestamp(event.started_at)):
            return "quiet hours"
        last = self._last_alert.get(event.camera)
        # Event time, not arrival time: events queued while we were away are judged by when they happened.
        if last is not None and abs(event.started_at - last) < self.settings.notify_cooldown:
            return f"cooldown ({self.settings.notify_cooldown:g} s)"
        return None

    def _sound_deterrent(self, camera: str) -> None:
        command = schemas.AlarmCommand(state="ON", duration=self.settings.deterrent_duration)
        self.client.publish(topics.alarm_set(camera), command.to_json(), qos=1)
        self.logger.info("deterrent: %s sounds for %g s", camera, self.settings.deterrent_duration)
