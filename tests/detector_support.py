"""Helpers for the detector's service tests: real footage as JPEG frames, a camera-like publisher."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.common.mqtt import send_without_delay
from tests.support import MEDIA_DIR, MODEL_DIR, PERSON_VIDEO, Collector, jpeg, read_frames, write_clip

MODEL = MODEL_DIR / "detect.tflite"


def image_jpeg(name: str) -> bytes:
    loaded = cv2.imread(str(MEDIA_DIR / "images" / name), cv2.IMREAD_COLOR)
    assert loaded is not None
    return jpeg(loaded)


def short_person_clip(path: Path) -> Path:
    """3 s of the empty room, 6 s of a person walking in, then the empty room for 7 s (the clip's tail
    twice): 16 s of real footage with the person entering after the opening and leaving before the end."""
    frames = read_frames(PERSON_VIDEO, 30, 120) + read_frames(PERSON_VIDEO, 1360, 1393) * 2
    return write_clip(path, frames, 10.0)


# The crop of the person footage (x, y, width; 16:9) around where the first person stands at the table
# (video frames 85-180, box x 0.50-0.66, y 0.02-0.91): zoomed to a camera's picture, the person's head and
# body fill 38 % of it, as for someone stepping right up to a doorbell or porch camera.
CLOSE_UP = (310, 0, 320)


def close_up(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A real frame zoomed to the CLOSE_UP crop and resized to ``size`` (width, height)."""
    x, y, width = CLOSE_UP
    crop = frame[y : y + width * 9 // 16, x : x + width]
    return cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)


def close_up_cut(size: tuple[int, int], empty: int = 10, person: int = 8) -> tuple[list[bytes], list[bytes]]:
    """A cut from the empty room to a person filling over a third of the picture, both zoomed the same
    way (close_up), at 5 fps (every other frame of the 10 fps footage): ``empty`` frames of the empty room
    (video frames 0, 2, ...), then ``person`` frames of the person standing at the table (100, 102, ...)."""
    room = read_frames(PERSON_VIDEO, 0, 2 * empty - 1)[::2]
    standing = read_frames(PERSON_VIDEO, 100, 100 + 2 * person - 1)[::2]
    return [jpeg(close_up(f, size)) for f in room], [jpeg(close_up(f, size)) for f in standing]


class FramePublisher:
    """Publishes JPEG frames with the camera's metadata properties, logged in as the camera's user."""

    def __init__(self, broker: LocalBroker, camera_id: str) -> None:
        self.camera_id = camera_id
        self.seq = 0
        self.sent_at: dict[int, int] = {}  # seq -> captured_ms
        env = broker.camera_env(camera_id)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(env["MQTT_USERNAME"], env["MQTT_PASSWORD"])
        connected = threading.Event()
        self._client.on_connect = lambda *_args: connected.set()
        self._client.on_socket_open = send_without_delay  # as the camera's client does
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert connected.wait(5)

    def send(self, payload: bytes, *, properties: bool = True) -> None:
        captured_ms = int(time.time() * 1000)
        meta = schemas.FrameMeta(captured_ms=captured_ms, seq=self.seq, width=1, height=1)
        self.sent_at[self.seq] = captured_ms
        self.seq += 1
        self._client.publish(
            topics.frame(self.camera_id),
            payload,
            qos=0,
            properties=meta.to_properties() if properties else None,
        )

    def stream(self, payloads: list[bytes], fps: float) -> None:
        start = time.monotonic()
        for index, payload in enumerate(payloads):
            delay = start + index / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.send(payload)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def detector_env(broker: LocalBroker, **settings: str) -> dict[str, str]:
    return {
        **broker.env("detector"),
        "DETECTOR_MODEL": str(MODEL),
        "DETECTOR_STATS_INTERVAL": "1",
        **{key.upper(): value for key, value in settings.items()},
    }


def wait_online(status: Collector, count: int = 1, timeout: float = 30.0) -> None:
    """Live (not retained) ``online`` messages: the detector has its subscriptions."""
    deadline = time.monotonic() + timeout
    while (
        len(
            [
                m
                for m in status.on(topics.service_status("detector"))
                if m.payload == b"online" and not m.retain
            ]
        )
        < count
    ):
        assert time.monotonic() < deadline, "detector did not come online"
        time.sleep(0.05)


def events(collector: Collector, camera: str, label: str = "person") -> list[schemas.DetectionEvent]:
    return [schemas.DetectionEvent.parse(m.payload) for m in collector.on(topics.event(camera, label))]


def latest_stats(
    collector: Collector, camera: str, instance: str | None = None
) -> schemas.CameraStats | None:
    for message in reversed(collector.on(topics.DETECTOR_STATS)):
        stats = schemas.DetectorStats.parse(message.payload)
        if camera in stats.cameras and (instance is None or stats.instance == instance):
            return stats.cameras[camera]
    return None


def wait_stats(
    collector: Collector, camera: str, predicate: object, timeout: float = 20.0, instance: str | None = None
) -> schemas.CameraStats:
    deadline = time.monotonic() + timeout
    while True:
        stats = latest_stats(collector, camera, instance)
        if stats is not None and predicate(stats):  # type: ignore[operator]
            return stats
        assert time.monotonic() < deadline, f"stats for {camera} never matched; last: {stats}"
        time.sleep(0.1)


def red_pixels(jpeg_bytes: bytes) -> int:
    """How many pixels are the box colour: a snapshot with a box drawn has a few hundred at least."""
    image = cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "snapshot is not a decodable JPEG"
    blue, green, red = image[..., 0].astype(int), image[..., 1].astype(int), image[..., 2].astype(int)
    return int(((red > 200) & (green < 60) & (blue < 60)).sum())
