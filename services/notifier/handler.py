"""The policy engine: detection events in, alert emails and deterrent commands out, arming owned here."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime

import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.jpeg import check_snapshot
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route
from services.common.service import Presence, ServiceHandler, StartupError
from services.notifier.arming import Arming
from services.notifier.const import (
    BAD_INPUT_LOG_INTERVAL_S,
    CLIENT_ID,
    PERSON,
    PUSH_SEND_MAX_S,
    SERVICE,
    SESSION_EXPIRY_S,
)
from services.notifier.decision import Decision, EventWatch
from services.notifier.outbox import open_outbox, redelivered_unless_stored
from services.notifier.push import Pusher, push_channels
from services.notifier.rules import RulesError, in_schedule, load_rules
from services.notifier.sender import EmailTransport, Sender, Transport
from services.notifier.settings import NotifierSettings, QuietRange
from services.notifier.stats import StatsPublisher


def in_quiet_hours(ranges: list[QuietRange], moment: datetime) -> bool:
    now = moment.time()
    for start, end in ranges:
        inside = start <= now < end if start < end else now >= start or now < end
        if inside:
            return True
    return False


def checked_snapshot(event: schemas.DetectionEvent) -> bytes | None:
    """The event's snapshot JPEG, checked as the web relay checks it (size, and the pixels its header
    claims) before anything keeps it; BadPayload when it is refused."""
    snapshot = event.snapshot_jpeg()
    if snapshot is not None:
        check_snapshot(snapshot)
    return snapshot


class Notifier(ServiceHandler[NotifierSettings]):
    """The event and arming handlers run on paho's network thread and store each message in the outbox
    before it is acknowledged: the alert policy is decided once per event, then one row per channel. A
    sender thread per channel (email when SMTP_HOST is set, each NOTIFY_URLS entry) drains that channel's
    rows, and a short-lived thread arms by default once connected when no state is known. The main thread
    only waits for the stop.

    Events are judged by the arming state in force when they were detected (the arming history), so an
    event that waited in the broker, or reached it late, is handled as it would have been on time.
    """

    service = SERVICE

    @classmethod
    def presence(cls, settings: NotifierSettings) -> Presence:
        return Presence(CLIENT_ID, topics.service_status(SERVICE), persistent_session_s=SESSION_EXPIRY_S)

    def __init__(self, settings: NotifierSettings, client: MqttClient, logger: logging.Logger) -> None:
        super().__init__(settings, client, logger)
        try:
            self._rules = load_rules(settings.notify_rules, settings.notify_objects)
        except RulesError as error:
            raise StartupError("NOTIFY_RULES", str(error)) from error
        self._watch = EventWatch(self._rules, self._decide, logger)
        self._outbox = open_outbox(settings.notify_data_dir, logger)
        self._stop = threading.Event()
        # No email transport: email is off (alerts left pending by an earlier run stay for a run with email).
        self._transports = self._make_transports()
        self._channels = [transport.key for transport in self._transports]
        self._senders = [
            Sender(settings, self._outbox, transport, logger, self._stop) for transport in self._transports
        ]
        self._quiet_hours = settings.quiet_hours
        self._bad_log = RateLimitedLog(logger, BAD_INPUT_LOG_INTERVAL_S)
        self.bad_input = 0
        self._arming = Arming(
            self._outbox, client, logger, keep_s=settings.notify_max_age, on_bad=self._bad_input
        )
        self._last_alert = self._outbox.last_alert_times()
        self._threads: list[threading.Thread] = []
        # Each channel by the name the log says ("email", "push 2 (tgram)"): never a push URL.
        names = {
            transport.key: transport.to.removeprefix(" to ") or "email" for transport in self._transports
        }
        self._stats = StatsPublisher(self._outbox, client, names, lambda: self.bad_input, logger)

    def _make_transports(self) -> list[Transport]:
        transports: list[Transport] = []
        if self.settings.email_enabled:
            try:
                transports.append(EmailTransport(self.settings, self.logger))
            except ssl.SSLError as error:
                ca_file = self.settings.smtp_ca_file
                raise StartupError("SMTP_CA_FILE", f"not a CA certificate: {error}", ca_file) from error
        base_url = self.settings.web_base_url
        transports += [Pusher(channel, base_url) for channel in push_channels(self.settings)]
        return transports

    def routes(self) -> Mapping[str, Route]:
        events = {
            topics.all_events(label): Route(self._on_event, qos=1) for label in self.settings.notify_objects
        }
        return {
            **events,
            topics.ARMED_SET: Route(self._arming.on_set, qos=1),
            topics.ARMED_STATE: Route(self._arming.on_state, qos=1),
            topics.ALL_ALARM_RESULTS: Route(self._on_alarm_result, qos=1),
        }

    def start(self) -> None:
        if not self.settings.email_enabled:
            log = self.logger.info if self._senders else self.logger.warning
            log("email is off: SMTP_HOST is not set (see docs/notifier.md to set it up)")
        removed = self._outbox.expire_channels_except(self._channels, "its URL is no longer in NOTIFY_URLS")
        if removed:
            self.logger.warning("gave up %d unsent push alerts of channels no longer set up", removed)
        pruned = self._outbox.prune(time.time())
        if pruned:
            self.logger.info("removed %d old alerts from the outbox", pruned)
        self._arming.prune()
        self._run_thread(lambda: self._arming.arm_by_default(self._stop), "default-arming")
        for sender, transport in zip(self._senders, self._transports, strict=True):
            self._run_thread(sender.run, f"sender-{transport.key}")
        self._run_thread(lambda: self._stats.run(self._stop), "stats")
        self._run_thread(lambda: self._watch.run(self._stop), "dwell")
        pending = self._outbox.counts().get("pending", 0)
        pushes = [transport.to.removeprefix(" to ") for transport in self._transports if transport.to]
        self.logger.info(
            "watching %s; email %s; push channels: %s; %d unsent alerts in the outbox",
            ", ".join(self.settings.notify_objects),
            f"to {len(self.settings.email_to)} recipients" if self.settings.email_enabled else "off",
            ", ".join(pushes) or "off",
            pending,
        )

    def _run_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._watch.wake()
        for sender in self._senders:
            sender.wake()
        # A send under way is waited for (its timeouts bound it), so that it is recorded as sent.
        deadline = time.monotonic() + max(self.settings.smtp_timeout, PUSH_SEND_MAX_S) + 5
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._outbox.close()

    def on_connect(self) -> None:
        self._arming.on_connect()
        self._stats.publish()

    # ---- events

    def _bad_input(self, topic: str, error: str) -> None:
        self.bad_input += 1
        self._bad_log.report(topic, f"ignored a bad message on {topic} ({self.bad_input} so far): {error}")

    def _snapshot_of(self, event: schemas.DetectionEvent, topic: str) -> bytes | None:
        """The snapshot to attach; a refused one (counted and logged) leaves the alert without one."""
        try:
            return checked_snapshot(event)
        except schemas.BadPayload as error:
            self.bad_input += 1
            self._bad_log.report(
                f"{topic} snapshot",
                f"refused the snapshot of event {event.event_id} on {topic} ({self.bad_input} bad inputs"
                f" so far): {error}; the alert goes without it",
            )
            return None

    def _on_event(self, message: mqtt.MQTTMessage) -> None:
        try:
            event = schemas.DetectionEvent.parse_on(message.topic, bytes(message.payload))
        except schemas.BadPayload as error:
            self._bad_input(message.topic, str(error))
            return
        self._watch.on_event(event)

    def _decide(self, decision: Decision) -> None:
        """An event decided (EventWatch, one at a time): its rows in the outbox, then the senders woken and
        the deterrent. Judged as at the moment its rule was met, or as not alerted when it ended first."""
        event = decision.event
        what = f"{event.label}{f' at {decision.zone}' if decision.zone else ''} on {event.camera}"
        if decision.why:
            if self._store(decision, None, f"not alerted: {decision.why}"):
                self.logger.info("%s (%s): ended, not alerted: %s", what, event.event_id, decision.why)
            return
        now = time.time()
        # A check's moment is after the latest message; a message's is when it was detected.
        armed_then, armed_now = self._arming.judge(max(decision.at, event.detected_at), now)
        reason = self._reason_not_to_alert(event.camera, decision.at) if armed_then else "disarmed"
        carrier = decision.snapshot_from
        snapshot = self._snapshot_of(carrier, topics.event(event.camera, event.label)) if carrier else None
        if not self._store(decision, snapshot, reason):
            self.logger.info("event %s was delivered again; already handled", event.event_id)
            return
        if reason:
            self.logger.info("%s (%s): recorded, not alerted: %s", what, event.event_id, reason)
        else:
            self._last_alert[event.camera] = decision.at
            self.logger.info("%s (%s): alert queued", what, event.event_id)
            for sender in self._senders:
                sender.wake()
        if armed_then and event.label == PERSON and self.settings.deterrent_for(event.camera):
            self._deter(event, armed_now, now)

    def _store(self, decision: Decision, snapshot: bytes | None, reason: str | None) -> bool:
        """The event's rows, one per channel; False when it is stored already (delivered again)."""
        event = decision.event
        # Acknowledged only once the row is committed: an event the outbox could not take comes again.
        with redelivered_unless_stored(f"event {event.event_id}"):
            return self._outbox.record(
                event_id=event.event_id,
                camera=event.camera,
                label=event.label,
                score=event.top_score,
                started_at=event.started_at,
                snapshot=snapshot,
                status="suppressed" if reason else "pending",
                reason=reason,
                channels=self._channels,
                now=time.time(),
                zone=decision.zone,
            )

    def _reason_not_to_alert(self, camera: str, at: float) -> str | None:
        if not self._senders:
            return "email is off and no NOTIFY_URLS"
        moment = datetime.fromtimestamp(at)
        if in_quiet_hours(self._quiet_hours, moment):
            return "quiet hours"
        if not in_schedule(self._rules.of(camera).schedule, moment):
            return "outside the camera's NOTIFY_RULES schedule"
        last = self._last_alert.get(camera)
        # Event time, not arrival time: events queued while we were away are judged by when they happened.
        if last is not None and abs(at - last) < self.settings.notify_cooldown:
            return f"cooldown ({self.settings.notify_cooldown:g} s)"
        return None

    def _deter(self, event: schemas.DetectionEvent, armed_now: bool, now: float) -> None:
        """Armed when the person was detected: sound the deterrent if they may still be there, that is, the
        detection is at most DETERRENT_MAX_AGE old, and only if still armed (the owner may just have come
        home and disarmed)."""
        age = now - event.detected_at
        if not armed_now:
            why = "disarmed since"
        elif age > self.settings.deterrent_max_age:
            why = f"detected {age:.0f} s ago, over DETERRENT_MAX_AGE={self.settings.deterrent_max_age:g} s"
        else:
            self._sound_deterrent(event.camera)
            return
        self.logger.info("deterrent: not sounded on %s for %s: %s", event.camera, event.event_id, why)

    def _on_alarm_result(self, message: mqtt.MQTTMessage) -> None:
        """What a camera did with an alarm command (the deterrent's or anyone's): said in the log, so that a
        deterrent that stayed silent (cooling down, no sound card) says why. Retained ones are old news."""
        if message.retain or not message.payload:
            return
        try:
            result = schemas.AlarmResult.parse(bytes(message.payload))
        except schemas.BadPayload as error:
            self._bad_input(message.topic, str(error))
            return
        log = self.logger.warning if result.result == "player_failed" else self.logger.info
        log("deterrent: %s alarm %s", result.camera, result.said())

    def _sound_deterrent(self, camera: str) -> None:
        command = schemas.AlarmCommand(state="ON", duration=self.settings.deterrent_duration)
        self.client.publish(topics.alarm_set(camera), command.to_json(), qos=1)
        self.logger.info("deterrent: %s sounds for %g s", camera, self.settings.deterrent_duration)
