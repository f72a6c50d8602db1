"""Login, sessions and CSRF for the one owner account."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from services.web.const import MAX_SESSIONS, SECRET_KEY_FILE
from services.web.files import restrict, write_private
from services.web.settings import WebSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginLimiter:
    """At most ``attempts`` failed logins per client address within ``window_s``. An attempt is counted
    before its password is checked (``begin``), so that many at once cannot all pass the limit while the
    first ones are still being checked; a successful login forgets the address's count."""

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

    def begin(self, address: str) -> float:
        """Count an attempt of ``address`` as failed until it succeeds: 0 when it may be checked now,
        else the seconds until it may try again (nothing counted)."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent(address, now)
            if len(failures) >= self._attempts:
                return max(failures[0] + self._window_s - now, 0.001)
            failures.append(now)
            # Forget idle addresses so a scan of many addresses cannot grow memory forever.
            if len(self._failures) > 10_000:
                recent = now - self._window_s
                self._failures = {a: f for a, f in self._failures.items() if f and f[-1] > recent}
        return 0.0

    def cancel(self, address: str) -> None:
        """An attempt counted by ``begin`` that was never checked (the server was busy)."""
        with self._lock:
            failures = self._failures.get(address)
            if failures:
                failures.pop()

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
        restrict(path)
        return path.read_text().strip()
    key = secrets.token_hex(32)
    write_private(path, key.encode())
    return key


class Sessions:
    """The signed-in sessions, so that a logout ends a session on the server and not only in the browser
    that logged out: a copied cookie stops working too. Each sign-in gets a random id in its (signed)
    cookie; the file keeps the SHA-256 of each id, one per line, oldest first, so it survives a restart
    and gives no cookie away. Of more than ``MAX_SESSIONS`` sign-ins the oldest is signed out."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._hashes: dict[str, None] = {}  # insertion-ordered: oldest first
        if path.is_file():
            restrict(path)
            for line in path.read_text(errors="replace").splitlines():
                if len(line) == 64 and all(c in "0123456789abcdef" for c in line):
                    self._hashes[line] = None

    @staticmethod
    def _hash(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def new(self) -> str:
        """A new signed-in session's id, kept before it is handed out. OSError when it cannot be kept."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            hashes = dict(self._hashes)
            hashes[self._hash(session_id)] = None
            while len(hashes) > MAX_SESSIONS:
                del hashes[next(iter(hashes))]
            self._save(hashes)
            self._hashes = hashes
        return session_id

    def valid(self, session_id: object) -> bool:
        if not isinstance(session_id, str) or not session_id:
            return False
        with self._lock:
            return self._hash(session_id) in self._hashes

    def revoke(self, session_id: object) -> None:
        """Forget the session now; OSError when the file could not be written (the session then stays
        revoked until the relay restarts)."""
        if not isinstance(session_id, str):
            return
        key = self._hash(session_id)
        with self._lock:
            if key in self._hashes:
                del self._hashes[key]
                self._save(self._hashes)

    def _save(self, hashes: dict[str, None]) -> None:
        write_private(self._path, "".join(f"{line}\n" for line in hashes).encode())


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    if not (expected and given):
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, answered 500), and a
    # forged token may have any.
    return hmac.compare_digest(
        str(expected).encode(errors="surrogatepass"), str(given).encode(errors="surrogatepass")
    )
