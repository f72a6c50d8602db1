"""Alert emails through yagmail over SMTP: ssl, starttls or plain, with the snapshot attached."""

from __future__ import annotations

import html
import io
import smtplib
import ssl
import time
from typing import Any

import yagmail

from services.notifier.const import SENDER_NAME
from services.notifier.outbox import Alert
from services.notifier.settings import NotifierSettings


class SendError(Exception):
    """The server is unreachable or refused the email; worth retrying later."""


def local_time(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch_s))


def subject(alert: Alert) -> str:
    return f"SentryCam: {alert.label.replace('_', ' ')} on camera {alert.camera}"


def attachment_name(alert: Alert) -> str:
    """``front-person-20261122-034512.jpg``: sorts by time and says what it shows."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(alert.started_at))
    return f"{alert.camera}-{alert.label}-{stamp}.jpg"


def event_url(base_url: str | None, event_id: str) -> str | None:
    return f"{base_url}/events/{event_id}" if base_url else None


def body(alert: Alert, base_url: str | None) -> str:
    """HTML, which yagmail also uses for the text part."""
    what = html.escape(alert.label.replace("_", " "))
    lines = [
        f"A {what} was seen by camera <b>{html.escape(alert.camera)}</b>.",
        f"Time: {html.escape(local_time(alert.started_at))}",
        f"Score: {alert.score:.0%}",
    ]
    url = event_url(base_url, alert.event_id)
    if url:
        lines.append(f'Event: <a href="{html.escape(url)}">{html.escape(url)}</a>')
    if alert.snapshot is None:
        lines.append("(The event carried no usable snapshot.)")
    return "\n".join(lines)


class Mailer:
    """Sends one alert per call on a fresh connection; raises SendError when it was not accepted."""

    def __init__(self, settings: NotifierSettings) -> None:
        assert settings.smtp_host is not None and settings.email_from is not None
        self._settings = settings
        self._host = settings.smtp_host
        self._sender = settings.email_from
        cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
        self._tls = ssl.create_default_context(cafile=cafile)

    def _client(self) -> yagmail.SMTP:
        security = self._settings.smtp_security
        options: dict[str, Any] = {"timeout": self._settings.smtp_timeout}
        if security == "ssl":
            options["context"] = self._tls  # passed on to smtplib.SMTP_SSL
        return yagmail.SMTP(
            user={self._sender: SENDER_NAME},
            host=self._host,
            port=self._settings.port,
            smtp_ssl=security == "ssl",
            smtp_starttls={"context": self._tls} if security == "starttls" else False,
            # We log in ourselves: yagmail would log in as the From address (and add @gmail.com to a
            # user name without one), but SMTP_USERNAME may differ from EMAIL_FROM.
            smtp_skip_login=True,
            **options,
        )

    def send(self, alert: Alert) -> dict[str, tuple[int, bytes]]:
        """Returns the recipients the server refused while accepting the others."""
        client = self._client()
        try:
            client.login()  # connects, and does STARTTLS when asked to
            if self._settings.smtp_username:
                password = self._settings.smtp_password
                client.smtp.login(
                    self._settings.smtp_username, password.get_secret_value() if password else ""
                )
            recipients, message = client.prepare_send(
                to=self._settings.email_to,
                subject=subject(alert),
                contents=body(alert, self._settings.web_base_url),
                attachments=[self._attachment(alert)] if alert.snapshot else None,
                prettify_html=False,
                # Stable per alert: a copy sent again after a crash (see docs) carries the same id.
                message_id=f"<{alert.event_id}@sentrycam>",
            )
            # sendmail, not yagmail's send: it raises on failure instead of sleeping and returning False.
            refused: dict[str, tuple[int, bytes]] = client.smtp.sendmail(self._sender, recipients, message)
            return refused
        except (smtplib.SMTPException, OSError) as error:
            raise SendError(f"{type(error).__name__}: {error}") from error
        finally:
            client.close()

    @staticmethod
    def _attachment(alert: Alert) -> io.BytesIO:
        assert alert.snapshot is not None
        attachment = io.BytesIO(alert.snapshot)
        attachment.name = attachment_name(alert)  # yagmail names the part by it
        return attachment
