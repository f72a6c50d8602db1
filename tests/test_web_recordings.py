"""Playback in the web relay: the recorder's clip announcements stored with their events, the clip files
served with range requests behind the login, the recordings page, and Chromium playing and seeking a clip.

The clips are real: frames of the shared footage written by the recorder's own ``ClipWriter``."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import APIResponse, Browser, Route, expect

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.web.event_model import EventFilter, local_day
from services.web.events import EventStore
from services.web.relay import WebRelay
from tests.support import (
    PERSON_VIDEO,
    REPO_ROOT,
    Collector,
    ServiceProcess,
    detection_event,
    footage_frames,
    read_frames,
    wait_until,
)
from tests.test_web_service import refused_start, relay_env
from tests.web_support import browser_log_in, clip_announcement, log_in, running_relay, write_clip_file

CAMERA = "rec-cam"
FPS = 10.0
DAY = "2026-01-15"
CLIP_START_MS = 1_768_464_000_000
EVENT_CLIP = f"events/{CAMERA}/{DAY}/clip-a.mp4"
SEGMENTS = ("08-00-00", "08-30-00", "14-00-00")
ARTIFACTS = REPO_ROOT / "test-artifacts"

Frames = list[npt.NDArray[np.uint8]]


@dataclass(frozen=True)
class Recordings:
    root: Path  # the recorder's RECORD_DIR
    frames: Frames  # what the event clip shows, one frame per 100 ms


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Recordings:
    """A RECORD_DIR with one finished event clip (8 s) and three continuous segments of a day."""
    root = tmp_path_factory.mktemp("record")
    # Every third frame of the footage: people move between frames, so a frame tells its time.
    frames = [
        np.asarray(cv2.resize(frame, (640, 360)), np.uint8)
        for frame in read_frames(PERSON_VIDEO, 150, 389)[::3]
    ]
    write_clip_file(root / EVENT_CLIP, frames, CLIP_START_MS, FPS)
    day_dir = root / "continuous" / CAMERA / DAY
    day_dir.mkdir(parents=True)
    an_hour_ago = time.time() - 3600
    for name in SEGMENTS:
        shutil.copy(root / EVENT_CLIP, day_dir / f"{name}.mp4")
        os.utime(day_dir / f"{name}.mp4", (an_hour_ago, an_hour_ago))  # finished long ago
    (day_dir / "notes.txt").write_text("not a segment")
    shutil.copy(root / EVENT_CLIP, day_dir / "25-00-00.mp4")  # no such hour
    # Outside RECORD_DIR, and a way out through a symlink inside it.
    secret = tmp_path_factory.mktemp("outside") / "secret.mp4"
    secret.write_bytes(b"not for the web")
    os.utime(secret, (an_hour_ago, an_hour_ago))
    (root / "events" / CAMERA / DAY / "escape.mp4").symlink_to(secret)
    (day_dir / "09-00-00.mp4").symlink_to(secret)
    return Recordings(root, frames)


@pytest.fixture
def playback(broker: LocalBroker, tmp_path: Path, recordings: Recordings) -> Iterator[tuple[WebRelay, Flask]]:
    with running_relay(broker, tmp_path / "web", web_record_dir=recordings.root) as relay_and_app:
        yield relay_and_app


def logged_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    assert log_in(client)[0] == 302
    return client


def event_of(client: FlaskClient, event_id: str) -> dict[str, object] | None:
    response = client.get(f"/api/events/{event_id}")
    return response.get_json() if response.status_code == 200 else None


def clip_of(client: FlaskClient, event_id: str) -> dict[str, object] | None:
    event = event_of(client, event_id)
    return event.get("clip") if event else None  # type: ignore[return-value]


def test_clips_link_to_their_events_whichever_comes_first(
    playback: tuple[WebRelay, Flask], publisher: Collector, recordings: Recordings
) -> None:
    relay, app = playback
    client = logged_in(app)
    camera = "rec-link"
    first_event, late_event, no_clip = (f"{camera}-{n}-person" for n in (1, 2, 3))
    # The event first, then its clip (recording, then done).
    publisher.publish(
        topics.event(camera, "person"), detection_event(camera, first_event, footage_frames()[0])
    )
    wait_until(lambda: event_of(client, first_event), what="the event stored")
    path = f"events/{camera}/{DAY}/clip-1.mp4"
    publisher.publish(
        topics.clip(camera), clip_announcement(camera, "clip-1", path, [first_event], state="recording")
    )
    clip = wait_until(lambda: clip_of(client, first_event), what="the clip linked")
    assert clip["state"] == "recording" and clip["url"] == "/clips/clip-1.mp4"
    assert "path" not in clip  # file names stay inside the relay
    publisher.publish(
        topics.clip(camera), clip_announcement(camera, "clip-1", path, [first_event], duration_s=9)
    )
    wait_until(lambda: (clip_of(client, first_event) or {}).get("state") == "done", what="the clip done")
    # A "recording" message sent again after the clip was done does not make it recording again.
    publisher.publish(
        topics.clip(camera), clip_announcement(camera, "clip-1", path, [first_event], state="recording")
    )
    # The clip first: it waits for its event, which shows it as soon as it comes.
    publisher.publish(
        topics.clip(camera),
        clip_announcement(camera, "clip-2", f"events/{camera}/{DAY}/clip-2.mp4", [late_event]),
    )
    wait_until(lambda: relay.store.clips.get("clip-2") is not None, what="the early clip stored")
    publisher.publish(
        topics.event(camera, "person"), detection_event(camera, late_event, footage_frames()[1])
    )
    assert (
        wait_until(lambda: clip_of(client, late_event), what="the early clip linked")["clip_id"] == "clip-2"
    )
    publisher.publish(topics.event(camera, "person"), detection_event(camera, no_clip, footage_frames()[2]))
    wait_until(lambda: event_of(client, no_clip), what="an event without clip")
    assert clip_of(client, no_clip) is None
    done = clip_of(client, first_event)
    assert done is not None and done["state"] == "done" and done["duration_s"] == 9
    # The timeline marks the events with a clip; the event page plays it and offers it for download.
    timeline = client.get(f"/events?camera={camera}").get_data(as_text=True)
    assert timeline.count('class="has-clip"') == 2
    page = client.get(f"/events/{first_event}").get_data(as_text=True)
    assert '<video controls preload="metadata" playsinline src="/clips/clip-1.mp4"' in page
    assert 'href="/clips/clip-1.mp4?download=1"' in page and "recording…" not in page
    publisher.publish(
        topics.clip(camera),
        clip_announcement(
            camera, "clip-3", f"events/{camera}/{DAY}/clip-3.mp4", [no_clip], state="recording"
        ),
    )
    wait_until(lambda: clip_of(client, no_clip), what="a recording clip linked")
    assert "recording…" in client.get(f"/events/{no_clip}").get_data(as_text=True)


def test_bad_clip_announcements_are_counted_and_ignored(
    playback: tuple[WebRelay, Flask], publisher: Collector
) -> None:
    relay, app = playback
    client = logged_in(app)
    camera = "rec-bad"
    good = clip_announcement(camera, "bad-0", f"events/{camera}/{DAY}/a.mp4", [])
    bad = [
        b"{not json",
        good.replace(b'"version":1', b'"version":2'),
        clip_announcement("rec-other", "bad-1", f"events/rec-other/{DAY}/a.mp4", []),  # another camera's
        clip_announcement(camera, "bad-2", f"events/rec-other/{DAY}/a.mp4", []),  # another camera's file
        clip_announcement(camera, "bad-3", f"snapshots/{camera}/a.mp4", []),  # not under events/continuous
        clip_announcement(camera, "bad-4", f"events/{camera}/{DAY}/a.txt", []),
        good.replace(b"events/", b"../events/"),
        good.replace(b'"state":"done"', b'"state":"lost"'),
        good[:-1] + b',"padding":"' + b"x" * 20_000 + b'"}',  # too long to parse
    ]
    before = relay.bad_payloads
    for payload in bad:
        publisher.publish(topics.clip(camera), payload)
    wait_until(lambda: relay.bad_payloads >= before + len(bad), what="bad announcements counted")
    assert relay.bad_payloads == before + len(bad)
    # Still storing.
    publisher.publish(topics.clip(camera), good)
    wait_until(lambda: relay.store.clips.get("bad-0") is not None, what="a good announcement stored")
    assert all(relay.store.clips.get(f"bad-{n}") is None for n in range(1, 5))
    assert client.get("/healthz").status_code == 200


def test_a_clip_the_store_could_not_take_comes_again(
    broker: LocalBroker, tmp_path: Path, publisher: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relay's write gives up on the lock after 0.1 s instead of 5 s.
    monkeypatch.setattr("services.web.event_model.BUSY_TIMEOUT_MS", 100)
    camera = "rec-locked"
    data_dir = tmp_path / "web"
    with running_relay(broker, data_dir) as (relay, _app):
        # Someone else (a backup, the sqlite3 shell) holds the database while the announcement comes.
        holder = sqlite3.connect(data_dir / "events.sqlite3", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            publisher.publish(
                topics.clip(camera), clip_announcement(camera, "locked-1", f"events/{camera}/a.mp4", [])
            )
            wait_until(lambda: relay.client.redeliveries >= 1, what="the write failed and asked for it again")
            # Read through the holder: a second reader racing for the WAL lock of a database held EXCLUSIVE
            # can get SQLITE_PROTOCOL ("locking protocol"), seen once under load in the suite.
            stored = holder.execute("SELECT 1 FROM clips WHERE clip_id = 'locked-1'").fetchone()
            assert stored is None
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_until(lambda: relay.store.clips.get("locked-1"), what="the clip stored on redelivery")


def announce(publisher: Collector, relay: WebRelay, clip_id: str, path: str, state: str = "done") -> None:
    publisher.publish(topics.clip(CAMERA), clip_announcement(CAMERA, clip_id, path, [], state=state))
    wait_until(lambda: (c := relay.store.clips.get(clip_id)) is not None and c.state == state, what="stored")


def test_clips_are_served_with_range_requests_behind_the_login(
    playback: tuple[WebRelay, Flask], publisher: Collector, recordings: Recordings
) -> None:
    relay, app = playback
    announce(publisher, relay, "serve-a", EVENT_CLIP)
    data = (recordings.root / EVENT_CLIP).read_bytes()
    size = len(data)
    assert app.test_client().get("/clips/serve-a.mp4").status_code == 401
    assert app.test_client().get("/clips/serve-a.mp4", headers={"Range": "bytes=0-99"}).status_code == 401
    client = logged_in(app)
    whole = client.get("/clips/serve-a.mp4")
    assert whole.status_code == 200 and whole.mimetype == "video/mp4" and whole.data == data
    assert whole.headers["Accept-Ranges"] == "bytes" and whole.headers["ETag"]
    assert "attachment" not in whole.headers.get("Content-Disposition", "")
    for asked, first, last in (
        ("0-99", 0, 99),
        ("1000-1999", 1000, 1999),
        (f"{size - 500}-", size - 500, size - 1),
    ):
        part = client.get("/clips/serve-a.mp4", headers={"Range": f"bytes={asked}"})
        assert part.status_code == 206, asked
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert part.mimetype == "video/mp4" and part.data == data[first : last + 1]
    assert client.get("/clips/serve-a.mp4", headers={"Range": f"bytes={size}-"}).status_code == 416
    download = client.get("/clips/serve-a.mp4?download=1")
    assert download.headers["Content-Disposition"] == "attachment; filename=serve-a.mp4"
    assert download.data == data
    # Unknown ids, and files that are not there or lead out of RECORD_DIR, are not found.
    announce(publisher, relay, "serve-gone", f"events/{CAMERA}/{DAY}/never-written.mp4")
    announce(publisher, relay, "serve-escape", f"events/{CAMERA}/{DAY}/escape.mp4")
    for url in (
        "/clips/nothing.mp4",
        "/clips/serve-gone.mp4",
        "/clips/serve-escape.mp4",
        "/clips/..%2Fx.mp4",
    ):
        answer = client.get(url)
        assert answer.status_code == 404 and b"not for the web" not in answer.data, url


def test_a_clip_still_recording_is_served_as_it_grows(
    playback: tuple[WebRelay, Flask], publisher: Collector, recordings: Recordings
) -> None:
    relay, app = playback
    path = f"events/{CAMERA}/{DAY}/growing.mp4"
    writer = write_clip_file(recordings.root / path, recordings.frames[:25], CLIP_START_MS, FPS, done=False)
    try:
        announce(publisher, relay, "growing", path, state="recording")
        client = logged_in(app)
        before = client.get("/clips/growing.mp4", headers={"Range": "bytes=0-"})
        assert before.status_code == 206 and before.headers["Cache-Control"] == "no-store"
        assert "ETag" not in before.headers  # no validator that would pair with the longer file later
        first_size = len(before.data)
        assert before.headers["Content-Range"] == f"bytes 0-{first_size - 1}/{first_size}"
        for index, frame in enumerate(recordings.frames[25:], start=25):
            writer.add(frame, CLIP_START_MS + index * 100)
        wait_until(lambda: (recordings.root / path).stat().st_size > first_size, what="the file grew")
        grown = (recordings.root / path).stat().st_size
        after = client.get("/clips/growing.mp4", headers={"Range": f"bytes={first_size}-"})
        assert after.status_code == 206
        assert after.headers["Content-Range"] == f"bytes {first_size}-{grown - 1}/{grown}"
        assert before.data + after.data == (recordings.root / path).read_bytes()[:grown]
    finally:
        writer.close()


def test_the_recordings_page_lists_the_days_segments_by_hour_and_plays_one(
    playback: tuple[WebRelay, Flask], recordings: Recordings
) -> None:
    _relay, app = playback
    page_url = f"/cameras/{CAMERA}/recordings?date={DAY}"
    stranger = app.test_client().get(page_url)
    assert stranger.status_code == 302 and "/login" in stranger.headers["Location"]
    segment_url = f"/cameras/{CAMERA}/recordings/{DAY}/08-30-00.mp4"
    assert app.test_client().get(segment_url).status_code == 401
    client = logged_in(app)
    page = client.get(page_url).get_data(as_text=True)
    assert page.index("<h2>08:00</h2>") < page.index(">08:00:00<") < page.index(">08:30:00<")
    assert page.index(">08:30:00<") < page.index("<h2>14:00</h2>") < page.index(">14:00:00<")
    assert "09:00:00" in page  # listed (a symlink), but refused when asked for: it leads out
    assert "25:00:00" not in page and "notes" not in page and "<video" not in page
    assert "recording…" not in page
    playing = client.get(f"{page_url}&play=08-30-00").get_data(as_text=True)
    assert f'src="{segment_url}"' in playing and f'href="{segment_url}?download=1"' in playing
    data = (recordings.root / "continuous" / CAMERA / DAY / "08-30-00.mp4").read_bytes()
    part = client.get(segment_url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.mimetype == "video/mp4" and part.data == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    for refused in (
        f"/cameras/{CAMERA}/recordings/{DAY}/09-00-00.mp4",  # the symlink out of RECORD_DIR
        f"/cameras/{CAMERA}/recordings/{DAY}/07-00-00.mp4",
        f"/cameras/{CAMERA}/recordings/{DAY}/25-00-00.mp4",
        f"/cameras/{CAMERA}/recordings/..%2F..%2F{DAY}/08-30-00.mp4",
        f"/cameras/Bad.Cam/recordings/{DAY}/08-30-00.mp4",
    ):
        answer = client.get(refused)
        assert answer.status_code == 404 and b"not for the web" not in answer.data, refused
    assert part.headers["ETag"] and part.headers["Cache-Control"] == "private, no-cache"
    # A segment the recorder wrote to a moment ago may still grow: marked, and served without a validator.
    latest = recordings.root / "continuous" / CAMERA / DAY / "14-00-00.mp4"
    os.utime(latest)
    try:
        assert client.get(page_url).get_data(as_text=True).count("recording…") == 1
        growing = client.get(
            f"/cameras/{CAMERA}/recordings/{DAY}/14-00-00.mp4", headers={"Range": "bytes=0-9"}
        )
        assert growing.status_code == 206 and growing.headers["Cache-Control"] == "no-store"
        assert "ETag" not in growing.headers
    finally:
        os.utime(latest, (time.time() - 3600,) * 2)
    empty = client.get(f"/cameras/{CAMERA}/recordings?date=2026-01-16").get_data(as_text=True)
    assert 'id="no-recordings"' in empty
    today = client.get(f"/cameras/{CAMERA}/recordings").get_data(as_text=True)
    assert f'value="{local_day(time.time())}"' in today
    assert client.get(f"/cameras/{CAMERA}/recordings?date=15.01.2026").status_code == 400
    assert client.get(f"/cameras/{CAMERA}/recordings?date={DAY}&play=8h").status_code == 400


def test_without_a_record_dir_the_pages_say_playback_is_off(
    broker: LocalBroker, tmp_path: Path, publisher: Collector
) -> None:
    camera = "rec-off"
    event_id = f"{camera}-1-person"
    with running_relay(broker, tmp_path / "web") as (_relay, app):
        client = logged_in(app)
        publisher.publish(
            topics.event(camera, "person"), detection_event(camera, event_id, footage_frames()[0])
        )
        publisher.publish(
            topics.clip(camera), clip_announcement(camera, "off-1", f"events/{camera}/a.mp4", [event_id])
        )
        clip = wait_until(lambda: clip_of(client, event_id), what="the clip linked")
        assert clip["url"] is None and clip["download_url"] is None
        assert "playback is off" in client.get(f"/events/{event_id}").get_data(as_text=True)
        assert "Playback is off" in client.get(f"/cameras/{camera}/recordings").get_data(as_text=True)
        assert client.get("/clips/off-1.mp4").status_code == 404


def test_a_relative_record_dir_is_resolved_once_at_start(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "record").mkdir()
    monkeypatch.chdir(tmp_path)
    with running_relay(broker, tmp_path / "web", web_record_dir=Path("record")) as (relay, _app):
        assert relay.record_dir is not None and relay.record_dir.root == tmp_path / "record"


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory the unprivileged relay may enter (pytest's temporary directories are root's only)."""
    path = Path(tempfile.mkdtemp())
    path.chmod(0o755)
    yield path
    for inside in path.rglob("*"):
        inside.chmod(0o755)
    shutil.rmtree(path)


@pytest.mark.parametrize(
    "problem", ["no such directory", "not a directory", "cannot read it: Permission denied"]
)
def test_a_record_dir_the_relay_cannot_read_stops_it_with_one_line(
    broker: LocalBroker,
    service: Callable[..., ServiceProcess],
    tmp_path: Path,
    reachable_dir: Path,
    problem: str,
) -> None:
    path = reachable_dir / "record"
    if problem == "not a directory":
        path.write_text("a file")
    elif problem.startswith("cannot read"):
        path.mkdir(mode=0o000)
    data_dir = reachable_dir / "web"
    data_dir.mkdir()
    os.chown(data_dir, *nobody())
    env = relay_env(broker, tmp_path, WEB_RECORD_DIR=str(path), WEB_DATA_DIR=str(data_dir))
    line = refused_start(service, env, unprivileged=True)  # root could read any directory
    assert line == f"sentrycam-web: invalid setting WEB_RECORD_DIR={path}: {problem}"


def nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def test_retention_forgets_the_clips_of_deleted_events_but_never_deletes_a_file(
    tmp_path: Path, recordings: Recordings
) -> None:
    store = EventStore(tmp_path, logging.getLogger("test.web"))
    now = time.time()
    old, kept = "ret-clip-1-person", "ret-clip-2-person"
    for event_id, age_days in ((old, 40), (kept, 1)):
        started = now - age_days * 86400
        store.record(
            schemas.DetectionEvent.parse(detection_event("ret-clip", event_id, None, started_at=started))
        )
    for clip_id, event_ids, age_days in (
        ("c-old", [old], 40),
        ("c-kept", [kept], 2),
        ("c-both", [old, kept], 1),
    ):
        store.clips.record(
            schemas.ClipInfo.parse(
                clip_announcement(
                    "ret-clip", clip_id, EVENT_CLIP, event_ids, started_at=now - age_days * 86400
                )
            )
        )
    # A clip whose event never came is forgotten once older than the events kept.
    store.clips.record(
        schemas.ClipInfo.parse(
            clip_announcement("ret-clip", "c-lone", EVENT_CLIP, ["never"], started_at=now - 35 * 86400)
        )
    )
    assert store.apply_retention(30 * 86400, 10**9, now=now) == 1
    assert [e.event_id for e in store.query(EventFilter(camera="ret-clip"))] == [kept]
    assert [clip.clip_id for clip in store.query(EventFilter(camera="ret-clip"))[0].clips] == [
        "c-kept",
        "c-both",
    ]
    assert store.clips.get("c-old") is None and store.clips.get("c-lone") is None
    assert (recordings.root / EVENT_CLIP).is_file()
    store.close()


# -- Chromium -------------------------------------------------------------------------------------------

WATCH = """async () => {
  const video = document.querySelector("video");
  video.muted = true;
  await video.play();
  const start = video.currentTime;
  await new Promise((done) => setTimeout(done, 1500));
  return {readyState: video.readyState, advanced: video.currentTime - start, duration: video.duration};
}"""
SEEK = """async (target) => {
  const video = document.querySelector("video");
  video.pause();
  const from = video.currentTime;
  const seeked = new Promise((done) => video.addEventListener("seeked", done, {once: true}));
  video.currentTime = target;
  await seeked;
  const canvas = document.createElement("canvas");
  canvas.width = 64; canvas.height = 36;
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0, 64, 36);
  return {from, at: video.currentTime, pixels: Array.from(context.getImageData(0, 0, 64, 36).data)};
}"""


def distances(pixels: list[int], frames: Frames) -> list[float]:
    """How far what the browser shows (64x36 RGBA) is from each frame of the clip: mean grey difference."""
    shown = cv2.cvtColor(np.array(pixels, np.uint8).reshape(36, 64, 4), cv2.COLOR_RGBA2GRAY).astype(float)
    return [
        float(
            np.abs(
                cv2.cvtColor(cv2.resize(frame, (64, 36), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
                - shown
            ).mean()
        )
        for frame in frames
    ]


def linked_event(
    relay: WebRelay, publisher: Collector, event_id: str, clip_id: str, path: str, *, state: str
) -> None:
    publisher.publish(
        topics.event(CAMERA, "person"),
        detection_event(CAMERA, event_id, footage_frames()[0], started_at=CLIP_START_MS / 1000),
    )
    publisher.publish(topics.clip(CAMERA), clip_announcement(CAMERA, clip_id, path, [event_id], state=state))
    wait_until(
        lambda: (e := relay.store.get(event_id)) is not None and e.clips, what="the event and its clip"
    )


def test_chromium_plays_the_event_clip_and_seeks_in_it(
    playback: tuple[WebRelay, Flask], publisher: Collector, recordings: Recordings, browser: Browser
) -> None:
    relay, _app = playback
    event_id = f"{CAMERA}-{CLIP_START_MS}-person"
    publisher.publish(
        topics.event(CAMERA, "person"),
        detection_event(CAMERA, event_id, footage_frames()[0], started_at=CLIP_START_MS / 1000),
    )
    wait_until(lambda: relay.store.get(event_id), what="the event")
    growing_path = f"events/{CAMERA}/{DAY}/play-growing.mp4"
    growing = write_clip_file(
        recordings.root / growing_path, recordings.frames[:45], CLIP_START_MS, FPS, done=False
    )
    linked_event(relay, publisher, f"{CAMERA}-2-person", "play-growing", growing_path, state="recording")
    base = f"http://127.0.0.1:{relay.settings.web_port}"
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 412, "height": 915})  # a phone
    try:
        page = context.new_page()
        answers: list[int] = []
        page.on("response", lambda r: answers.append(r.status) if "/clips/" in r.url else None)
        browser_log_in(page, base)
        # The timeline is open when the clip is announced: its badge comes without a reload. The page's
        # catch-up request, answered before the clip and delivered after it, must not take the badge away.
        held: list[tuple[Route, APIResponse]] = []
        page.route("**/api/events", lambda route: held.append((route, route.fetch())))
        page.goto(f"{base}/events?camera={CAMERA}")
        row = page.locator(f'li.event[data-event="{event_id}"]')
        expect(row).to_be_visible()
        expect(row.locator(".has-clip")).to_have_count(0)
        for _ in range(100):  # the route's handler runs only inside Playwright calls
            if held:
                break
            page.wait_for_timeout(50)
        assert held, "the timeline asked for no catch-up"
        publisher.publish(topics.clip(CAMERA), clip_announcement(CAMERA, "play-a", EVENT_CLIP, [event_id]))
        expect(row.locator(".has-clip")).to_be_visible()
        stale_route, stale_answer = held[0]
        assert "play-a" not in stale_answer.text()
        stale_route.fulfill(response=stale_answer)
        expect(page.locator("#timeline")).to_have_attribute("data-caught-up", "true")
        expect(row.locator(".has-clip")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "web-timeline-clips.png"), full_page=True)
        row.locator("a").click()
        expect(page).to_have_url(f"{base}/events/{event_id}")
        played = page.evaluate(WATCH)
        assert played["readyState"] == 4, played  # HAVE_ENOUGH_DATA
        assert played["advanced"] > 0.5, played
        assert abs(played["duration"] - (len(recordings.frames) - 1) / FPS) < 0.2, played
        for target in (6.05, 2.05):  # forwards, then back
            seek = page.evaluate(SEEK, target)
            assert abs(seek["at"] - target) < 0.01, seek["at"]
            # The picture is the frame of the new time (the footage has still stretches: frames next to it
            # may look as alike), and far from the one shown before the seek.
            away = distances(seek["pixels"], recordings.frames)
            there, before = away[round(target * FPS)], away[int(seek["from"] * FPS)]
            assert there <= min(away) + 1.0 and before > there + 10, (target, seek["from"], away)
        assert 206 in answers, answers  # the browser asked for ranges
        page.screenshot(path=str(ARTIFACTS / "web-event-clip.png"), full_page=True)
        # A clip still being written (fragmented, no index yet) plays too.
        page.goto(f"{base}/events/{CAMERA}-2-person")
        expect(page.locator(".recording")).to_be_visible()
        played = page.evaluate(WATCH)
        assert played["readyState"] >= 3 and played["advanced"] > 0.5, played
        # A continuous segment chosen on the recordings page.
        page.goto(f"{base}/cameras/{CAMERA}/recordings?date={DAY}")
        page.get_by_role("link", name="08:30:00").click()
        played = page.evaluate(WATCH)
        assert played["readyState"] == 4 and played["advanced"] > 0.5, played
        page.screenshot(path=str(ARTIFACTS / "web-recordings.png"), full_page=True)
    finally:
        context.close()
        growing.close()
