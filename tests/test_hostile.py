"""Hostile input (issue 11): every service against floods of malformed payloads on every topic it subscribes,
interleaved with real traffic. The web endpoints are in tests/test_hostile_web.py.

Each flood is made by Hypothesis used as a seeded generator (:func:`drawn`: an explicit seed, a fixed number
of cases, no example database), so every run publishes the same payloads and the count per topic is known:
at least ``PER_TOPIC`` per topic, from strategies (random bytes, JSON of any shape, text with lone surrogates,
bytes that are not UTF-8, real JPEGs cut short, forged decompression bombs, valid messages with one field
wrong, cut short or with a huge list) and hand-made families (5 MB junk, deep nesting).

The junk is published as the admin user, on the tests' admin listener: in production the broker's ACL would
stop most of it (a camera may publish only its own frames, info and status; only the detector events), so
this tests each service itself. Junk goes at QoS 0 from one client, as fast as paho sends, in chunks with a
round trip through the service after each (a real message whose effect the test waits for, see
:func:`publish_all`): the broker keeps at most ``max_queued_messages`` (1000) messages that a subscriber has
not read yet and drops the rest, so an unpaced flood would be cut short by the broker, not refused by the
service. Real traffic goes at QoS 1 as in production.

Every test asserts:

- no crash: the service still runs, is ``online``, handles real traffic, and logged no traceback;
- every rejection counted: the service's counter rose by exactly the number of payloads the contract refuses.
  The contract's own parsers (``services/common/schemas.py``, the JPEG header check) pick the junk: a drawn
  payload that happens to be valid (random bytes spelling ``ON``) is left out of the flood, so that the
  expectation is the flood's length. Families built to break a bound of the contract (times that are not
  finite epoch seconds, a snapshot that is a bomb) are not filtered: they must be refused;
- memory: the growth of the process's peak resident memory (VmHWM) over the flood stays under a stated bound.

"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.common.jpeg import MAX_IMAGE_PIXELS, check_jpeg
from services.detector.handler import payload_problem
from tests.detector_support import detector_env, events, latest_stats, wait_online
from tests.notifier_support import SmtpServer, snapshot_jpeg
from tests.support import (
    PERSON_VIDEO,
    Collector,
    ServiceProcess,
    camera_info,
    detection_event,
    footage_frames,
    wait_until,
)
from tests.test_alarm import PLAYER, PlayerWatch, is_payload
from tests.test_common import forged_jpeg
from tests.web_support import log_in, peak_memory, reset_peak_memory, running_relay

T = TypeVar("T")
Start = Callable[[str, dict[str, str]], ServiceProcess]
Collect = Callable[..., Collector]

PER_TOPIC = 1000
MB = 1024 * 1024
# A forged frame header with both sides at least this claims over 40 Mpixel (6325² > 40,000,000): more than
# any service decodes (services/common/jpeg.py, DETECTOR_MAX_FRAME_PIXELS by default).
BOMB_SIDE = 6325
# Bytes that are not UTF-8: a lone continuation byte, overlong forms, a surrogate, a 5-byte form...
NOT_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xf0\x28\x8c\xbc",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf8\x88\x80\x80\x80",
)
# Nesting no parser may recurse into (a recursive parser would overflow the stack).
DEEP = b"[" * 100_000 + b"]" * 100_000


# ---- generation ---------------------------------------------------------------------------------------


def drawn(strategy: st.SearchStrategy[T], count: int, seed_value: int) -> list[T]:
    """``count`` values of ``strategy``, the same ones on every run: Hypothesis as a seeded generator (an
    explicit seed, only the generate phase, no example database). The flood is checked as a whole, after
    it was published, so the values are collected here rather than tested one by one."""
    values: list[T] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        values.append(value)

    collect()
    return values


def dumps(value: object, ascii_only: bool = True) -> bytes:
    """JSON as Python writes it (``NaN`` and ``Infinity`` included); without ``ascii_only`` a lone surrogate
    in a string becomes bytes that are not UTF-8."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


SCALARS = st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=40)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=24,
)


def spliced(head: bytes, bad: bytes, tail: bytes) -> bytes:
    return head + bad + tail


def generic_strategy() -> st.SearchStrategy[bytes]:
    real = footage_frames()[0]
    return st.one_of(
        st.binary(max_size=4096),
        st.builds(dumps, JSON_VALUES, st.booleans()),
        st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.builds(spliced, st.binary(max_size=40), st.sampled_from(NOT_UTF8), st.binary(max_size=40)),
        st.integers(0, len(real) - 1).map(lambda end: real[:end]),
        st.builds(forged_jpeg, st.integers(BOMB_SIDE, 65535), st.integers(BOMB_SIDE, 65535)),
    )


@functools.cache
def generic_junk() -> tuple[bytes, ...]:
    """The junk every topic gets, drawn once per session."""
    return tuple(drawn(generic_strategy(), PER_TOPIC, seed_value=1101))


@functools.cache
def big_junk() -> tuple[bytes, ...]:
    """5 MB each, and only these few (the broker takes messages of up to 8 MiB): random bytes, the same
    between JPEG markers, and a JSON string of 5 MB."""
    noise = np.random.default_rng(11).integers(0, 256, 5 * MB, dtype=np.uint8).tobytes()
    return (
        noise,
        b"\xff\xd8\xff" + noise + b"\xff\xd9",
        b'{"version": 1, "camera": "' + b"a" * (5 * MB) + b'"}',
    )


def huge_list(valid: dict[str, Any], field: str) -> bytes:
    """A valid message with a list of a million strings in one field (about 6 MB)."""
    return dumps({**valid, field: ["zone"] * 1_000_000})


def on_off_strategy() -> st.SearchStrategy[bytes]:
    """Near misses of ON/OFF: other words, the right letters in other orders, padding, look-alikes."""
    full_width_on = "\uff2f\uff2e"
    words = st.sampled_from(
        [
            "ONN",
            "O N",
            "OF",
            "OFFF",
            "yes",
            "no",
            "2",
            "-1",
            "01",
            "on\x00",
            "enable",
            "null",
            "{}",
            full_width_on,
        ]
    )
    letters = st.text(alphabet="ONFonf01tTrRuUeEaAlLsS \"'\t\n", max_size=8)
    return st.one_of(words, letters).map(lambda text: text.encode("utf-8", "surrogatepass"))


def mutations(valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A valid message spoiled once: a field of another type or value, a field missing, another version,
    cut short, a byte that is not UTF-8, a long list in a field."""
    keys = sorted(valid)
    text = dumps(valid)
    return st.one_of(
        st.builds(lambda key, value: dumps({**valid, key: value}), st.sampled_from(keys), JSON_VALUES),
        st.sampled_from(keys).map(lambda key: dumps({k: v for k, v in valid.items() if k != key})),
        JSON_VALUES.filter(lambda value: value != 1).map(lambda value: dumps({**valid, "version": value})),
        st.integers(0, len(text) - 1).map(lambda end: text[:end]),
        st.builds(
            lambda at, bad: text[:at] + bad + text[at:], st.integers(0, len(text)), st.sampled_from(NOT_UTF8)
        ),
        st.builds(
            lambda key, length: dumps({**valid, key: ["zone"] * length}),
            st.sampled_from(keys),
            st.integers(1000, 50_000),
        ),
    )


# Epoch seconds the contract takes: finite, from 1970 to 2286 (schemas.MAX_EPOCH_S).
MAX_EPOCH_S = schemas.MAX_EPOCH_S
OUT_OF_RANGE_TIMES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e17, -1e18, 1e308]),
    st.floats(min_value=MAX_EPOCH_S, exclude_min=True, allow_infinity=False),
    st.floats(max_value=-1e-6, allow_infinity=False),
    st.integers(min_value=int(MAX_EPOCH_S) + 1, max_value=10**30),
)


def bad_times(valid: dict[str, Any], fields: Sequence[str]) -> st.SearchStrategy[bytes]:
    """A valid message with one time that is no epoch second of the contract (``NaN``, ``Infinity``, year
    33658...): refused by construction, never filtered."""
    return st.builds(
        lambda key, value: dumps({**valid, key: value}), st.sampled_from(list(fields)), OUT_OF_RANGE_TIMES
    )


def refused(parse: Callable[[], object]) -> bool:
    """Whether the contract's parser refuses (``BadPayload``)."""
    try:
        parse()
    except schemas.BadPayload:
        return True
    return False


def alarm_refused(payload: bytes) -> bool:
    return refused(lambda: schemas.AlarmCommand.parse(payload))


def on_off_refused(payload: bytes) -> bool:
    return refused(lambda: schemas.parse_on_off(payload))


def flood_of(
    refuses: Callable[[bytes], bool], *strategies: tuple[st.SearchStrategy[bytes], int, int]
) -> list[bytes]:
    """The generic junk and ``(strategy, count, seed)`` draws, only those the contract refuses."""
    payloads = list(generic_junk())
    for strategy, count, seed_value in strategies:
        payloads += drawn(strategy, count, seed_value)
    kept = [payload for payload in payloads if refuses(payload)]
    assert len(kept) >= PER_TOPIC, f"only {len(kept)} payloads refused by the contract"
    return kept


# ---- publishing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Out:
    """One message of a flood."""

    topic: str
    payload: bytes
    properties: Properties | None = None
    qos: int = 0
    # How much the service's counter must rise for it (0 for real traffic; 1 for junk).
    counted: int = 1


def frame_properties(pairs: Sequence[tuple[str, str]] | None = None) -> Properties:
    """A frame's user properties: the camera's (valid, captured now) unless ``pairs`` are given."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if pairs is None:
        meta = schemas.FrameMeta(captured_ms=int(time.time() * 1000), seq=0, width=640, height=480)
        return meta.to_properties()
    properties.UserProperty = list(pairs)
    return properties


def shuffled(items: list[T], seed_value: int) -> list[T]:
    mixed = list(items)
    random.Random(seed_value).shuffle(mixed)
    return mixed


def interleaved(junk: Sequence[Out], real: Callable[[int], Sequence[Out]], every: int) -> list[Out]:
    """``junk`` with ``real(n)`` after every ``every`` messages."""
    mixed: list[Out] = []
    for index, message in enumerate(junk):
        if index and index % every == 0:
            mixed += real(index // every)
        mixed.append(message)
    return mixed


# Messages published between two round trips through the service (see publish_all).
CHUNK = 400


def publish_all(
    publisher: Collector, messages: Sequence[Out], sync: Callable[[int], None] | None = None
) -> None:
    """As fast as paho sends them (QoS 1 ones wait for the broker's acknowledgement, as a real publisher's
    would), in chunks of ``CHUNK`` with ``sync(published so far)`` after each: a real message whose effect
    the test waits for, so that the service has handled everything before it. The broker drops what it has
    for a client beyond ``max_queued_messages`` (1000) packets not yet written to its socket, QoS 0 too
    ("Outgoing messages are being dropped"): a few 5 MB messages fill the socket, and an unpaced flood lost
    part of itself on the way, which the counts would then miss."""
    for start in range(0, len(messages), CHUNK):
        last = None
        for message in messages[start : start + CHUNK]:
            if message.qos:
                publisher.publish(message.topic, message.payload, qos=message.qos)
                continue
            last = publisher.publish_raw(message.topic, message.payload, qos=0, properties=message.properties)
        if last is not None:
            last.wait_for_publish(60)
        if sync is not None:
            sync(min(start + CHUNK, len(messages)))


# ---- the services' processes --------------------------------------------------------------------------


def memory_kb(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match[1])


class PeakMemory:
    """The growth of a process's peak resident memory (VmHWM) from now on, in MB: the peak is reset to the
    resident memory now (``/proc/<pid>/clear_refs``), so what counts is only what the flood adds."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        self.resident_kb = memory_kb(pid, "VmRSS")

    def growth_mb(self) -> float:
        return (memory_kb(self.pid, "VmHWM") - self.resident_kb) / 1024


def pid_of(process: ServiceProcess) -> int:
    assert process.process is not None
    return process.process.pid


def assert_alive(process: ServiceProcess, status: Collector, topic: str) -> None:
    """Still running, its retained status ``online``, and no traceback in its log (a handler that raised
    is logged with one by the MQTT client)."""
    assert process.process is not None and process.process.poll() is None, process.log[-3000:]
    assert status.on(topic)[-1].payload == b"online"
    assert "Traceback" not in process.log, process.log[-5000:]


# ---- camera -------------------------------------------------------------------------------------------


@pytest.fixture
def siren(tmp_path: Path) -> Path:
    """Longer than the alarms here (0.3 s): one player per alarm."""
    path = tmp_path / "tone.wav"
    subprocess.run(
        ["sox", "-n", "-r", "16000", "-c", "1", str(path), "synth", "2", "sine", "880"], check=True
    )
    return path


def alarm_flood() -> list[bytes]:
    command = {"version": 1, "state": "ON", "tone": "siren", "duration": 5.0}
    payloads = flood_of(
        alarm_refused,
        (mutations(command), 400, 1201),
        (on_off_strategy(), 200, 1202),
    )
    return [*payloads, *big_junk(), DEEP, huge_list(command, "tone")]


# Each service handles one message at a time, and holds it a few times over while it does (paho's read
# buffer, the payload as bytes, the parsed JSON: a 6 MB list of a million strings is 15 MB as Python
# objects). Measured over the floods here, whose largest messages are 6 MB: 30 to 37 MB for the camera and
# the notifier; the bound is about ten times the largest message. (Before the schema's fixes: 150 MB.)
SERVICE_MEMORY_MB = 64


def test_the_camera_counts_every_hostile_alarm_command_and_still_sounds_the_alarm(
    own_broker: LocalBroker, collector: Collect, service: Start, siren: Path
) -> None:
    camera = "hostile-cam"
    watch = collector(topics.alarm_state(camera), topics.status(camera), on=own_broker)
    publisher = collector(on=own_broker)
    env = {
        **own_broker.camera_env(camera),
        "CAMERA_ID": camera,
        "CAMERA_SOURCE": str(PERSON_VIDEO),
        "CAMERA_FPS": "1",
        "ALARM_PLAYER": PLAYER,
        "ALARM_SOUND": str(siren),
        "ALARM_COOLDOWN": "0",
    }
    process = service("camera", env)
    watch.wait_for(topics.status(camera), is_payload(b"online"), timeout=15)
    players = PlayerWatch(siren)
    try:
        junk = alarm_flood()
        memory = PeakMemory(pid_of(process))
        alarms = 0

        def sound_the_alarm(_published: int) -> None:
            """A real ON after each chunk: it sounds, so every command before it was handled."""
            nonlocal alarms
            since = time.time()
            publisher.publish(topics.alarm_set(camera), b'{"state": "ON", "duration": 0.3}')
            on = watch.wait_for(topics.alarm_state(camera), is_payload(b"ON", after=since), timeout=20)
            watch.wait_for(topics.alarm_state(camera), is_payload(b"OFF", after=on.at), timeout=10)
            alarms += 1

        publish_all(publisher, [Out(topics.alarm_set(camera), payload) for payload in junk], sound_the_alarm)
        players.wait_until_none()
        assert alarms >= 4 and len(players.players) == alarms and players.most_at_once == 1
        grown = memory.growth_mb()
        assert grown < SERVICE_MEMORY_MB, f"camera peak memory grew {grown:.0f} MB"
        assert_alive(process, watch, topics.status(camera))
    finally:
        players.close()
    assert process.stop() == 0
    assert f"ignored {len(junk)} bad alarm commands in all" in process.log
    print(f"camera: {len(junk)} alarm commands refused, peak memory +{grown:.1f} MB")


# ---- detector -----------------------------------------------------------------------------------------

# What MQTT lets through as a topic level or a user property (mosquitto drops a client that sends more):
# UTF-8 without NUL, control characters, surrogates or non-characters.
MQTT_TEXT = st.characters(blacklist_categories=("Cs", "Cc", "Cn"))
BAD_CAMERA_IDS = st.text(MQTT_TEXT, max_size=40).filter(
    lambda text: not topics.CAMERA_ID_RE.fullmatch(text) and not set(text) & set("/+#")
)
META_PAIRS = st.lists(
    st.tuples(
        st.sampled_from(["captured_ms", "seq", "width", "height"]) | st.text(MQTT_TEXT, max_size=12),
        st.one_of(
            st.integers(-(2**70), 2**70).map(str), st.floats().map(str), st.text(MQTT_TEXT, max_size=12)
        ),
    ),
    min_size=1,
    max_size=6,
)


def meta_refused(pairs: list[tuple[str, str]]) -> bool:
    return refused(lambda: schemas.FrameMeta.from_properties(frame_properties(pairs)))


def frame_strategy() -> st.SearchStrategy[bytes]:
    """Frames that pass the cheap marker check or get further: junk between JPEG markers, a real frame
    header with junk image data, bombs."""
    real = footage_frames()[0]
    scan = real.index(b"\xff\xda")
    header = real[: scan + 2 + int.from_bytes(real[scan + 2 : scan + 4], "big")]
    return st.one_of(
        st.binary(max_size=4096).map(lambda junk: b"\xff\xd8\xff" + junk + b"\xff\xd9"),
        st.binary(max_size=4096).map(lambda junk: header + junk + b"\xff\xd9"),
        st.builds(forged_jpeg, st.integers(BOMB_SIDE, 65535), st.integers(BOMB_SIDE, 65535)),
    )


# The times in the valid messages the junk is made from: fixed, so that every run draws the same junk.
SOME_TIME = 1_763_780_000.125


def info_dict(camera: str) -> dict[str, Any]:
    return {**json.loads(camera_info(camera).to_json()), "updated_at": SOME_TIME}


class Switch:
    """Real traffic for the detector, and the round trip that ``publish_all`` needs: a camera's detection
    switched off or on, which the detector says back on its detect/state (``seen`` must read it)."""

    def __init__(self, publisher: Collector, seen: Collector, camera: str) -> None:
        self.publisher, self.seen, self.camera = publisher, seen, camera
        self.switched = 0

    def __call__(self, _published: int = 0) -> None:
        word = b"ON" if self.switched % 2 else b"OFF"
        since = time.time()
        self.publisher.publish(topics.detect_set(self.camera), word)
        self.seen.wait_for(topics.detect_state(self.camera), lambda m: m.payload == word and m.at >= since)
        self.switched += 1


def detector_stats(collector: Collector) -> schemas.DetectorStats:
    return schemas.DetectorStats.parse(collector.on(topics.DETECTOR_STATS)[-1].payload)


# The detector decodes at most two frames at once (one being prepared, one waiting for the interpreter),
# each at most 640x480 here (the bombs are refused by their header), besides the message it handles (see
# SERVICE_MEMORY_MB). Measured: 31 to 33 MB; the bound leaves room for the decodes of larger frames.
DETECTOR_MEMORY_MB = 100


def test_the_detector_counts_every_hostile_message_and_still_detects(
    own_broker: LocalBroker, collector: Collect, service: Start
) -> None:
    camera, commands, switch, newcomer, retained = (
        "hostile-det",
        "hostile-cmd",
        "hostile-switch",
        "hostile-info",
        "hostile-ret",
    )
    publisher = collector(on=own_broker)
    seen = collector(
        topics.event(camera, "person"),
        topics.detect_state(switch),
        topics.DETECTOR_STATS,
        "homeassistant/#",
        on=own_broker,
    )
    status = collector(topics.service_status("detector"), on=own_broker)
    # A broken detector's retained switch: read back at start, refused and counted.
    publisher.publish(topics.detect_state(retained), b"\xff\xfeMAYBE", retain=True)
    # Every camera (no DETECTOR_CAMERAS), so that topics with malformed camera ids reach it too.
    process = service("detector", detector_env(own_broker, detector_motion="false"))
    wait_online(status)
    real = footage_frames(count=40, step=2)

    def real_frames(start: int, count: int = 1) -> list[Out]:
        return [
            Out(topics.frame(camera), real[(start + n) % len(real)], frame_properties(), counted=0)
            for n in range(count)
        ]

    for message in real_frames(0, 3):
        publish_all(publisher, [message])
        time.sleep(0.2)
    wait_until(lambda: (s := latest_stats(seen, camera)) and s.inferences >= 3, timeout=20, what="warm up")

    frame_junk = [*generic_junk(), *drawn(frame_strategy(), 300, 1301), *big_junk()]
    arrival_refused = [p for p in frame_junk if payload_problem(p, schemas.MAX_FRAME_BYTES, 40_000_000)]
    meta_junk = [pairs for pairs in drawn(META_PAIRS, 200, 1302) if meta_refused(pairs)][:20]
    bad_ids = drawn(BAD_CAMERA_IDS, 40, 1303)
    switch_junk = flood_of(on_off_refused, (on_off_strategy(), 200, 1304))
    info_junk = flood_of(
        lambda p: p != b"" and refused(lambda: schemas.CameraInfo.parse(p)),
        (mutations(info_dict(commands)), 400, 1305),
    )
    junk = [
        *(Out(topics.frame(camera), payload, frame_properties()) for payload in frame_junk),
        *(Out(topics.frame(camera), real[0], frame_properties(pairs)) for pairs in meta_junk),
        *(Out(f"cam/{bad}/frame", real[0], frame_properties()) for bad in bad_ids[:20]),
        *(Out(topics.detect_set(commands), payload) for payload in switch_junk),
        *(Out(topics.detect_state(commands), payload) for payload in switch_junk),
        *(Out(topics.info(commands), payload) for payload in info_junk),
        *(Out(f"cam/{bad}/detect/set", b"ON") for bad in bad_ids[20:30]),
        *(Out(f"cam/{bad}/detect/state", b"ON") for bad in bad_ids[30:40]),
    ]
    flood = interleaved(shuffled(junk, 1306), real_frames, every=25)
    real_in_flood = len(flood) - len(junk)
    switch_over = Switch(publisher, seen, switch)
    memory = PeakMemory(pid_of(process))
    publish_all(publisher, flood, switch_over)
    switch_over()  # and back on, if it was off

    # More real traffic: a new camera announced, and a person.
    publisher.announce(newcomer)
    seen.wait_for(f"homeassistant/camera/sentrycam_{newcomer}/frame/config", timeout=10)
    streamed = 0
    deadline = time.monotonic() + 30
    while not [e for e in events(seen, camera) if e.type == "start"]:
        assert time.monotonic() < deadline, "no person event after the flood"
        publish_all(publisher, real_frames(streamed))
        streamed += 1
        time.sleep(0.1)

    # Every frame is accounted for: refused on arrival (frames_bad), replaced in its slot by a newer one
    # (frames_stale), refused by the decoder (frames_bad) or inferred. Frames with bad metadata are counted
    # bad and still used (their arrival time stands in).
    frames_in = 3 + len(frame_junk) + len(meta_junk) + real_in_flood + streamed

    def accounted() -> bool:
        s = latest_stats(seen, camera)
        if s is None or s.frames_in != frames_in:
            return False
        return s.frames_bad + s.frames_stale + s.inferences == frames_in + len(meta_junk)

    try:
        wait_until(accounted, timeout=30, what=f"{frames_in} frames accounted for")
    except AssertionError as error:
        raise AssertionError(f"{error}; last: {latest_stats(seen, camera)}") from None
    frames = latest_stats(seen, camera)
    assert frames is not None
    least_bad = len(arrival_refused) + len(meta_junk)
    passed_arrival = len(frame_junk) - len(arrival_refused)
    assert least_bad <= frames.frames_bad <= least_bad + passed_arrival, frames
    stats = detector_stats(seen)
    assert stats.cameras[commands].commands_bad == 2 * len(switch_junk)
    assert stats.cameras[retained].commands_bad == 1
    assert stats.frames_bad_camera_id == 20
    assert stats.messages_bad == len(info_junk) + 20

    # Home Assistant's status: junk is ignored, and its "online" still has the discovery published again.
    ha_junk = flood_of(lambda p: p.strip().lower() != b"online", (on_off_strategy(), 100, 1307))
    publish_all(
        publisher, [Out(topics.hass_status("homeassistant"), payload) for payload in ha_junk], switch_over
    )
    since = time.time()
    publisher.publish(topics.hass_status("homeassistant"), b"online")
    seen.wait_for("homeassistant/switch/sentrycam/armed/config", lambda m: m.at >= since, timeout=10)

    grown = memory.growth_mb()
    assert grown < DETECTOR_MEMORY_MB, f"detector peak memory grew {grown:.0f} MB"
    assert_alive(process, status, topics.service_status("detector"))
    print(
        f"detector: {len(frame_junk)} junk frames ({len(arrival_refused)} refused on arrival, "
        f"{frames.frames_bad} bad in all), {2 * len(switch_junk)} switch commands, {len(info_junk)} infos, "
        f"{len(ha_junk)} HA statuses; peak memory +{grown:.1f} MB"
    )


def test_the_detector_counts_junk_on_home_assistant_status_and_infos_of_another_camera(
    own_broker: LocalBroker, collector: Collect, service: Start
) -> None:
    publisher = collector(on=own_broker)
    seen = collector(topics.DETECTOR_STATS, topics.detect_state("hostile-switch"), on=own_broker)
    status = collector(topics.service_status("detector"), on=own_broker)
    process = service("detector", detector_env(own_broker, detector_motion="false"))
    wait_online(status)
    # Neither online nor offline (Home Assistant's birth and will).
    junk = flood_of(
        lambda p: p.strip().lower() not in (b"online", b"offline"), (on_off_strategy(), 100, 1401)
    )
    spoofed = [camera_info("hostile-other").to_json() for _ in range(10)]
    publish_all(
        publisher,
        [
            *(Out(topics.hass_status("homeassistant"), payload) for payload in junk),
            *(Out(topics.info("hostile-spoof"), payload) for payload in spoofed),
        ],
        Switch(publisher, seen, "hostile-switch"),
    )
    expected = len(junk) + len(spoofed)
    wait_until(
        lambda: seen.on(topics.DETECTOR_STATS) and detector_stats(seen).messages_bad == expected,
        timeout=5,
        what=f"{expected} messages counted",
    )
    assert_alive(process, status, topics.service_status("detector"))


# ---- notifier -----------------------------------------------------------------------------------------

TIME_FIELDS = ("started_at", "ended_at", "frame_time", "detected_at")
# A valid event with a long list in a field nobody knows, and every known field missing: validated as JSON
# by pydantic, each missing field's error held a copy of the whole input, a gigabyte in all.
UNKNOWN_LIST = dumps({"version": 1, "padding": ["zone"] * 1_000_000})


def event_dict(camera: str) -> dict[str, Any]:
    return json.loads(detection_event(camera, f"{camera}-1-person", started_at=SOME_TIME))  # type: ignore[no-any-return]


def event_flood(camera: str, seed_value: int) -> list[bytes]:
    """Junk on ``cam/<camera>/person``: refused by the contract (drawn ones checked), or by construction
    (a time that is no epoch second, a list far over its bound, 5 MB of junk, deep nesting)."""
    topic = topics.event(camera, "person")
    valid = event_dict(camera)
    drawn_junk = flood_of(
        lambda p: refused(lambda: schemas.DetectionEvent.parse_on(topic, p)),
        (mutations(valid), 400, seed_value),
    )
    by_construction = [
        *drawn(bad_times(valid, TIME_FIELDS), 100, seed_value + 1),
        *big_junk(),
        DEEP,
        huge_list(valid, "zones"),
        UNKNOWN_LIST,
    ]
    return drawn_junk + by_construction


def refused_snapshots(camera: str, count: int, seed_value: int) -> list[bytes]:
    """Valid start events whose snapshot must be refused: a decompression bomb, bytes that are no JPEG,
    text that is no base64. Distinct ids, one start time."""
    no_jpeg = st.binary(min_size=1, max_size=2000).filter(lambda data: not data.startswith(b"\xff\xd8"))
    bomb = st.builds(forged_jpeg, st.integers(BOMB_SIDE, 65535), st.integers(BOMB_SIDE, 65535))
    snapshots = [
        schemas.DetectionEvent.encode_snapshot(jpeg) for jpeg in drawn(bomb | no_jpeg, count - 2, seed_value)
    ]
    snapshots += ["not base64 at all!", "=" * 1000]
    started = time.time() - 1
    return [
        dumps(
            {
                **event_dict(camera),
                "event_id": f"{camera}-{index}-person",
                "started_at": started,
                "snapshot": shot,
            }
        )
        for index, shot in enumerate(snapshots)
    ]


NOTIFIER_STATUS = topics.service_status("notifier")
# aiosmtpd warns about AUTH without TLS; the notifier's SMTP security is not the point here.
NO_TLS_WARNING = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path, "none").start()
    yield server
    server.stop()


def start_notifier(
    broker: LocalBroker, service: Start, smtp: SmtpServer, watcher: Collector, data: Path
) -> ServiceProcess:
    since = time.time()
    env = {**broker.env("notifier"), "NOTIFY_DATA_DIR": str(data), **smtp.env()}
    process = service("notifier", env)
    watcher.wait_for(NOTIFIER_STATUS, lambda m: m.payload == b"online" and m.at >= since, timeout=15)
    # Armed by default, once no state came back from the broker.
    watcher.wait_for(topics.ARMED_STATE, lambda m: m.payload == b"ON", timeout=10)
    return process


class Arm:
    """Real traffic for the notifier, and the round trip ``publish_all`` needs: an arming command, which
    the notifier says back on ``sentrycam/armed/state``."""

    def __init__(self, publisher: Collector, watcher: Collector) -> None:
        self.publisher, self.watcher = publisher, watcher
        self.sent = 0

    def __call__(self, _published: int = 0) -> None:
        since = time.time()
        self.publisher.publish(topics.ARMED_SET, b"ON")
        self.watcher.wait_for(topics.ARMED_STATE, lambda m: m.payload == b"ON" and m.at >= since)
        self.sent += 1


def bad_input_so_far(publisher: Collector, process: ServiceProcess, probe: str) -> int:
    """The notifier's bad_input counter, read from its log: one junk message on a topic of its own is
    logged at once with the count so far (the log is limited per topic, not the count)."""
    topic = topics.event(probe, "person")
    publisher.publish(topic, b"probe")
    match = process.wait_for_log(rf"ignored a bad message on {topic} \((\d+) so far\)")
    return int(match[1])


@NO_TLS_WARNING
def test_the_notifier_counts_every_hostile_message_and_still_emails_once(
    own_broker: LocalBroker, collector: Collect, service: Start, smtp: SmtpServer, tmp_path: Path
) -> None:
    camera, snap_camera = "hostile-ntf", "hostile-snap"
    watcher = collector(NOTIFIER_STATUS, topics.ARMED_STATE, on=own_broker)
    publisher = collector(on=own_broker)
    process = start_notifier(own_broker, service, smtp, watcher, tmp_path / "data")

    events_junk = event_flood(camera, 1501)
    snaps = refused_snapshots(snap_camera, 20, 1503)
    arming_junk = flood_of(on_off_refused, (on_off_strategy(), 200, 1504))
    junk = [
        *(Out(topics.event(camera, "person"), payload) for payload in events_junk),
        *(Out(topics.event(snap_camera, "person"), payload) for payload in snaps),
        *(Out(topics.ARMED_SET, payload) for payload in arming_junk),
        *(Out(topics.ARMED_STATE, payload) for payload in arming_junk),
    ]
    arm = Arm(publisher, watcher)
    memory = PeakMemory(pid_of(process))
    publish_all(publisher, shuffled(junk, 1505), arm)

    real = snapshot_jpeg()
    publisher.publish(topics.event(camera, "person"), detection_event(camera, f"{camera}-real-person", real))
    mails = smtp.wait_count(2, timeout=20)
    time.sleep(1)  # nothing more comes
    assert len(smtp.mails) == 2
    by_camera = {mail.message["Subject"]: mail for mail in mails}
    real_mail = by_camera[f"SentryCam: person on camera {camera}"]
    assert real_mail.attachment()[1] == real
    # The first of the snapshot events is emailed without its picture; the others fall in the cooldown.
    assert f"SentryCam: person on camera {snap_camera}" in by_camera
    assert not [
        part
        for part in by_camera[f"SentryCam: person on camera {snap_camera}"].message.walk()
        if part.get_content_type() == "image/jpeg"
    ]

    expected = len(events_junk) + len(snaps) + 2 * len(arming_junk) + 1  # both arming topics, the probe
    assert bad_input_so_far(publisher, process, "hostile-probe") == expected
    grown = memory.growth_mb()
    assert grown < SERVICE_MEMORY_MB, f"notifier peak memory grew {grown:.0f} MB"
    assert_alive(process, watcher, NOTIFIER_STATUS)
    print(f"notifier: {expected} refused, {arm.sent} arming round trips; peak memory +{grown:.1f} MB")


@NO_TLS_WARNING
def test_the_notifier_counts_junk_on_its_arming_state(
    own_broker: LocalBroker, collector: Collect, service: Start, smtp: SmtpServer, tmp_path: Path
) -> None:
    watcher = collector(NOTIFIER_STATUS, topics.ARMED_STATE, on=own_broker)
    publisher = collector(on=own_broker)
    process = start_notifier(own_broker, service, smtp, watcher, tmp_path / "data")
    junk = flood_of(on_off_refused, (on_off_strategy(), 200, 1601))
    publish_all(publisher, [Out(topics.ARMED_STATE, payload) for payload in junk], Arm(publisher, watcher))
    assert bad_input_so_far(publisher, process, "hostile-probe") == len(junk) + 1


# ---- web relay (MQTT side; its HTTP side is tests/test_hostile_web.py) ---------------------------------


def frame_refused(payload: bytes) -> bool:
    """The relay reads a frame's header only (browsers decode it): refused when that header is missing,
    or claims too many pixels, or the frame is too large."""
    return refused(
        lambda: check_jpeg(payload, max_bytes=schemas.MAX_FRAME_BYTES, max_pixels=MAX_IMAGE_PIXELS)
    )


def info_refused(camera: str) -> Callable[[bytes], bool]:
    def check(payload: bytes) -> bool:
        if payload == b"":
            return False  # a cleared retained info: the camera is gone
        try:
            return schemas.CameraInfo.parse(payload).camera != camera
        except schemas.BadPayload:
            return True

    return check


def info_flood(camera: str, seed_value: int) -> list[bytes]:
    """Junk on ``cam/<camera>/info``: drawn (checked), and by construction: a time or rate that is not a
    finite number of the contract, another camera's info, 5 MB of junk, deep nesting, long lists."""
    valid = info_dict(camera)
    drawn_junk = flood_of(info_refused(camera), (mutations(valid), 400, seed_value))
    not_finite = st.sampled_from([math.nan, math.inf, -math.inf])
    return [
        *drawn_junk,
        *drawn(bad_times(valid, ["updated_at"]), 50, seed_value + 1),
        *drawn(
            st.builds(
                lambda key, value: dumps({**valid, key: value}),
                st.sampled_from(["fps", "source_fps"]),
                not_finite,
            ),
            20,
            seed_value + 2,
        ),
        *(dumps({**valid, "camera": f"hostile-other{index}"}) for index in range(10)),
        *big_junk(),
        DEEP,
        huge_list(valid, "source"),
        UNKNOWN_LIST,
    ]


def strict_json(text: str) -> Any:
    """JSON as a browser reads it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a JSON answer")

    return json.loads(text, parse_constant=refuse)


# In process: the relay shares its peak memory with the test, which holds the flood (drawn before the peak
# is reset) and publishes it; the peak then also counts paho's copies of the messages being sent. Measured:
# 32 to 47 MB.
RELAY_MEMORY_MB = 80


def test_the_web_relay_counts_every_hostile_message_and_still_shows_the_real_ones(
    own_broker: LocalBroker, collector: Collect, tmp_path: Path
) -> None:
    camera = "hostile-web"
    publisher = collector(on=own_broker)
    real = footage_frames(count=40, step=2)
    status_junk = flood_of(
        lambda p: p != b"" and p.decode("utf-8", "replace").strip() not in (topics.ONLINE, topics.OFFLINE),
        (on_off_strategy(), 200, 1701),
    )
    switch_junk = flood_of(on_off_refused, (on_off_strategy(), 200, 1702))
    frame_junk = flood_of(frame_refused, (frame_strategy(), 300, 1703)) + [
        p for p in big_junk() if frame_refused(p)
    ]
    meta_junk = [pairs for pairs in drawn(META_PAIRS, 200, 1704) if meta_refused(pairs)][:20]
    events_junk = event_flood(camera, 1705)
    snaps = refused_snapshots(camera, 20, 1707)
    bad_ids = drawn(BAD_CAMERA_IDS, 20, 1708)
    junk = [
        *(Out(topics.frame(camera), payload, frame_properties()) for payload in frame_junk),
        *(Out(topics.frame(camera), real[0], frame_properties(pairs)) for pairs in meta_junk),
        *(Out(topics.status(camera), payload) for payload in status_junk),
        *(Out(topics.info(camera), payload) for payload in info_flood(camera, 1709)),
        *(Out(topics.event(camera, "person"), payload) for payload in events_junk),
        *(Out(topics.event(camera, "person"), payload) for payload in snaps),
        *(Out(topics.label_state(camera, "person"), payload) for payload in switch_junk if payload),
        *(Out(topics.detect_state(camera), payload) for payload in switch_junk),
        *(Out(topics.alarm_state(camera), payload) for payload in switch_junk),
        *(Out(topics.ARMED_STATE, payload) for payload in switch_junk),
        *(Out(f"cam/{bad}/frame", real[0], frame_properties()) for bad in bad_ids[:10]),
        *(Out(f"cam/{bad}/detect/state", b"ON") for bad in bad_ids[10:]),
    ]

    def real_traffic(n: int) -> list[Out]:
        return [Out(topics.frame(camera), real[n % len(real)], frame_properties(), counted=0)]

    flood = interleaved(shuffled(junk, 1710), real_traffic, every=50)
    with running_relay(own_broker, tmp_path / "web") as (relay, app):
        publisher.announce(camera)
        wait_until(lambda: relay.camera(camera), what="camera known")
        before = relay.bad_payloads

        def counted(published: int) -> None:
            """The relay's counter is the round trip: every message so far is handled once it is right."""
            expected = before + sum(message.counted for message in flood[:published])
            wait_until(lambda: relay.bad_payloads >= expected, timeout=20, what=f"{expected} bad payloads")

        memory = reset_peak_memory()
        publish_all(publisher, flood, counted)
        grown = (peak_memory() - memory) / MB

        # The real traffic after the flood.
        last_frame = real[-1]
        publisher.frame(camera, last_frame)
        event_id = f"{camera}-real-person"
        publisher.publish(topics.event(camera, "person"), detection_event(camera, event_id, real[1]))
        publisher.publish(topics.detect_state(camera), b"ON")
        publisher.publish(topics.alarm_state(camera), b"OFF")
        publisher.publish(topics.ARMED_STATE, b"ON")
        client = app.test_client()
        assert log_in(client)[0] == 302
        wait_until(lambda: client.get(f"/cam/{camera}/latest.jpg").data == last_frame, what="the real frame")
        stored = wait_until(lambda: client.get(f"/api/events/{event_id}").get_json(), what="the real event")
        assert stored["camera"] == camera and stored["snapshot_url"]
        assert client.get(stored["snapshot_url"]).data == real[1]
        for index in range(len(snaps)):
            refused_event = relay.store.get(f"{camera}-{index}-person")
            assert refused_event is not None and not refused_event.has_snapshot
        wait_until(lambda: relay.armed == "ON", what="armed state")
        shown = strict_json(client.get(f"/api/cameras/{camera}").get_data(as_text=True))
        assert shown["status"] == "online" and shown["detect"] == "ON" and shown["alarm"] == "OFF", shown
        strict_json(client.get("/api/status").get_data(as_text=True))
        strict_json(client.get("/api/events").get_data(as_text=True))
        assert client.get("/healthz").get_json() == {"ok": True, "broker_connected": True}

        expected = sum(message.counted for message in flood)
        time.sleep(0.5)  # nothing counted twice, late
        assert relay.bad_payloads - before == expected
        assert relay.client.handler_errors == 0 and relay.client.redeliveries == 0
        assert grown < RELAY_MEMORY_MB, f"peak memory grew {grown:.0f} MB"
        publisher.forget(camera)
    print(f"web relay: {expected} refused; peak memory +{grown:.1f} MB")
