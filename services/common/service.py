"""The one skeleton every service runs on: settings, logging, the MQTT client, start, wait, stop.

A service is a :class:`ServiceHandler` subclass; its ``__main__`` calls :func:`run_service` with its settings
class and that handler. The skeleton owns the order of things and one error contract: anything the user
must fix (a setting, a file or directory a setting names) stops the service with one line naming the
setting and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, NoReturn, TypeVar

from services.common.logs import setup_logging
from services.common.mqtt import MqttClient, Route
from services.common.settings import EXIT_BAD_SETTINGS, ServiceSettings, load_settings

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


class StartupError(Exception):
    """A problem the user must fix before the service can run. Its message names the setting."""

    def __init__(self, setting: str, problem: str, value: object = None) -> None:
        shown = "" if value is None else f"={value}"
        super().__init__(f"invalid setting {setting}{shown}: {problem}")


@dataclass(frozen=True)
class Presence:
    """How a service appears on the broker."""

    client_id: str
    status_topic: str
    # > 0: the broker keeps the session (subscriptions, unacknowledged and queued QoS 1 messages) for this
    # many seconds while the service is away, so nothing sent meanwhile is lost. Needs a stable client id.
    persistent_session_s: int = 0


class ServiceHandler(ABC, Generic[SettingsT]):
    """What a service does. The skeleton builds it with its settings, its MQTT client and its logger, then
    calls ``start``, ``run`` (until a stop signal), ``stop``, stops the client, and calls ``close``."""

    service: ClassVar[str]

    def __init__(self, settings: SettingsT, client: MqttClient, logger: logging.Logger) -> None:
        """Raise :class:`StartupError` for anything the user must fix (files, directories, ports)."""
        self.settings = settings
        self.client = client
        self.logger = logger

    @classmethod
    @abstractmethod
    def presence(cls, settings: SettingsT) -> Presence:
        """Client id, status topic and session of this service on the broker."""

    def routes(self) -> Mapping[str, Route]:
        """Topic filter -> what handles it; subscribed on every (re)connect."""
        return {}

    def on_connect(self) -> None:
        """On every (re)connect, once subscribed and before ``online``: publish retained state again."""

    def start(self) -> None:
        """Start the service's own threads; called before the client connects."""

    def run(self, stop: threading.Event) -> None:
        """The main thread's work until ``stop`` is set; most services only wait."""
        stop.wait()

    def stop(self) -> None:
        """Stop the service's threads while the client is still connected (last messages go out)."""

    def close(self) -> None:
        """Release files and databases, after the client has stopped."""


def create_handler(
    handler_class: type[ServiceHandler[SettingsT]], settings: SettingsT, logger: logging.Logger
) -> ServiceHandler[SettingsT]:
    """The handler with its client, its routes registered; not started. Raises :class:`StartupError`."""
    presence = handler_class.presence(settings)
    client = MqttClient(
        settings,
        client_id=presence.client_id,
        status_topic=presence.status_topic,
        logger=logger,
        persistent_session_s=presence.persistent_session_s,
    )
    handler = handler_class(settings, client, logger)
    client.serve(handler.routes(), on_connect=handler.on_connect)
    return handler


def fail(service: str, message: str) -> NoReturn:
    # One line even when a library's message has several (PyYAML's do): the user reads one line per problem.
    line = " ".join(message.split())
    print(f"sentrycam-{service}: {line}", file=sys.stderr)
    sys.exit(EXIT_BAD_SETTINGS)


def run_service(settings_class: type[SettingsT], handler_class: type[ServiceHandler[SettingsT]]) -> NoReturn:
    """Run a service until SIGTERM or Ctrl-C; the whole of every ``__main__``."""
    service = handler_class.service
    settings = load_settings(settings_class, service)
    logger = setup_logging(service, settings.log_level)
    stop = stop_on_signals()
    try:
        handler = create_handler(handler_class, settings, logger)
    except StartupError as error:
        fail(service, str(error))
    handler.start()
    handler.client.start()
    try:
        handler.run(stop)
    finally:
        logger.info("stopping")
        handler.stop()
        handler.client.stop()
        handler.close()
    sys.exit(0)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM (docker stop) or SIGINT (Ctrl-C), so the main loop can stop cleanly.

    The event is set by a watcher thread, never by a Python signal handler: such a handler runs in the main
    thread between two bytecodes, possibly inside ``stop.wait()`` while that thread holds the event's own
    (non-reentrant) lock, and ``stop.set()`` would then deadlock the service. CPython's C-level handler
    writes the signal number to the wakeup fd instead, and the watcher reads it. Call from the main thread.
    """
    stop = threading.Event()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in STOP_SIGNALS:
        # A Python-level handler must exist so the signal does not kill the process; it has nothing to do.
        signal.signal(signum, lambda _signum, _frame: None)

    def watch() -> None:
        while os.read(read_fd, 1)[0] not in STOP_SIGNALS:
            pass
        stop.set()

    threading.Thread(target=watch, name="stop-signals", daemon=True).start()
    return stop
