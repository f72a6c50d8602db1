"""The web relay through Flask's test client, against the real broker: pages, API, controls, security."""

from __future__ import annotations

import functools
import json
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from scripts.localbroker import LocalBroker
from services.common import topics
from services.web.relay import WebRelay
from tests.support import Collector, detection_event, footage_frames, wait_until
from tests.web_support import log_in, running_relay


def logged_in(app: Flask) -> tuple[FlaskClient, str]:
    client = app.test_client()
    status, token = log_in(client)
    assert status == 302
    return client, token


PROTECTED_GETS = [
    "/",
    "/events",
    "/events/front-1-person",
    "/events/front-1-person/snapshot.jpg",
    "/events/front-1-person/thumb.jpg",
    "/cam/front/live.mjpg",
    "/cam/front/latest.jpg",
    "/api/status",
    "/api/cameras",
    "/api/cameras/front",
    "/api/events",
    "/api/events/front-1-person",
    "/api/stream",
    "/cameras/front/recordings",
    "/clips/front-1-clip.mp4",
    "/cameras/front/recordings/2026-01-15/08-00-00.mp4",
]
PROTECTED_POSTS = ["/api/armed", "/api/cameras/front/detect", "/api/cameras/front/alarm", "/logout"]


def test_everything_but_login_and_health_needs_the_session(web: tuple[WebRelay, Flask]) -> None:
    _relay, app = web
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"ok": True, "broker_connected": True}
    assert client.get("/login").status_code == 200
    for path in PROTECTED_GETS:
        response = client.get(path)
        if path.startswith(("/api/", "/cam/", "/clips/")) or path.endswith(".mp4"):
            assert response.status_code == 401, path
        else:
            assert response.status_code == 302, path
            assert response.headers["Location"].startswith("/login?next="), path
    for path in PROTECTED_POSTS:
        assert client.post(path, json={"armed": False}).status_code in (401, 302), path


def test_login_sets_a_safe_cookie_and_failed_logins_are_rate_limited(web: tuple[WebRelay, Flask]) -> None:
    _relay, app = web
    client = app.test_client()
    token = log_in(client, password="wrong")[1]
    cookie = client.get_cookie("sentrycam_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    for _ in range(4):  # five failures in all (the default WEB_LOGIN_ATTEMPTS)
        assert log_in(client, password="wrong")[0] == 401
    # Now even the right password is refused until the window passes.
    refused = client.post("/login", data={"username": "owner", "password": "x", "csrf_token": token})
    assert refused.status_code == 429
    assert log_in(client)[0] == 429
    assert client.get("/api/status").status_code == 401
    # Another client address is not affected.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.9.8.7"
    assert log_in(other)[0] == 302


def test_login_without_csrf_token_and_open_redirects_are_refused(web: tuple[WebRelay, Flask]) -> None:
    _relay, app = web
    client = app.test_client()
    client.get("/login")
    response = client.post("/login", data={"username": "owner", "password": "correct horse battery staple"})
    assert response.status_code == 400
    token = log_in(client, password="wrong")[1]
    response = client.post(
        "/login?next=//evil.example/x",
        data={"username": "owner", "password": "correct horse battery staple", "csrf_token": token},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_state_changing_requests_need_the_csrf_token(
    web: tuple[WebRelay, Flask], collector: Callable[..., Collector]
) -> None:
    _relay, app = web
    client, token = logged_in(app)
    seen = collector(topics.ARMED_SET)
    assert client.post("/api/armed", json={"armed": False}).status_code == 403
    wrong = client.post("/api/armed", json={"armed": False}, headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    assert client.post("/logout").status_code == 403
    time.sleep(0.3)
    assert seen.on(topics.ARMED_SET) == []
    ok = client.post("/api/armed", json={"armed": False}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 202
    assert seen.wait_for(topics.ARMED_SET).payload == b"OFF"
    # Logging out ends the session.
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/api/status").status_code == 401


def test_cameras_come_from_retained_topics_and_show_offline(
    broker: LocalBroker, tmp_path: Path, publisher: Collector
) -> None:
    camera = "web-grid"
    # Announced before the relay starts: it learns the camera from the retained messages alone.
    publisher.announce(camera)
    with running_relay(broker, tmp_path / "web") as (relay, app):
        client, _token = logged_in(app)
        cams = wait_until(
            lambda: [c for c in client.get("/api/cameras").get_json() if c["id"] == camera], what="camera"
        )
        assert cams[0]["online"] is True
        assert cams[0]["info"]["width"] == 640
        page = client.get("/").get_data(as_text=True)
        assert f'data-camera="{camera}"' in page
        publisher.publish(topics.status(camera), topics.OFFLINE, retain=True)
        wait_until(lambda: relay.camera(camera)["online"] is False, what="offline")  # type: ignore[index]
        assert "offline" in client.get("/").get_data(as_text=True)
        assert client.get("/api/cameras/nowhere").status_code == 404
        assert client.get("/api/cameras/NOT..valid").status_code == 404
    publisher.forget(camera)


def test_latest_frame_and_live_stream_for_known_cameras_only(
    web: tuple[WebRelay, Flask], publisher: Collector
) -> None:
    relay, app = web
    camera = "web-latest"
    client, _token = logged_in(app)
    publisher.announce(camera)
    wait_until(lambda: relay.camera(camera), what="camera known")
    assert client.get(f"/cam/{camera}/latest.jpg").status_code == 404  # no frame yet
    frames = footage_frames()
    publisher.frame(camera, frames[0])
    wait_until(lambda: relay.hub.latest(camera), what="first frame")
    response = client.get(f"/cam/{camera}/latest.jpg")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.data == frames[0]
    publisher.frame(camera, frames[1])
    wait_until(lambda: client.get(f"/cam/{camera}/latest.jpg").data == frames[1], what="newer frame")
    # A garbage frame is counted and dropped; the newest good one stays.
    before = relay.bad_payloads
    publisher.publish_raw(topics.frame(camera), b"not a jpeg").wait_for_publish(5)
    wait_until(lambda: relay.bad_payloads > before, what="bad frame counted")
    assert client.get(f"/cam/{camera}/latest.jpg").data == frames[1]
    # The stream starts with the newest frame as a multipart part.
    stream = client.get(f"/cam/{camera}/live.mjpg", buffered=False)
    assert stream.mimetype == "multipart/x-mixed-replace"
    first = bytes(next(iter(stream.response)))  # type: ignore[arg-type]
    assert first.startswith(b"--sentrycamframe\r\nContent-Type: image/jpeg") and frames[1] in first
    stream.close()
    for path in ("/cam/unknown/live.mjpg", "/cam/unknown/latest.jpg", "/cam/..%2Fetc/latest.jpg"):
        assert client.get(path).status_code == 404, path
    publisher.forget(camera)


def jpeg_of(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_events_are_recorded_with_snapshots_and_listed_with_filters(
    web: tuple[WebRelay, Flask], publisher: Collector
) -> None:
    relay, app = web
    client, _token = logged_in(app)
    frames = footage_frames()
    camera, other = "web-events", "web-events2"
    started = time.time() - 60
    event_id = f"{camera}-{int(started * 1000)}-person"
    publisher.publish(
        topics.event(camera, "person"),
        detection_event(camera, event_id, frames[0], kind="start", started_at=started),
    )
    publisher.publish(
        topics.event(camera, "person"),
        detection_event(camera, event_id, frames[2], kind="update", started_at=started, top_score=0.8),
    )
    publisher.publish(
        topics.event(camera, "person"),
        detection_event(camera, event_id, None, kind="end", started_at=started, top_score=0.8),
    )
    older_id = f"{other}-1-person"
    publisher.publish(
        topics.event(other, "person"),
        detection_event(other, older_id, frames[3], kind="start", started_at=started - 99),
    )
    event = wait_until(
        lambda: (e := client.get(f"/api/events/{event_id}").get_json()) and e.get("ended_at") and e,
        what="event ended",
    )
    assert event["camera"] == camera and event["label"] == "person" and event["top_score"] == 0.8
    assert event["snapshot_url"] == f"/events/{event_id}/snapshot.jpg"
    # The snapshot is the best view (from the update), the thumbnail a smaller copy of it.
    assert client.get(event["snapshot_url"]).data == frames[2]
    thumb = jpeg_of(client.get(event["thumbnail_url"]).data)
    assert thumb.shape[1] == 320
    # One file per picture: the start's snapshot was replaced, not kept.
    assert len(list(relay.store.snapshot_dir.iterdir())) >= 2
    names = {p.name for p in relay.store.snapshot_dir.iterdir() if p.name.startswith(event_id)}
    assert len(names) == 2
    wait_until(lambda: client.get(f"/api/events/{older_id}").status_code == 200, what="second event")
    listed = [e["event_id"] for e in client.get("/api/events").get_json()]
    assert listed.index(event_id) < listed.index(older_id)  # newest first
    assert [e["event_id"] for e in client.get(f"/api/events?camera={other}").get_json()] == [older_id]
    assert client.get("/api/events?label=car").get_json() == []
    day = event["day"]
    assert event_id in [e["event_id"] for e in client.get(f"/api/events?day={day}").get_json()]
    assert client.get("/api/events?day=1999-01-01").get_json() == []
    timeline = client.get(f"/events?camera={camera}").get_data(as_text=True)
    assert event_id in timeline and older_id not in timeline and f"/events/{event_id}/thumb.jpg" in timeline
    page = client.get(f"/events/{event_id}")
    assert page.status_code == 200 and event["snapshot_url"] in page.get_data(as_text=True)


def test_bad_events_are_counted_not_fatal(web: tuple[WebRelay, Flask], publisher: Collector) -> None:
    relay, app = web
    client, _token = logged_in(app)
    camera = "web-bad"
    before = relay.bad_payloads
    publisher.publish(topics.event(camera, "person"), b"{not json")
    publisher.publish(topics.event(camera, "person"), b'{"version": 2, "type": "start"}')
    # An event that names another camera than its topic.
    publisher.publish(topics.event(camera, "person"), detection_event("elsewhere", "elsewhere-1-person"))
    wait_until(lambda: relay.bad_payloads >= before + 3, what="bad payloads counted")
    assert client.get("/api/events/elsewhere-1-person").status_code == 404
    # Still serving and still recording.
    publisher.publish(topics.event(camera, "person"), detection_event(camera, f"{camera}-ok-person"))
    wait_until(lambda: client.get(f"/api/events/{camera}-ok-person").status_code == 200, what="good event")


def test_controls_publish_commands_and_show_retained_states(
    web: tuple[WebRelay, Flask], publisher: Collector, collector: Callable[..., Collector]
) -> None:
    relay, app = web
    camera = "web-ctl"
    client, token = logged_in(app)
    headers = {"X-CSRF-Token": token}
    seen = collector(topics.detect_set(camera), topics.alarm_set(camera))
    assert (
        client.post(f"/api/cameras/{camera}/detect", json={"enabled": False}, headers=headers).status_code
        == 404
    )
    publisher.announce(camera)
    wait_until(lambda: relay.camera(camera), what="camera known")
    response = client.post(f"/api/cameras/{camera}/detect", json={"enabled": False}, headers=headers)
    assert response.status_code == 202
    assert seen.wait_for(topics.detect_set(camera)).payload == b"OFF"
    command = {"state": "ON", "tone": "siren", "duration": 5}
    assert client.post(f"/api/cameras/{camera}/alarm", json=command, headers=headers).status_code == 202
    sent = json.loads(seen.wait_for(topics.alarm_set(camera)).payload)
    assert (sent["state"], sent["tone"], sent["duration"]) == ("ON", "siren", 5)
    # States come from the retained state topics of the detector, the camera and the notifier.
    publisher.publish(topics.detect_state(camera), "OFF", retain=True)
    publisher.publish(topics.alarm_state(camera), "ON", retain=True)
    wait_until(lambda: client.get(f"/api/cameras/{camera}").get_json()["alarm"] == "ON", what="alarm state")
    assert client.get(f"/api/cameras/{camera}").get_json()["detect"] == "OFF"
    publisher.publish(topics.ARMED_STATE, "OFF", retain=True)
    wait_until(lambda: client.get("/api/status").get_json()["armed"] == "OFF", what="armed state")
    publisher.publish(topics.ARMED_STATE, "ON", retain=True)
    wait_until(lambda: client.get("/api/status").get_json()["armed"] == "ON", what="armed again")
    for topic in (topics.detect_state(camera), topics.alarm_state(camera)):
        publisher.publish(topic, b"", retain=True)
    publisher.forget(camera)


def test_bad_requests_get_400_and_unknown_ids_404(web: tuple[WebRelay, Flask], publisher: Collector) -> None:
    relay, app = web
    camera = "web-bad-req"
    client, token = logged_in(app)
    headers = {"X-CSRF-Token": token}
    publisher.announce(camera)
    wait_until(lambda: relay.camera(camera), what="camera known")
    oversized = client.post(
        "/api/armed",
        data=b"{" + b" " * 100_000 + b"}",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert oversized.status_code == 400
    assert (
        client.post(
            "/api/armed", data=b"{nope", headers={**headers, "Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert client.post("/api/armed", json={"armed": "yes"}, headers=headers).status_code == 400
    assert client.post("/api/armed", json=[True], headers=headers).status_code == 400
    bad_alarm = client.post(
        f"/api/cameras/{camera}/alarm", json={"state": "ON", "duration": -1}, headers=headers
    )
    assert bad_alarm.status_code == 400
    for query in ("day=yesterday", "camera=../x", "label=a/b", "limit=zero", "limit=0", "before=x"):
        assert client.get(f"/api/events?{query}").status_code == 400, query
    # Unknown and hostile event ids never reach the file system.
    (relay.settings.web_data_dir / "secret.jpg").write_bytes(b"\xff\xd8\xff secret \xff\xd9")
    for path in (
        "/events/nope-1-person",
        "/api/events/nope-1-person",
        "/events/..%2Fsecret/snapshot.jpg",
        "/events/..%2F..%2Fsecret_key/snapshot.jpg",
        "/events/%2e%2e/thumb.jpg",
        "/events/a%00b/snapshot.jpg",
        "/events/../secret_key",
        "/events/" + "a" * 65 + "/snapshot.jpg",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"secret" not in response.data, path
    publisher.forget(camera)


def test_server_sent_events_bring_new_events_to_open_pages(
    web: tuple[WebRelay, Flask], publisher: Collector
) -> None:
    _relay, app = web
    client, _token = logged_in(app)
    camera = "web-sse"
    stream = client.get("/api/stream", buffered=False)
    assert stream.mimetype == "text/event-stream"
    chunks = (bytes(chunk) for chunk in stream.response)  # type: ignore[arg-type]
    first = next(chunks)
    assert first.startswith(b"event: status\ndata: {")
    event_id = f"{camera}-1-person"
    publisher.publish(
        topics.event(camera, "person"), detection_event(camera, event_id, footage_frames()[0], kind="start")
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = next(chunks)
        if chunk.startswith(b"event: event\n"):
            data = json.loads(chunk.split(b"data: ", 1)[1])
            assert data["event_id"] == event_id and data["thumbnail_url"].endswith("/thumb.jpg")
            assert "_snapshot" not in data
            break
    else:
        raise AssertionError("no event on the stream")
    stream.close()


def test_a_lost_broker_is_shown_and_controls_wait_for_it(own_broker: LocalBroker, tmp_path: Path) -> None:
    with running_relay(own_broker, tmp_path / "web") as (relay, app):
        client, token = logged_in(app)
        stream = client.get("/api/stream", buffered=False)
        chunks = (bytes(chunk) for chunk in stream.response)  # type: ignore[arg-type]
        assert b'"broker_connected":true' in next(chunks)
        relay.check_broker()  # what the service's main loop does every second
        assert next(chunks) == b'event: broker\ndata: {"connected":true}\n\n'
        own_broker.stop()
        wait_until(lambda: not relay.broker_connected, what="broker lost")
        relay.check_broker()
        assert next(chunks) == b'event: broker\ndata: {"connected":false}\n\n'
        assert client.get("/healthz").get_json()["broker_connected"] is False
        page = client.get("/").get_data(as_text=True)
        assert '<div id="broker-lost" class="banner" >' in page
        refused = client.post("/api/armed", json={"armed": False}, headers={"X-CSRF-Token": token})
        assert refused.status_code == 503
        own_broker.start()
        wait_until(lambda: relay.broker_connected, timeout=20, what="broker back")
        relay.check_broker()
        assert next(chunks) == b'event: broker\ndata: {"connected":true}\n\n'
        assert 'id="broker-lost" class="banner" hidden' in client.get("/").get_data(as_text=True)
        stream.close()


def test_the_timeline_pages_on_to_older_events(web: tuple[WebRelay, Flask], publisher: Collector) -> None:
    relay, app = web
    client, _token = logged_in(app)
    camera = "web-pages"
    started = time.time() - 3600
    for index in range(105):
        event_id = f"{camera}-{index}-person"
        publisher.publish_raw(
            topics.event(camera, "person"),
            detection_event(camera, event_id, None, kind="start", started_at=started + index),
            qos=1,
        )
    wait_until(lambda: relay.store.get(f"{camera}-104-person") and relay.store.get(f"{camera}-0-person"))
    first = client.get(f"/events?camera={camera}").get_data(as_text=True)
    assert f"{camera}-104-person" in first and f'data-event="{camera}-4-person"' not in first
    older = re.search(r'<a href="(\?[^"]+)">Older events</a>', first)
    assert older is not None
    second = client.get("/events" + older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert f'data-event="{camera}-4-person"' in second and f'data-event="{camera}-5-person"' not in second
    assert "Older events" not in second


def test_logout_ends_the_session_for_every_copy_of_its_cookie_also_after_a_restart(
    broker: LocalBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "web"
    with running_relay(broker, data_dir) as (_relay, app):
        client, token = logged_in(app)
        copied = cookie_of(client)
        thief = app.test_client()
        thief.set_cookie("sentrycam_session", copied)
        assert thief.get("/api/status").status_code == 200
        kept, _token = logged_in(app)  # another sign-in, which stays
        kept_cookie = cookie_of(kept)
        assert client.post("/logout", data={"csrf_token": token}).status_code == 302
        assert thief.get("/api/status").status_code == 401
        assert kept.get("/api/status").status_code == 200
    # The sessions are kept in the data directory: a restart brings neither back what was logged out nor
    # logs out the others.
    with running_relay(broker, data_dir) as (_relay, app):
        for cookie, status in ((copied, 401), (kept_cookie, 200)):
            browser = app.test_client()
            browser.set_cookie("sentrycam_session", cookie)
            assert browser.get("/api/status").status_code == status


def cookie_of(client: FlaskClient) -> str:
    cookie = client.get_cookie("sentrycam_session")
    assert cookie is not None
    return cookie.value


def event_state(client: FlaskClient, event_id: str) -> dict[str, Any] | None:
    response = client.get(f"/api/events/{event_id}")
    return response.get_json() if response.status_code == 200 else None


def test_a_label_state_going_off_closes_that_labels_open_events(
    broker: LocalBroker, tmp_path: Path, publisher: Collector
) -> None:
    camera, other = "web-off", "web-off2"
    person, car, elsewhere = f"{camera}-1-person", f"{camera}-1-car", f"{other}-1-person"
    off_topic = topics.label_state(camera, "person")
    data_dir = tmp_path / "web"
    with running_relay(broker, data_dir) as (relay, app):
        client, _token = logged_in(app)
        pages = relay.broadcaster.subscribe()
        for cam, event_id, label in (
            (camera, person, "person"),
            (camera, car, "car"),
            (other, elsewhere, "person"),
        ):
            publisher.publish(topics.event(cam, label), detection_event(cam, event_id, label=label))
        for event_id in (person, car, elsewhere):
            wait_until(functools.partial(event_state, client, event_id), what=f"{event_id} stored")
        before = relay.bad_payloads
        publisher.publish(off_topic, "ON", retain=True)  # the events say more
        publisher.publish(topics.label_state(camera, "car"), "maybe", retain=True)
        wait_until(lambda: relay.bad_payloads == before + 1, what="bad label state counted")
        publisher.publish(off_topic, "OFF", retain=True)
        closed = wait_until(
            lambda: (event := event_state(client, person)) and event["ended_at"] and event, what="closed"
        )
        # Ended at its last message, as far as the relay knows.
        assert closed["ended_at"] == closed["updated_at"]
        assert event_state(client, car)["ended_at"] is None  # type: ignore[index]
        assert event_state(client, elsewhere)["ended_at"] is None  # type: ignore[index]
        # Open pages are told too, just after the row is committed.
        told: list[object] = []

        def pages_told_closed() -> bool:
            told.extend(data for kind, data in drain(pages) if kind == "event")
            return any(event.event_id == person and event.ended_at for event in told)  # type: ignore[attr-defined]

        wait_until(pages_told_closed, timeout=5, what="open pages told the event closed")
        # A later message of the event shows it was not over after all: it opens again.
        publisher.publish(topics.event(camera, "person"), detection_event(camera, person, kind="update"))
        wait_until(lambda: event_state(client, person)["ended_at"] is None, what="reopened")  # type: ignore[index]
        assert relay.bad_payloads == before + 1
    # The detector restarts while the relay is away: its retained OFF closes what the relay left open.
    publisher.publish(off_topic, "OFF", retain=True)
    with running_relay(broker, data_dir) as (relay, app):
        client, _token = logged_in(app)
        wait_until(lambda: event_state(client, person)["ended_at"], what="closed at start")  # type: ignore[index]
        assert event_state(client, car)["ended_at"] is None  # type: ignore[index]
    for label in ("person", "car"):
        publisher.publish(topics.label_state(camera, label), b"", retain=True)


def drain(listener: queue.Queue[tuple[str, object]]) -> list[tuple[str, object]]:
    messages = []
    while True:
        try:
            messages.append(listener.get_nowait())
        except queue.Empty:
            return messages


def test_an_event_without_news_is_closed_by_the_relays_loop(
    broker: LocalBroker, tmp_path: Path, publisher: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 s of silence instead of 60 s, checked every half second (the loop itself runs every second).
    monkeypatch.setattr("services.web.relay.OPEN_EVENT_TIMEOUT_S", 2.0)
    monkeypatch.setattr("services.web.relay.OPEN_EVENT_CHECK_S", 0.5)
    camera = "web-silent"
    event_id = f"{camera}-1-person"
    with running_relay(broker, tmp_path / "web") as (relay, app):
        stop = threading.Event()
        loop = threading.Thread(target=relay.run, args=(stop,), daemon=True)
        loop.start()
        try:
            client, _token = logged_in(app)
            publisher.publish(topics.event(camera, "person"), detection_event(camera, event_id))
            wait_until(lambda: event_state(client, event_id), what="stored")
            # Updates within the bound keep it open.
            for _ in range(3):
                time.sleep(1.0)
                publisher.publish(
                    topics.event(camera, "person"), detection_event(camera, event_id, kind="update")
                )
                time.sleep(0.2)
                assert event_state(client, event_id)["ended_at"] is None  # type: ignore[index]
            # Then the detector falls silent (its end is lost): the relay's loop closes the event.
            closed = wait_until(
                lambda: (event := event_state(client, event_id)) and event["ended_at"] and event,
                timeout=6,
                what="closed for want of news",
            )
            assert closed["ended_at"] == closed["updated_at"]
            # An end that arrives after all has the last word.
            publisher.publish(topics.event(camera, "person"), detection_event(camera, event_id, kind="end"))
            wait_until(
                lambda: event_state(client, event_id)["ended_at"] != closed["ended_at"],  # type: ignore[index]
                what="the detector's end",
            )
        finally:
            stop.set()
            loop.join(5)


def test_an_event_with_a_huge_zones_list_is_refused_and_counted(
    web: tuple[WebRelay, Flask], publisher: Collector
) -> None:
    """Fields are bounded by services/common/schemas.py (DetectionEvent): a 100,000-element zones list
    made /api/events 8 MB."""
    relay, app = web
    client, _token = logged_in(app)
    camera = "web-zones"
    event = json.loads(detection_event(camera, f"{camera}-1-person"))
    event["zones"] = [f"zone{index}" for index in range(100_000)]
    before = relay.bad_payloads
    publisher.publish(topics.event(camera, "person"), json.dumps(event).encode())
    wait_until(lambda: relay.bad_payloads == before + 1, what="refused and counted")
    assert client.get(f"/api/events/{camera}-1-person").status_code == 404
