"""A real SMTP server (aiosmtpd) with AUTH and TLS, a real HTTP push receiver and a silent server for the
notifier tests and benchmark, and event helpers (with tracked objects, for the alert rules)."""

from __future__ import annotations

import datetime
import email
import email.policy
import functools
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
        """The HTML part."""
        return self.part("text/html")

    def plain(self) -> str:
        return self.part("text/plain")

    def part(self, content_type: str) -> str:
        """The one part of that type (an attachment is no text part)."""
        found = [part for part in self.message.walk() if part.get_content_type() == content_type]
        assert len(found) == 1, f"{len(found)} {content_type} parts"
        return str(found[0].get_content())


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


@dataclass
class PushRequest:
    """One HTTP request a push channel made, as the receiver got it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


class PushReceiver:
    """A real HTTP server on a fixed loopback port, as Apprise's ``json://`` and ``ntfy://`` URLs reach it:
    it answers 200 and records every request. ``stop`` and ``start`` again keep the port (a receiver down)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[PushRequest] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    def json_url(self, path: str = "alerts") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def ntfy_url(self, topic: str = "sentrycam") -> str:
        return f"ntfy://127.0.0.1:{self.port}/{topic}"

    def start(self) -> PushReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                url = urllib.parse.urlsplit(self.path)
                request = PushRequest(
                    self.command, url.path, dict(urllib.parse.parse_qsl(url.query)), dict(self.headers), body
                )
                with receiver._changed:
                    receiver.requests.append(request)
                    receiver._changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_PUT = _record  # http.server's names

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def on(self, path: str) -> list[PushRequest]:
        with self._changed:
            return [request for request in self.requests if request.path == path]

    def wait_count(self, path: str, count: int, timeout: float = 15.0) -> list[PushRequest]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := [r for r in self.requests if r.path == path]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(found)} of {count} requests to {path} within {timeout} s")
                self._changed.wait(remaining)
            return found


class SilentServer:
    """Takes TCP connections (the kernel's backlog) and never answers: a push service that hangs."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()
