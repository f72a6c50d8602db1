"""Push channels through Apprise (ntfy, Telegram, Home Assistant, ...): the URLs, their keys, the text.

A URL holds its channel's secrets (tokens, passwords), so it is never logged, printed or stored: a channel is
known by its position in NOTIFY_URLS and its scheme (``push 2 (tgram)``) in logs, and by ``push-<12 hex of the
URL's SHA-256>`` in the outbox, which stays the same across restarts and when other URLs are added or removed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import apprise
from apprise.attachment.memory import AttachMemory

from services.common.service import StartupError
from services.notifier.const import PUSH_CONNECT_TIMEOUT_S, PUSH_READ_TIMEOUT_S
from services.notifier.mailer import SendError, attachment_name, subject, text_body
from services.notifier.outbox import Alert
from services.notifier.settings import NotifierSettings

_SPLIT_RE = re.compile(r"[,\n]")
# Pieces of a URL that may be secrets; shorter ones (ports, "bot") say nothing and are left alone.
_PIECE_RE = re.compile(r"[^/:@?&=#,\s]{4,}")
_MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class PushChannel:
    key: str
    position: int
    scheme: str
    url: str = field(repr=False)

    @property
    def name(self) -> str:
        return f"push {self.position} ({self.scheme})"


def channel_key(url: str) -> str:
    return "push-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def configured_urls(settings: NotifierSettings) -> list[str]:
    """NOTIFY_URLS, or the contents of NOTIFY_URLS_FILE: comma or newline separated, ``#`` lines skipped."""
    if settings.notify_urls_file is not None:
        try:
            text = settings.notify_urls_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise StartupError("NOTIFY_URLS_FILE", f"cannot read it: {type(error).__name__}") from None
    else:
        text = settings.notify_urls.get_secret_value() if settings.notify_urls else ""
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    return [url.strip() for url in _SPLIT_RE.split("\n".join(lines)) if url.strip()]


def push_channels(settings: NotifierSettings) -> list[PushChannel]:
    """One channel per URL; StartupError naming the entry by position (never by content) when Apprise
    cannot use it, or when it repeats an earlier one."""
    setting = "NOTIFY_URLS_FILE" if settings.notify_urls_file else "NOTIFY_URLS"
    quiet_apprise()
    channels: list[PushChannel] = []
    for position, url in enumerate(configured_urls(settings), start=1):
        if apprise.Apprise.instantiate(url, asset=_asset()) is None:
            problem = (
                f"entry {position} is not an Apprise URL that Apprise can use (unknown scheme or format)"
            )
            raise StartupError(setting, problem)
        channel = PushChannel(channel_key(url), position, url.split("://", 1)[0].lower(), url)
        if any(known.key == channel.key for known in channels):
            raise StartupError(setting, f"entry {position} repeats an earlier entry")
        channels.append(channel)
    return channels


class Pusher:
    """Sends one alert to one push channel per call, on the calling thread; SendError when it was not
    delivered. The plugin is made anew for each alert: a kept one would wait out Apprise's own throttle
    (5.5 s between two sends on most plugins), and our outbox already paces retries."""

    def __init__(self, channel: PushChannel, base_url: str | None) -> None:
        self.channel = channel
        # What the sender thread needs (services/notifier/sender.py, Transport).
        self.key = channel.key
        self.to = f" to {channel.name}"
        self.done = f"sent to {channel.name}"
        self._base_url = base_url
        self._secrets = sorted(set(_PIECE_RE.findall(channel.url.split("://", 1)[-1])), key=len, reverse=True)

    def send(self, alert: Alert) -> None:
        plugin = apprise.Apprise.instantiate(self.channel.url, asset=_asset())
        if plugin is None:
            raise SendError("Apprise no longer takes this URL")
        _short_timeouts(plugin, self.channel.url)
        attach = None
        if alert.snapshot is not None:
            memory = AttachMemory(  # type: ignore[no-untyped-call]
                content=alert.snapshot, name=attachment_name(alert), mimetype="image/jpeg"
            )
            attach = apprise.AppriseAttachment(memory)
        with _capture() as lines:
            try:
                delivered = plugin.notify(
                    body=text_body(alert, self._base_url).rstrip(), title=subject(alert), attach=attach
                )
            except Exception as error:  # a plugin's bug must not stop the channel's thread
                lines.append(f"{type(error).__name__}: {error}")
                delivered = False
        if not delivered:
            raise SendError(self._scrub("; ".join(lines) or "not delivered (no reason given)"))

    def _scrub(self, text: str) -> str:
        """Apprise's error text, with every piece of the URL (tokens, passwords, hosts) replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:_MAX_ERROR_CHARS]


def _asset() -> apprise.AppriseAsset:
    # async_mode off: the send runs on the channel's own thread, which is what keeps channels apart.
    return apprise.AppriseAsset(async_mode=False, secure_logging=True)


def _short_timeouts(plugin: object, url: str) -> None:
    """Apprise waits 4 s to connect and 4 s per read by default; ours are set in const.py unless the URL
    says otherwise (``?cto=``, ``?rto=``)."""
    if "cto=" not in url:
        plugin.socket_connect_timeout = PUSH_CONNECT_TIMEOUT_S  # type: ignore[attr-defined]
    if "rto=" not in url:
        plugin.socket_read_timeout = PUSH_READ_TIMEOUT_S  # type: ignore[attr-defined]


class _ThreadCapture(logging.Handler):
    """Apprise's log lines, kept per thread while that thread is sending: channels send at the same time,
    and one channel's error (which may hold its secrets) must not land in another's line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        lines: list[str] | None = getattr(self.local, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())


_CAPTURE = _ThreadCapture()


@contextmanager
def _capture() -> Iterator[list[str]]:
    lines: list[str] = []
    _CAPTURE.local.lines = lines
    try:
        yield lines
    finally:
        _CAPTURE.local.lines = None


def quiet_apprise() -> None:
    """Apprise's own log lines name hosts and sometimes tokens: none reaches our log, only what Pusher
    reports, scrubbed. Nor do urllib3's (under Apprise's requests, and used by nothing else here): its debug
    lines hold each request's path, where Telegram's bot token is."""
    urllib3_log = logging.getLogger("urllib3")
    urllib3_log.propagate = False
    urllib3_log.addHandler(logging.NullHandler())
    apprise_log = logging.getLogger("apprise")
    apprise_log.propagate = False
    apprise_log.setLevel(logging.WARNING)
    if _CAPTURE not in apprise_log.handlers:
        apprise_log.addHandler(_CAPTURE)
