"""A real SMTP server (aiosmtpd) with AUTH and TLS for the notifier tests and benchmark, and event helpers."""

from __future__ import annotations

import datetime
import email
import email.policy
import functools
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scripts.localbroker import free_port
from tests.support import PERSON_VIDEO, jpeg, read_frames

SMTP_USER = "alerts@example.com"
RECIPIENTS = ("owner@example.com", "neighbour@example.org")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@dataclass
class Mail:
    mail_from: str
    recipients: list[str]
    message: EmailMessage
    at: float = field(default_factory=time.time)

    def attachment(self) -> tuple[str, bytes]:
        """File name and bytes of the (one) JPEG attachment."""
        for part in self.message.walk():
            if part.get_content_type() == "image/jpeg":
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                return str(part.get_filename()), payload
        raise AssertionError("no JPEG attachment")

    def text(self) -> str:
        for part in self.message.walk():
            if part.get_content_type() == "text/html":
                return str(part.get_content())
        raise AssertionError("no text part")


class SmtpServer:
    """aiosmtpd on a free loopback port, with AUTH; ``ssl`` / ``starttls`` use a self-signed certificate."""

    def __init__(self, workdir: Path, security: str, password: str = "correct horse battery") -> None:
        self.security = security
        self.password = password
        self.port = free_port()
        self.mails: list[Mail] = []
        self.failed_logins = 0  # not auth_*: aiosmtpd takes handler attributes named auth_* as mechanisms
        self._changed = threading.Condition()
        self.cert_file: Path | None = None
        self._context: ssl.SSLContext | None = None
        if security != "none":
            self.cert_file, key_file = make_certificate(workdir)
            self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._context.load_cert_chain(self.cert_file, key_file)
        self._controller: Controller | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.port),
            "SMTP_SECURITY": self.security,
            "SMTP_USERNAME": SMTP_USER,
            "SMTP_PASSWORD": self.password,
            "EMAIL_TO": ",".join(RECIPIENTS),
        }
        if self.cert_file:
            env["SMTP_CA_FILE"] = str(self.cert_file)
        env.update(extra)
        return env

    def start(self) -> SmtpServer:
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="localhost",
            authenticator=self._authenticate,
            auth_required=True,
            # aiosmtpd only knows of STARTTLS; with ssl the whole connection is TLS already.
            auth_require_tls=self.security == "starttls",
            ssl_context=self._context if self.security == "ssl" else None,
            tls_context=self._context if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _authenticate(
        self, _server: SMTP, _session: Session, _envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == SMTP_USER
            and data.password.decode() == self.password
        )
        if not ok:
            self.failed_logins += 1
        # handled=False: aiosmtpd answers 535 itself (handled=True would leave the client waiting).
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._changed:
            self.mails.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message))
            self._changed.notify_all()
        return "250 OK"

    def wait_count(self, count: int, timeout: float = 15.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.mails) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self.mails)} of {count} emails within {timeout} s")
                self._changed.wait(remaining)
            return list(self.mails)


@functools.cache
def snapshot_jpeg(frame_index: int = 120) -> bytes:
    """A real frame of the shared person footage, JPEG-encoded as the detector would."""
    return jpeg(read_frames(PERSON_VIDEO, frame_index, frame_index)[0], quality=85)
