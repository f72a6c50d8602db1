"""One MQTT client for every service: paho-mqtt 2.x speaking MQTT v5.

What it adds to paho: the service's status topic with ``offline`` as Last Will and ``online`` on connect,
one table of subscriptions (topic filter -> :class:`Route`) subscribed on every (re)connect, handlers that
can never kill the network thread, and a clean stop that says ``offline`` before it disconnects.
Connecting and reconnecting with backoff is paho's own (``connect_async`` + ``loop_start`` retries the first
connection too).

A QoS 1 message is acknowledged when its handler has returned, or, for a handler that stores it on another
thread, when that thread says it is stored (:meth:`MqttClient.hold_ack`); a handler that cannot store it
raises :class:`Redeliver` and the broker sends it again (services/common/acks.py).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from services.common import topics
from services.common.acks import Acknowledgements, PendingAck, Redeliver
from services.common.logs import RateLimitedLog
from services.common.settings import ServiceSettings

Handler = Callable[[mqtt.MQTTMessage], None]

KEEPALIVE_S = 30
STOP_PUBLISH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Route:
    """One line of a service's subscription table: the method that handles a topic filter's messages."""

    handler: Handler
    qos: int = 0


def send_without_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """paho's ``on_socket_open``: switch Nagle's algorithm off. paho leaves it on, and a frame then waits in
    the kernel until the broker acknowledges the previous one: at high frame rates frames arrived in bursts,
    up to 20 ms late (docs/benchmarks.md, "Detector")."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
    ) -> None:
        """``persistent_session_s`` > 0 keeps the session (subscriptions and queued QoS 1 messages) on the
        broker for that long while this client is away; it needs a stable ``client_id``."""
        self._settings = settings
        self._status_topic = status_topic
        self._logger = logger
        self._persistent_session_s = persistent_session_s
        self._on_connect_hook: Callable[[], None] | None = None
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        # Set once connected, subscribed, and "online" is published; cleared while the broker is away.
        self.connected = threading.Event()
        self.handler_errors = 0

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        client.will_set(status_topic, topics.OFFLINE, qos=1, retain=True)
        if settings.mqtt_username:
            password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            client.username_pw_set(settings.mqtt_username, password)
        if settings.mqtt_tls:
            ca_file = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.on_socket_open = send_without_delay
        self._unreachable_log = RateLimitedLog(logger)
        self._initial_subscribe_mid: int | None = None
        self._client = client
        self._acks = Acknowledgements(client, logger)

    @property
    def paho(self) -> mqtt.Client:
        return self._client

    def serve(self, routes: Mapping[str, Route], on_connect: Callable[[], None] | None = None) -> None:
        """Handle ``routes`` from the first connect on. ``on_connect`` is called on every (re)connect, once
        subscribed and just before ``online`` is published, in the network thread: the place to publish
        retained state again, so that whoever reacts to ``online`` already finds it."""
        self._on_connect_hook = on_connect
        for topic_filter, route in routes.items():
            self._route(topic_filter, route)

    def _route(self, topic_filter: str, route: Route) -> None:
        with self._lock:
            self._routes[topic_filter] = route
        self._client.message_callback_add(topic_filter, self._dispatcher(topic_filter, route))
        if self.connected.is_set():
            self._client.subscribe(topic_filter, route.qos)

    def hold_ack(self, message: mqtt.MQTTMessage) -> PendingAck:
        """Called by a handler, in its call, that stores ``message`` later on another thread: the message is
        acknowledged when that thread calls ``done()``, not when the handler returns."""
        return self._acks.hold(message)

    @property
    def redeliveries(self) -> int:
        return self._acks.redeliveries

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

    def _dispatcher(
        self, topic_filter: str, route: Route
    ) -> Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]:
        def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
            connection = self._acks.connection
            if self._acks.dropping:
                return  # the connection is going away; the broker sends this message again
            self._acks.handling()
            try:
                route.handler(message)
            except Redeliver as error:
                self._acks.redeliver(str(error), connection)
                return
            except Exception:
                # A handler bug must not stop the network thread: log it and keep serving.
                self.handler_errors += 1
                self._logger.exception("handler for %s failed on %s", topic_filter, message.topic)
            self._acks.handled(message, connection)

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
        self._acks.connected()
        with self._lock:
            routes = [(topic_filter, route.qos) for topic_filter, route in self._routes.items()]
        if not routes:
            self._announce_online()
            return
        # Say "online" only once the broker has the subscriptions, so whoever reacts to "online" with a
        # command (a test, Home Assistant) cannot lose it to the gap between CONNACK and SUBACK.
        _result, self._initial_subscribe_mid = client.subscribe(routes)

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
        self._acks.disconnected()
        if was_connected and reason_code != 0:
            self._logger.warning("lost the broker (%s); reconnecting with backoff", reason_code)
