"""The HTTP server: waitress, bound when it is made so that a port in use stops the relay at start."""

from __future__ import annotations

import errno
import logging
import resource
from typing import Any, Protocol

from flask import Flask
from waitress.server import create_server

from services.common.service import StartupError
from services.web.const import (
    CLEANUP_INTERVAL_S,
    IDLE_CONNECTION_S,
    OUTBUF_HIGH_WATERMARK,
    SEND_BYTES,
    SERVER_STOP_WAIT_S,
    SPARE_CONNECTIONS,
    SPARE_FILES,
)
from services.web.settings import WebSettings


class WebServer(Protocol):
    """What the relay needs of a server: listening once made, serving in ``run`` until ``close``."""

    def run(self) -> None: ...

    def close(self) -> None: ...

    def addresses(self) -> list[str]: ...


def server_options(settings: WebSettings, connection_limit: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "host": settings.web_host,
        "port": settings.web_port,
        "threads": settings.web_threads,
        # Connections cost no thread until a whole request has arrived: idle keep-alive connections and
        # clients that say nothing or half a request wait without one, and are closed after
        # IDLE_CONNECTION_S of silence. The limit stops accepting (new connections wait in the backlog),
        # so it is set far above what streams and pages need: a few hundred idle connections must not
        # lock everyone else out for minutes, as the old limit (threads + 100) and timeout (120 s) did.
        "connection_limit": connection_limit,
        "channel_timeout": IDLE_CONNECTION_S,
        "cleanup_interval": CLEANUP_INTERVAL_S,
        "send_bytes": SEND_BYTES,
        "outbuf_high_watermark": OUTBUF_HIGH_WATERMARK,
        "asyncore_use_poll": True,
        "ident": "sentrycam",
    }
    if settings.web_trusted_proxy:
        options.update(
            trusted_proxy=settings.web_trusted_proxy,
            trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"},
            trusted_proxy_count=1,
        )
    return options


def listen_error(error: OSError, settings: WebSettings) -> StartupError:
    if error.errno == errno.EADDRINUSE:
        return StartupError("WEB_PORT", "already in use by another program", settings.web_port)
    if error.errno == errno.EACCES:
        return StartupError("WEB_PORT", "not allowed (ports below 1024 need privileges)", settings.web_port)
    if error.errno == errno.EADDRNOTAVAIL:
        return StartupError("WEB_HOST", "not an address of this machine", settings.web_host)
    return StartupError(
        "WEB_PORT", f"cannot listen on {settings.web_host}: {error.strerror}", settings.web_port
    )


def connection_limit(settings: WebSettings, logger: logging.Logger | None = None) -> int:
    """Every viewer and open page (``WEB_THREADS``) and ``SPARE_CONNECTIONS`` more, as far as the process
    may open files: its soft limit is raised towards the hard one if needed (often 1024 of 1048576)."""
    wanted = settings.web_threads + SPARE_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        limit = max(settings.web_threads, soft - SPARE_FILES)
        if logger is not None:
            logger.warning(
                "only %d open files allowed: at most %d connections (wanted %d)", soft, limit, wanted
            )
        return limit
    return wanted


class WaitressServer:
    def __init__(self, app: Flask, settings: WebSettings, logger: logging.Logger | None = None) -> None:
        try:
            self._server = create_server(app, **server_options(settings, connection_limit(settings, logger)))
        except ValueError as error:  # waitress could not resolve the host
            raise StartupError("WEB_HOST", "cannot be resolved to an address", settings.web_host) from error
        except OSError as error:
            raise listen_error(error, settings) from error

    def run(self) -> None:
        self._server.run()

    def close(self) -> None:
        # Waitress's close ends only the listening: its worker threads would wait for requests for ever.
        # They end first (a stream the relay's stop is ending finishes its request), then the listening;
        # a request still finishing after that would write to a closed server.
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=SERVER_STOP_WAIT_S)
        self._server.close()

    def addresses(self) -> list[str]:
        # A host name with several addresses (localhost: 127.0.0.1 and ::1) gets one socket each.
        listening = getattr(self._server, "effective_listen", None) or [
            (self._server.effective_host, self._server.effective_port)
        ]
        return [
            f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}" for host, port in listening
        ]
