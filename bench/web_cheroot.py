"""The web relay's app served by cheroot instead of waitress, only to compare the two in bench/web.py.

.venv/bin/python -m bench.web --server cheroot
"""

from __future__ import annotations

import threading

from cheroot.wsgi import Server  # type: ignore[import-not-found, unused-ignore]

from services.common.service import stop_on_signals
from services.common.settings import load_settings, setup_logging
from services.web.app import create_app
from services.web.events import EventStore
from services.web.relay import WebRelay
from services.web.settings import WebSettings


def main() -> None:
    settings = load_settings(WebSettings, "web")
    logger = setup_logging("web", settings.log_level)
    stop = stop_on_signals()
    settings.web_data_dir.mkdir(parents=True, exist_ok=True)
    store = EventStore(settings.web_data_dir, logger)
    relay = WebRelay(settings, logger, store)
    server = Server(
        (settings.web_host, settings.web_port), create_app(relay), numthreads=settings.web_threads
    )
    relay.start()
    threading.Thread(target=server.safe_start, daemon=True).start()
    stop.wait()
    relay.stop()
    server.stop()


if __name__ == "__main__":
    main()
