"""Issue 14's live cards and honest controls, in Chromium at desktop and phone sizes, against the relay
running as its own process, with frames, states and events published on the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from scripts.localbroker import LocalBroker
from services.common import topics
from tests.support import Collector, ServiceProcess, camera_info, detection_event, footage_frames, jpeg
from tests.test_web_browser import DESKTOP, PHONE, start_relay
from tests.web_support import browser_log_in

# A capture time the test knows, today (an offline card says the day of an older one): hh:mm:05 UTC, and the
# browser runs in UTC.
CAPTURED = datetime.now(UTC).replace(second=5, microsecond=0)
WIDTH, HEIGHT = 768, 432  # what the camera service sends by default


def frame_768x432() -> bytes:
    picture = cv2.imdecode(np.frombuffer(footage_frames()[0], np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    return jpeg(cv2.resize(picture, (WIDTH, HEIGHT)))


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_live_cards_and_the_disarm_confirmation(
    broker: LocalBroker,
    service: Callable[[str, dict[str, str]], ServiceProcess],
    browser: Browser,
    tmp_path: Path,
    size: ViewportSize,
) -> None:
    camera = f"console-{size['width']}"
    publisher = Collector(broker, topics.ARMED_SET)
    publisher.publish(topics.ARMED_STATE, topics.ON, retain=True)
    info = camera_info(camera).model_copy(update={"width": WIDTH, "height": HEIGHT})
    publisher.publish(topics.info(camera), info.to_json(), retain=True)
    publisher.publish(topics.status(camera), topics.ONLINE, retain=True)
    base = start_relay(broker, service, tmp_path / "web")
    context = browser.new_context(viewport=size, timezone_id="UTC")
    try:
        page = context.new_page()
        browser_log_in(page, base)
        card = page.locator(f'.camera[data-camera="{camera}"]')
        expect(card.locator(".badge")).to_have_text("online")
        publisher.frame(camera, frame_768x432(), captured_ms=int(CAPTURED.timestamp() * 1000))
        check_picture(page, card)
        check_now_and_boxes(publisher, card, camera)
        check_disarm_confirmation(publisher, page)
        check_offline(publisher, card, camera)
    finally:
        context.close()
        publisher.publish(topics.ARMED_STATE, topics.ON, retain=True)
        publisher.forget(camera)
        publisher.close()


def check_picture(page: Page, card: Locator) -> None:
    """The picture has the frame's shape and the frame's capture time; a click makes it fill the screen."""
    page.wait_for_function(
        "id => { const img = document.querySelector(`.camera[data-camera='${id}'] img.live`);"
        f" return img.complete && img.naturalWidth === {WIDTH}; }}",
        arg=card.get_attribute("data-camera"),
        timeout=10_000,
    )
    picture = card.locator(".picture")
    expect(card.locator("time.clock")).to_have_text(CAPTURED.strftime("%H:%M:%S"))
    box = picture.bounding_box()
    assert box is not None
    assert abs(box["width"] / box["height"] - WIDTH / HEIGHT) < 0.01, box
    picture.click()
    page.wait_for_function("() => document.fullscreenElement?.classList.contains('picture')")
    picture.click()
    page.wait_for_function("() => document.fullscreenElement === null")


def check_now_and_boxes(publisher: Collector, card: Locator, camera: str) -> None:
    """ "person now" follows the label state; the open event's box is drawn where the event says, can be
    switched off, and goes with the event's end."""
    now, rect = card.locator(".now"), card.locator("svg.boxes rect")
    expect(now).to_be_hidden()
    publisher.publish(topics.label_state(camera, "person"), topics.ON)
    expect(now).to_have_text("person now")
    started = time.time()
    # An event about a frame of two minutes ago (the broker kept it while the relay was away) is no box now.
    old = detection_event(camera, f"{camera}-1-car", label="car", started_at=started - 120)
    publisher.publish(topics.event(camera, "car"), old)
    event_id = f"{camera}-{int(started * 1000)}-person"
    publisher.publish(topics.event(camera, "person"), detection_event(camera, event_id, started_at=started))
    expect(rect).to_have_count(1)
    expect(rect).to_have_attribute("data-label", "person")
    expect(rect).to_be_visible()
    drawn, picture = rect.bounding_box(), card.locator(".picture").bounding_box()
    assert drawn is not None and picture is not None
    # detection_event's box (EVENT_BOX): (0.41, 0.22, 0.55, 0.93) of the picture.
    assert abs(drawn["x"] - (picture["x"] + 0.41 * picture["width"])) < 3, (drawn, picture)
    assert abs(drawn["y"] + drawn["height"] - (picture["y"] + 0.93 * picture["height"])) < 3, (drawn, picture)
    switch = card.locator("input.show-boxes")
    switch.uncheck()
    expect(rect).to_be_hidden()
    switch.check()
    expect(rect).to_be_visible()
    end = detection_event(camera, event_id, kind="end", started_at=started)
    publisher.publish(topics.event(camera, "person"), end)
    expect(rect).to_have_count(0)
    publisher.publish(topics.label_state(camera, "person"), topics.OFF)
    expect(now).to_be_hidden()


def check_disarm_confirmation(publisher: Collector, page: Page) -> None:
    """Disarming asks first: Cancel and Escape leave it armed, Disarm disarms; arming asks nothing."""
    armed, state = page.locator("#armed"), page.locator("#armed-state")
    dialog = page.locator("#disarm-dialog")
    expect(state).to_have_text("Armed")
    expect(armed).to_have_text("Disarm")
    since = time.time()
    armed.click()
    expect(dialog).to_be_visible()
    dialog.locator("button.cancel").click()
    expect(dialog).to_be_hidden()
    armed.click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    armed.click()
    dialog.locator("button.confirm").click()
    command = publisher.wait_for(topics.ARMED_SET, lambda m: m.at >= since)
    assert command.payload == b"OFF"
    # The one command was the confirmed one: the cancelled presses sent nothing.
    assert [m.payload for m in publisher.on(topics.ARMED_SET, since)] == [b"OFF"]
    publisher.publish(topics.ARMED_STATE, topics.OFF, retain=True)  # what the notifier answers
    expect(state).to_have_text("Disarmed")
    expect(armed).to_have_text("Arm")
    since = time.time()
    armed.click()
    assert publisher.wait_for(topics.ARMED_SET, lambda m: m.at >= since).payload == b"ON"
    expect(dialog).to_be_hidden()


def check_offline(publisher: Collector, card: Locator, camera: str) -> None:
    """The camera's Last Will: the card says so and since when, greys the last picture, disables its
    buttons; the button labels say what they would do."""
    publisher.publish(topics.detect_state(camera), topics.ON)
    detect = card.locator("button.detect")
    expect(detect).to_have_text("Turn detection off")
    expect(detect).to_be_enabled()
    publisher.publish(topics.status(camera), topics.OFFLINE, retain=True)
    expect(card.locator(".badge")).to_have_text("offline")
    # Since the last frame's capture: its time, and its day (as the browser says it) when not today.
    day = "" if CAPTURED.date() == datetime.now(UTC).date() else f"{CAPTURED:%-m/%-d/%Y} "
    expect(card.locator(".seen")).to_have_text(f"offline since {day}{CAPTURED:%H:%M}")
    expect(detect).to_be_disabled()
    expect(card.locator("button.alarm")).to_be_disabled()
    expect(card.locator("img.live")).to_have_css("filter", "grayscale(1)")
