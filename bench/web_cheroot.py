"""The web relay's app served by cheroot instead of waitress, only to compare the two in bench/web.py.

.venv/bin/python -m bench.web --server cheroot
"""

from __future__ import annotations

from cheroot.wsgi import Server  # type: ignore[import-not-found, unused-ignore]
from flask import Flask

from services.common.service import run_service
from services.web.relay import WebRelay
from services.web.server import WebServer, listen_error
from services.web.settings import WebSettings


class CherootServer:
    def __init__(self, app: Flask, settings: WebSettings) -> None:
        self._address = f"http://{settings.web_host}:{settings.web_port}"
        self._server = Server((settings.web_host, settings.web_port), app, numthreads=settings.web_threads)
        try:
            self._server.prepare()  # listens now, as the relay expects of its server
        except OSError as error:
            raise listen_error(error, settings) from error

    def run(self) -> None:
        self._server.serve()

    def close(self) -> None:
        self._server.stop()

    def addresses(self) -> list[str]:
        return [self._address]


class CherootRelay(WebRelay):
    def create_server(self, app: Flask) -> WebServer:
        return CherootServer(app, self.settings)


if __name__ == "__main__":
    run_service(WebSettings, CherootRelay)
