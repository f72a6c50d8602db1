"""Logging every service shares: one line format that names the service, and reports of a repeated problem
at most once per interval (a camera sending garbage must not flood the log)."""

from __future__ import annotations

import logging
import sys
import threading
import time


def setup_logging(service: str, level: str) -> logging.Logger:
    """Log lines carry the service name, so interleaved logs of several services stay readable."""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # paho logs every packet at DEBUG; it is noise even when the service itself is debugged.
    logging.getLogger("paho").setLevel(logging.WARNING)
    return logging.getLogger(f"sentrycam.{service}")


class RateLimitedLog:
    """Logs a repeated problem at most once per interval per key, with how often it happened meanwhile."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def report(self, key: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        self._logger.warning("%s%s", message, more)
