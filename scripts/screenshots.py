"""Screenshots of the web console for docs/web.md, taken the way the tests see the console.

    python -m scripts.screenshots                 # into docs/img
    python -m scripts.screenshots --out /tmp/img  # somewhere else

Starts what it needs itself, as the tests do (tests/support.py, tests/web_support.py): a real Mosquitto on
a free port with the project's config, the web relay, a camera ``front`` publishing a frame of the shared
footage (``SHARED_DIR``, else ../shared) at the camera service's size, and a person event as the detector
sends it: the boxes are the reference model's on that frame, and the zones the object stands in are worked
out with the detector's own test. Then Debian's Chromium takes the live page, the event page and the zone
editor at desktop (1280x800) and phone (412x915) sizes: ``web-<page>-<size>.png``. Needs mosquitto,
/usr/bin/chromium and the shared footage and model; exit code 1 with one line when one is missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.detector.events import annotate
from services.detector.model import Detection, Detector, Image
from services.detector.objects import zones_at
from tests.support import (
    MODEL_DIR,
    PERSON_VIDEO,
    REPO_ROOT,
    Collector,
    camera_info,
    jpeg,
    read_frames,
    tracked_event,
    tracked_object,
)
from tests.web_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    browser_log_in,
    running_relay,
)

SIZES = {"desktop": ViewportSize(width=1280, height=800), "phone": ViewportSize(width=412, height=915)}
CAMERA = "front"
FRAME = 810  # of the shared person clip: one person well in view, found by the model at 82 %
MIN_SCORE = 0.5
# Polygons of the frame (normalized): the floor the person stands on, and the doorway on the right.
ZONES: dict[str, list[tuple[float, float]]] = {
    "hall": [(0.30, 0.70), (0.80, 0.70), (0.90, 1.00), (0.20, 1.00)],
    "door": [(0.74, 0.10), (0.90, 0.10), (0.90, 0.68), (0.74, 0.68)],
}
EVENT_AGE_S = 47.0  # the event began this long ago; the person came in by the door and is in the hall


def take_screenshots(out: Path, work: Path) -> list[Path]:
    """Every screenshot into ``out`` (made if needed); ``work`` holds the broker's and the relay's files.
    Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    picture, found = scene()
    broker = LocalBroker(work / "broker")
    broker.start()
    camera = Collector(broker)
    try:
        with running_relay(broker, work / "web") as (relay, _app), streaming(camera, jpeg(picture)):
            base = f"http://127.0.0.1:{relay.settings.web_port}"
            started = time.time() - EVENT_AGE_S
            event_id = publish_event(camera, picture, found, started)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    written = shoot(browser, base, out, "live", "/")
                    publish_event(camera, picture, found, started, end=True)
                    written += shoot(browser, base, out, "event", f"/events/{event_id}")
                    written += shoot(browser, base, out, "zones", f"/cameras/{CAMERA}/zones")
                finally:
                    browser.close()
    finally:
        camera.close()
        broker.stop()
    return written


def scene() -> tuple[Image, list[Detection]]:
    """The footage frame (768x432, what the camera service sends) and the people the model finds in it."""
    picture = read_frames(PERSON_VIDEO, FRAME, FRAME)[0]
    detector = Detector(MODEL_DIR / "detect.tflite", MODEL_DIR / "labelmap.txt", threads=1)
    people = [found for found in detector.detect(picture, MIN_SCORE) if found.label == "person"]
    if not people:
        raise RuntimeError(f"the model finds no person in frame {FRAME} of {PERSON_VIDEO.name}")
    return picture, people


@contextmanager
def streaming(camera: Collector, frame: bytes) -> Iterator[None]:
    """The camera: its info, status and zones (as the detector reports them), and the frame twice a second,
    captured now (the card's clock runs)."""
    info = camera_info(CAMERA).model_copy(update={"width": 768, "height": 432})
    camera.publish(topics.info(CAMERA), info.to_json(), retain=True)
    camera.publish(topics.status(CAMERA), topics.ONLINE, retain=True)
    camera.publish(topics.ARMED_STATE, topics.ON, retain=True)
    camera.publish(topics.detect_state(CAMERA), topics.ON, retain=True)
    camera.publish(topics.config_state(CAMERA), config_state().to_json(), retain=True)
    with camera.streaming(CAMERA, fps=2.0, frames=[frame]):
        yield


def config_state() -> schemas.CameraConfigState:
    return schemas.CameraConfigState(
        camera=CAMERA,
        objects=["person", "car"],
        threshold=0.6,
        min_area=0.0,
        max_area=1.0,
        zones=ZONES,
        source="saved",
        updated_at=time.time(),
    )


def publish_event(
    camera: Collector, picture: Image, found: list[Detection], started: float, *, end: bool = False
) -> str:
    """The person event as the detector sends it: begun at ``started``, through the door, each
    person with the zones its feet stand in now (entered 9 s after the start)."""
    now = time.time()
    event_id = f"{CAMERA}-{int(started * 1000)}-person"  # as the detector names its events
    objects = [
        tracked_object(
            index + 1,
            now,
            {name: started + 9 for name in zones_at(person.box, ZONES)},
            first_seen=started + 4 * index,
            box=person.box,
            score=person.score,
        )
        for index, person in enumerate(found)
    ]
    best = max(found, key=lambda person: person.score)
    snapshot = annotate(picture, found, best, best.score)
    kind = "end" if end else "start"
    payload = tracked_event(
        CAMERA, event_id, objects, ["door", "hall"], kind=kind, started_at=started, snapshot=snapshot
    )
    camera.publish(topics.event(CAMERA, "person"), payload)
    return event_id


def shoot(browser: Browser, base: str, out: Path, name: str, path: str) -> list[Path]:
    """The page at ``path`` at each size, as ``web-<name>-<size>.png``."""
    written = []
    for size, viewport in SIZES.items():
        context = browser.new_context(viewport=viewport, timezone_id="UTC", reduced_motion="reduce")
        try:
            page = context.new_page()
            browser_log_in(page, base)
            if path != "/":
                page.goto(f"{base}{path}")
            settle(page, name)
            written.append(out / f"web-{name}-{size}.png")
            page.screenshot(path=str(written[-1]), animations="disabled")
        finally:
            context.close()
    return written


def settle(page: Page, name: str) -> None:
    """Wait until the page shows what it is about: the picture and its boxes, the event's facts."""
    if name == "live":
        card = page.locator(f'.camera[data-camera="{CAMERA}"]')
        expect(card.locator("svg.boxes rect").first).to_be_attached()
        page.wait_for_function("() => document.querySelector('img.live').naturalWidth > 0")
        expect(card.locator("time.clock")).not_to_be_empty()
    elif name == "event":
        expect(page.locator("dd.ended time")).to_be_visible()
        page.wait_for_function("() => document.querySelector('img.snapshot').complete")
    else:  # the editor draws the zones on the frame once both have come
        page.wait_for_function("() => document.getElementById('zone-frame')?.naturalWidth > 0")
        expect(page.locator("#zone-overlay g.shape")).to_have_count(len(ZONES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "img", help="where the PNGs go")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="sentrycam-screenshots-") as work:
            written = take_screenshots(args.out, Path(work))
    except (OSError, RuntimeError) as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
