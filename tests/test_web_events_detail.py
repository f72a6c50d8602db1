"""Issue 14's event page tells the whole event: start, end, duration, the zones entered and each tracked
object (its score, the zones it stands in and for how long, stationary or not). The store keeps the latest
lists of the detector's messages (an older detector's message, without them, keeps what was stored), and an
older events database gains the objects at start. In Chromium at desktop and phone sizes against the relay
and the real broker."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import struct
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from scripts.localbroker import LocalBroker
from scripts.screenshots import SIZES, take_screenshots
from services.common import schemas, topics
from services.web.const import DATABASE_FILE
from services.web.event_facts import duration_text, event_facts
from services.web.events import EventStore
from tests.support import (
    Collector,
    detection_event,
    footage_frames,
    tracked_event,
    tracked_object,
    wait_until,
)
from tests.test_web_browser import DESKTOP, PHONE
from tests.test_web_store import OLD_SCHEMA
from tests.web_support import browser_log_in, running_relay

LOGGER = logging.getLogger("test.web.events")

# The events table of the first release (no closed_by_relay, no objects) with one event.
FIRST_LAYOUT = (
    OLD_SCHEMA
    + """
INSERT INTO events VALUES ('old-1-person', 'old', 'person', '2026-11-01', 1793000000.0, 1793000072.0,
    1793000072.0, 0.7, 0.8, '[0.1, 0.2, 0.3, 0.4]', '["porch"]', NULL, NULL, 0);
"""
)


def two_people(started: float, now: float) -> list[schemas.TrackedObject]:
    """A person in the driveway since the start and one who came to the porch 12 s later and stays."""
    return [
        tracked_object(
            3, now, {"driveway": started}, first_seen=started, box=(0.10, 0.30, 0.25, 0.90), score=0.8125
        ),
        tracked_object(
            4,
            now,
            {"porch": started + 12},
            first_seen=started + 12,
            box=(0.60, 0.20, 0.75, 0.95),
            score=0.655,
            stationary=True,
        ),
    ]


def parsed(payload: bytes) -> schemas.DetectionEvent:
    return schemas.DetectionEvent.parse(payload)


def test_an_older_events_database_gains_the_objects_and_keeps_its_events(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DATABASE_FILE) as db:
        db.executescript(FIRST_LAYOUT)
    db.close()
    store = EventStore(tmp_path, LOGGER)
    try:
        old = store.get("old-1-person")
        assert old is not None
        assert (old.zones, old.objects, old.ended_at) == (("porch",), (), 1793000072.0)
        started = time.time()
        store.record(
            parsed(
                tracked_event(
                    "old", "old-2-person", two_people(started, started + 20), ["x"], started_at=started
                )
            )
        )
        assert [tracked.id for tracked in store.get("old-2-person").objects] == [3, 4]  # type: ignore[union-attr]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / DATABASE_FILE) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    db.close()
    assert {"objects", "closed_by_relay"} <= columns


def test_the_latest_lists_are_stored_and_an_older_detector_keeps_them(tmp_path: Path) -> None:
    store = EventStore(tmp_path, LOGGER)
    started = time.time() - 30
    camera, event_id = "lists", "lists-1-person"
    try:
        people = two_people(started, started + 20)
        store.record(parsed(tracked_event(camera, event_id, people[:1], ["driveway"], started_at=started)))
        store.record(
            parsed(
                tracked_event(
                    camera, event_id, people, ["driveway", "porch"], kind="update", started_at=started
                )
            )
        )
        stored = store.get(event_id)
        assert stored is not None and stored.zones == ("driveway", "porch")
        assert [(o.id, o.zones, o.stationary) for o in stored.objects] == [
            (3, {"driveway": started}, False),
            (4, {"porch": started + 12}, True),
        ]
        # A message lists the objects in view: one who walked out of view stays on the event's page.
        store.record(
            parsed(
                tracked_event(
                    camera, event_id, people[1:], ["driveway", "porch"], kind="update", started_at=started
                )
            )
        )
        assert [o.id for o in (store.get(event_id) or stored).objects] == [3, 4]
        stored = store.get(event_id) or stored
        # An older detector's update: no "objects" and no "zones" in its JSON.
        older = json.loads(detection_event(camera, event_id, kind="update", started_at=started))
        del older["objects"], older["zones"]
        store.record(schemas.DetectionEvent.parse(json.dumps(older).encode()))
        kept = store.get(event_id)
        assert kept is not None and (kept.zones, kept.objects) == (stored.zones, stored.objects)
        assert kept.score == 0.71  # the rest of the message is taken
    finally:
        store.close()


def test_durations_are_said_in_minutes_and_seconds(tmp_path: Path) -> None:
    assert [duration_text(s) for s in (0, 9.9, 60, 72.4, 3599, 3600, 7500)] == [
        "0 s", "9 s", "1 min 0 s", "1 min 12 s", "59 min 59 s", "1 h 0 min", "2 h 5 min"
    ]  # fmt: skip
    store = EventStore(tmp_path, LOGGER)
    started = 1_793_000_000.0
    try:
        people = two_people(started, started + 40)
        store.record(
            parsed(tracked_event("dur", "dur-1-person", people, ["driveway", "porch"], started_at=started))
        )
        open_event = store.get("dur-1-person")
        assert open_event is not None
        facts = event_facts(open_event, now=started + 72.4)
        assert facts["duration_text"] == "1 min 12 s"  # an open event: up to now
        assert [zone["for_text"] for o in facts["objects"] for zone in o["zones"]] == [
            "1 min 12 s",
            "1 min 0 s",
        ]
        store.record(
            parsed(
                tracked_event(
                    "dur", "dur-1-person", people, ["driveway", "porch"], kind="end", started_at=started
                )
            )
        )
        ended = store.get("dur-1-person")
        assert ended is not None and ended.ended_at == started + 40
        facts = event_facts(ended, now=started + 1000)
        assert facts["duration_text"] == "40 s"  # up to its end, not to now
        assert [zone["for_text"] for o in facts["objects"] for zone in o["zones"]] == ["40 s", "28 s"]
        assert [o["score_text"] for o in facts["objects"]] == ["81 %", "66 %"]  # half up, as everywhere
    finally:
        store.close()


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_event_page_tells_start_end_duration_zones_and_objects(
    own_broker: LocalBroker, browser: Browser, tmp_path: Path, size: ViewportSize
) -> None:
    # A broker of its own: the live page then shows this camera alone, not those other tests left online.
    broker = own_broker
    camera = f"detail-{size['width']}"
    started = time.time() - 75
    event_id, older_id = f"{camera}-1-person", f"{camera}-2-car"
    publisher = Collector(broker)
    publisher.announce(camera)

    def publish(payload: bytes, label: str = "person") -> None:
        publisher.publish(topics.event(camera, label), payload)

    try:
        with running_relay(broker, tmp_path / "web") as (relay, _app):
            base = f"http://127.0.0.1:{relay.settings.web_port}"
            context = browser.new_context(viewport=size, timezone_id="UTC")
            page = context.new_page()
            browser_log_in(page, base)
            expect(page.locator(f'.camera[data-camera="{camera}"]')).to_be_visible()
            people = two_people(started, time.time())
            zones = ["driveway", "porch"]
            publish(
                tracked_event(
                    camera, event_id, people, zones, started_at=started, snapshot=footage_frames()[0]
                )
            )
            # An older detector's event: no objects, no zones.
            publish(detection_event(camera, older_id, label="car", started_at=time.time() - 45), "car")
            wait_until(lambda: relay.store.get(event_id) and relay.store.get(older_id), what="events stored")
            check_live_boxes(page, camera)
            page.goto(f"{base}/events/{event_id}")
            check_open_event(page, started)
            # A third zone, entered by the first person: shown at once on the open page, and after a reload.
            people[0] = people[0].model_copy(update={"zones": {"driveway": started, "gate": started + 70}})
            zones.append("gate")
            publish(tracked_event(camera, event_id, people, zones, kind="update", started_at=started))
            expect(page.locator("dd.zones")).to_have_text("driveway, porch, gate")
            page.reload(wait_until="domcontentloaded")
            expect(page.locator("dd.zones")).to_have_text("driveway, porch, gate")
            expect(page.locator('li.object[data-object="3"] .in')).to_contain_text("gate for")
            publish(tracked_event(camera, event_id, people, zones, kind="end", started_at=started))
            check_ended_event(page, people[1].last_seen - started)
            assert_fits(page)
            check_older_detector_event(page, base, older_id)
            check_timeline_and_api(page, base, camera, event_id)
            context.close()
    finally:
        publisher.forget(camera)
        publisher.close()


def check_live_boxes(page: Page, camera: str) -> None:
    """The live card draws the box of every object of the open events (the older detector's event: its one
    box), and the switch still hides them; a page opened later draws them too."""
    card = page.locator(f'.camera[data-camera="{camera}"]')
    rects = card.locator("svg.boxes rect")
    expect(card.locator('rect[data-label="person"]')).to_have_count(2)
    assert sorted(
        r.get_attribute("data-object") or "" for r in card.locator('rect[data-label="person"]').all()
    ) == [
        "3",
        "4",
    ]
    expect(card.locator('rect[data-label="car"]')).to_have_count(1)
    drawn, picture = (
        card.locator('rect[data-object="4"]').bounding_box(),
        card.locator(".picture").bounding_box(),
    )
    assert drawn is not None and picture is not None
    assert abs(drawn["x"] - (picture["x"] + 0.60 * picture["width"])) < 3, (drawn, picture)
    card.locator("input.show-boxes").uncheck()
    expect(rects.first).to_be_hidden()
    card.locator("input.show-boxes").check()
    later = page.context.new_page()
    later.goto(page.url, wait_until="domcontentloaded")
    expect(later.locator(f'.camera[data-camera="{camera}"] rect[data-label="person"]')).to_have_count(2)
    later.close()


def check_open_event(page: Page, started: float) -> None:
    started_text = page.locator("dd.started time")
    expect(started_text).to_have_attribute("data-epoch", str(started))
    when = time.gmtime(started)
    # The date and the time of the capture clock, in the browser's time zone (UTC here).
    expect(started_text).to_contain_text(f"{when.tm_year}")
    expect(started_text).to_contain_text(f"{when.tm_min:02d}:{when.tm_sec:02d}")
    expect(page.locator("dd.ended")).to_have_text("still going")
    duration = page.locator("dd.duration")
    # At least the 75 s since the start (more on a busy machine).
    expect(duration).to_have_text(re.compile(r"^([1-9]|1[0-9]) min \d+ s$"))
    expect(duration).not_to_have_text(duration.inner_text())  # it grows while the event is open
    expect(page.locator("dd.zones")).to_have_text("driveway, porch")
    objects = page.locator("li.object")
    expect(objects).to_have_count(2)
    first, second = objects.nth(0), objects.nth(1)
    expect(first.locator(".id")).to_have_text("#3")
    expect(first.locator(".score")).to_have_text("81 %")
    expect(first.locator(".motion")).to_have_text("moving")
    expect(first.locator(".in")).to_have_text(re.compile(r"^in driveway for \d+ min \d+ s$"))
    expect(second.locator(".id")).to_have_text("#4")
    expect(second.locator(".score")).to_have_text("66 %")
    expect(second.locator(".motion")).to_have_text("stationary")
    expect(second.locator(".in")).to_have_text(re.compile(r"^in porch for (\d+ min )?\d+ s$"))


def check_ended_event(page: Page, lasted_s: float) -> None:
    """The end arrives while the page is open: the page says when, and the duration stops growing."""
    expect(page.locator("dd.ended time")).to_be_visible()
    expect(page.locator("dd.duration")).to_have_text(duration_text(lasted_s))
    page.wait_for_timeout(1100)
    expect(page.locator("dd.duration")).to_have_text(duration_text(lasted_s))
    expect(page.locator("li.object")).to_have_count(2)


def check_older_detector_event(page: Page, base: str, event_id: str) -> None:
    page.goto(f"{base}/events/{event_id}")
    expect(page.locator("h1")).to_have_text(re.compile(r"^car on detail-"))
    expect(page.locator("dd.zones")).to_have_text("—")
    expect(page.locator("dd.ended")).to_have_text("still going")
    expect(page.locator("dd.duration")).to_have_text(re.compile(r"^(\d+ min )?\d+ s$"))
    expect(page.locator("li.object")).to_have_count(0)
    expect(page.locator("p.no-objects")).to_be_visible()


def check_timeline_and_api(page: Page, base: str, camera: str, event_id: str) -> None:
    page.goto(f"{base}/events?camera={camera}")
    expect(page.locator(f'li.event[data-event="{event_id}"] .zones')).to_have_text("· driveway, porch, gate")
    shown = page.request.get(f"{base}/api/events/{event_id}").json()
    assert shown["zones"] == ["driveway", "porch", "gate"]
    assert [(o["id"], o["score_text"], o["stationary"]) for o in shown["objects"]] == [
        (3, "81 %", False),
        (4, "66 %", True),
    ]
    assert [zone["zone"] for zone in shown["objects"][0]["zones"]] == ["driveway", "gate"]
    assert shown["ended_at"] is not None and shown["duration_text"] == duration_text(shown["duration_s"])
    listed = page.request.get(f"{base}/api/events?camera={camera}").json()
    assert {event["event_id"]: len(event["objects"]) for event in listed} == {
        event_id: 2,
        f"{camera}-2-car": 0,
    }


def assert_fits(page: Page) -> None:
    """Nothing wider than the screen (a phone scrolls only down)."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], width  # type: ignore[index]


@pytest.mark.timeout(120)  # quick: a broker, the relay, one model run and Chromium, about 15 s
def test_the_screenshot_script_writes_each_page_at_each_size(tmp_path: Path) -> None:
    """scripts/screenshots.py's core into a temporary directory: the six PNGs docs/web.md shows, each of
    its viewport's size and small."""
    written = take_screenshots(tmp_path / "img", tmp_path / "work")
    expected = {
        f"web-{page}-{size}.png": SIZES[size]
        for page in ("live", "event", "zones")
        for size in ("desktop", "phone")
    }
    assert sorted(path.name for path in written) == sorted(expected)
    for name, viewport in expected.items():
        data = (tmp_path / "img" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
        assert (width, height) == (viewport["width"], viewport["height"]), name
        assert 10_000 < len(data) < 500_000, (name, len(data))
