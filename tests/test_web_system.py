"""The system page (issue 14): the relay in process on a real Mosquitto, the real notifier process with a real
SMTP server and a real push receiver giving its queue figures, stats as the detector and recorder publish
them, the JSON and the page in Chromium at desktop and phone width."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Browser, expect

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.web.relay import WebRelay
from services.web.system import MAX_DETECTORS, SystemState
from tests.notifier_support import PushReceiver, SmtpServer, snapshot_jpeg
from tests.support import Collector, ServiceProcess, detection_event, wait_until
from tests.web_support import browser_log_in, log_in, running_relay

# aiosmtpd warns about AUTH without TLS; the test's SMTP server is plain on loopback.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

StartService = Callable[[str, dict[str, str]], ServiceProcess]
FAST_RETRY = {"NOTIFY_RETRY_MIN": "0.5", "NOTIFY_RETRY_MAX": "2"}
PUSH_PATH = "alerts-Zq81secret"  # a secret of the push URL: never in the stats
VIEWPORTS = [{"width": 1280, "height": 800}, {"width": 412, "height": 915}]


def detector_stats(camera: str, instance: str = "detector-a") -> schemas.DetectorStats:
    figures = schemas.CameraStats(
        frames_in=300,
        frames_skipped_motion=240,
        inferences=58,
        inference_ms_p50=11.2,
        inference_ms_p95=14.9,
        fps_in=10.0,
        fps_inferred=1.9,
        frame_age_ms_p50=3.1,
        frame_age_ms_p95=9.8,
    )
    return schemas.DetectorStats(
        instance=instance, interval_s=30.0, published_at=time.time(), cameras={camera: figures}
    )


def recorder_stats() -> schemas.RecorderStats:
    return schemas.RecorderStats(
        interval_s=30.0,
        published_at=time.time(),
        cameras={},
        disk_ok=False,
        disk_error="No space left on device",
        write_errors=3,
        used_bytes=52_428_800,
        free_bytes=0,
    )


@pytest.fixture
def outlets(tmp_path: Path) -> Iterator[tuple[SmtpServer, PushReceiver]]:
    """The notifier's two channels: a real SMTP server and a real push receiver."""
    smtp, receiver = SmtpServer(tmp_path, "none").start(), PushReceiver().start()
    yield smtp, receiver
    smtp.stop()
    receiver.stop()


def channels(relay: WebRelay) -> dict[str, dict[str, Any]]:
    notifier = relay.system.view()["notifier"]
    return {channel["channel"]: channel for channel in notifier["channels"]} if notifier else {}


def test_the_system_page_shows_services_detector_notifier_and_disk(
    own_broker: LocalBroker,
    service: StartService,
    outlets: tuple[SmtpServer, PushReceiver],
    browser: Browser,
    tmp_path: Path,
) -> None:
    smtp, receiver = outlets
    notifier_status = topics.service_status("notifier")
    admin = Collector(own_broker, topics.NOTIFIER_STATS, notifier_status)
    with running_relay(own_broker, tmp_path / "web") as (relay, app):
        service(
            "notifier",
            {
                **own_broker.env("notifier"),
                **smtp.env(),
                **FAST_RETRY,
                "NOTIFY_DATA_DIR": str(tmp_path / "notifier"),
                "NOTIFY_URLS": receiver.json_url(PUSH_PATH),
                "NOTIFY_COOLDOWN": "0",
            },
        )
        admin.wait_for(notifier_status, lambda m: m.payload == b"online", timeout=15)
        jpeg = snapshot_jpeg()
        # One alert sent on both channels; then SMTP is down: the second stays pending on email only.
        admin.publish(topics.event("porch", "person"), detection_event("porch", "porch-1", jpeg))
        smtp.wait_count(1)
        wait_until(lambda: channels(relay).get("email", {}).get("sent") == 1, 15, "email sent in the stats")
        smtp.stop()
        admin.publish(topics.event("porch", "person"), detection_event("porch", "porch-2", jpeg))
        receiver.wait_count(f"/{PUSH_PATH}", 2)
        email = wait_until(
            lambda: (found := channels(relay).get("email")) and found["last_error"] and found,
            15,
            "email error",
        )
        assert (email["pending"], email["sent"], email["failed"]) == (1, 1, 0)
        assert email["last_sent_at"] > time.time() - 60
        push = wait_until(
            lambda: channels(relay).get("push 1 (json)", {}).get("sent") == 2 and channels(relay)
        )
        assert push["push 1 (json)"]["pending"] == 0 and push["push 1 (json)"]["last_error"] is None
        assert all(PUSH_PATH.encode() not in m.payload for m in admin.on(topics.NOTIFIER_STATS))
        assert all(m.retain or m.payload for m in admin.on(topics.NOTIFIER_STATS))

        # The detector's and the recorder's say, as they publish it; the recorder is gone since.
        admin.publish(topics.service_status("detector"), topics.ONLINE, retain=True)
        admin.publish(topics.DETECTOR_STATS, detector_stats("porch").to_json(), qos=0)
        admin.publish(topics.RECORDER_STATS, recorder_stats().to_json(), qos=0)
        admin.publish(topics.service_status("recorder"), topics.OFFLINE, retain=True)
        wait_until(lambda: relay.system.view()["recorder"] is not None and relay.system.view()["cameras"])

        client = app.test_client()
        log_in(client)
        shown = check_api(client)
        check_pages(browser, relay, shown)


def check_api(client: FlaskClient) -> dict[str, Any]:
    shown = client.get("/api/system").get_json()
    status = {row["service"]: row["status"] for row in shown["services"]}
    assert status == {"detector": "online", "notifier": "online", "recorder": "offline", "web": "online"}
    since = {row["service"]: row["since"] for row in shown["services"]}
    assert since["recorder"] and since["recorder"] > time.time() - 60
    [porch] = shown["cameras"]
    assert (porch["camera"], porch["instance"], porch["fps_in"], porch["fps_inferred"]) == (
        "porch",
        "detector-a",
        10.0,
        1.9,
    )
    assert (porch["frames_skipped_motion"], porch["inference_ms_p50"], porch["inference_ms_p95"]) == (
        240,
        11.2,
        14.9,
    )
    assert porch["frame_age_ms_p95"] == 9.8
    assert (
        shown["recorder"]["disk_ok"] is False and shown["recorder"]["disk_error"] == "No space left on device"
    )
    # The relay's own events: the two snapshots stored (and the database) take room.
    assert shown["disk"]["events_bytes"] > 2 * 10_000
    assert (shown["disk"]["recordings_bytes"], shown["disk"]["recordings_from"]) == (52_428_800, "recorder")
    return dict(shown)


def check_pages(browser: Browser, relay: WebRelay, shown: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{relay.settings.web_port}"
    for viewport in VIEWPORTS:
        page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
        browser_log_in(page, base)
        page.click("header nav >> text=System")
        expect(page).to_have_url(f"{base}/system")
        expect(page.locator("[data-service=recorder] .state")).to_have_text("offline")
        expect(page.locator("[data-service=notifier] .state")).to_have_text("online")
        expect(page.locator("[data-service=recorder] .since time")).not_to_be_empty()
        row = page.locator("#detector tr[data-camera=porch]")
        expect(row.locator(".fps-in")).to_have_text("10.0")
        expect(row.locator(".fps-inferred")).to_have_text("1.9")
        expect(row.locator(".skipped")).to_have_text("240")
        expect(row.locator(".inference")).to_have_text("11.2 / 14.9")
        email = page.locator("#notifier tr[data-channel=email]")
        expect(email.locator(".pending")).to_have_text("1")
        expect(email.locator(".sent")).to_have_text("1")
        expect(email.locator(".last-error .error")).to_contain_text("Connection refused")
        expect(page.locator('#notifier tr[data-channel="push 1 (json)"] .sent')).to_have_text("2")
        expect(page.locator("#disk .recordings")).to_contain_text("52.4 MB")
        expect(page.locator("#disk .recorder")).to_contain_text("No space left on device")
        # Nothing wider than the screen but the tables' own scrolling boxes.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"the page is {width} px wide at {viewport}"
        for name in ("#detector", "#notifier"):
            box = page.locator(name).locator("xpath=..").bounding_box()
            assert box is not None and box["x"] + box["width"] <= viewport["width"] + 1
        page.close()


def test_bad_status_and_stats_are_counted_and_the_rest_kept(own_broker: LocalBroker, tmp_path: Path) -> None:
    admin = Collector(own_broker)
    with running_relay(own_broker, tmp_path / "web") as (relay, _app):
        good = detector_stats("front")
        admin.publish(topics.DETECTOR_STATS, good.to_json(), qos=0)
        wait_until(lambda: relay.system.view()["cameras"], what="the good stats")
        before = relay.bad_payloads
        admin.publish(topics.DETECTOR_STATS, b"{not json", qos=0)
        admin.publish(topics.NOTIFIER_STATS, b'{"version": 2, "published_at": 1, "channels": []}')
        too_many = [{"channel": f"c{n}"} for n in range(schemas.MAX_STATS_CHANNELS + 1)]
        admin.publish(
            topics.NOTIFIER_STATS, schemas.dumps({"version": 1, "published_at": 1, "channels": too_many})
        )
        admin.publish(topics.RECORDER_STATS, b"x" * (2 * 1024 * 1024), qos=0)  # refused before decoding
        admin.publish(topics.service_status("detector"), b"maybe")
        # Not a service of ours (any login may say its own status): ignored, not counted.
        admin.publish("sentrycam/cam-front/status", b"whatever")
        wait_until(lambda: relay.bad_payloads - before == 5, what="5 bad payloads counted")
        view = relay.system.view()
        assert [row["fps_in"] for row in view["cameras"]] == [10.0]
        assert view["notifier"] is None and view["recorder"] is None
        assert relay.client.connected.is_set()
        time.sleep(0.3)
        assert relay.bad_payloads - before == 5


def test_detector_instances_are_bounded_and_disk_sizes_cached(tmp_path: Path) -> None:
    data, snapshots = tmp_path / "data", tmp_path / "data" / "snapshots"
    snapshots.mkdir(parents=True)
    (snapshots / "a.jpg").write_bytes(b"x" * 1000)
    (data / "events.sqlite3").write_bytes(b"y" * 500)
    recordings = tmp_path / "recordings" / "events" / "front" / "2026-11-30"
    recordings.mkdir(parents=True)
    (recordings / "front-1.mp4").write_bytes(b"z" * 700)
    system = SystemState(data, snapshots, tmp_path / "recordings")
    for n in range(MAX_DETECTORS + 5):
        system.on_message(topics.DETECTOR_STATS, detector_stats(f"cam{n}", f"det-{n}").to_json(), False)
    cameras = system.view()["cameras"]
    assert len(cameras) == MAX_DETECTORS
    assert "det-0" not in {row["instance"] for row in cameras}  # the least recently heard went first
    assert system.view()["disk"]["events_bytes"] == 1500
    (snapshots / "b.jpg").write_bytes(b"x" * 1000)
    assert system.view()["disk"]["events_bytes"] == 1500  # cached: no directory scan per request
    # No recorder stats yet: the recordings tree itself; then the recorder's own figure.
    assert system.view()["disk"]["recordings_bytes"] == 700
    system.on_message(topics.RECORDER_STATS, recorder_stats().to_json(), False)
    assert system.view()["disk"]["recordings_bytes"] == 52_428_800
