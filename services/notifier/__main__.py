"""``python -m services.notifier``: email alerts, arming and the deterrent, until SIGTERM or Ctrl-C."""

from __future__ import annotations

from services.common.service import run_service
from services.notifier.handler import Notifier
from services.notifier.settings import NotifierSettings

if __name__ == "__main__":
    run_service(NotifierSettings, Notifier)
