"""The detector's MQTT side: newest-frame slots per camera, one inference worker, events and stats."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.mqtt import MqttClient, RateLimitedLog
from services.detector.const import (
    BETTER_VIEW_MARGIN,
    BOX_COLOUR_BGR,
    EMA_WEIGHT,
    PREPARE_MARGIN_S,
    SNAPSHOT_JPEG_QUALITY,
    WORKER_TICK_S,
)
from services.detector.model import Detection, Detector, Frame
from services.detector.motion import MotionGate
from services.detector.scene import CameraRules, SceneConfig
from services.detector.settings import DetectorSettings
from services.detector.tracker import CameraTracker, Change, Confirmation


@dataclass(frozen=True)
class PendingFrame:
    payload: bytes
    captured_at: float  # epoch seconds, from the camera's metadata or the arrival time
    arrived: float  # time.monotonic() at arrival


@dataclass
class Counters:
    frames_in: int = 0
    frames_stale: int = 0
    frames_skipped_motion: int = 0
    frames_bad: int = 0
    inferences: int = 0
    commands_bad: int = 0
    inference_ms: list[float] = field(default_factory=list)  # since the last stats message
    frame_age_ms: list[float] = field(default_factory=list)
    frames_in_interval: int = 0
    inferences_interval: int = 0


@dataclass
class CameraState:
    camera: str
    tracker: CameraTracker
    gate: MotionGate
    counters: Counters = field(default_factory=Counters)
    slot: PendingFrame | None = None
    detecting: bool = True
    end_all: bool = False  # detection was turned off: the worker ends the open events
    tracking: bool = False  # the tracker's view, copied by the worker for the preparing thread


@dataclass(frozen=True)
class ReadyFrame:
    """A frame decoded, gated and resized for the model, waiting for the interpreter."""

    state: CameraState
    pending: PendingFrame
    frame: Frame
    model_input: Frame


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, fraction * 100)), 2)


def annotate(frame: Frame, detections: list[Detection]) -> bytes:
    """The frame with each detection's box and label drawn, as JPEG."""
    image = frame.copy()
    height, width = image.shape[:2]
    thickness = max(2, width // 320)
    for detection in detections:
        x0, y0, x1, y1 = detection.box
        top_left = (int(x0 * width), int(y0 * height))
        cv2.rectangle(image, top_left, (int(x1 * width), int(y1 * height)), BOX_COLOUR_BGR, thickness)
        text = f"{detection.label} {detection.score:.2f}"
        cv2.putText(
            image,
            text,
            (top_left[0] + 3, max(top_left[1] - 6, 14)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * thickness / 2,
            BOX_COLOUR_BGR,
            max(1, thickness // 2),
        )
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


class DetectorHandler:
    """Frames in, events out. The network thread only files frames; a preparing thread decodes, gates and
    resizes the next frame while the worker thread runs the interpreter on the current one."""

    def __init__(
        self,
        *,
        settings: DetectorSettings,
        detector: Detector,
        scene: SceneConfig,
        client: MqttClient,
        instance: str,
        logger: logging.Logger,
    ) -> None:
        self._settings = settings
        self._detector = detector
        self._scene = scene
        self._client = client
        self._instance = instance
        self._logger = logger
        self._bad_log = RateLimitedLog(logger)
        self._cameras: dict[str, CameraState] = {}
        self._retained_detect: dict[str, bool] = {}
        self._frames_bad_camera_id = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._ready: ReadyFrame | None = None
        # Running estimates (seconds) that time the preparation of the next frame; see _prepare_at.
        self._inference_started: float | None = None
        self._inference_s = 0.0
        self._prepare_s = 0.0
        self._worker = threading.Thread(target=self._work, name="detector-worker", daemon=True)
        self._preparer = threading.Thread(target=self._prepare_loop, name="detector-prepare", daemon=True)
        self._confirmation = Confirmation(
            threshold=settings.detector_threshold,
            min_score=settings.detector_min_score,
            frames=settings.detector_confirm_frames,
            window=settings.detector_confirm_window,
            min_area=settings.detector_min_area,
            max_area=settings.detector_max_area,
            end_after_s=settings.detector_end_after,
            update_interval_s=settings.detector_update_interval,
            better_view_margin=BETTER_VIEW_MARGIN,
        )
        self._last_stats = time.monotonic()

    # ---- network thread

    def start(self) -> None:
        """Subscribe (before the client connects, so the subscriptions go out with the first connect)."""
        listed: list[str | None] = list(self._settings.detector_cameras) or [None]
        for camera in listed:
            self._client.subscribe(topics.camera_frames(camera), self.on_frame, qos=0)
            self._client.subscribe(
                topics.detect_set(camera) if camera else topics.ALL_DETECT_SET, self.on_detect_set, qos=1
            )
            self._client.subscribe(
                topics.detect_state(camera) if camera else topics.ALL_DETECT_STATE,
                self.on_detect_state,
                qos=1,
            )
        self._worker.start()
        self._preparer.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._worker.join(timeout=10)
        self._preparer.join(timeout=10)

    def _camera(self, camera: str) -> CameraState:
        """The camera's state, created on its first message. Call with ``self._changed`` held."""
        state = self._cameras.get(camera)
        if state is None:
            rules = self._scene.cameras.get(camera, CameraRules())
            tracker = CameraTracker(
                camera, self._confirmation, rules, rules.objects or list(self._settings.detector_objects)
            )
            gate = MotionGate(
                self._settings.detector_motion_threshold,
                self._settings.detector_motion_area,
                self._settings.detector_motion_force_interval,
            )
            state = CameraState(camera, tracker, gate, detecting=self._retained_detect.get(camera, True))
            self._cameras[camera] = state
            self._announce(state)
        return state

    def _announce(self, state: CameraState) -> None:
        """A newly seen camera: its detection switch and its labels start OFF until an event opens (this
        also clears an ON left retained by a detector that died mid-event)."""
        self._client.publish(
            topics.detect_state(state.camera), schemas.on_off(state.detecting), qos=1, retain=True
        )
        for label in state.tracker.objects:
            self._client.publish(topics.label_state(state.camera, label), topics.OFF, qos=1, retain=True)

    def on_frame(self, message: mqtt.MQTTMessage) -> None:
        arrived = time.monotonic()
        camera = topics.camera_of(message.topic)
        if camera is None:
            with self._changed:
                self._frames_bad_camera_id += 1
            self._bad_log.report("camera-id", f"frame on {message.topic[:80]!r}: not a valid camera id")
            return
        payload = bytes(message.payload)
        problem = self._payload_problem(payload)
        usable = problem is None
        try:
            meta = schemas.FrameMeta.from_properties(getattr(message, "properties", None))
        except schemas.BadPayload as error:
            # The frame itself may be fine: count the bad metadata and use the arrival time.
            meta = None
            problem = problem or str(error)
            self._bad_log.report(f"{camera}-meta", f"camera {camera}: {error}")
        captured_at = meta.captured_ms / 1000 if meta is not None else time.time()
        with self._changed:
            state = self._camera(camera)
            state.counters.frames_in += 1
            state.counters.frames_in_interval += 1
            if problem is not None:
                state.counters.frames_bad += 1
            if state.detecting and usable:
                if state.slot is not None:
                    state.counters.frames_stale += 1
                state.slot = PendingFrame(payload, captured_at, arrived)
                self._changed.notify_all()
        if not usable:
            self._bad_log.report(camera, f"camera {camera}: bad frame: {problem}")

    def _payload_problem(self, payload: bytes) -> str | None:
        if len(payload) > self._settings.detector_max_frame_bytes:
            return f"{len(payload)} bytes, more than DETECTOR_MAX_FRAME_BYTES"
        if not schemas.looks_like_jpeg(payload):
            return f"not a JPEG ({len(payload)} bytes starting {payload[:8]!r})"
        return None

    def on_detect_set(self, message: mqtt.MQTTMessage) -> None:
        camera = topics.camera_of(message.topic)
        if camera is None:
            return
        try:
            detecting = schemas.parse_on_off(bytes(message.payload))
        except schemas.BadPayload as error:
            with self._changed:
                self._camera(camera).counters.commands_bad += 1
            self._bad_log.report(f"{camera}-detect", f"camera {camera}: bad detect/set: {error}")
            return
        with self._changed:
            state = self._camera(camera)
            state.detecting = detecting
            if not detecting:
                state.slot = None
                state.end_all = True
            self._changed.notify_all()
        self._logger.info("detection %s for camera %s", "on" if detecting else "off", camera)
        self._client.publish(topics.detect_state(camera), schemas.on_off(detecting), qos=1, retain=True)

    def on_detect_state(self, message: mqtt.MQTTMessage) -> None:
        """Our own retained switch, read back once at start so a restart keeps a camera switched off."""
        camera = topics.camera_of(message.topic)
        if camera is None or not message.retain:
            return
        try:
            detecting = schemas.parse_on_off(bytes(message.payload))
        except schemas.BadPayload:
            return
        with self._changed:
            self._retained_detect[camera] = detecting
            if camera in self._cameras:
                self._cameras[camera].detecting = detecting

    # ---- worker thread

    def _prepare_at(self) -> float:
        """When to start preparing the next frame: just in time for the end of the running inference, so
        the frame is as fresh as possible when the interpreter takes it (monotonic clock)."""
        if self._inference_started is None:
            return 0.0
        return self._inference_started + self._inference_s - 2 * self._prepare_s - PREPARE_MARGIN_S

    def _next_pending(self) -> tuple[CameraState, PendingFrame] | None:
        """The frame that has waited longest (cameras take turns), once the ready slot is free and the
        running inference is about to end."""
        with self._changed:
            while not self._stop.is_set():
                waiting = [s for s in self._cameras.values() if s.slot is not None]
                early = self._prepare_at() - time.monotonic()
                if waiting and self._ready is None and early > 0:
                    self._changed.wait(early)
                    continue
                if waiting and self._ready is None:
                    state = min(waiting, key=lambda s: s.slot.arrived if s.slot else 0.0)
                    pending, state.slot = state.slot, None
                    assert pending is not None
                    return state, pending
                self._changed.wait(WORKER_TICK_S)
        return None

    def _prepare_loop(self) -> None:
        """Decode, gate and resize the next frame while the interpreter works on the current one."""
        while (taken := self._next_pending()) is not None:
            started = time.monotonic()
            try:
                ready = self._prepare(*taken)
            except Exception:
                self._logger.exception("preparing a frame of %s failed; continuing", taken[0].camera)
                continue
            if ready is not None:
                self._prepare_s += (time.monotonic() - started - self._prepare_s) * EMA_WEIGHT
                with self._changed:
                    self._ready = ready
                    self._changed.notify_all()

    def _prepare(self, state: CameraState, pending: PendingFrame) -> ReadyFrame | None:
        data = np.frombuffer(pending.payload, np.uint8)
        # The motion check and the size check need only a grey quarter-size decode (libjpeg scales while
        # decoding, about 5x cheaper); the full decode is paid only for frames that go to the model.
        small = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_4)
        if small is None or small.size == 0:
            self._bad_frame(state, f"cannot decode the JPEG ({len(pending.payload)} bytes)")
            return None
        if small.shape[0] * small.shape[1] * 16 > self._settings.detector_max_frame_pixels:
            size = f"about {small.shape[1] * 4}x{small.shape[0] * 4}"
            self._bad_frame(state, f"{size} is more than DETECTOR_MAX_FRAME_PIXELS")
            return None
        if self._settings.detector_motion and not state.gate.should_infer(
            small, time.monotonic(), state.tracking
        ):
            with self._changed:
                state.counters.frames_skipped_motion += 1
            return None
        frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if frame is None or frame.size == 0:
            self._bad_frame(state, f"cannot decode the JPEG ({len(pending.payload)} bytes)")
            return None
        return ReadyFrame(state, pending, frame, self._detector.prepare(frame))

    def _next_ready(self) -> ReadyFrame | None:
        with self._changed:
            if self._ready is None and not self._stop.is_set():
                self._changed.wait(WORKER_TICK_S)
            ready, self._ready = self._ready, None
            if ready is not None:
                self._changed.notify_all()  # the preparing thread may fill the slot again
            return ready

    def _work(self) -> None:
        while not self._stop.is_set():
            ready = self._next_ready()
            try:
                if ready is not None:
                    self._infer(ready)
                self._expire()
                if time.monotonic() - self._last_stats >= self._settings.detector_stats_interval:
                    self.publish_stats()
            except Exception:
                # One bad frame or a bug in one path must not stop detection for every camera.
                self._logger.exception("detector worker failed; continuing")

    def _infer(self, ready: ReadyFrame) -> None:
        state = ready.state
        started = time.monotonic()
        self._inference_started = started
        age_ms = (started - ready.pending.arrived) * 1000
        detections = self._detector.infer(ready.model_input, self._confirmation.min_score)
        inference_s = time.monotonic() - started
        self._inference_started = None
        self._inference_s += (inference_s - self._inference_s) * EMA_WEIGHT
        inference_ms = inference_s * 1000
        with self._changed:
            counters = state.counters
            counters.inferences += 1
            counters.inferences_interval += 1
            counters.inference_ms.append(inference_ms)
            counters.frame_age_ms.append(age_ms)
        for change in state.tracker.observe(detections, ready.pending.captured_at, time.time()):
            self._publish(state.camera, change, ready.frame)
        state.tracking = state.tracker.tracking

    def _bad_frame(self, state: CameraState, problem: str) -> None:
        with self._changed:
            state.counters.frames_bad += 1
        self._bad_log.report(state.camera, f"camera {state.camera}: bad frame: {problem}")

    def _expire(self) -> None:
        now = time.time()
        with self._changed:
            cameras = list(self._cameras.values())
        for state in cameras:
            force, state.end_all = state.end_all, False
            for change in state.tracker.expire(now, force=force):
                self._publish(state.camera, change, None)
            state.tracking = state.tracker.tracking

    def _publish(self, camera: str, change: Change, frame: Frame | None) -> None:
        event = change.event
        snapshot = annotate(frame, change.detections) if frame is not None and change.detections else None
        message = schemas.DetectionEvent(
            type=change.type,
            event_id=event.event_id,
            camera=camera,
            label=change.label,
            score=round(event.score, 4),
            top_score=round(event.top_score, 4),
            box=event.detection.box,
            zones=event.zones,
            started_at=event.started_at,
            ended_at=change.ended_at,
            frame_time=change.frame_time,
            detected_at=time.time(),
            snapshot=schemas.DetectionEvent.encode_snapshot(snapshot) if snapshot else None,
        )
        self._client.publish(topics.event(camera, change.label), message.to_json(), qos=1)
        if snapshot is not None:
            self._client.publish(topics.label_snapshot(camera, change.label), snapshot, qos=1, retain=True)
        if change.type in ("start", "end"):
            state = topics.ON if change.type == "start" else topics.OFF
            self._client.publish(topics.label_state(camera, change.label), state, qos=1, retain=True)
        self._logger.info(
            "%s %s on %s: score %.2f, box %s", change.type, change.label, camera, event.score, message.box
        )

    def stats(self) -> schemas.DetectorStats:
        """Counters since the start; rates and percentiles over the interval since the last call."""
        now = time.monotonic()
        interval = max(now - self._last_stats, 1e-6)
        cameras = {}
        with self._changed:
            for camera, state in self._cameras.items():
                c = state.counters
                cameras[camera] = schemas.CameraStats(
                    frames_in=c.frames_in,
                    frames_stale=c.frames_stale,
                    frames_skipped_motion=c.frames_skipped_motion,
                    frames_bad=c.frames_bad,
                    inferences=c.inferences,
                    inference_ms_p50=percentile(c.inference_ms, 0.5),
                    inference_ms_p95=percentile(c.inference_ms, 0.95),
                    fps_in=round(c.frames_in_interval / interval, 2),
                    fps_inferred=round(c.inferences_interval / interval, 2),
                    events=state.tracker.events_started,
                    detecting=state.detecting,
                    frame_age_ms_p50=percentile(c.frame_age_ms, 0.5),
                    frame_age_ms_p95=percentile(c.frame_age_ms, 0.95),
                    commands_bad=c.commands_bad,
                )
                c.inference_ms, c.frame_age_ms = [], []
                c.frames_in_interval = c.inferences_interval = 0
            bad_ids = self._frames_bad_camera_id
        self._last_stats = now
        return schemas.DetectorStats(
            instance=self._instance,
            interval_s=round(interval, 3),
            cameras=cameras,
            published_at=time.time(),
            frames_bad_camera_id=bad_ids,
        )

    def publish_stats(self) -> None:
        self._client.publish(topics.DETECTOR_STATS, self.stats().to_json(), qos=0)
