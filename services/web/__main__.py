"""``python -m services.web``: the web relay, served by waitress until SIGTERM or Ctrl-C."""

from __future__ import annotations

import threading
import time
from typing import Any

from waitress.server import create_server

from services.common.service import stop_on_signals
from services.common.settings import load_settings, setup_logging
from services.web.app import create_app
from services.web.const import OUTBUF_HIGH_WATERMARK, RETENTION_INTERVAL_S, SEND_BYTES, SERVICE
from services.web.events import EventStore
from services.web.relay import WebRelay
from services.web.settings import WebSettings


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


def main() -> None:
    settings = load_settings(WebSettings, SERVICE)
    logger = setup_logging(SERVICE, settings.log_level)
    stop = stop_on_signals()
    settings.web_data_dir.mkdir(parents=True, exist_ok=True)
    store = EventStore(settings.web_data_dir, logger)
    store.cleanup()
    relay = WebRelay(settings, logger, store)
    app = create_app(relay)
    server = create_server(app, **server_options(settings))
    relay.start()
    serving = threading.Thread(target=server.run, name="waitress", daemon=True)
    serving.start()
    logger.info(
        "serving on http://%s:%s (data in %s)",
        settings.web_host,
        server.effective_port,
        settings.web_data_dir,
    )
    max_age_s = settings.web_retention_days * 86400
    max_bytes = int(settings.web_retention_mb * 1024 * 1024)
    next_retention = 0.0
    while not stop.wait(1.0):
        relay.check_broker()
        if time.monotonic() >= next_retention:
            store.apply_retention(max_age_s, max_bytes)
            next_retention = time.monotonic() + RETENTION_INTERVAL_S
    logger.info("stopping")
    relay.stop()
    server.close()
    store.close()


if __name__ == "__main__":
    main()
