"""Manual acknowledgements (paho's ``manual_ack``): a QoS 1 message is acknowledged to the broker only once
it is handled and stored, and one that could not be stored is sent again by the broker.

There is no negative acknowledgement in MQTT: the way to have a message sent again is to leave it
unacknowledged and drop the connection; with a persistent session the broker resends every unacknowledged
message on the reconnect. The reconnect waits 1 s, doubling up to 30 s while storing keeps failing.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt

RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30


class Redeliver(Exception):
    """Raised by a handler that could not store a message (a locked database, a full disk): the message is
    not acknowledged and comes again after a reconnect. Any other exception is a bug: logged, counted, and
    the message acknowledged, so one poisonous message cannot come back forever."""


@dataclass(frozen=True)
class PendingAck:
    """A received QoS 1 message whose handler stores it later, on another thread; see ``hold``."""

    acks: Acknowledgements
    mid: int
    qos: int
    connection: int

    def done(self) -> None:
        """Stored: acknowledge it to the broker."""
        self.acks.acknowledge(self.mid, self.qos, self.connection)

    def failed(self, reason: str) -> None:
        """Not stored: have the broker send it again."""
        self.acks.redeliver(reason, self.connection)


class Acknowledgements:
    """The acknowledgement state of one paho client across its connections."""

    def __init__(self, client: mqtt.Client, logger: logging.Logger) -> None:
        self._client = client
        self._logger = logger
        self._lock = threading.Lock()
        self.redeliveries = 0
        # Which connection a message came on: an acknowledgement is only valid on that connection.
        self.connection = 0
        self.dropping = False  # a redelivery was asked for; the connection is being dropped
        self._failed_stores = 0  # in a row, for the redelivery backoff
        self._held = False  # set by hold during a handler call (network thread only)
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)

    def connected(self) -> None:
        with self._lock:
            self.connection += 1
            self.dropping = False
            if self._failed_stores:  # a broker outage gets the usual backoff again
                self._client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)

    def disconnected(self) -> None:
        with self._lock:
            self.connection += 1

    def handling(self) -> None:
        """A handler is about to be called on the network thread."""
        self._held = False

    def hold(self, message: mqtt.MQTTMessage) -> PendingAck:
        self._held = True
        return PendingAck(self, message.mid, message.qos, self.connection)

    def handled(self, message: mqtt.MQTTMessage, connection: int) -> None:
        """The handler returned: acknowledge, unless it holds the acknowledgement for later."""
        if not self._held:
            self.acknowledge(message.mid, message.qos, connection)

    def acknowledge(self, mid: int, qos: int, connection: int) -> None:
        with self._lock:
            # After a reconnect the same mid may name another message; the broker resends this one anyway.
            if connection != self.connection or self.dropping or qos == 0:
                return
            if self._failed_stores:
                self._failed_stores = 0
                self._client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        self._client.ack(mid, qos)

    def redeliver(self, reason: str, connection: int | None = None) -> None:
        """Drop the connection so that the broker sends the unacknowledged messages again."""
        with self._lock:
            if (connection is not None and connection != self.connection) or self.dropping:
                return
            self.dropping = True
            self._failed_stores += 1
            self.redeliveries += 1
            delay = min(RECONNECT_MAX_DELAY_S, RECONNECT_MIN_DELAY_S * 2 ** min(self._failed_stores - 1, 10))
            self._client.reconnect_delay_set(delay, RECONNECT_MAX_DELAY_S)
        self._logger.warning(
            "could not store a message (%s); the broker sends it again in %d s", reason, delay
        )
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
