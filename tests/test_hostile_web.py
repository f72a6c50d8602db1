"""Hostile input (issue 11) on the web relay's HTTP side: login forms, JSON bodies, paths, query strings,
headers and cookies, and many junk requests at once. The MQTT side is in tests/test_hostile.py.

Hypothesis drives the real app, seeded (``derandomize``) with a fixed number of cases per test: Flask's test
client where the server is not the point (forms, JSON, paths, query strings), raw HTTP to the relay's
waitress port where it is (request lines, headers, cookies, concurrency). Every case: never a 5xx, and a 4xx
for junk (the status the contract says where it says one). After each test the owner's session still works.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.web.blueprints.api import ArmedBody, DetectBody
from services.web.const import MAX_REQUEST_BYTES
from services.web.relay import WebRelay
from tests.support import Collector, detection_event, footage_frames, wait_until
from tests.test_hostile import JSON_VALUES, NOT_UTF8, drawn, dumps, spliced
from tests.web_support import PASSWORD, USERNAME, csrf_token, log_in, running_relay

CAMERA = "hostile-http"
EVENT_ID = f"{CAMERA}-1-person"
# Junk logins come from an address of their own, so that the failed-login limit they reach never stops the
# owner (who logs in from the test client's default address and, over HTTP, from 127.0.0.1).
JUNK_ADDRESS = "10.9.9.9"


def cases(count: int) -> settings:
    """A fixed number of cases, the same ones on every run."""
    return settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@dataclass
class Web:
    relay: WebRelay
    app: Flask
    owner: FlaskClient
    token: str
    port: int
    cookie: str  # the owner's session over real HTTP: "sentrycam_session=..."
    http_token: str


def http_owner(port: int) -> tuple[str, str]:
    """Log in over real HTTP: the signed-in session's cookie and its CSRF token."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/login")
        response = connection.getresponse()
        token = csrf_token(response.read().decode())
        cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
        body = urllib.parse.urlencode({"username": USERNAME, "password": PASSWORD, "csrf_token": token})
        headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        connection.request("POST", "/login", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 302
        cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
        connection.request("GET", "/", headers={"Cookie": cookie})
        response = connection.getresponse()
        assert response.status == 200
        return cookie, csrf_token(response.read().decode())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def web(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One relay for the module, with a camera (a frame) and an event (a snapshot) to be found."""
    publisher = Collector(broker)
    with running_relay(broker, tmp_path_factory.mktemp("hostile-web")) as (relay, app):
        publisher.announce(CAMERA)
        publisher.frame(CAMERA, footage_frames()[0])
        publisher.publish(
            topics.event(CAMERA, "person"), detection_event(CAMERA, EVENT_ID, footage_frames()[1])
        )
        wait_until(lambda: relay.hub.latest(CAMERA) and relay.store.get(EVENT_ID), what="camera and event")
        owner = app.test_client()
        status, token = log_in(owner)
        assert status == 302
        port = relay.settings.web_port
        cookie, http_token = http_owner(port)
        yield Web(relay, app, owner, token, port, cookie, http_token)
        publisher.forget(CAMERA)
    publisher.close()


def assert_owner_still_served(web: Web) -> None:
    """The owner's session, through the test client and over HTTP, and the health check."""
    assert web.owner.get("/api/status").status_code == 200
    assert web.owner.get(f"/api/events/{EVENT_ID}").get_json()["event_id"] == EVENT_ID
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        connection.request("GET", f"/cam/{CAMERA}/latest.jpg", headers={"Cookie": web.cookie})
        response = connection.getresponse()
        assert response.status == 200 and response.read() == footage_frames()[0]
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert json.loads(response.read()) == {"ok": True, "broker_connected": True}
    finally:
        connection.close()


# ---- login form ---------------------------------------------------------------------------------------

FORM_KEYS = st.sampled_from(["username", "password", "csrf_token", "next"]) | st.text(max_size=20)
FORM_VALUES = st.one_of(
    st.text(max_size=100),
    st.sampled_from([USERNAME, PASSWORD, "admin", "' OR 1=1 --", "%00", "\x00"]),
    st.integers(MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 20_000).map(lambda n: "x" * n),  # over the limit
)
FORM_TYPES = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-16",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "text/plain",
        "application/json",
        'junk/junk; a="b',
    ]
)


@st.composite
def login_bodies(draw: st.DrawFn, token: str) -> bytes:
    """A form of junk fields (with the session's token, a junk one or none), or bytes: raw, or a form with
    bytes that are not UTF-8."""
    fields = draw(st.dictionaries(FORM_KEYS, FORM_VALUES, max_size=5))
    which = draw(st.sampled_from(["valid", "junk", "none"]))
    if which == "valid":
        fields["csrf_token"] = token
    elif which == "junk":
        fields["csrf_token"] = draw(st.text(max_size=60))
    form = urllib.parse.urlencode(fields).encode()
    return draw(
        st.one_of(
            st.just(form),
            st.binary(max_size=2000),
            st.builds(spliced, st.just(form), st.sampled_from(NOT_UTF8), st.just(b"&password=x")),
        )
    )


@cases(300)
@given(data=st.data(), content_type=FORM_TYPES)
def test_junk_logins_are_refused_with_a_4xx_and_never_sign_in(
    web: Web, data: st.DataObject, content_type: str
) -> None:
    client = web.app.test_client()
    page = client.get("/login", environ_base={"REMOTE_ADDR": JUNK_ADDRESS})
    body = data.draw(login_bodies(csrf_token(page.get_data(as_text=True))))
    response = client.post(
        "/login", data=body, content_type=content_type, environ_base={"REMOTE_ADDR": JUNK_ADDRESS}
    )
    # 400: no or a wrong token, or too large; 401: wrong login; 429: too many wrong ones from that address.
    assert response.status_code in (400, 401, 429), (response.status_code, body[:200])
    assert client.get("/api/status").status_code == 401


def test_a_csrf_token_with_non_ascii_characters_is_refused_not_a_500(web: Web) -> None:
    """hmac.compare_digest refuses str with non-ASCII characters: the check once raised (a 500)."""
    client = web.app.test_client()
    client.get("/login", environ_base={"REMOTE_ADDR": JUNK_ADDRESS})
    form = {"username": USERNAME, "password": "x", "csrf_token": "jeton-é"}
    assert client.post("/login", data=form, environ_base={"REMOTE_ADDR": JUNK_ADDRESS}).status_code == 400
    headers = {"X-CSRF-Token": "jeton-é"}
    assert web.owner.post("/api/armed", json={"armed": True}, headers=headers).status_code == 403


def test_the_owner_is_still_served_after_the_junk_logins(web: Web) -> None:
    assert_owner_still_served(web)


# ---- JSON bodies --------------------------------------------------------------------------------------

API_POSTS: dict[str, type[BaseModel]] = {
    "/api/armed": ArmedBody,
    f"/api/cameras/{CAMERA}/detect": DetectBody,
    f"/api/cameras/{CAMERA}/alarm": schemas.AlarmCommand,
}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


JSON_BODIES = st.one_of(
    st.builds(dumps, JSON_VALUES, st.booleans()),
    # Near the right shape: the right key with any value.
    st.builds(
        lambda key, value: dumps({key: value}), st.sampled_from(["armed", "enabled", "state"]), JSON_VALUES
    ),
    st.builds(
        lambda state, duration, tone: dumps({"state": state, "duration": duration, "tone": tone}),
        st.sampled_from(["ON", "OFF", "on", "LOUD", ""]) | JSON_VALUES,
        st.floats() | st.integers() | JSON_VALUES,
        st.text(max_size=80) | JSON_VALUES,
    ),
    st.binary(max_size=2000),
    st.builds(spliced, st.just(b'{"armed": "'), st.sampled_from(NOT_UTF8), st.just(b'"}')),
    st.integers(100, 32_000).map(nested),  # deeper than any recursive parser goes, under the size limit
    st.integers(100, 32_000).map(lambda depth: b'{"armed": ' + nested(depth) + b"}"),
    st.integers(MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 10_000).map(
        lambda n: b'{"armed": "' + b"x" * n + b'"}'
    ),
)


def accepted(model: type[BaseModel], body: bytes, content_type: str) -> bool:
    """What the API takes: a JSON object (UTF-8, -16 or -32, as json reads bytes) of at most
    MAX_REQUEST_BYTES that the endpoint's model validates."""
    if "json" not in content_type or len(body) > MAX_REQUEST_BYTES:
        return False
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return False
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return isinstance(value, dict)


@cases(400)
@given(
    target=st.sampled_from(sorted(API_POSTS)),
    body=JSON_BODIES,
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]),
)
@example(target="/api/armed", body=nested(30_000), content_type="application/json")  # was a 500
def test_junk_json_bodies_are_refused_with_400(web: Web, target: str, body: bytes, content_type: str) -> None:
    response = web.owner.post(
        target, data=body, content_type=content_type, headers={"X-CSRF-Token": web.token}
    )
    expected = 202 if accepted(API_POSTS[target], body, content_type) else 400
    assert response.status_code == expected, (response.status_code, response.get_data()[:200], body[:200])
    assert response.is_json


def test_the_owner_is_still_served_after_the_junk_json(web: Web) -> None:
    assert_owner_still_served(web)


# ---- paths and query strings --------------------------------------------------------------------------

SEGMENTS = st.one_of(
    st.text(min_size=1, max_size=30).map(lambda text: urllib.parse.quote(text, safe="")),
    st.sampled_from(
        [
            "..",
            "%2e%2e",
            "..%2f..%2f..%2fetc%2fpasswd",
            "%00",
            "a%00b",
            "%ff%fe",
            "....%2f%2f",
            "%252e%252e",
            "~",
        ]
    ),
    st.integers(1000, 8000).map(lambda n: "a" * n),
)
PATH_TEMPLATES = [
    "/events/{}",
    "/api/events/{}",
    "/events/{}/snapshot.jpg",
    "/events/{}/thumb.jpg",
    "/events/../{}/snapshot.jpg",
    "/cam/{}/latest.jpg",
    "/cam/{}/live.mjpg",
    "/api/cameras/{}",
    "/static/{}",
    "/static/..%2f{}",
    "/api/{}",
]


@cases(400)
@given(template=st.sampled_from(PATH_TEMPLATES), segment=SEGMENTS)
def test_junk_paths_are_404_and_never_leave_their_folders(web: Web, template: str, segment: str) -> None:
    path = template.format(segment)
    response = web.owner.get(path)
    if response.status_code == 308:
        # Double slashes (from %2f%2f) are merged by a redirect to the same site, which is then a 404.
        location = urllib.parse.urlsplit(response.headers["Location"])
        assert location.netloc in ("", "localhost"), response.headers["Location"]
        response = web.owner.get(location.path)
    assert response.status_code == 404, (response.status_code, path[:200])
    assert b"root:" not in response.data and b"import " not in response.data


# Look-alikes: 2024-01-31 in Arabic-Indic and in full-width digits, "front" in full-width letters.
ARABIC_INDIC_DAY = "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0663\u0661"
FULLWIDTH_DAY = "\uff12\uff10\uff12\uff14-\uff10\uff11-\uff13\uff11"
FULLWIDTH_FRONT = "\uff46\uff52\uff4f\uff4e\uff54"


def not_matching(pattern: str) -> st.SearchStrategy[str]:
    """Non-empty text that is not a value of the contract (an empty one means "unset")."""
    return st.text(min_size=1, max_size=40).filter(lambda text: not re.fullmatch(pattern, text))


def no_digits(text: str) -> bool:
    return not any(char.isdigit() for char in text)


BAD_QUERY_VALUES = {
    # The patterns of the contract, ASCII only: a day in other digits is no day.
    "camera": not_matching(topics.CAMERA_ID_RE.pattern)
    | st.sampled_from(["Front", "front/x", FULLWIDTH_FRONT, "a" * 33]),
    "label": not_matching(topics.LABEL_RE.pattern)
    | st.sampled_from(["Person", "traffic light", "\uff50erson"]),
    "day": not_matching(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
    | st.sampled_from([ARABIC_INDIC_DAY, FULLWIDTH_DAY, "2024-1-31", "2024-01-31T00", "2024/01/31"]),
    "before": st.sampled_from(["nan", "inf", "-inf", "1e999", "NaN"])
    | st.text(min_size=1, max_size=20).filter(no_digits),
    "limit": st.sampled_from(["0", "-1", "1.5", "inf", "0x10"])
    | st.text(min_size=1, max_size=20).filter(no_digits),
}


@st.composite
def bad_queries(draw: st.DrawFn) -> dict[str, str]:
    """At least one value the contract refuses, maybe good ones and unknown keys besides."""
    keys = st.sampled_from(sorted(BAD_QUERY_VALUES))
    bad = {draw(keys)} | draw(st.sets(keys, max_size=4) | st.just(set()))  # one alone, often
    query = {key: draw(BAD_QUERY_VALUES[key]) for key in bad}
    good = {"camera": CAMERA, "label": "person", "day": "2024-01-31", "before": "1e9", "limit": "5"}
    for key in draw(st.sets(st.sampled_from(sorted(good)))):
        query.setdefault(key, good[key])
    query.update(
        draw(
            st.dictionaries(
                st.text(max_size=10).filter(lambda k: k not in good), st.text(max_size=10), max_size=3
            )
        )
    )
    return query


@cases(300)
@given(query=bad_queries(), page=st.sampled_from(["/api/events", "/events"]))
# Look-alikes, each alone: digits that are not ASCII, a camera id in full-width letters.
@example(query={"day": ARABIC_INDIC_DAY}, page="/api/events")
@example(query={"day": FULLWIDTH_DAY}, page="/events")
@example(query={"camera": FULLWIDTH_FRONT}, page="/api/events")
@example(query={"limit": "\u0665"}, page="/api/events")
def test_junk_event_filters_are_refused_with_400(web: Web, query: dict[str, str], page: str) -> None:
    response = web.owner.get(page, query_string=query)
    assert response.status_code == 400, (response.status_code, query)


def test_the_owner_is_still_served_after_the_junk_paths_and_queries(web: Web) -> None:
    assert_owner_still_served(web)


# ---- raw HTTP: request lines, headers, cookies, many at once -----------------------------------------

# Header text as HTTP carries it (Latin-1), without the line breaks that would end the header.
HEADER_TEXT = st.text(st.characters(max_codepoint=255, blacklist_characters="\r\n"), max_size=200)
HEADER_NAMES = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"), min_size=1, max_size=30
).filter(
    # Headers that would make the server wait for a body that never comes.
    lambda name: name.lower() not in ("content-length", "transfer-encoding", "expect")
)
METHODS = st.sampled_from(
    ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "BREW", "G\x00T"]
)
RAW_PATHS = st.sampled_from(
    ["/", "/api/status", "/api/events", f"/cam/{CAMERA}/latest.jpg", "/login", "/healthz", "/api/armed"]
) | SEGMENTS.map(lambda s: "/events/" + s)


@dataclass(frozen=True)
class Raw:
    """One raw HTTP request, and whether it carries the owner's session."""

    data: bytes
    signed_in: bool = False
    csrf_junk: bool = False


def request_bytes(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: relay", *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@st.composite
def raw_requests(draw: st.DrawFn, cookie: str) -> Raw:
    kind = draw(st.sampled_from(["line", "headers", "cookie", "csrf"]))
    if kind == "line":  # a request line of junk
        junk = draw(st.binary(min_size=1, max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b))
        return Raw(junk + b"\r\n\r\n")
    if kind == "headers":  # a plain request with junk headers
        headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_TEXT), max_size=8))
        return Raw(request_bytes(draw(METHODS), draw(RAW_PATHS), headers))
    if kind == "cookie":  # a huge or junk session cookie
        value = draw(st.one_of(HEADER_TEXT, st.integers(4000, 300_000).map(lambda n: "x" * n)))
        name = draw(st.sampled_from(["sentrycam_session", "session", "x"]))
        return Raw(request_bytes("GET", draw(RAW_PATHS), [("Cookie", f"{name}={value}")]))
    # The owner's session and a junk CSRF token: no change is made.
    token = draw(HEADER_TEXT)
    body = b'{"armed": false}'
    headers = [("Cookie", cookie), ("X-CSRF-Token", token), ("Content-Type", "application/json")]
    return Raw(request_bytes("POST", "/api/armed", headers, body), signed_in=True, csrf_junk=True)


def status_of(port: int, request: bytes) -> int:
    """Send ``request`` and read the status code of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert match, f"no HTTP answer: {answer[:200]!r} to {request[:200]!r}"
    return int(match[1])


def assert_refused(raw: Raw, status: int) -> None:
    assert status < 500, (status, raw.data[:300])
    if raw.csrf_junk:
        # 403 from the CSRF check; 400 from waitress for a token it will not take as a header (a control
        # character); never the 202 of a change made.
        assert status in (400, 403), (status, raw.data[:300])
    elif not raw.signed_in:
        # Strangers: a 4xx, or the public pages (the login form, the health check) and the redirect to the
        # login form.
        assert 400 <= status < 500 or status in (200, 302), (status, raw.data[:300])


@cases(300)
@given(data=st.data())
def test_junk_requests_over_http_get_a_4xx_never_a_5xx(web: Web, data: st.DataObject) -> None:
    raw = data.draw(raw_requests(web.cookie))
    assert_refused(raw, status_of(web.port, raw.data))


def test_fifty_junk_requests_at_once_then_the_owner_is_served(web: Web) -> None:
    requests = drawn(raw_requests(web.cookie), 50, seed_value=1801)
    start = threading.Barrier(len(requests))
    statuses: dict[int, int] = {}

    def send(index: int, raw: Raw) -> None:
        start.wait()
        statuses[index] = status_of(web.port, raw.data)

    threads = [threading.Thread(target=send, args=item) for item in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(statuses) == len(requests)
    for index, raw in enumerate(requests):
        assert_refused(raw, statuses[index])
    assert_owner_still_served(web)
