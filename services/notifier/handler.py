"""The policy engine: detection events in, alert emails and deterrent commands out, arming owned here."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.mqtt import MqttClient, RateLimitedLog
from services.notifier.const import (
    ARMED_SETTLE_S,
    BAD_INPUT_LOG_INTERVAL_S,
    CLIENT_ID,
    PERSON,
    SERVICE,
    SESSION_EXPIRY_S,
)
from services.notifier.mailer import Mailer, SendError
from services.notifier.outbox import Alert, Outbox
from services.notifier.settings import NotifierSettings, QuietRange

ARMED_KEY = "armed"


def in_quiet_hours(ranges: list[QuietRange], moment: datetime) -> bool:
    now = moment.time()
    for start, end in ranges:
        inside = start <= now < end if start < end else now >= start or now < end
        if inside:
            return True
    return False


def retry_delay(attempts: int, minimum: float, maximum: float) -> float:
    """Exponential backoff: minimum, 2x, 4x ... capped at maximum (``attempts`` failures so far, >= 1)."""
    return float(min(maximum, minimum * 2 ** min(attempts - 1, 30)))


def parse_event(message: mqtt.MQTTMessage) -> tuple[schemas.DetectionEvent, bytes | None]:
    """The event and its snapshot JPEG, or BadPayload."""
    event = schemas.DetectionEvent.parse_on(message.topic, bytes(message.payload))
    snapshot = event.snapshot_jpeg()
    if snapshot is not None and not schemas.looks_like_jpeg(snapshot):
        raise schemas.BadPayload("snapshot is not a JPEG")
    return event, snapshot


class Notifier:
    """Runs on two threads: paho's network thread for MQTT, and a sender thread that drains the outbox."""

    def __init__(self, settings: NotifierSettings, outbox: Outbox, logger: logging.Logger) -> None:
        self._settings = settings
        self._outbox = outbox
        self._logger = logger
        self._mailer = Mailer(settings) if settings.email_enabled else None
        self._quiet_hours = settings.quiet_hours
        self._bad_log = RateLimitedLog(logger, BAD_INPUT_LOG_INTERVAL_S)
        self.bad_input = 0
        stored = outbox.get_state(ARMED_KEY)
        # None until known: the outbox remembers it; on a fresh data dir the retained state decides.
        self._armed: bool | None = None if stored is None else stored == topics.ON
        self._arming_lock = threading.Lock()
        self._last_alert = outbox.last_alert_times()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.mqtt = MqttClient(
            settings,
            client_id=CLIENT_ID,
            status_topic=topics.service_status(SERVICE),
            logger=logger,
            persistent_session_s=SESSION_EXPIRY_S,
            on_connect=self._republish_arming,
        )

    def start(self) -> None:
        pruned = self._outbox.prune(time.time())
        if pruned:
            self._logger.info("removed %d old alerts from the outbox", pruned)
        for label in self._settings.notify_objects:
            self.mqtt.subscribe(topics.all_events(label), self._on_event, qos=1)
        self.mqtt.subscribe(topics.ARMED_SET, self._on_armed_set, qos=1)
        self.mqtt.subscribe(topics.ARMED_STATE, self._on_armed_state, qos=1)
        self.mqtt.start()
        # Without email there is nothing to send (alerts left pending by an earlier run stay for later).
        targets = [self._default_arming] + ([self._send_loop] if self._mailer else [])
        for target in targets:
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)
        pending = self._outbox.counts().get("pending", 0)
        self._logger.info(
            "watching %s; email %s; %d unsent alerts in the outbox",
            ", ".join(self._settings.notify_objects),
            f"to {len(self._settings.email_to)} recipients" if self._mailer else "off",
            pending,
        )

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=self._settings.smtp_timeout + 5)
        self.mqtt.stop()

    # ---- arming

    def _republish_arming(self) -> None:
        """On every (re)connect, before ``online``: a broker that lost its retained messages learns the
        state again, and whoever reacts to ``online`` finds it."""
        with self._arming_lock:
            if self._armed is not None:
                self._set_armed(self._armed)

    def _default_arming(self) -> None:
        """Armed by default when neither our outbox nor the broker knew the state."""
        while not self.mqtt.connected.wait(0.5):
            if self._stop.is_set():
                return
        # The retained state arrives right after our subscription; give it a moment to do so.
        if self._stop.wait(ARMED_SETTLE_S):
            return
        with self._arming_lock:
            if self._armed is None:
                self._logger.info("no arming state stored or retained: armed (the default)")
                self._set_armed(True)

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
        with self._arming_lock:
            self._set_armed(armed)
        self._logger.info("%s", "armed" if armed else "disarmed: no alerts and no deterrent until re-armed")

    def _on_armed_state(self, message: mqtt.MQTTMessage) -> None:
        """Only used to restore the state when our own data dir does not have it; we own the topic."""
        if (armed := self._armed_of(message)) is None:
            return
        with self._arming_lock:
            if self._armed is None:
                self._logger.info("restored arming state from the broker: %s", schemas.on_off(armed))
                self._set_armed(armed)

    def _set_armed(self, armed: bool) -> None:
        self._armed = armed
        self._outbox.set_state(ARMED_KEY, schemas.on_off(armed))
        self.mqtt.publish(topics.ARMED_STATE, schemas.on_off(armed), qos=1, retain=True)

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
            self._logger.info("event %s was delivered again; already handled", event.event_id)
            return
        if reason:
            self._logger.info(
                "%s on %s (%s): recorded, not emailed: %s", event.label, event.camera, event.event_id, reason
            )
        else:
            self._last_alert[event.camera] = event.started_at
            self._logger.info("%s on %s (%s): alert queued", event.label, event.camera, event.event_id)
            self._wake.set()
        if armed and event.label == PERSON and self._settings.deterrent_for(event.camera):
            self._sound_deterrent(event.camera)

    def _reason_not_to_email(self, event: schemas.DetectionEvent) -> str | None:
        if self._mailer is None:
            return "email is off"
        if in_quiet_hours(self._quiet_hours, datetime.fromtimestamp(event.started_at)):
            return "quiet hours"
        last = self._last_alert.get(event.camera)
        # Event time, not arrival time: events queued while we were away are judged by when they happened.
        if last is not None and abs(event.started_at - last) < self._settings.notify_cooldown:
            return f"cooldown ({self._settings.notify_cooldown:g} s)"
        return None

    def _sound_deterrent(self, camera: str) -> None:
        command = schemas.AlarmCommand(state="ON", duration=self._settings.deterrent_duration)
        self.mqtt.publish(topics.alarm_set(camera), command.to_json(), qos=1)
        self._logger.info("deterrent: %s sounds for %g s", camera, self._settings.deterrent_duration)

    # ---- sending

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            for alert in self._outbox.due(time.time()):
                if self._stop.is_set():
                    return
                self._deliver(alert)
            next_at = self._outbox.next_attempt_at()
            self._wake.wait(None if next_at is None else max(0.0, next_at - time.time()))

    def _deliver(self, alert: Alert) -> None:
        assert self._mailer is not None
        age = time.time() - alert.started_at
        if age > self._settings.notify_max_age:
            self._outbox.give_up(alert.id, f"older than NOTIFY_MAX_AGE; last error: {alert.reason}")
            self._logger.error(
                "gave up the alert for %s on %s (%s) after %d attempts: %.0f s old, over NOTIFY_MAX_AGE=%g s;"
                " last error: %s",
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
            refused = self._mailer.send(alert)
        except SendError as error:
            self._retry_later(alert, str(error))
            return
        except Exception:
            # A bug must not stop the sender thread or lose the alert; it stays pending.
            self._logger.exception("unexpected failure sending alert %s", alert.event_id)
            self._retry_later(alert, "unexpected error")
            return
        self._outbox.mark_sent(alert.id, time.time())
        if refused:
            self._logger.error("alert %s: the server refused recipients %s", alert.event_id, sorted(refused))
        self._logger.info(
            "alert %s emailed (%s on %s, attempt %d)",
            alert.event_id,
            alert.label,
            alert.camera,
            alert.attempts + 1,
        )

    def _retry_later(self, alert: Alert, error: str) -> None:
        attempts = alert.attempts + 1
        delay = retry_delay(attempts, self._settings.notify_retry_min, self._settings.notify_retry_max)
        self._outbox.retry_later(alert.id, time.time() + delay, error)
        self._logger.warning(
            "sending alert %s failed (attempt %d): %s; retrying in %.1f s",
            alert.event_id,
            attempts,
            error,
            delay,
        )
