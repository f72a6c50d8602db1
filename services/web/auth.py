"""Login, sessions and CSRF for the one owner account."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from services.web.const import SECRET_KEY_FILE
from services.web.settings import WebSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginLimiter:
    """At most ``attempts`` failed logins per client address within ``window_s``."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self._attempts = attempts
        self._window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        return failures

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent(address, now)
            if len(failures) < self._attempts:
                return 0.0
            return failures[0] + self._window_s - now

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(address, now).append(now)
            # Forget idle addresses so a scan of many addresses cannot grow memory forever.
            if len(self._failures) > 10_000:
                self._failures = {a: f for a, f in self._failures.items() if f}

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


class Owner:
    """The account: checks a login without revealing which half was wrong or how long it took."""

    def __init__(self, settings: WebSettings) -> None:
        self.username = settings.web_username
        if settings.web_password_hash is not None:
            self._hash = settings.web_password_hash.get_secret_value()
        else:
            assert settings.web_password is not None  # the settings refuse neither
            self._hash = generate_password_hash(settings.web_password.get_secret_value())

    def check(self, username: str, password: str) -> bool:
        password_ok = check_password_hash(self._hash, password)
        return hmac.compare_digest(username.encode(), self.username.encode()) and password_ok


def secret_key(settings: WebSettings, data_dir: Path) -> str:
    """The configured key, or one generated at first start and kept (mode 0600) in the data directory."""
    if settings.web_secret_key is not None:
        return settings.web_secret_key.get_secret_value()
    path = data_dir / SECRET_KEY_FILE
    if path.is_file():
        return path.read_text().strip()
    key = secrets.token_hex(32)
    temporary = path.with_suffix(".tmp")
    temporary.touch(mode=0o600)
    temporary.write_text(key)
    temporary.rename(path)
    return key


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(str(expected), str(given))
