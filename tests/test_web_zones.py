"""Issue 14's zone editor: zones and masks drawn with the mouse (and a finger) on a camera's latest frame in
Chromium, saved by the relay on the retained ``cam/<id>/config/set``, and the detector's verdict read back
from ``cam/<id>/config/state``; with the real detector on the real footage, the zone drawn is the zone of
the next person event."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.web.relay import WebRelay
from tests.detector_support import FramePublisher, detector_env, wait_online
from tests.support import PERSON_VIDEO, Collector, ServiceProcess, camera_info, jpeg, read_frames, wait_until
from tests.test_web_browser import DESKTOP, PHONE, start_relay
from tests.test_web_console import HEIGHT, WIDTH, frame_768x432
from tests.web_support import browser_log_in, log_in, running_relay

Start = Callable[..., ServiceProcess]
Point = tuple[float, float]

DRIVEWAY: list[Point] = [(0.1, 0.5), (0.5, 0.45), (0.6, 0.9), (0.1, 0.9)]
REFUSAL = "zones.driveway: the polygon crosses itself"


def config_state(
    camera: str, zones: dict[str, list[Point]], masks: dict[str, list[Point]], error: str | None = None
) -> bytes:
    """What the detector says on config/state after a config/set: what it uses, and why it refused."""
    return schemas.CameraConfigState(
        camera=camera,
        objects=["person"],
        threshold=0.5,
        min_area=0.002,
        max_area=1.0,
        zones=zones,
        masks=masks,
        source="topic" if error is None else "file",
        error=error,
        updated_at=time.time(),
    ).to_json()


def forget_config(publisher: Collector, camera: str) -> None:
    for topic in (topics.config_set(camera), topics.config_state(camera)):
        publisher.publish(topic, b"", retain=True)


def near(
    points: list[Point] | list[tuple[float, float]], expected: list[Point], tolerance: float = 0.01
) -> bool:
    return len(points) == len(expected) and all(
        abs(x - ex) <= tolerance and abs(y - ey) <= tolerance
        for (x, y), (ex, ey) in zip(points, expected, strict=True)
    )


# -- the JSON API, in process --------------------------------------------------------------------------------


@pytest.fixture
def zones_web(web: tuple[WebRelay, Flask], publisher: Collector) -> Iterator[tuple[WebRelay, Flask, str]]:
    relay, app = web
    camera = "zones-api"
    publisher.announce(camera)
    wait_until(lambda: relay.camera(camera), what="camera announced")
    yield relay, app, camera
    forget_config(publisher, camera)
    publisher.forget(camera)


def test_the_config_api_validates_saves_retained_and_reads_the_detectors_state(
    zones_web: tuple[WebRelay, Flask, str], publisher: Collector, collector: Callable[..., Collector]
) -> None:
    relay, app, camera = zones_web
    sets = collector(topics.config_set(camera))
    client = app.test_client()
    url = f"/api/cameras/{camera}/config"
    assert client.get(url).status_code == 401
    _, token = log_in(client)
    assert client.post(url, json={"zones": {}}).status_code == 403  # no CSRF token
    headers = {"X-CSRF-Token": token}
    for body, reason in [
        ({"zones": {"gate": [[0, 0], [1, 0]]}}, "at least 3"),
        ({"zones": {"gate": [[0, 0], [1.5, 0], [1, 1]]}}, "less than or equal to 1"),
        ({"zone": {}}, "zone: Extra inputs are not permitted"),
        ({"masks": "all"}, "masks"),
        ({"masks": [[[0, 0], [1, 0], [1, 1]]]}, "masks: Input should be a valid dictionary"),
        ({"masks": {"": [[0, 0], [1, 0], [1, 1]]}}, "at least 1 character"),
        ({"zones": {"x" * 65: [[0, 0], [1, 0], [1, 1]]}}, "at most 64 characters"),
        ([1, 2], "expected a JSON object"),
    ]:
        answer = client.post(url, json=body, headers=headers)
        assert answer.status_code == 400, body
        assert reason in answer.get_json()["error"], (body, answer.get_json())
    assert client.post("/api/cameras/nosuchcam/config", json={}, headers=headers).status_code == 404
    assert sets.on(topics.config_set(camera)) == [], "nothing bad was published"
    assert client.get(url).get_json() == {
        "camera": camera,
        "state": None,
        "received": 0,
        "received_at": None,
        "requested": None,
    }

    # Someone else (Home Assistant) set a threshold: saving zones keeps it.
    publisher.publish(topics.config_set(camera), b'{"threshold": 0.7}', retain=True)
    wait_until(lambda: relay.zones.view(camera).requested, what="the retained config/set read")
    zones = {"gate": [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0]]}
    masks = {"street": [[0.8, 0.0], [1.0, 0.0], [1.0, 0.3]]}
    answer = client.post(url, json={"zones": zones, "masks": masks}, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["received"] == 0
    # Answered after the broker's acknowledgement: the retained message is there for a newcomer.
    late = collector(topics.config_set(camera))
    retained = late.wait_for(topics.config_set(camera), lambda m: m.retain)
    saved = schemas.CameraConfigSet.parse(retained.payload)
    assert (
        saved.threshold == 0.7
        and saved.masks == {"street": [(0.8, 0.0), (1.0, 0.0), (1.0, 0.3)]}
        and saved.zones == {"gate": [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0)]}
    )

    # The detector's verdict on cam/<id>/config/state, which the relay's cam/+/+/state filter brings once.
    publisher.publish(topics.config_state(camera), config_state(camera, {}, {}, error=REFUSAL), retain=True)
    wait_until(lambda: relay.zones.view(camera).received == 1, what="config state received")
    time.sleep(0.3)  # a second delivery of the same message (overlapping filters) would come now
    view = client.get(url).get_json()
    assert view["received"] == 1 and view["state"]["error"] == REFUSAL and view["state"]["source"] == "file"


def test_bad_config_messages_are_counted_never_fatal(
    zones_web: tuple[WebRelay, Flask, str], publisher: Collector
) -> None:
    relay, app, camera = zones_web
    before = relay.bad_payloads
    other = config_state("someone-else", {}, {})
    huge = json.dumps({"camera": camera, "padding": "x" * 200_000}).encode()
    for payload in (b"not json", b"{}", other, huge):
        publisher.publish(topics.config_state(camera), payload)
    publisher.publish(topics.config_set(camera), b'{"zone": {}}')
    publisher.publish(topics.config_set(camera), b"x" * (schemas.MAX_CONFIG_BYTES + 1))
    wait_until(lambda: relay.bad_payloads == before + 6, what="six bad config messages counted")
    publisher.publish(topics.config_state(camera), config_state(camera, {"porch": DRIVEWAY}, {}))
    wait_until(lambda: relay.zones.view(camera).state, what="a good state after the bad ones")
    state = relay.zones.view(camera).state
    assert state is not None and list(state.zones) == ["porch"]
    assert app.test_client().get("/healthz").get_json()["ok"] is True


def test_a_save_the_broker_refuses_says_so(broker: LocalBroker, publisher: Collector, tmp_path: Path) -> None:
    """A login the ACL does not let write config/set (here the notifier's rights): 502 with the broker's
    reason, not a false "saved"."""
    camera = "zones-refused"
    login = broker.login_like("notifier", "zones-no-write")
    with running_relay(
        broker, tmp_path / "web", mqtt_username=login, mqtt_password=broker.passwords[login]
    ) as (relay, app):
        publisher.announce(camera)
        try:
            wait_until(lambda: relay.camera(camera), what="camera announced")
            client = app.test_client()
            _, token = log_in(client)
            answer = client.post(
                f"/api/cameras/{camera}/config",
                json={"zones": {"gate": DRIVEWAY}},
                headers={"X-CSRF-Token": token},
            )
            assert answer.status_code == 502
            assert "the broker refused the change: Not authorized" in answer.get_json()["error"]
        finally:
            publisher.forget(camera)


# -- the editor in Chromium ----------------------------------------------------------------------------------


class Overlay:
    """The editor's SVG over the picture; points are normalized to the picture, as the detector takes them."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.svg = page.locator("#zone-overlay")

    def at(self, point: Point) -> tuple[float, float]:
        self.svg.scroll_into_view_if_needed()
        box = self.svg.bounding_box()
        assert box is not None
        return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]

    def click(self, point: Point) -> None:
        self.page.mouse.click(*self.at(point))

    def drag(self, start: Point, end: Point) -> None:
        self.page.mouse.move(*self.at(start))
        self.page.mouse.down()
        self.page.mouse.move(*self.at(end), steps=8)
        self.page.mouse.up()

    def touch_drag(self, context: BrowserContext, start: Point, end: Point) -> None:
        """A finger's drag, as the phone's touch screen sends it (Chromium's own touch events)."""
        cdp = context.new_cdp_session(self.page)
        (x0, y0), (x1, y1) = self.at(start), self.at(end)
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
        for step in range(1, 9):
            x, y = x0 + (x1 - x0) * step / 8, y0 + (y1 - y0) * step / 8
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        cdp.detach()


def saved_config(sets: Collector, camera: str, since: float) -> schemas.CameraConfigSet:
    message = sets.wait_for(topics.config_set(camera), lambda m: m.at >= since, what="config/set after save")
    return schemas.CameraConfigSet.parse(message.payload)


def answer_as_detector(
    publisher: Collector, camera: str, config: schemas.CameraConfigSet, error: str | None
) -> None:
    zones = {name: list(points) for name, points in (config.zones or {}).items()}
    masks = {name: list(points) for name, points in (config.masks or {}).items()}
    publisher.publish(topics.config_state(camera), config_state(camera, zones, masks, error), retain=True)


def save(page: Page, sets: Collector, camera: str) -> schemas.CameraConfigSet:
    since = time.time()
    page.click("#save")
    return saved_config(sets, camera, since)


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_draw_name_save_move_and_delete_zones_in_the_browser(
    broker: LocalBroker, service: Start, browser: Browser, tmp_path: Path, size: ViewportSize
) -> None:
    camera = f"zones-{size['width']}"
    publisher = Collector(broker, topics.config_set(camera))
    info = camera_info(camera).model_copy(update={"width": WIDTH, "height": HEIGHT})
    publisher.publish(topics.info(camera), info.to_json(), retain=True)
    publisher.publish(topics.status(camera), topics.ONLINE, retain=True)
    base = start_relay(broker, service, tmp_path / "web")
    context = browser.new_context(viewport=size, has_touch=size == PHONE)
    frame = frame_768x432()
    try:
        page = context.new_page()
        browser_log_in(page, base)
        publisher.frame(camera, frame)
        # The editor shows the frame the relay has when it opens: the relay (a process) has it first.
        wait_until(
            lambda: page.request.get(f"{base}/cam/{camera}/latest.jpg").ok, what="the relay has the frame"
        )
        page.locator(f'.camera[data-camera="{camera}"] a.zones').click()
        expect(page).to_have_url(f"{base}/cameras/{camera}/zones")
        page.wait_for_function(f"() => document.getElementById('zone-frame')?.naturalWidth === {WIDTH}")
        expect(page.locator("#config-source")).to_contain_text("No detector has said")
        overlay = Overlay(page)
        check_draw_and_refusal(page, overlay, publisher, camera)
        check_move_and_accept(page, overlay, publisher, camera, touch=context if size == PHONE else None)
        check_mask_delete_and_silence(page, overlay, publisher, camera)
        page.reload()
        shapes = page.locator("#zone-overlay g.shape")
        expect(shapes).to_have_count(2)  # what the detector last said it uses: the moved zone and the mask
        expect(page.locator('#zone-overlay g.shape.zone[data-name="driveway"]')).to_have_count(1)
        expect(page.locator('#zone-overlay g.shape.mask[data-name="street"]')).to_have_count(1)
        expect(page.locator("#zone-overlay g.shape.mask text")).to_have_text("street")
        page.locator("#shape-list button.mask").click()
        expect(page.locator("#zone-name")).to_have_value("street")
        expect(page.locator("#zone-kind")).to_have_value("mask")
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
    finally:
        context.close()
        forget_config(publisher, camera)
        publisher.forget(camera)
        publisher.close()


def check_draw_and_refusal(page: Page, overlay: Overlay, publisher: Collector, camera: str) -> None:
    """A zone of four corners clicked with the mouse, closed on its first corner, named and saved, is the
    normalized polygon on config/set; the detector's refusal is shown with its reason."""
    page.click("#new-zone")
    for point in DRIVEWAY:
        overlay.click(point)
    overlay.click(DRIVEWAY[0])  # closes it
    name = page.locator("#zone-name")
    expect(name).to_be_focused()
    name.fill("driveway")
    expect(page.locator('#zone-overlay g.shape.zone[data-name="driveway"]')).to_have_count(1)
    config = save(page, publisher, camera)
    assert list(config.zones or {}) == ["driveway"] and config.masks == {}
    assert near(list(config.zones["driveway"]), DRIVEWAY), config.zones  # type: ignore[index]
    answer_as_detector(publisher, camera, schemas.CameraConfigSet(), REFUSAL)
    expect(page.locator("#verdict")).to_have_text(
        f"Refused by the detector: {REFUSAL} It keeps its previous zones."
    )


def check_move_and_accept(
    page: Page, overlay: Overlay, publisher: Collector, camera: str, *, touch: BrowserContext | None
) -> None:
    """The zone dragged by its inside moves whole; one corner dragged (by a finger on the phone) moves
    alone; the detector's acceptance is said."""
    overlay.drag((0.3, 0.7), (0.4, 0.6))  # +0.1, -0.1
    moved = [(x + 0.1, y - 0.1) for x, y in DRIVEWAY]
    corner_to = (0.8, 0.95)
    if touch is not None:
        overlay.touch_drag(touch, moved[2], corner_to)
    else:
        overlay.drag(moved[2], corner_to)
    expected = [moved[0], moved[1], corner_to, moved[3]]
    expect(page.locator("#verdict")).to_have_text("Unsaved changes")
    config = save(page, publisher, camera)
    assert near(list((config.zones or {})["driveway"]), expected), config.zones
    answer_as_detector(publisher, camera, config, None)
    expect(page.locator("#verdict")).to_have_text("Saved: the detector uses these zones.")


def check_mask_delete_and_silence(page: Page, overlay: Overlay, publisher: Collector, camera: str) -> None:
    """A mask closed by a double-click gets a free default name, is renamed, and is saved under that name
    in ``masks``; a shape switched between zone and mask keeps its name when the other kind has it free;
    a deleted zone is gone from the next save; with no detector answering, the page says so."""
    page.click("#new-mask")
    mask = [(0.7, 0.05), (0.95, 0.05), (0.95, 0.3)]
    overlay.click(mask[0])
    overlay.click(mask[1])
    page.mouse.dblclick(*overlay.at(mask[2]))
    expect(page.locator("#zone-overlay g.shape.mask")).to_have_count(1)
    name, kind = page.locator("#zone-name"), page.locator("#zone-kind")
    expect(name).to_be_focused()
    expect(name).to_have_value("mask 1")
    expect(page.locator('#zone-overlay g.shape.mask[data-name="mask 1"] text')).to_have_text("mask 1")
    # Zones and masks are named apart: "driveway" is free among masks, not among zones.
    name.fill("driveway")
    kind.select_option("zone")
    expect(name).to_have_value("zone 1")
    expect(page.locator('#zone-overlay g.shape.zone[data-name="zone 1"]')).to_have_count(1)
    kind.select_option("mask")
    expect(name).to_have_value("zone 1")  # free among masks: kept
    name.fill("street")
    kind.select_option("zone")
    expect(name).to_have_value("street")
    kind.select_option("mask")
    expect(name).to_have_value("street")
    expect(page.locator('#zone-overlay g.shape.mask[data-name="street"] text')).to_have_text("street")
    expect(page.locator("#shape-list button.mask")).to_have_text("street (mask, 3 corners)")
    config = save(page, publisher, camera)
    assert list(config.zones or {}) == ["driveway"] and list(config.masks or {}) == ["street"]
    assert near(list((config.masks or {})["street"]), mask)
    answer_as_detector(publisher, camera, config, None)
    expect(page.locator("#verdict")).to_have_text("Saved: the detector uses these zones.")
    page.locator("#shape-list button.zone").click()
    page.click("#delete-shape")
    expect(page.locator("#zone-overlay g.shape")).to_have_count(1)
    config = save(page, publisher, camera)
    assert config.zones == {} and list(config.masks or {}) == ["street"]
    expect(page.locator("#verdict")).to_contain_text("no detector answered within 5 s", timeout=10_000)


# -- end to end: the real detector on the real footage -------------------------------------------------------


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_zone_drawn_in_the_browser_is_the_zone_of_the_next_person_event(
    broker: LocalBroker,
    service: Start,
    collector: Callable[..., Collector],
    browser: Browser,
    tmp_path: Path,
    *,
    size: ViewportSize,
) -> None:
    camera = f"zones-e2e-{size['width']}"
    seen = collector(topics.event(camera, "person"), topics.config_state(camera), topics.config_set(camera))
    status = collector(topics.service_status("detector"))
    service(
        "detector",
        detector_env(
            broker,
            detector_cameras=camera,
            detector_motion="false",
            detector_data_dir=str(tmp_path / "detector"),
        ),
    )
    wait_online(status)
    publisher = Collector(broker)
    publisher.announce(camera)
    base = start_relay(broker, service, tmp_path / "web")
    frames = FramePublisher(broker, camera)
    context = browser.new_context(viewport=size)
    try:
        empty_room = [jpeg(frame) for frame in read_frames(PERSON_VIDEO, 0, 9)]
        frames.stream(empty_room, 5.0)  # the picture to draw on, nobody in it
        page = context.new_page()
        browser_log_in(page, base)
        page.goto(f"{base}/cameras/{camera}/zones")
        page.wait_for_function("() => document.getElementById('zone-frame')?.naturalWidth > 0")
        # Where the people of the footage stand: the lower half of the picture, to its very bottom (the
        # person's box reaches y = 0.9998): corners clicked a few pixels from the edges are on them.
        overlay = Overlay(page)
        page.click("#new-zone")
        for point in [(0.004, 0.5), (0.996, 0.5), (0.996, 0.996)]:
            overlay.click(point)
        overlay.click((0.004, 0.996))
        page.click("#finish")
        page.fill("#zone-name", "floor")
        since = time.time()
        page.click("#save")
        expect(page.locator("#verdict")).to_have_text("Saved: the detector uses these zones.", timeout=10_000)
        state = schemas.CameraConfigState.parse(
            seen.wait_for(topics.config_state(camera), lambda m: m.at >= since).payload
        )
        assert list(state.zones) == ["floor"] and state.error is None and state.source == "topic"
        box = overlay.svg.bounding_box()
        assert box is not None
        one_pixel = 1 / box["height"]  # the mouse lands on whole pixels: at phone size one is 0.0045
        floor = [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]
        assert near(list(state.zones["floor"]), floor, one_pixel), state.zones
        person = [jpeg(frame) for frame in read_frames(PERSON_VIDEO, 60, 130)]
        frames.stream(person, 10.0)
        start = seen.wait_for(topics.event(camera, "person"), lambda m: b'"start"' in m.payload, timeout=30)
        event = schemas.DetectionEvent.parse(start.payload)
        assert event.zones == ["floor"], (event.box, state.zones)
    finally:
        context.close()
        frames.close()
        forget_config(publisher, camera)
        publisher.forget(camera)
        publisher.close()
