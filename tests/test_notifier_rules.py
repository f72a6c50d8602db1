"""NOTIFY_RULES: labels, required zones, dwell time and schedule, against a real Mosquitto and a real SMTP
server (aiosmtpd), with hand-built detector messages listing tracked objects."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.notifier.const import OPEN_EVENTS_MAX
from services.notifier.decision import Decision, EventWatch, judge
from services.notifier.rules import AlertRules, CameraRule, in_schedule, load_rules
from tests.detector_support import detector_env, events, short_person_clip, wait_online
from tests.notifier_support import Mail, SmtpServer, snapshot_jpeg
from tests.support import Collector, ServiceProcess, tracked_event, tracked_object
from tests.test_notifier import run_notifier_until_it_exits

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

NOTIFIER_STATUS = topics.service_status("notifier")
LOGGER = logging.getLogger("test.notifier.rules")
# 2026-11-27 is a Friday.
FRIDAY = datetime(2026, 11, 27)


@dataclass
class RulesRig:
    """A notifier with a rules file, its own broker, a publisher on it and an SMTP server."""

    broker: LocalBroker
    watcher: Collector
    smtp: SmtpServer
    workdir: Path
    service: Callable[[str, dict[str, str]], ServiceProcess]

    def start(self, rules: str, **env: str) -> ServiceProcess:
        path = self.workdir / "rules.yml"
        path.write_text(rules)
        since = time.time()
        settings = {
            **self.broker.env("notifier"),
            **self.smtp.env(),
            "NOTIFY_DATA_DIR": str(self.workdir / "data"),
            "NOTIFY_RULES": str(path),
            # Several events per camera in a test: each alert on its own.
            "NOTIFY_COOLDOWN": "0",
            **env,
        }
        process = self.service("notifier", settings)
        self.watcher.wait_for(NOTIFIER_STATUS, lambda m: m.payload == b"online" and m.at >= since, timeout=15)
        return process

    def send(self, message: bytes) -> None:
        event = schemas.DetectionEvent.parse(message)
        self.watcher.publish(topics.event(event.camera, event.label), message)


@pytest.fixture
def rig(
    own_broker: LocalBroker,
    collector: Callable[..., Collector],
    service: Callable[[str, dict[str, str]], ServiceProcess],
    tmp_path: Path,
) -> Iterator[RulesRig]:
    smtp = SmtpServer(tmp_path, "none").start()
    yield RulesRig(own_broker, collector(NOTIFIER_STATUS, on=own_broker), smtp, tmp_path, service)
    smtp.stop()


def mail_of(mail: Mail) -> str:
    """The event id of an alert email (its Message-ID is ``<event id@sentrycam>``)."""
    return str(mail.message["Message-ID"]).strip("<>").split("@")[0]


def settled(rig: RulesRig, count: int, wait_s: float = 1.5) -> list[Mail]:
    """The emails once ``count`` have come and no further one within ``wait_s``."""
    mails = rig.smtp.wait_count(count)
    time.sleep(wait_s)
    assert len(rig.smtp.mails) == count, [mail_of(mail) for mail in rig.smtp.mails]
    return mails


def test_only_the_labels_of_the_cameras_rule_alert(rig: RulesRig) -> None:
    notifier = rig.start(
        "cameras:\n  yard:\n    labels: [person]\ndefault:\n  labels: [car]\n", NOTIFY_OBJECTS="person,car"
    )
    now = time.time()
    for camera, label in (("yard", "car"), ("yard", "person"), ("street", "person"), ("street", "car")):
        event_id = f"{camera}-{label}"
        rig.send(
            tracked_event(
                camera,
                event_id,
                [tracked_object(1, now)],
                kind="start",
                label=label,
                started_at=now,
                frame_time=now,
            )
        )
    assert sorted(mail_of(mail) for mail in settled(rig, 2)) == ["street-car", "yard-person"]
    rig.send(
        tracked_event(
            "yard",
            "yard-car",
            [tracked_object(1, now + 1)],
            kind="end",
            label="car",
            started_at=now,
            frame_time=now + 1,
        )
    )
    notifier.wait_for_log(r"car on yard \(yard-car\): ended, not alerted: car does not alert on yard")


def test_an_object_alerts_once_in_a_required_zone_with_the_zone_in_the_email(rig: RulesRig) -> None:
    rig.start("cameras:\n  front:\n    required_zones: [porch]\n")
    outside, entering = snapshot_jpeg(100), snapshot_jpeg(140)
    now = time.time()
    walking = [tracked_object(1, now, {"path": now})]
    rig.send(
        tracked_event(
            "front", "front-1", walking, kind="start", started_at=now, frame_time=now, snapshot=outside
        )
    )
    time.sleep(1.0)
    assert rig.smtp.mails == []  # on the path, not at the porch
    at_porch = [tracked_object(1, now + 1, {"porch": now + 1}, first_seen=now)]
    rig.send(
        tracked_event(
            "front", "front-1", at_porch, kind="update", started_at=now, frame_time=now + 1, snapshot=entering
        )
    )
    # Later messages of the same event, in the zone still, alert no more.
    rig.send(tracked_event("front", "front-1", at_porch, kind="update", started_at=now, frame_time=now + 2))
    [mail] = settled(rig, 1)
    assert mail.message["Subject"] == "SentryCam: person at porch on camera front"
    assert "A person was seen at porch by camera front." in mail.plain()
    assert "Zone: porch" in mail.plain() and "at porch" in mail.text()
    assert mail.attachment()[1] == entering  # the snapshot of the zone entry, the latest the event carried


def test_an_event_whose_object_stays_out_of_the_zone_ends_without_alert(rig: RulesRig) -> None:
    notifier = rig.start("cameras:\n  front:\n    required_zones: [porch]\n")
    now = time.time()
    passing = [tracked_object(1, now, {"pavement": now})]
    rig.send(tracked_event("front", "front-2", passing, kind="start", started_at=now, frame_time=now))
    rig.send(tracked_event("front", "front-2", passing, kind="end", started_at=now, frame_time=now + 3))
    notifier.wait_for_log(r"person on front \(front-2\): ended, not alerted: no object in porch")
    assert rig.smtp.mails == []


def test_a_loiterer_alerts_after_the_dwell_without_a_further_message(rig: RulesRig) -> None:
    rig.start("cameras:\n  front:\n    required_zones: [porch]\n    min_dwell_s: 2\n")
    # One who leaves the porch after 1 s: the update on leaving cancels the check.
    entered = time.time()
    rig.send(
        tracked_event(
            "front",
            "front-brief",
            [tracked_object(1, entered, {"porch": entered})],
            kind="start",
            started_at=entered,
            frame_time=entered,
        )
    )
    time.sleep(1.0)
    left = [tracked_object(1, entered + 1, {"path": entered + 1}, first_seen=entered)]
    rig.send(
        tracked_event("front", "front-brief", left, kind="update", started_at=entered, frame_time=entered + 1)
    )
    time.sleep(2.5)
    assert rig.smtp.mails == []

    # One who stays: the alert comes at about entered_at + 2 s, though no message follows.
    entered = time.time()
    rig.send(
        tracked_event(
            "front",
            "front-stays",
            [tracked_object(2, entered, {"porch": entered})],
            kind="start",
            started_at=entered,
            frame_time=entered,
        )
    )
    [mail] = settled(rig, 1)
    assert mail_of(mail) == "front-stays"
    assert 1.8 <= mail.at - entered < 3.5, mail.at - entered
    assert mail.message["Subject"] == "SentryCam: person at porch on camera front"


def test_a_message_that_comes_after_the_dwell_alerts_at_once(rig: RulesRig) -> None:
    rig.start("cameras:\n  front:\n    required_zones: [porch]\n    min_dwell_s: 30\n")
    now = time.time()
    waiting = [tracked_object(1, now, {"porch": now - 31}, first_seen=now - 40)]
    rig.send(
        tracked_event("front", "front-long", waiting, kind="update", started_at=now - 40, frame_time=now)
    )
    [mail] = settled(rig, 1, wait_s=0.5)
    assert mail.at - now < 1.5


def test_objects_seen_before_never_alert_but_a_new_one_in_the_same_event_does(rig: RulesRig) -> None:
    notifier = rig.start("cameras: {}\n", NOTIFY_OBJECTS="car")
    now = time.time()
    parked = tracked_object(1, now, first_seen=now - 600, stationary=True, seen_before=True)
    rig.send(
        tracked_event("drive", "drive-1", [parked], kind="start", label="car", started_at=now, frame_time=now)
    )
    rig.send(
        tracked_event("drive", "drive-2", [parked], kind="start", label="car", started_at=now, frame_time=now)
    )
    rig.send(
        tracked_event(
            "drive", "drive-2", [parked], kind="end", label="car", started_at=now, frame_time=now + 5
        )
    )
    notifier.wait_for_log(r"car on drive \(drive-2\): ended, not alerted: only objects seen before")
    assert rig.smtp.mails == []
    arriving = tracked_object(2, now + 2)
    rig.send(
        tracked_event(
            "drive",
            "drive-1",
            [parked, arriving],
            label="car",
            kind="update",
            started_at=now,
            frame_time=now + 2,
        )
    )
    assert [mail_of(mail) for mail in settled(rig, 1)] == ["drive-1"]


def test_an_event_outside_the_schedule_is_recorded_not_alerted(rig: RulesRig) -> None:
    later = datetime.now() + timedelta(hours=2)
    window = f'{{from: "{later:%H}:00", to: "{(later + timedelta(hours=1)):%H}:00"}}'
    notifier = rig.start(f"cameras:\n  shop:\n    schedule: [{window}]\n")
    now = time.time()
    for camera in ("shop", "home"):
        rig.send(
            tracked_event(
                camera, f"{camera}-1", [tracked_object(1, now)], kind="start", started_at=now, frame_time=now
            )
        )
    assert [mail_of(mail) for mail in settled(rig, 1)] == ["home-1"]
    notifier.wait_for_log(
        r"shop \(shop-1\): recorded, not alerted: outside the camera's NOTIFY_RULES schedule"
    )


def test_events_of_a_detector_without_tracked_objects_alert_on_start_as_before(rig: RulesRig) -> None:
    rig.start("default:\n  required_zones: [porch]\n")
    now = time.time()
    for event_id, zones in (("old-1", ["path"]), ("old-2", ["path", "porch"])):
        event = schemas.DetectionEvent.parse(
            tracked_event("old", event_id, [], kind="start", started_at=now, frame_time=now)
        )
        rig.send(event.model_copy(update={"zones": zones}).to_json())
    [mail] = settled(rig, 1)
    assert mail_of(mail) == "old-2" and mail.message["Subject"] == "SentryCam: person at porch on camera old"


def rules_of(tmp_path: Path, text: str) -> AlertRules:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    return load_rules(path, ["person", "car"])


def test_schedule_windows_by_day_and_hour_across_midnight(tmp_path: Path) -> None:
    rules = rules_of(
        tmp_path,
        "default:\n  schedule:\n"
        '    - {days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00"}\n'
        '    - {days: [fri], from: "22:00", to: "06:00"}\n',
    )
    schedule = rules.of("any").schedule
    friday, saturday = FRIDAY.replace, (FRIDAY + timedelta(days=1)).replace
    assert in_schedule(schedule, friday(hour=8)) and in_schedule(schedule, friday(hour=17, minute=59))
    assert not in_schedule(schedule, friday(hour=18)) and not in_schedule(schedule, friday(hour=7, minute=59))
    assert in_schedule(schedule, friday(hour=22)) and in_schedule(schedule, friday(hour=23, minute=59))
    assert in_schedule(schedule, saturday(hour=5, minute=59))  # Friday night's window, after midnight
    assert not in_schedule(schedule, saturday(hour=6)) and not in_schedule(schedule, saturday(hour=12))
    assert not in_schedule(schedule, saturday(hour=23))  # Friday nights only
    assert not in_schedule(schedule, friday(hour=3))  # Thursday night is not in it
    assert in_schedule(None, FRIDAY)
    every_day = rules_of(tmp_path, 'default:\n  schedule: [{from: "18:00", to: "00:00"}]\n').default.schedule
    assert in_schedule(every_day, saturday(hour=23, minute=59)) and not in_schedule(
        every_day, saturday(hour=0)
    )


def test_the_verdict_on_one_message() -> None:
    """judge, by itself: the dwell counts from entering the zone, on the event's clock."""
    rule = CameraRule(required_zones=["porch"], min_dwell_s=5)
    t = 1_800_000_000.0

    def event(*objects: schemas.TrackedObject, label: str = "person") -> schemas.DetectionEvent:
        return schemas.DetectionEvent.parse(
            tracked_event(
                "front", "front-9", list(objects), label=label, kind="update", started_at=t, frame_time=t + 10
            )
        )

    assert judge(rule, event(tracked_object(1, t + 10, {"porch": t + 4}))).alert
    waiting = judge(
        rule, event(tracked_object(1, t + 10, {"porch": t + 8}), tracked_object(2, t + 10, {"porch": t + 7}))
    )
    assert not waiting.alert and waiting.ready_at == t + 12
    assert judge(rule, event(tracked_object(1, t + 10, {"porch": t + 8})), now=t + 13).alert
    assert judge(rule, event(tracked_object(1, t + 10, {"path": t})), now=t + 60).why == "no object in porch"
    parked = tracked_object(1, t + 10, {"porch": t}, stationary=True, seen_before=True)
    assert not judge(rule, event(parked)).alert
    assert not judge(CameraRule(labels=["car"]), event(tracked_object(1, t + 10))).alert
    anywhere = judge(
        CameraRule(min_dwell_s=5), event(tracked_object(1, t + 10, {"path": t + 9}, first_seen=t + 2))
    )
    assert anywhere.alert and anywhere.zone == "path"


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ("cameras:\n  front: [person\n", r"line 3, column 1: expected ',' or '\]', but got '<stream end>'"),
        ("cameras:\n  front:\n    zones: [porch]\n", "cameras.front.zones: Extra inputs are not permitted"),
        (
            'cameras:\n  front:\n    schedule: [{days: [fri, sam], from: "08:00", to: "18:00"}]\n',
            "cameras.front.schedule.0.days.1: Input should be 'mon', 'tue'",
        ),
        (
            'default:\n  schedule: [{from: "08:00", to: 18:00}]\n',
            "default.schedule.0.to: Value error, write the time in quotes",
        ),
        (
            'default:\n  schedule: [{from: "08:00", to: "25:00"}]\n',
            "default.schedule.0.to: Value error, '25:00'",
        ),
        (
            "cameras:\n  front:\n    labels: [dog]\n",
            "cameras.front.labels: dog is not in NOTIFY_OBJECTS (person)",
        ),
        ("cameras:\n  Front:\n    min_dwell_s: 5\n", "cameras.Front: Value error, camera id 'Front'"),
    ],
)
def test_a_bad_rules_file_stops_the_notifier_with_one_line(tmp_path: Path, rules: str, problem: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(rules)
    result = run_notifier_until_it_exits(tmp_path, NOTIFY_RULES=str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sentrycam-notifier: invalid setting NOTIFY_RULES: {path}: "), lines[0]
    assert re.search(problem, lines[0]) if problem.startswith("line") else problem in lines[0], lines[0]


def test_the_open_events_tracked_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """Events that never end (a detector gone) cannot grow the notifier: the oldest undecided is dropped."""
    decided: list[Decision] = []
    watch = EventWatch(AlertRules(default=CameraRule(required_zones=["porch"])), decided.append, LOGGER)
    now = time.time()
    for index in range(OPEN_EVENTS_MAX + 1):
        message = tracked_event(
            "front", f"front-{index}", [tracked_object(1, now)], kind="update", started_at=now, frame_time=now
        )
        watch.on_event(schemas.DetectionEvent.parse(message))
    assert "tracking too many open events: dropped front-0, the oldest" in caplog.text
    assert decided == []
    end = tracked_event(
        "front", "front-1", [tracked_object(1, now + 1)], kind="end", started_at=now, frame_time=now + 1
    )
    watch.on_event(schemas.DetectionEvent.parse(end))
    assert [(decision.event.event_id, decision.why) for decision in decided] == [
        ("front-1", "no object in porch")
    ]


def test_on_the_footage_only_the_person_who_stays_in_the_required_zone_alerts(
    rig: RulesRig, collector: Callable[..., Collector], tmp_path: Path
) -> None:
    """The real detector on the real clip (a person walks in and stands at the table) feeding the notifier:
    where the zone is under the person's feet, the event alerts naming it once they stayed 2 s; where it is
    the ceiling, where nobody stands, or where 30 s are needed, the event ends without alert."""
    cameras = {"rules-table": "table", "rules-ceiling": "ceiling", "rules-linger": "table"}
    dwell = {"rules-table": 2, "rules-ceiling": 0, "rules-linger": 30}
    scene = tmp_path / "scene.yml"
    scene.write_text(
        "cameras:\n"
        "  rules-table:\n    zones:\n      table: [[0.3, 0.6], [0.9, 0.6], [0.9, 1.0], [0.3, 1.0]]\n"
        "  rules-ceiling:\n    zones:\n      ceiling: [[0.0, 0.0], [1.0, 0.0], [1.0, 0.15], [0.0, 0.15]]\n"
        "  rules-linger:\n    zones:\n      table: [[0.3, 0.6], [0.9, 0.6], [0.9, 1.0], [0.3, 1.0]]\n"
    )
    rules = "".join(
        f"  {camera}:\n    required_zones: [{zone}]\n    min_dwell_s: {dwell[camera]}\n"
        for camera, zone in cameras.items()
    )
    notifier = rig.start(f"cameras:\n{rules}")
    seen = collector(*(topics.event(camera, "person") for camera in cameras), on=rig.broker)
    status = collector(topics.service_status("detector"), on=rig.broker)
    rig.service("detector", detector_env(rig.broker, detector_config=str(scene), detector_end_after="3"))
    wait_online(status)
    clip = short_person_clip(tmp_path / "clip.mp4")
    streams = []
    for camera in cameras:
        env = {
            "CAMERA_SOURCE": str(clip),
            "CAMERA_ID": camera,
            "CAMERA_FPS": "10",
            **rig.broker.camera_env(camera),
        }
        streams.append(rig.service("camera", env))
    for camera in cameras:
        seen.wait_for(topics.event(camera, "person"), lambda m: b'"end"' in m.payload, timeout=90)
    for stream in streams:  # the camera reopens its file when it ends: no second walk-in
        stream.stop()
    [mail] = settled(rig, 1)
    assert mail.message["Subject"] == "SentryCam: person at table on camera rules-table"
    entered = min(
        tracked.zones["table"]
        for event in events(seen, "rules-table")
        for tracked in event.objects
        if "table" in tracked.zones
    )
    assert mail.at - entered >= 2.0, mail.at - entered
    notifier.wait_for_log(
        r"person on rules-linger \(\S+\): ended, not alerted: no object (stayed 30 s )?in table"
    )
    ceiling = events(seen, "rules-ceiling")
    assert ceiling and all(not tracked.zones for event in ceiling for tracked in event.objects)
    notifier.wait_for_log(
        rf"person on rules-ceiling \({ceiling[0].event_id}\): ended, not alerted: no object in ceiling"
    )
