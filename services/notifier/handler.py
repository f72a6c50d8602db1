"""The policy engine: detection events in, alert emails and deterrent commands out, arming owned here."""

from __future__ import annotations

import logging
import os
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
from services.common.acks import Redeliver
from services.common.jpeg import check_snapshot
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route
from services.common.service import Presence, ServiceHandler, StartupError
from services.notifier.arming import ArmingHistory
from services.notifier.const import (
    ARMED_SETTLE_S,
    ARMING_KEEP_MIN_S,
    BAD_INPUT_LOG_INTERVAL_S,
    CLIENT_ID,
    DATA_DIR_MODE,
    DATA_FILE_MODE,
    OUTBOX_FILE,
    PERSON,
    SERVICE,
    SESSION_EXPIRY_S,
)
from services.notifier.mailer import local_time
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


def checked_snapshot(event: schemas.DetectionEvent) -> bytes | None:
    """The event's snapshot JPEG, checked as the web relay checks it (size, and the pixels its header
    claims) before anything keeps it; BadPayload when it is refused."""
    snapshot = event.snapshot_jpeg()
    if snapshot is not None:
        check_snapshot(snapshot)
    return snapshot


def make_private(path: Path, mode: int, logger: logging.Logger) -> None:
    """``path`` readable by its owner only; a path we do not own (and so cannot change) is warned about."""
    if path.stat().st_mode & 0o777 == mode:
        return
    try:
        path.chmod(mode)
    except PermissionError as error:
        logger.warning("%s is readable by others and could not be made private: %s", path, error)


def open_outbox(data_dir: Path, logger: logging.Logger) -> Outbox:
    """The outbox in ``data_dir``, made if needed, directory and files for the notifier's user only (they
    hold snapshots from inside the house); StartupError when the directory cannot hold it."""
    path = data_dir / OUTBOX_FILE
    try:
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        make_private(data_dir, DATA_DIR_MODE, logger)
        if not path.exists():
            # Made here with its mode: SQLite gives its -wal and -shm files the database file's mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, DATA_FILE_MODE))
        for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
            if file.exists():
                make_private(file, DATA_FILE_MODE, logger)
        return Outbox(path)
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

    Events are judged by the arming state in force when they were detected (the arming history), so an
    event that waited in the broker, or reached it late, is handled as it would have been on time.
    """

    service = SERVICE

    @classmethod
    def presence(cls, settings: NotifierSettings) -> Presence:
        return Presence(CLIENT_ID, topics.service_status(SERVICE), persistent_session_s=SESSION_EXPIRY_S)

    def __init__(self, settings: NotifierSettings, client: MqttClient, logger: logging.Logger) -> None:
        super().__init__(settings, client, logger)
        self._outbox = open_outbox(settings.notify_data_dir, logger)
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
        # False from each (re)connect until our own arming state comes back from the broker: until then the
        # messages handled are ones the broker kept (or sends again), not live ones. See _change_time.
        self._live = False
        # A moment every message still to come in such a backlog was published after: the latest event
        # time (or live handling time) seen, from the outbox's last written alert at start.
        self._handled_until = self._outbox.latest_handled_at() or 0.0
        self._history = ArmingHistory(self._outbox.arming_history())
        if self._armed is not None and not self._history:
            # An outbox from before the history: the stored state counts from before anything queued.
            self._store_armed(self._armed, time.time())
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
        with self._arming_lock:
            if self._outbox.prune_arming(self._arming_keep_since()):
                self._history = ArmingHistory(self._outbox.arming_history())
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
            # Published after every message the broker kept for us: when it comes back, the backlog is done.
            self._live = False
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
                    self._set_armed(True, time.time())
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
            live = self._live and self.client.connected.is_set()
            at = self._change_time(live)
            self._set_armed(armed, at)
        kept = "" if live else f" (sent while we were away: counts from {local_time(at)})"
        what = "armed" if armed else "disarmed: no alerts and no deterrent until re-armed"
        self.logger.info("%s%s", what, kept)

    def _on_armed_state(self, message: mqtt.MQTTMessage) -> None:
        """Our own state coming back (not retained) ends the backlog after a (re)connect (see on_connect).
        Otherwise only used to restore the state when our own data dir does not have it; we own the topic."""
        if not message.retain:
            self._live = True
            return
        if (armed := self._armed_of(message)) is None:
            return
        with self._arming_lock, redeliver_unless_stored("arming state"):
            if self._armed is None:
                self._set_armed(armed, time.time())
                self.logger.info("restored arming state from the broker: %s", schemas.on_off(armed))

    def _change_time(self, live: bool) -> float:
        """When an arming command handled now took effect. A live one: now. One the broker kept for us while
        we were away (or sends again) carries no time; it was published after every message queued before it,
        so it counts from the latest of those: events queued after it are judged by it, and those before it
        by the state before. Call with the arming lock held."""
        now = time.time()
        latest = self._history.latest_at
        if live:
            return max(now, latest)
        return max(latest, min(now, self._handled_until))

    def _arming_keep_since(self) -> float:
        return time.time() - max(self.settings.notify_max_age, ARMING_KEEP_MIN_S)

    def _set_armed(self, armed: bool, at: float) -> None:
        """Stored first: a state that could not be stored is not taken (the caller decides what then)."""
        self._store_armed(armed, at)
        self._armed = armed
        self._publish_armed(armed)

    def _store_armed(self, armed: bool, at: float) -> None:
        """The state, and a change of it in the history (taking effect at ``at``)."""
        changed = armed != self._armed or not self._history
        at = max(at, self._history.latest_at)  # the history stays in order whatever the clock does
        change = (at, armed) if changed else None
        self._outbox.set_armed(ARMED_KEY, schemas.on_off(armed), change, self._arming_keep_since())
        if changed:
            self._history = ArmingHistory(self._outbox.arming_history())
            self._handled_until = max(self._handled_until, at)

    def _publish_armed(self, armed: bool) -> None:
        self.client.publish(topics.ARMED_STATE, schemas.on_off(armed), qos=1, retain=True)

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
        if event.type != "start":
            return
        snapshot = self._snapshot_of(event, message.topic)
        now = time.time()
        with self._arming_lock:
            # Judged by the state when it was detected: that is when a notifier that was up decided.
            armed_then = self._history.state_at(event.detected_at) is not False
            armed_now = self._armed is not False
            live = self._live and self.client.connected.is_set()
            self._handled_until = max(self._handled_until, now if live else min(now, event.detected_at))
        reason = self._reason_not_to_email(event) if armed_then else "disarmed"
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
        if armed_then and event.label == PERSON and self.settings.deterrent_for(event.camera):
            self._deter(event, armed_now, now)

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

    def _sound_deterrent(self, camera: str) -> None:
        command = schemas.AlarmCommand(state="ON", duration=self.settings.deterrent_duration)
        self.client.publish(topics.alarm_set(camera), command.to_json(), qos=1)
        self.logger.info("deterrent: %s sounds for %g s", camera, self.settings.deterrent_duration)
