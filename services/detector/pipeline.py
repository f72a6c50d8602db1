"""Frames in, events out: a newest-frame slot per camera, a preparing thread and the inference worker.

The network thread only files frames (:meth:`Pipeline.receive`). The preparing thread decodes (no larger
than needed), gates and resizes the next frame, just in time for the end of the running inference, while
the worker thread runs the interpreter on the current one, turns its detections into events and
publishes the stats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.common import schemas, topics
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient
from services.detector import decode, events
from services.detector.const import EMA_WEIGHT, PREPARE_MARGIN_S, WORKER_TICK_S
from services.detector.feed import CameraFeed, PendingFrame, ReadyFrame
from services.detector.model import Detector
from services.detector.motion import MotionGate
from services.detector.scene import CameraConfig, CameraConfigs
from services.detector.settings import DetectorSettings
from services.detector.tracker import CameraTracker, Confirmation


class Pipeline:
    """Every camera's feed, and the two threads that take frames from the slots to the interpreter."""

    def __init__(
        self,
        *,
        settings: DetectorSettings,
        detector: Detector,
        confirmation: Confirmation,
        cameras: CameraConfigs,
        client: MqttClient,
        instance: str,
        logger: logging.Logger,
        bad_log: RateLimitedLog,
        messages_bad: Callable[[], int] = lambda: 0,
    ) -> None:
        """``messages_bad``: how many messages other than frames the handler refused without a camera to
        count them on (DetectorStats.messages_bad)."""
        self._settings = settings
        self._detector = detector
        self._cameras = cameras
        self._client = client
        self._instance = instance
        self._logger = logger
        self._bad_log = bad_log
        self._confirmation = confirmation
        self._feeds: dict[str, CameraFeed] = {}
        # Configs taken live from cam/<id>/config/set (services/detector/live_config.py) over _cameras.
        self._live_configs: dict[str, CameraConfig] = {}
        self._retained_detect: dict[str, bool] = {}
        self._frames_bad_camera_id = 0
        self._messages_bad = messages_bad
        # Guards the feeds (slots, switches, stats), the counts and _ready; wakes the two threads.
        self._changed = threading.Condition()
        # Held while a tracker changes and its label states are published, and while they are published
        # again on a reconnect: the broker never ends up holding a state older than the tracker's.
        self._label_states = threading.Lock()
        self._stop = threading.Event()
        self._ready: ReadyFrame | None = None
        # Running estimates (seconds) that time the preparation of the next frame; see _prepare_at.
        self._inference_started: float | None = None
        self._inference_s = 0.0
        self._prepare_s = 0.0
        self._last_stats = time.monotonic()
        self._worker = threading.Thread(target=self._work, name="detector-worker", daemon=True)
        self._preparer = threading.Thread(target=self._prepare_loop, name="detector-prepare", daemon=True)

    def start(self) -> None:
        self._worker.start()
        self._preparer.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._worker.join(timeout=10)
        self._preparer.join(timeout=10)

    # ---- network thread

    def _feed(self, camera: str) -> CameraFeed:
        """The camera's feed, created on its first message. Call with ``self._changed`` held."""
        feed = self._feeds.get(camera)
        if feed is None:
            settings, config = self._settings, self.config_of(camera)
            gate = MotionGate(
                settings.detector_motion_threshold,
                settings.detector_motion_area,
                settings.detector_motion_force_interval,
            )
            tracker = CameraTracker(camera, self._confirmation, config)
            feed = CameraFeed(camera, tracker, gate, detecting=self._retained_detect.get(camera, True))
            self._feeds[camera] = feed
            events.publish_states(self._client, camera, feed.detecting, config.objects, open_labels=set())
        return feed

    def receive(self, camera: str, frame: PendingFrame | None, *, bad: bool) -> None:
        """A frame arrived: counted, and filed in the camera's slot unless it is unusable (None) or the
        camera is switched off. A frame still waiting there is replaced: it is stale."""
        with self._changed:
            feed = self._feed(camera)
            feed.stats.counts.frames_in += 1
            if bad:
                feed.stats.counts.frames_bad += 1
            if feed.detecting and frame is not None:
                if feed.slot is not None:
                    feed.stats.counts.frames_stale += 1
                else:
                    feed.waiting_since = frame.arrived
                feed.slot = frame
                self._changed.notify_all()

    def count_bad_camera_id(self) -> None:
        with self._changed:
            self._frames_bad_camera_id += 1

    def count_bad_command(self, camera: str) -> None:
        with self._changed:
            self._feed(camera).stats.counts.commands_bad += 1

    def switch(self, camera: str, detecting: bool) -> None:
        """Detection on or off; off drops the waiting frame and has the worker end the open events."""
        with self._changed:
            feed = self._feed(camera)
            feed.detecting = detecting
            if not detecting:
                feed.slot = None
                feed.end_all = True
            self._changed.notify_all()

    def config_of(self, camera: str) -> CameraConfig:
        """The camera's config in use: taken live, else DETECTOR_CONFIG's and the settings'."""
        return self._live_configs.get(camera) or self._cameras.of(camera)

    def reconfigure(self, camera: str, config: CameraConfig) -> None:
        """Use ``config`` for the camera from its next frame on, without a restart. The events of labels
        it no longer looks for end at once; a label it newly looks for gets its retained state OFF."""
        with self._changed:
            self._live_configs[camera] = config
            feed = self._feeds.get(camera)
        if feed is None:
            return  # the feed is created with this config on the camera's first frame
        with self._label_states:
            added = [label for label in config.objects if label not in feed.tracker.tracks]
            for change in feed.tracker.reconfigure(config):
                events.publish_change(self._client, self._logger, camera, change, None)
            for label in added:
                self._client.publish(topics.label_state(camera, label), topics.OFF, qos=1, retain=True)
        feed.update_priority()

    def restore(self, camera: str, detecting: bool) -> None:
        """The switch as retained on the broker, read back at start."""
        with self._changed:
            self._retained_detect[camera] = detecting
            if camera in self._feeds:
                self._feeds[camera].detecting = detecting

    # ---- preparing thread

    def _prepare_at(self) -> float:
        """When to start preparing the next frame: just in time for the end of the running inference, so
        the frame is as fresh as possible when the interpreter takes it (monotonic clock)."""
        if self._inference_started is None:
            return 0.0
        return self._inference_started + self._inference_s - 2 * self._prepare_s - PREPARE_MARGIN_S

    def _next_pending(self) -> tuple[CameraFeed, PendingFrame] | None:
        """The next frame by priority, then by how long its camera has waited (cameras take turns), once
        the ready slot is free and the running inference is about to end."""
        with self._changed:
            while not self._stop.is_set():
                waiting = [f for f in self._feeds.values() if f.slot is not None]
                early = self._prepare_at() - time.monotonic()
                if waiting and self._ready is None and early > 0:
                    self._changed.wait(early)
                    continue
                if waiting and self._ready is None:
                    feed = min(waiting, key=CameraFeed.turn)
                    pending, feed.slot = feed.slot, None
                    assert pending is not None
                    return feed, pending
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

    def _prepare(self, feed: CameraFeed, pending: PendingFrame) -> ReadyFrame | None:
        # The frame's header was checked on arrival (payload_problem): it has at most
        # DETECTOR_MAX_FRAME_PIXELS. The gate needs only a small grey decode, the model a colour one no
        # larger than its input needs (services/detector/decode.py); the whole frame waits for a snapshot.
        try:
            if self._settings.detector_motion and not feed.gate.should_infer(
                decode.for_gate(pending.payload), time.monotonic(), feed.tracking
            ):
                with self._changed:
                    feed.stats.counts.frames_skipped_motion += 1
                return None
            model = self._detector
            image, factor = decode.for_model(
                pending.payload, model.width, model.height, reduce=self._settings.detector_reduced_decode
            )
        except decode.DecodeError as error:
            self._bad_frame(feed, str(error))
            return None
        return ReadyFrame(feed, pending, image, model.prepare(image), is_whole=factor == 1)

    def _bad_frame(self, feed: CameraFeed, problem: str) -> None:
        with self._changed:
            feed.stats.counts.frames_bad += 1
        self._bad_log.report(feed.camera, f"camera {feed.camera}: bad frame: {problem}")

    # ---- worker thread

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
                    self._client.publish(topics.DETECTOR_STATS, self.stats().to_json(), qos=0)
            except Exception:
                # One bad frame or a bug in one path must not stop detection for every camera.
                self._logger.exception("detector worker failed; continuing")

    def _infer(self, ready: ReadyFrame) -> None:
        feed = ready.feed
        started = time.monotonic()
        self._inference_started = started
        age_ms = (started - ready.pending.arrived) * 1000
        detections = self._detector.infer(ready.model_input, self._confirmation.min_score)
        inference_s = time.monotonic() - started
        self._inference_started = None
        self._inference_s += (inference_s - self._inference_s) * EMA_WEIGHT
        with self._label_states:
            changes = feed.tracker.observe(detections, ready.pending.captured_at, time.time())
            snapshot = ready.whole_image() if any(c.detections for c in changes) else None
            for change in changes:
                events.publish_change(self._client, self._logger, feed.camera, change, snapshot)
        with self._changed:
            feed.stats.inferred(inference_s * 1000, age_ms)
            feed.stats.counts.events += sum(change.type == "start" for change in changes)
        feed.update_priority()

    def _expire(self) -> None:
        now = time.time()
        with self._changed:
            feeds = list(self._feeds.values())
        for feed in feeds:
            force, feed.end_all = feed.end_all, False
            with self._label_states:
                for change in feed.tracker.expire(now, force=force):
                    events.publish_change(self._client, self._logger, feed.camera, change, None)
            feed.update_priority()

    def republish(self) -> None:
        """Every camera's retained detection switch and label states again, as they are now. Called on
        every (re)connect: a broker that was killed comes back without them, or with older ones from its
        last save (a person still shown present long after they left)."""
        with self._changed:
            feeds = [(feed, feed.detecting) for feed in self._feeds.values()]
        with self._label_states:
            for feed, detecting in feeds:
                open_labels = {label for label, track in feed.tracker.tracks.items() if track.event}
                events.publish_states(self._client, feed.camera, detecting, feed.tracker.tracks, open_labels)

    def stats(self) -> schemas.DetectorStats:
        """Counters since the start; rates and percentiles over the interval since the last call."""
        now = time.monotonic()
        interval = max(now - self._last_stats, 1e-6)
        with self._changed:
            # The message has room for MAX_STATS_CAMERAS cameras; more than that on one detector is absurd.
            feeds = list(self._feeds.items())[: schemas.MAX_STATS_CAMERAS]
            cameras = {
                camera: feed.stats.report(interval, detecting=feed.detecting) for camera, feed in feeds
            }
            bad_ids = self._frames_bad_camera_id
        self._last_stats = now
        return schemas.DetectorStats(
            instance=self._instance,
            interval_s=round(interval, 3),
            cameras=cameras,
            published_at=time.time(),
            frames_bad_camera_id=bad_ids,
            messages_bad=self._messages_bad(),
        )
