"""``python -m services.notifier``: email alerts, arming and the deterrent, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import sqlite3
import sys

from services.common.service import stop_on_signals
from services.common.settings import EXIT_BAD_SETTINGS, load_settings, setup_logging
from services.notifier.const import OUTBOX_FILE, SERVICE
from services.notifier.handler import Notifier
from services.notifier.outbox import Outbox
from services.notifier.settings import NotifierSettings


def main() -> int:
    settings = load_settings(NotifierSettings, SERVICE)
    logger = setup_logging(SERVICE, settings.log_level)
    try:
        settings.notify_data_dir.mkdir(parents=True, exist_ok=True)
        outbox = Outbox(settings.notify_data_dir / OUTBOX_FILE)
    except (OSError, sqlite3.Error) as error:
        print(
            f"sentrycam-{SERVICE}: invalid setting NOTIFY_DATA_DIR={settings.notify_data_dir}: {error}",
            file=sys.stderr,
        )
        return EXIT_BAD_SETTINGS
    if not settings.email_enabled:
        logger.warning("email is off: SMTP_HOST is not set (see docs/notifier.md to set it up)")
    stop = stop_on_signals()
    notifier = Notifier(settings, outbox, logger)
    notifier.start()
    stop.wait()
    logger.info("stopping")
    notifier.stop()
    outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
