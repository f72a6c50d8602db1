"""The deterrent: a real player (mpv, playing in real time to a null audio output) and a real sound file."""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.camera.const import DEFAULT_ALARM_SOUND
from services.common import topics
from services.common.schemas import AlarmResult
from tests.camera_support import camera_settings

PLAYER = "mpv --really-quiet --no-video --ao=null"
SOUND_S = 1.5


@dataclass
class Seen:
    first: float
    last: float

    @property
    def lifetime(self) -> float:
        return self.last - self.first


class PlayerWatch:
    """Watches /proc for player processes playing one sound file: when each ran, and how many at once."""

    def __init__(self, sound: Path) -> None:
        self._needle = str(sound).encode()
        self.players: dict[int, Seen] = {}
        self.most_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def running(self) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    words = cmdline.read().split(b"\0")
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    zombie = stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
            except OSError:
                continue
            if self._needle in words and not zombie:
                found.append(int(entry))
        return found

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            now = time.monotonic()
            running = self.running()
            self.most_at_once = max(self.most_at_once, len(running))
            for pid in running:
                self.players.setdefault(pid, Seen(now, now)).last = now

    def wait_for_player(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.players:
            assert time.monotonic() < deadline, "no player started"
            time.sleep(0.02)

    def wait_until_none(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.running():
            assert time.monotonic() < deadline, "the player is still running"
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def sound(tmp_path: Path) -> Path:
    path = tmp_path / "tone.wav"
    subprocess.run(
        ["sox", "-n", "-r", "16000", "-c", "1", str(path), "synth", str(SOUND_S), "sine", "880"], check=True
    )
    return path


@pytest.fixture
def players(sound: Path) -> Iterator[PlayerWatch]:
    watch = PlayerWatch(sound)
    yield watch
    watch.close()


def alarm_camera(broker, service, camera: str, sound: Path, **extra: str):
    env = camera_settings(
        broker, camera, CAMERA_FPS="1", ALARM_PLAYER=PLAYER, ALARM_SOUND=str(sound), **extra
    )
    return service("camera", env)


def state_payloads(watch, camera: str) -> list[bytes]:
    return [m.payload for m in watch.on(topics.alarm_state(camera))]


def is_payload(payload: bytes, after: float = 0.0):
    return lambda message: message.payload == payload and message.at > after


def test_on_plays_the_sound_until_the_duration_and_a_second_on_starts_no_second_player(
    broker, collector, service, sound, players
):
    camera = "alarm-plays"
    watch = collector(topics.alarm_state(camera), topics.status(camera))
    alarm_camera(broker, service, camera, sound, ALARM_COOLDOWN="0")
    watch.wait_for(topics.status(camera), is_payload(b"online"))
    # The retained state is there before "online", so whoever reacts to "online" finds it.
    assert [m.topic for m in watch.messages[:2]] == [topics.alarm_state(camera), topics.status(camera)]

    watch.publish(topics.alarm_set(camera), b'{"state": "ON", "tone": "siren", "duration": 4}')
    on = watch.wait_for(topics.alarm_state(camera), is_payload(b"ON"))
    players.wait_for_player()
    time.sleep(0.5)
    watch.publish(topics.alarm_set(camera), b"ON")
    off = watch.wait_for(topics.alarm_state(camera), is_payload(b"OFF", after=on.at), timeout=10)
    players.wait_until_none()

    assert state_payloads(watch, camera) == [b"OFF", b"ON", b"OFF"]
    assert players.most_at_once == 1
    # The sound is replayed until the duration is up: the first play ran its whole length in real time,
    # the next ones followed, and the alarm stopped at about the duration, not at the end of a play.
    first, *rest = sorted(players.players.values(), key=lambda seen: seen.first)
    assert first.lifetime >= SOUND_S * 0.8
    assert len(rest) >= 1
    assert 3.5 <= off.at - on.at <= 6


def test_off_stops_the_player_and_the_cooldown_stops_a_burst(broker, collector, service, sound, players):
    camera = "alarm-off"
    watch = collector(topics.alarm_state(camera), topics.status(camera), topics.alarm_result(camera))
    process = alarm_camera(broker, service, camera, sound, ALARM_COOLDOWN="60")
    watch.wait_for(topics.status(camera), is_payload(b"online"))

    watch.publish(topics.alarm_set(camera), b"ON")
    on = watch.wait_for(topics.alarm_state(camera), is_payload(b"ON"))
    players.wait_for_player()
    watch.publish(topics.alarm_set(camera), b"OFF")
    players.wait_until_none(timeout=3)
    watch.wait_for(topics.alarm_state(camera), is_payload(b"OFF", after=on.at), timeout=3)
    assert len(players.players) == 1

    # Within the cooldown: ignored, and said so in the log and to whoever sent it.
    watch.publish(topics.alarm_set(camera), b"ON")
    process.wait_for_log(r"cooling down for \d+ s more; ON ignored")
    cooling = result_of(watch.wait_for(topics.alarm_result(camera), result_is("cooling_down")))
    assert cooling.cooldown_left_s is not None and 55 <= cooling.cooldown_left_s <= 60
    assert cooling.said() == f"cooling down, {math.ceil(cooling.cooldown_left_s)} s"
    time.sleep(0.5)
    assert len(players.players) == 1
    assert state_payloads(watch, camera) == [b"OFF", b"ON", b"OFF"]
    said = [result_of(m).result for m in watch.on(topics.alarm_result(camera))]
    assert said == ["sounding", "stopped", "cooling_down"]
    assert all(m.retain is False for m in watch.on(topics.alarm_result(camera)))


def result_of(message) -> AlarmResult:
    return AlarmResult.parse(message.payload)


def result_is(outcome: str):
    return lambda message: result_of(message).result == outcome


# A player that fails as aplay does on a machine without a sound card: a line on stderr, exit code 1.
NO_SOUND_CARD = "aplay: main:831: audio open error: No such file or directory"
FAILING_PLAYER = f"sh -c 'echo \"{NO_SOUND_CARD}\" >&2; exit 1' player"


def test_a_player_that_fails_is_said_with_its_error_and_starts_no_cooldown(broker, collector, service):
    camera = "alarm-fails"
    watch = collector(topics.alarm_state(camera), topics.status(camera), topics.alarm_result(camera))
    env = camera_settings(broker, camera, CAMERA_FPS="1", ALARM_PLAYER=FAILING_PLAYER, ALARM_COOLDOWN="60")
    process = service("camera", env)
    watch.wait_for(topics.status(camera), is_payload(b"online"))
    for press in range(2):  # no sound was made, so no cooldown: the second press tries again
        since = time.time()
        watch.publish(topics.alarm_set(camera), b"ON")
        failed = result_of(watch.wait_for(topics.alarm_result(camera), after_and(since, "player_failed")))
        assert failed.error == f"sh exited with 1: {NO_SOUND_CARD}", press
        assert failed.said() == f"the camera could not play the sound: sh exited with 1: {NO_SOUND_CARD}"
    watch.wait_for(topics.alarm_state(camera), is_payload(b"OFF", after=since))
    assert process.log.count(NO_SOUND_CARD) == 2
    # Said again, retained, to whoever comes later.
    late = collector(topics.alarm_result(camera))
    assert result_of(late.wait_for(topics.alarm_result(camera))).result == "player_failed"


def after_and(since: float, outcome: str):
    return lambda message: message.at >= since and result_of(message).result == outcome


def test_bad_alarm_commands_are_ignored_counted_and_logged_once(broker, collector, service, sound, players):
    camera = "alarm-bad"
    watch = collector(topics.alarm_state(camera), topics.status(camera))
    process = alarm_camera(broker, service, camera, sound, ALARM_COOLDOWN="0")
    watch.wait_for(topics.status(camera), is_payload(b"online"))

    bad = [b"LOUD", b"{", b'{"state": "ON", "duration": -1}', b'{"version": 2, "state": "ON"}', b"\xff\xfe"]
    for payload in bad:
        watch.publish(topics.alarm_set(camera), payload)
    # Still serving: a good command after the bad ones plays.
    watch.publish(topics.alarm_set(camera), b'{"state": "ON", "duration": 1}')
    on = watch.wait_for(topics.alarm_state(camera), is_payload(b"ON"))
    watch.wait_for(topics.alarm_state(camera), is_payload(b"OFF", after=on.at))
    assert len(players.players) == 1

    assert process.stop() == 0
    log = process.log
    assert log.count("ignored bad alarm command") == 1  # rate limited
    assert "ignored bad alarm command #1 on cam/alarm-bad/alarm/set: expected ON or OFF" in log
    assert "ignored 5 bad alarm commands in all" in log


def test_stopping_the_camera_stops_the_player_of_the_bundled_siren(broker, collector, service):
    camera = "alarm-sigterm"
    assert DEFAULT_ALARM_SOUND.stat().st_size < 100_000
    players = PlayerWatch(DEFAULT_ALARM_SOUND)
    try:
        watch = collector(topics.alarm_state(camera), topics.status(camera))
        env = camera_settings(broker, camera, CAMERA_FPS="1", ALARM_PLAYER=PLAYER)  # no ALARM_SOUND
        process = service("camera", env)
        watch.wait_for(topics.status(camera), is_payload(b"online"))
        watch.publish(topics.alarm_set(camera), b'{"state": "ON", "duration": 60}')
        players.wait_for_player()

        assert process.stop() == 0
        assert players.running() == []
        watch.wait_for(topics.status(camera), is_payload(b"offline"))
        assert state_payloads(watch, camera)[-1] == b"OFF"
    finally:
        players.close()


def test_a_player_that_is_not_installed_is_a_warning_at_start_not_fatal(broker, collector, service):
    camera = "alarm-no-player"
    watch = collector(topics.status(camera), topics.frame(camera))
    env = camera_settings(broker, camera, CAMERA_FPS="2", ALARM_PLAYER="sentrycam-no-such-player -q")
    process = service("camera", env)
    watch.wait_for(topics.frame(camera), timeout=15)
    assert process.log.count("alarm player 'sentrycam-no-such-player' not found; the alarm cannot sound") == 1
    assert process.stop() == 0
