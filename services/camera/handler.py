"""The camera: capture from the source, resize, encode, publish at the capped rate; reopen what fails."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Mapping

import cv2
import paho.mqtt.client as mqtt

from services.camera.alarm import Alarm
from services.camera.const import (
    MAX_UNSENT_FRAMES,
    REOPEN_MIN_DELAY_S,
    SERVICE,
    UNSENT_FORGET_S,
)
from services.camera.settings import CameraSettings
from services.camera.sources import Capture, Image, SourceError, make_source
from services.common import __version__, topics
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route
from services.common.schemas import (
    MAX_FRAME_BYTES,
    AlarmCommand,
    AlarmOutcome,
    AlarmResult,
    BadPayload,
    CameraInfo,
    FrameMeta,
    on_off,
)
from services.common.service import Presence, ServiceHandler


def resize_to_width(image: Image, width: int | None) -> Image:
    """Scale to ``width`` keeping the aspect ratio; ``None`` or the same width leaves it as it is."""
    size = published_size(image, width)
    current = image.shape[1]
    if size[0] == current:
        return image
    interpolation = cv2.INTER_AREA if size[0] < current else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def published_size(image: Image, width: int | None) -> tuple[int, int]:
    """(width, height) of the frame ``resize_to_width`` makes, without making it."""
    height, current = image.shape[:2]
    if width is None or width == current:
        return current, height
    return width, max(1, round(height * width / current))


def written_or_lost(info: mqtt.MQTTMessageInfo) -> bool:
    """True once paho has written the frame to the socket, or once it never will: paho raises for a frame
    whose connection was lost before it was written (the broker went away), and that frame is gone."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return True


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SourceError("JPEG encoding failed")
    return buffer.tobytes()


class Camera(ServiceHandler[CameraSettings]):
    """Captures and publishes on the main thread (``run``). Alarm commands arrive on paho's network thread,
    the alarm plays on a thread of its own, and a live source is read by a thread of its own."""

    service = SERVICE

    @classmethod
    def presence(cls, settings: CameraSettings) -> Presence:
        return Presence(f"camera-{settings.camera_id}", topics.status(settings.camera_id))

    def __init__(self, settings: CameraSettings, client: MqttClient, logger: logging.Logger) -> None:
        super().__init__(settings, client, logger)
        self._id = settings.camera_id
        # Cannot fail: the settings have checked the source (a source that is away now is retried in run).
        self._source = make_source(settings)
        self._interval_s = 1.0 / settings.camera_fps
        self._seq = 0
        self._size: tuple[int, int] | None = None
        self._state: CameraInfo | None = None
        self._info_lock = threading.Lock()
        self.bad_commands = 0
        self._bad_log = RateLimitedLog(logger)
        self.frames_dropped = 0
        self._slow_log = RateLimitedLog(logger)
        self._unsent: deque[tuple[float, mqtt.MQTTMessageInfo]] = deque()
        self._alarm_on = False
        self._alarm_result: AlarmResult | None = None
        self._alarm_lock = threading.Lock()
        self.alarm = Alarm(
            settings.player_argv,
            settings.sound,
            default_duration_s=settings.alarm_duration,
            cooldown_s=settings.alarm_cooldown,
            on_state=self._publish_alarm_state,
            on_result=self._publish_alarm_result,
            logger=logger.getChild("alarm"),
        )

    def routes(self) -> Mapping[str, Route]:
        return {topics.alarm_set(self._id): Route(self._on_alarm_set, qos=1)}

    def start(self) -> None:
        player = self.settings.player_argv[0]
        if shutil.which(player) is None:
            # Not fatal: a camera without a speaker is still a camera.
            self.logger.warning("alarm player %r not found; the alarm cannot sound", player)
        self.logger.info("camera %s starting (source %s)", self._id, self._source.kind)

    def stop(self) -> None:
        """Still connected: the alarm's OFF and the "stopped" info reach the broker before ``offline``."""
        self.alarm.stop()
        self._set_info("stopped")
        if self.bad_commands:
            self.logger.info("ignored %d bad alarm commands in all", self.bad_commands)

    # ---- MQTT side

    def _on_alarm_set(self, message: mqtt.MQTTMessage) -> None:
        try:
            command = AlarmCommand.parse(bytes(message.payload))
        except BadPayload as error:
            self.bad_commands += 1
            self._bad_log.report(
                "alarm", f"ignored bad alarm command #{self.bad_commands} on {message.topic}: {error}"
            )
            return
        self.alarm.command(command)

    def _publish_alarm_state(self, sounding: bool | None = None) -> None:
        """Publish a new alarm state, or (None) say the current one again; one at a time, so the broker
        never ends up holding an older state than the newest."""
        with self._alarm_lock:
            if sounding is not None:
                self._alarm_on = sounding
            self.client.publish(topics.alarm_state(self._id), on_off(self._alarm_on), qos=1, retain=True)

    def _publish_alarm_result(
        self,
        outcome: AlarmOutcome | None = None,
        cooldown_left_s: float | None = None,
        error: str | None = None,
    ) -> None:
        """Say what became of the last alarm command (retained), or (None) say it again. On a topic of its
        own: ``alarm/state`` stays the ON/OFF that Home Assistant's siren reads."""
        with self._alarm_lock:
            if outcome is not None:
                self._alarm_result = AlarmResult(
                    camera=self._id,
                    result=outcome,
                    cooldown_left_s=cooldown_left_s,
                    error=error,
                    at=time.time(),
                )
            if self._alarm_result is not None:
                self.client.publish(
                    topics.alarm_result(self._id), self._alarm_result.to_json(), qos=1, retain=True
                )

    def _set_info(self, state: str, error: str | None = None) -> None:
        width, height = self._size or (None, None)
        info = CameraInfo.model_validate(
            {
                "camera": self._id,
                "source_kind": self._source.kind,
                "source": self._source.shown,
                "state": state,
                "width": width,
                "height": height,
                "fps": self.settings.camera_fps,
                "source_fps": self._source.fps,
                "error": error,
                "software_version": __version__,
                "updated_at": time.time(),
            }
        )
        self._publish_info(info)

    def _publish_info(self, info: CameraInfo | None = None) -> None:
        """Publish new info, or (None) say the current one again; under a lock, as for the alarm state."""
        with self._info_lock:
            self._state = info or self._state
            if self._state is not None:
                self.client.publish(topics.info(self._id), self._state.to_json(), qos=1, retain=True)

    def on_connect(self) -> None:
        """Retained state is said again on every connect: a broker without persistence forgets it."""
        self._publish_info()
        self._publish_alarm_state()
        self._publish_alarm_result()

    # ---- capture side

    def run(self, stop: threading.Event) -> None:
        """Capture and publish until ``stop`` is set; a failing source is reopened with backoff."""
        delay = REOPEN_MIN_DELAY_S
        while not stop.is_set():
            opened, error = self._capture(stop)
            if error is None:
                break
            if opened:  # it worked for a while: start the backoff again
                delay = REOPEN_MIN_DELAY_S
            self.logger.warning("source %s: %s; reopening in %g s", self._source.shown, error, delay)
            self._set_info("reconnecting", error)
            stop.wait(delay)
            delay = min(delay * 2, self.settings.camera_reconnect_max)

    def _capture(self, stop: threading.Event) -> tuple[bool, str | None]:
        """Open the source and stream until ``stop``; whether it opened, and why it failed (None: stopped)."""
        opened = False
        try:
            self._source.open()
            opened = True
            self.logger.info("streaming from %s (%s)", self._source.shown, self._source.kind)
            self._stream(stop)
            return opened, None
        except (SourceError, cv2.error) as error:  # cv2.error: a frame OpenCV chokes on
            return opened, str(error)
        finally:
            self._source.close()

    def _stream(self, stop: threading.Event) -> None:
        due = time.monotonic()
        announced: tuple[int, int] | None = None  # the frame size info last said
        while not stop.is_set():
            capture = self._source.next_frame(due, stop)
            if capture is None:
                return
            self._publish_frame(capture)
            # Said once the size is known, and again if the source changes it: a camera that started
            # before the broker was up once said "streaming" with a null size for good.
            if self._size != announced:
                self._set_info("streaming")
                announced = self._size
            # Keep to the schedule; after a stall, start a new one instead of bursting to catch up.
            due = max(due + self._interval_s, time.monotonic() - self._interval_s / 2)

    def _network_keeps_up(self) -> bool:
        """False while earlier frames still wait to be written to the socket: then this frame is dropped
        (before it costs an encode) instead of growing a queue of ever staler frames in paho."""
        now = time.monotonic()
        while self._unsent:
            queued_at, info = self._unsent[0]
            # Frames queued before a reconnect are discarded by paho and never reported as sent.
            if written_or_lost(info) or now - queued_at > UNSENT_FORGET_S:
                self._unsent.popleft()
            else:
                break
        return len(self._unsent) < MAX_UNSENT_FRAMES

    def _publish_frame(self, capture: Capture) -> None:
        self._size = published_size(capture.image, self.settings.camera_width)
        if not self.client.connected.is_set():
            return  # nobody to send it to: not worth an encode (the MQTT client logs the lost broker)
        if not self._network_keeps_up():
            self.frames_dropped += 1
            self._slow_log.report(
                "slow", f"the network is slower than the frames; {self.frames_dropped} dropped"
            )
            return
        image = resize_to_width(capture.image, self.settings.camera_width)
        height, width = image.shape[:2]
        meta = FrameMeta(captured_ms=capture.captured_ms, seq=self._seq, width=width, height=height)
        jpeg = encode_jpeg(image, self.settings.camera_jpeg_quality)
        if len(jpeg) > MAX_FRAME_BYTES:
            # The broker would drop it anyway (message_size_limit); say why no frames arrive.
            self._slow_log.report(
                "big",
                f"frame of {len(jpeg)} bytes is over {MAX_FRAME_BYTES}: set CAMERA_WIDTH or quality lower",
            )
            return
        # QoS 0 and dropped while disconnected: a stale frame is worth nothing.
        info = self.client.publish(topics.frame(self._id), jpeg, qos=0, properties=meta.to_properties())
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._unsent.append((time.monotonic(), info))
        self._seq += 1
