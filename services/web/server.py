"""The HTTP server: waitress, bound when it is made so that a port in use stops the relay at start."""

from __future__ import annotations

import errno
from typing import Any, Protocol

from flask import Flask
from waitress.server import create_server

from services.common.service import StartupError
from services.web.const import OUTBUF_HIGH_WATERMARK, SEND_BYTES
from services.web.settings import WebSettings


class WebServer(Protocol):
    """What the relay needs of a server: listening once made, serving in ``run`` until ``close``."""

    def run(self) -> None: ...

    def close(self) -> None: ...

    def addresses(self) -> list[str]: ...


def server_options(settings: WebSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "host": settings.web_host,
        "port": settings.web_port,
        "threads": settings.web_threads,
        # Every live viewer and open page holds a thread and a connection; keep room for plain requests.
        "connection_limit": settings.web_threads + 100,
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


class WaitressServer:
    def __init__(self, app: Flask, settings: WebSettings) -> None:
        try:
            self._server = create_server(app, **server_options(settings))
        except ValueError as error:  # waitress could not resolve the host
            raise StartupError("WEB_HOST", "cannot be resolved to an address", settings.web_host) from error
        except OSError as error:
            raise listen_error(error, settings) from error

    def run(self) -> None:
        self._server.run()

    def close(self) -> None:
        self._server.close()

    def addresses(self) -> list[str]:
        # A host name with several addresses (localhost: 127.0.0.1 and ::1) gets one socket each.
        listening = getattr(self._server, "effective_listen", None) or [
            (self._server.effective_host, self._server.effective_port)
        ]
        return [
            f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}" for host, port in listening
        ]
