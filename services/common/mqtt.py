"""One MQTT client for every service: paho-mqtt 2.x speaking MQTT v5.

What it adds to paho: the service's status topic with ``offline`` as Last Will and ``online`` on connect,
subscriptions that survive reconnects, handlers that can never kill the network thread, and a clean stop
that says ``offline`` before it disconnects. Connecting and reconnecting with backoff is paho's own
(``connect_async`` + ``loop_start`` retries the first connection too).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.common import topics
from services.common.settings import ServiceSettings

Handler = Callable[[mqtt.MQTTMessage], None]

RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
KEEPALIVE_S = 30
STOP_PUBLISH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Subscription:
    topic_filter: str
    qos: int
    handler: Handler


def send_without_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """paho's ``on_socket_open``: switch Nagle's algorithm off. paho leaves it on, and a frame then waits in
    the kernel until the broker acknowledges the previous one: at high frame rates frames arrived in bursts,
    up to 20 ms late (docs/benchmarks.md, "Detector")."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RateLimitedLog:
    """Logs a repeated problem at most once per interval per key, with how often it happened meanwhile."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def report(self, key: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        self._logger.warning("%s%s", message, more)


class MqttClient:
    """A connected presence of one service on the broker."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        client_id: str,
        status_topic: str,
        logger: logging.Logger,
        persistent_session_s: int = 0,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        """``persistent_session_s`` > 0 keeps the session (subscriptions and queued QoS 1 messages) on the
        broker for that long while this client is away; it needs a stable ``client_id``.

        ``on_connect`` is called on every (re)connect, once subscribed and just before ``online`` is
        published, in the network thread: the place to publish retained state again, so that whoever
        reacts to ``online`` already finds it."""
        self._settings = settings
        self._status_topic = status_topic
        self._logger = logger
        self._persistent_session_s = persistent_session_s
        self._on_connect_hook = on_connect
        self._subscriptions: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        # Set once connected, subscribed, and "online" is published; cleared while the broker is away.
        self.connected = threading.Event()
        self.handler_errors = 0

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.will_set(status_topic, topics.OFFLINE, qos=1, retain=True)
        if settings.mqtt_username:
            password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            client.username_pw_set(settings.mqtt_username, password)
        if settings.mqtt_tls:
            ca_file = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.on_socket_open = send_without_delay
        self._unreachable_log = RateLimitedLog(logger)
        self._initial_subscribe_mid: int | None = None
        self._client = client

    @property
    def paho(self) -> mqtt.Client:
        return self._client

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 0) -> None:
        """Call ``handler`` for every message matching ``topic_filter``, now and after every reconnect."""
        subscription = Subscription(topic_filter, qos, handler)
        with self._lock:
            self._subscriptions[topic_filter] = subscription
        self._client.message_callback_add(topic_filter, self._guarded(subscription))
        if self.connected.is_set():
            self._client.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subscriptions.pop(topic_filter, None)
        self._client.message_callback_remove(topic_filter)
        if self.connected.is_set():
            self._client.unsubscribe(topic_filter)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """Queue a message. QoS 0 messages published while disconnected are dropped, QoS 1 are sent
        after the reconnect (paho keeps them)."""
        return self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def start(self) -> None:
        """Connect in the background; a broker that is not up yet is retried with backoff."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._persistent_session_s
        self._client.connect_async(
            self._settings.mqtt_host,
            self._settings.mqtt_port,
            keepalive=KEEPALIVE_S,
            # A persistent session must be resumed on every connect; otherwise start clean once.
            clean_start=False if self._persistent_session_s else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Say ``offline`` (retained) while still connected, then disconnect and stop the network thread."""
        if self.connected.is_set():
            info = self._client.publish(self._status_topic, topics.OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(STOP_PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError) as error:
                self._logger.warning("could not publish offline status: %s", error)
        self._client.disconnect()
        self._client.loop_stop()

    def _guarded(self, subscription: Subscription) -> Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]:
        def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
            try:
                subscription.handler(message)
            except Exception:
                # A handler bug must not stop the network thread: log it and keep serving.
                self.handler_errors += 1
                self._logger.exception(
                    "handler for %s failed on %s", subscription.topic_filter, message.topic
                )

        return on_message

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._logger.error(
                "broker %s:%s refused the connection: %s",
                self._settings.mqtt_host,
                self._settings.mqtt_port,
                reason_code,
            )
            return
        self._logger.info("connected to %s:%s", self._settings.mqtt_host, self._settings.mqtt_port)
        with self._lock:
            subscriptions = list(self._subscriptions.values())
        if not subscriptions:
            self._announce_online()
            return
        # Say "online" only once the broker has the subscriptions, so whoever reacts to "online" with a
        # command (a test, Home Assistant) cannot lose it to the gap between CONNACK and SUBACK.
        _result, self._initial_subscribe_mid = client.subscribe(
            [(s.topic_filter, s.qos) for s in subscriptions]
        )

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            self._logger.error("broker refused a subscription: %s (check the ACL for this user)", refused)
        if mid == self._initial_subscribe_mid:
            self._announce_online()

    def _announce_online(self) -> None:
        if self._on_connect_hook is not None:
            try:
                self._on_connect_hook()
            except Exception:
                self.handler_errors += 1
                self._logger.exception("on_connect hook failed")
        self._client.publish(self._status_topic, topics.ONLINE, qos=1, retain=True)
        self.connected.set()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        # Without this a wrong MQTT_HOST looks like a service that silently does nothing.
        self._unreachable_log.report(
            "connect",
            f"cannot reach the broker at {self._settings.mqtt_host}:{self._settings.mqtt_port}; "
            "retrying with backoff",
        )

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and reason_code != 0:
            self._logger.warning("lost the broker (%s); reconnecting with backoff", reason_code)
