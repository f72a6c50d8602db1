"""Why an RTSP stream did not open: OpenCV only says "not opened", so after a failed open the camera asks
the camera itself, with one RTSP ``DESCRIBE`` (and the login, Basic or Digest, when asked for one), and
turns the answer into a sentence the owner can act on. Messages never contain the password."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import time
from urllib.parse import unquote, urlsplit, urlunsplit

from services.camera.const import RTSP_PROBE_MAX_BYTES

RTSP_DEFAULT_PORT = 554
RTSP_DEFAULT_TIMEOUT_S = 10.0
STATUS_RE = re.compile(rb"^RTSP/1\.\d (\d{3}) ?([^\r\n]*)")
CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class Answer:
    """The status line and headers of one RTSP response."""

    def __init__(self, status: int, reason: str, headers: dict[str, str]) -> None:
        self.status, self.reason, self.headers = status, reason, headers


def explain_stream_failure(url: str, timeout_s: float) -> str:
    """What went wrong opening ``url``, as one sentence (for the log and ``info.error``)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        return "cannot open the stream (unreachable, wrong URL or login, or not a video stream?)"
    where = f"{parts.hostname}:{parts.port or RTSP_DEFAULT_PORT}"
    try:
        answer = describe(url, timeout_s)
    except (OSError, ValueError) as error:
        return unreachable(error, where, timeout_s)
    return refusal(answer, where, parts.password is not None, parts.path) or (
        f"the camera at {where} answered, but its stream sent no video within {timeout_s:g} s"
    )


def unreachable(error: Exception, where: str, timeout_s: float) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the camera's host name in {where}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {where}: nothing listens there (camera off, or wrong port?)"
    if isinstance(error, TimeoutError):
        return f"no answer from {where} within {timeout_s:g} s"
    if isinstance(error, ValueError):
        return f"{where} does not answer as an RTSP camera: {error}"
    return f"cannot reach {where}: {getattr(error, 'strerror', None) or error}"


def refusal(answer: Answer, where: str, has_login: bool, path: str) -> str | None:
    """Why the camera said no; None when it said yes."""
    if answer.status == 401 and not has_login:
        return f"the camera at {where} wants a login (401 Unauthorized): put user:password@ in the URL"
    if answer.status == 401:
        return f"the camera at {where} refused the login (401 Unauthorized): check the user and password"
    if answer.status == 404:
        return f"the camera at {where} has no stream at {path or '/'!r} (404 Not Found): check the path"
    if answer.status != 200:
        return f"the camera at {where} answered {answer.status} {answer.reason[:64]}"
    return None


def describe(url: str, timeout_s: float) -> Answer:
    """``DESCRIBE`` without a login, then once more with the login the camera asks for, if the URL has one
    (on a new connection: a 401 may carry a body this check does not read)."""
    parts = urlsplit(url)
    # The URL the request names carries no credentials: they go in the Authorization header only.
    bare = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, parts.query, ""))
    address = (parts.hostname or "", parts.port or RTSP_DEFAULT_PORT)
    with socket.create_connection(address, timeout=timeout_s) as connection:
        answer = request(connection, bare, 1, "")
    challenge = answer.headers.get("www-authenticate", "")
    if answer.status != 401 or parts.password is None or not challenge:
        return answer
    login = authorization(challenge, unquote(parts.username or ""), unquote(parts.password), bare)
    with socket.create_connection(address, timeout=timeout_s) as connection:
        return request(connection, bare, 2, login)


def authorization(challenge: str, user: str, password: str, uri: str) -> str:
    """The Authorization header for a Basic or Digest (RFC 2617, no qop: what cameras use) challenge."""
    if challenge.lower().startswith("basic"):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    fields = dict(CHALLENGE_RE.findall(challenge))
    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
    ha1 = md5(f"{user}:{realm}:{password}")
    response = md5(f"{ha1}:{nonce}:{md5(f'DESCRIBE:{uri}')}")
    return f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def request(connection: socket.socket, url: str, cseq: int, auth: str) -> Answer:
    lines = [f"DESCRIBE {url} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp", "User-Agent: sentrycam"]
    if auth:
        lines.append(f"Authorization: {auth}")
    connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return read_answer(connection)


def read_answer(connection: socket.socket) -> Answer:
    """Status and headers, read up to a bound in size and in time (a camera dripping bytes cannot hold the
    capture loop longer than one timeout); the body, the SDP, is not needed."""
    data = b""
    deadline = time.monotonic() + (connection.gettimeout() or RTSP_DEFAULT_TIMEOUT_S)
    while b"\r\n\r\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer took too long")
        connection.settimeout(remaining)
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > RTSP_PROBE_MAX_BYTES:
            raise ValueError("answer too long")
    head = data.split(b"\r\n\r\n", 1)[0]
    status = STATUS_RE.match(head)
    if status is None:
        raise ValueError("no RTSP status line")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status.group(1)), status.group(2).decode("latin-1"), headers)
