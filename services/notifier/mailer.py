"""Alert emails over SMTP (yagmail's connection: ssl, starttls or plain): a plain text part, an HTML part
and the snapshot attached. The message is built here with the standard library: yagmail's own text part
was its HTML with the tags left in."""

from __future__ import annotations

import html
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate
from typing import Any

import yagmail

from services.common.scores import percent
from services.notifier.const import SENDER_NAME
from services.notifier.outbox import Alert
from services.notifier.settings import NotifierSettings


class SendError(Exception):
    """The server is unreachable or refused the email; worth retrying later."""


def local_time(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch_s))


def where(alert: Alert) -> str:
    """`` at porch`` for an alert whose object was in a zone (NOTIFY_RULES), else nothing."""
    return f" at {alert.zone}" if alert.zone else ""


def subject(alert: Alert) -> str:
    return f"SentryCam: {alert.label.replace('_', ' ')}{where(alert)} on camera {alert.camera}"


def attachment_name(alert: Alert) -> str:
    """``front-person-20261122-034512.jpg``: sorts by time and says what it shows."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(alert.started_at))
    return f"{alert.camera}-{alert.label}-{stamp}.jpg"


def event_url(base_url: str | None, event_id: str) -> str | None:
    return f"{base_url}/events/{event_id}" if base_url else None


NO_SNAPSHOT = "(The event carried no usable snapshot.)"


def facts(alert: Alert, base_url: str | None) -> list[tuple[str, str]]:
    """What both parts say after their first line: the zone if any, time, score and, when WEB_BASE_URL is
    set, the link."""
    found = [("Zone", alert.zone)] if alert.zone else []
    found += [("Time", local_time(alert.started_at)), ("Score", percent(alert.score))]
    url = event_url(base_url, alert.event_id)
    return [*found, ("Event", url)] if url else found


def text_body(alert: Alert, base_url: str | None) -> str:
    """The plain text part: no markup, the same facts as the HTML part."""
    lines = [f"A {alert.label.replace('_', ' ')} was seen{where(alert)} by camera {alert.camera}."]
    lines += [f"{name}: {value}" for name, value in facts(alert, base_url)]
    if alert.snapshot is None:
        lines.append(NO_SNAPSHOT)
    return "\n".join(lines) + "\n"


def html_body(alert: Alert, base_url: str | None) -> str:
    what = html.escape(alert.label.replace("_", " "))
    lines = [f"A {what} was seen{html.escape(where(alert))} by camera <b>{html.escape(alert.camera)}</b>."]
    for name, value in facts(alert, base_url):
        shown = html.escape(value)
        lines.append(f'{name}: <a href="{shown}">{shown}</a>' if name == "Event" else f"{name}: {shown}")
    if alert.snapshot is None:
        lines.append(NO_SNAPSHOT)
    return "<html><body>\n" + "<br>\n".join(lines) + "\n</body></html>\n"


def message(alert: Alert, sender: str, recipients: list[str], base_url: str | None) -> EmailMessage:
    """multipart/mixed: multipart/alternative (text, then HTML: clients show the last they can) and the
    snapshot as a JPEG attachment."""
    mail = EmailMessage()
    mail["From"] = formataddr((SENDER_NAME, sender))
    mail["To"] = ", ".join(recipients)
    mail["Subject"] = subject(alert)
    mail["Date"] = formatdate(localtime=True)
    # Stable per alert: a copy sent again after a crash (see docs) carries the same id.
    mail["Message-ID"] = f"<{alert.event_id}@sentrycam>"
    mail.set_content(text_body(alert, base_url))
    mail.add_alternative(html_body(alert, base_url), subtype="html")
    if alert.snapshot:
        mail.add_attachment(alert.snapshot, maintype="image", subtype="jpeg", filename=attachment_name(alert))
    return mail


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
            recipients = list(self._settings.email_to)
            mail = message(alert, self._sender, recipients, self._settings.web_base_url)
            # sendmail, not yagmail's send: it raises on failure instead of sleeping and returning False.
            refused: dict[str, tuple[int, bytes]] = client.smtp.sendmail(
                # CRLF line ends: smtplib fixes them in text only, and a server reads LF-only bytes as one
                # line too long.
                self._sender,
                recipients,
                mail.as_bytes(policy=SMTP),
            )
            return refused
        except (smtplib.SMTPException, OSError) as error:
            raise SendError(f"{type(error).__name__}: {error}") from error
        finally:
            client.close()
