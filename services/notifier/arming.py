"""The arming history: which state was in force when, so that an event is judged by the arming state at the
moment it was detected, not at the moment it reached the notifier (docs/notifier.md, "Arming")."""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.database import STORE_ERRORS
from services.common.mqtt import MqttClient
from services.notifier.const import ARMED_KEY, ARMED_SETTLE_S, ARMING_KEEP_MIN_S
from services.notifier.mailer import local_time
from services.notifier.outbox import Outbox, redelivered_unless_stored


class ArmingHistory:
    """Arming changes, oldest first: (when it took effect, armed). The outbox keeps them; this is its copy
    for the event handler, replaced whenever a change is stored."""

    def __init__(self, changes: Iterable[tuple[float, bool]] = ()) -> None:
        ordered = list(changes)
        self._times = [at for at, _armed in ordered]
        self._states = [armed for _at, armed in ordered]

    def __len__(self) -> int:
        return len(self._times)

    @property
    def latest_at(self) -> float:
        """When the latest change took effect; 0 when there is none."""
        return self._times[-1] if self._times else 0.0

    def state_at(self, moment: float) -> bool | None:
        """The state in force at ``moment``: that of the latest change at or before it. Before the first
        change kept, the first one's (the first state the notifier learned counts from before it; older
        changes are pruned only while a later one before the pruning horizon remains). None when no state is
        known at all (a new data directory before the first state arrived)."""
        if not self._times:
            return None
        index = bisect_right(self._times, moment)
        return self._states[max(index - 1, 0)]


class Arming:
    """The arming state the notifier owns: ``sentrycam/armed/set`` in, ``sentrycam/armed/state`` out, each
    change stored (with its time, in the history) before it is acknowledged or published."""

    def __init__(
        self,
        outbox: Outbox,
        client: MqttClient,
        logger: logging.Logger,
        *,
        keep_s: float,
        on_bad: Callable[[str, str], None],
    ) -> None:
        self._outbox = outbox
        self._client = client
        self._logger = logger
        self._keep_s = max(keep_s, ARMING_KEEP_MIN_S)
        self._on_bad = on_bad
        self._lock = threading.Lock()
        stored = outbox.get_state(ARMED_KEY)
        # None until known: the outbox remembers it; on a fresh data dir the retained state decides.
        self._armed: bool | None = None if stored is None else stored == topics.ON
        # False from each (re)connect until our own arming state comes back from the broker: until then the
        # messages handled are ones the broker kept (or sends again), not live ones. See _change_time.
        self._live = False
        # A moment every message still to come in such a backlog was published after: the latest event
        # time (or live handling time) seen, from the outbox's last written alert at start.
        self._handled_until = outbox.latest_handled_at() or 0.0
        self._history = ArmingHistory(outbox.arming_history())
        if self._armed is not None and not self._history:
            # An outbox from before the history: the stored state counts from before anything queued.
            self._store(self._armed, time.time())

    def prune(self) -> None:
        with self._lock:
            if self._outbox.prune_arming(self._keep_since()):
                self._history = ArmingHistory(self._outbox.arming_history())

    def judge(self, detected_at: float, now: float) -> tuple[bool, bool]:
        """(armed when the event was detected, armed now) for an event handled now; unknown counts as
        armed. The state when it was detected is what a notifier that was up then would have decided on."""
        with self._lock:
            armed_then = self._history.state_at(detected_at) is not False
            armed_now = self._armed is not False
            live = self._live and self._client.connected.is_set()
            self._handled_until = max(self._handled_until, now if live else min(now, detected_at))
        return armed_then, armed_now

    def on_connect(self) -> None:
        """On every (re)connect, before ``online``: a broker that lost its retained messages learns the
        state again, and whoever reacts to ``online`` finds it."""
        with self._lock:
            # Published after every message the broker kept for us: when it comes back, the backlog is done.
            self._live = False
            if self._armed is not None:
                self._publish(self._armed)

    def arm_by_default(self, stop: threading.Event) -> None:
        """Armed by default when neither our outbox nor the broker knew the state (a thread's target)."""
        while not self._client.connected.wait(0.5):
            if stop.is_set():
                return
        # The retained state arrives right after our subscription; give it a moment to do so.
        if stop.wait(ARMED_SETTLE_S):
            return
        with self._lock:
            if self._armed is None:
                self._logger.info("no arming state stored or retained: armed (the default)")
                try:
                    self._set(True, time.time())
                except STORE_ERRORS as error:
                    # Still unknown, and an unknown state is handled as armed; the next start tries again.
                    self._logger.error("could not store the default arming state: %s", error)

    def on_set(self, message: mqtt.MQTTMessage) -> None:
        if (armed := self._armed_of(message)) is None:
            return
        with self._lock:
            live = self._live and self._client.connected.is_set()
            at = self._change_time(live)
            with redelivered_unless_stored("arming state"):
                self._set(armed, at)
        kept = "" if live else f" (sent while we were away: counts from {local_time(at)})"
        what = "armed" if armed else "disarmed: no alerts and no deterrent until re-armed"
        self._logger.info("%s%s", what, kept)

    def on_state(self, message: mqtt.MQTTMessage) -> None:
        """Our own state coming back (not retained) ends the backlog after a (re)connect (see on_connect).
        Otherwise only used to restore the state when our own data dir does not have it; we own the topic."""
        if (armed := self._armed_of(message)) is None:
            return
        if not message.retain:
            self._live = True
            return
        with self._lock:
            if self._armed is None:
                with redelivered_unless_stored("arming state"):
                    self._set(armed, time.time())
                self._logger.info("restored arming state from the broker: %s", schemas.on_off(armed))

    def _armed_of(self, message: mqtt.MQTTMessage) -> bool | None:
        """The ON/OFF of an arming message; None (counted and logged) when it is neither."""
        try:
            return schemas.parse_on_off(bytes(message.payload))
        except schemas.BadPayload as error:
            self._on_bad(message.topic, str(error))
            return None

    def _change_time(self, live: bool) -> float:
        """When an arming command handled now took effect. A live one: now. One the broker kept for us while
        we were away (or sends again) carries no time; it was published after every message queued before it,
        so it counts from the latest of those: events queued after it are judged by it, and those before it
        by the state before. Call with the lock held."""
        now = time.time()
        latest = self._history.latest_at
        if live:
            return max(now, latest)
        return max(latest, min(now, self._handled_until))

    def _keep_since(self) -> float:
        return time.time() - self._keep_s

    def _set(self, armed: bool, at: float) -> None:
        """Stored first: a state that could not be stored is not taken (the caller decides what then)."""
        self._store(armed, at)
        self._armed = armed
        self._publish(armed)

    def _store(self, armed: bool, at: float) -> None:
        """The state, and a change of it in the history (taking effect at ``at``)."""
        changed = armed != self._armed or not self._history
        at = max(at, self._history.latest_at)  # the history stays in order whatever the clock does
        change = (at, armed) if changed else None
        self._outbox.set_armed(ARMED_KEY, schemas.on_off(armed), change, self._keep_since())
        if changed:
            self._history = ArmingHistory(self._outbox.arming_history())
            self._handled_until = max(self._handled_until, at)

    def _publish(self, armed: bool) -> None:
        self._client.publish(topics.ARMED_STATE, schemas.on_off(armed), qos=1, retain=True)
