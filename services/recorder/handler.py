"""The recorder on the broker: frames and events in, each handed to its camera's thread (camera.py); the
main thread runs retention and publishes the stats."""

from __future__ import annotations

import logging
import os
import threading
import time

import paho.mqtt.client as mqtt

from services.common import schemas, topics
from services.common.jpeg import check_jpeg
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient, Route
from services.common.service import Presence, ServiceHandler, StartupError
from services.recorder.camera import CameraWorker
from services.recorder.clips import Writing
from services.recorder.const import CLIENT_ID, MAX_CAMERAS, RETENTION_INTERVAL_S, SERVICE, WORKER_IDLE_S
from services.recorder.files import Disk
from services.recorder.recovery import Journal, recover
from services.recorder.retention import Retention
from services.recorder.ring import Frame
from services.recorder.settings import RecorderSettings
from services.recorder.stats import Meter

GB = 1_000_000_000


def open_record_dir(settings: RecorderSettings) -> None:
    """RECORD_DIR made if missing; one that cannot be a directory stops the service. One that is there but
    not writable (a disk remounted read-only) is not fatal: it is reported and retried."""
    try:
        settings.record_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:
        raise StartupError("RECORD_DIR", "not a directory", settings.record_dir) from error
    except OSError as error:
        if not settings.record_dir.is_dir():
            problem = f"cannot be made: {error.strerror}"
            raise StartupError("RECORD_DIR", problem, settings.record_dir) from error


class Recorder(ServiceHandler[RecorderSettings]):
    """Event clips and continuous segments of the cameras in RECORD_CAMERAS (or all)."""

    service = SERVICE

    @classmethod
    def presence(cls, settings: RecorderSettings) -> Presence:
        return Presence(client_id=CLIENT_ID, status_topic=topics.service_status(SERVICE))

    def __init__(self, settings: RecorderSettings, client: MqttClient, logger: logging.Logger) -> None:
        super().__init__(settings, client, logger)
        open_record_dir(settings)
        self._bad_log = RateLimitedLog(logger)
        self._meter = Meter()
        self._disk_changed = threading.Event()
        self._disk = Disk(settings.record_dir, self._disk_changed.set)
        self._workers: dict[str, CameraWorker] = {}
        self._workers_lock = threading.Lock()
        self._stopping = False
        self._journal = Journal(settings.record_dir, logger)
        self._recovered = False  # the clips a crash left open, finished on the first connection
        max_gb = settings.record_max_gb
        self._retention = Retention(
            settings.record_dir,
            retain_days=settings.record_retain_days,
            events_retain_days=settings.record_events_retain_days,
            max_bytes=None if max_gb is None else round(max_gb * GB),
            logger=logger,
        )
        if not os.access(settings.record_dir, os.W_OK):
            self._disk.failed(f"{settings.record_dir} is not writable")
            logger.warning("RECORD_DIR %s is not writable: nothing can be recorded", settings.record_dir)
        logger.info(
            "recording to %s: cameras %s, labels %s, %s s before and %s s after, continuous %s",
            settings.record_dir,
            ",".join(settings.record_cameras) or "all",
            ",".join(settings.record_labels) or "all",
            settings.record_pre_s,
            settings.record_post_s,
            "on" if settings.record_continuous else "off",
        )

    def routes(self) -> dict[str, Route]:
        """Every message of each recorded camera in one filter (frames come at QoS 0 as published, events at
        QoS 1): two overlapping filters would have the broker deliver each frame twice."""
        cameras: list[str | None] = [*self.settings.record_cameras] or [None]
        return {topics.camera_messages(camera): Route(self.on_message, qos=1) for camera in cameras}

    def on_connect(self) -> None:
        if not self._recovered:
            self._recovered = True
            for clip in recover(self._journal, self.settings.record_dir, self.logger):
                self.client.publish(topics.clip(clip.camera), clip.to_json(), qos=1)

    def run(self, stop: threading.Event) -> None:
        """Retention at start, every minute and when a file is finished; stats every interval and when the
        disk's state changes."""
        interval = self.settings.record_stats_interval
        next_stats = time.monotonic() + interval
        next_retention = 0.0
        while not stop.wait(0.2):
            now = time.monotonic()
            if now >= next_retention or self._disk.files_finished.is_set():
                self._disk.files_finished.clear()
                self._drop_idle_workers()
                self._apply_retention()
                next_retention = now + RETENTION_INTERVAL_S
            if now >= next_stats or self._disk_changed.is_set():
                self._disk_changed.clear()
                self._publish_stats()
                next_stats = now + interval

    def stop(self) -> None:
        with self._workers_lock:
            self._stopping = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop()
        self._publish_stats()

    def on_message(self, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        camera = topics.camera_of(topic)
        if camera is None:
            self._meter.frames_bad_camera_id += 1
            self._bad_log.report("camera-id", f"message on {topic[:80]!r}: not a valid camera id")
        elif topic == topics.frame(camera):
            self._on_frame(camera, message)
        elif topics.label_of_event(topic) is not None:
            self._on_event(camera, message)

    def _on_frame(self, camera: str, message: mqtt.MQTTMessage) -> None:
        worker = self._worker(camera)
        if worker is None:
            return
        counters = self._meter.camera(camera)
        counters.count("frames_in")
        payload = bytes(message.payload)
        try:
            width, height = check_jpeg(
                payload, max_bytes=schemas.MAX_FRAME_BYTES, max_pixels=self.settings.record_max_frame_pixels
            )
            meta = schemas.FrameMeta.from_properties(getattr(message, "properties", None))
        except schemas.BadPayload as error:
            counters.count("frames_bad")
            self._bad_log.report(f"{camera}-frame", f"camera {camera}: bad frame: {error}")
            return
        captured_ms = meta.captured_ms if meta is not None else round(time.time() * 1000)
        if not worker.put_frame(Frame(payload, captured_ms, width, height)):
            counters.count("frames_dropped")

    def _on_event(self, camera: str, message: mqtt.MQTTMessage) -> None:
        try:
            event = schemas.DetectionEvent.parse(bytes(message.payload))
            if topics.event(event.camera, event.label) != message.topic:
                raise schemas.BadPayload(f"event of {event.camera}/{event.label} on {message.topic}")
        except schemas.BadPayload as error:
            self._meter.messages_bad += 1
            self._bad_log.report(f"{camera}-event", f"camera {camera}: bad event: {error}")
            return
        worker = self._worker(camera)
        if worker is not None:
            worker.put_event(event, self.client.hold_ack(message))

    def _worker(self, camera: str) -> CameraWorker | None:
        with self._workers_lock:
            worker = self._workers.get(camera)
            if worker is not None or self._stopping:
                return worker
            if len(self._workers) >= MAX_CAMERAS:
                self._meter.frames_bad_camera_id += 1
                self._bad_log.report("cameras", f"camera {camera}: more than {MAX_CAMERAS} cameras, ignored")
                return None
            writing = Writing(
                camera, self.settings, self._disk, self._meter.camera(camera), self._bad_log, self.logger
            )
            worker = self._workers[camera] = CameraWorker(writing, self._announce)
            worker.start()
            return worker

    def _drop_idle_workers(self) -> None:
        with self._workers_lock:
            idle = [camera for camera, worker in self._workers.items() if worker.idle(WORKER_IDLE_S)]
            dropped = [self._workers.pop(camera) for camera in idle]
        for camera, worker in zip(idle, dropped, strict=True):  # unlocked: a new one may be made meanwhile
            worker.stop()
            with self._workers_lock:
                if camera not in self._workers:  # not back meanwhile (its new thread counts there)
                    self._meter.forget(camera)
        if idle:
            self.logger.info(
                "no frames for %.0f s from %s: their recording state is dropped", WORKER_IDLE_S, idle
            )

    def _announce(self, clip: schemas.ClipInfo) -> None:
        self._journal.note(clip)
        self.client.publish(topics.clip(clip.camera), clip.to_json(), qos=1)
        self.logger.info("clip %s %s (%.1f s, %d bytes)", clip.path, clip.state, clip.duration_s, clip.bytes)

    def _apply_retention(self) -> None:
        deleted, used = self._retention.run(self._disk.open_files())
        self._meter.files_deleted += deleted
        self._meter.used_bytes = used
        if deleted:
            self.logger.info("retention: deleted %d files, %d bytes left", deleted, used)

    def _publish_stats(self) -> None:
        stats = self._meter.message(self._disk, self.settings.record_stats_interval)
        self.client.publish(topics.RECORDER_STATS, stats.to_json(), qos=0)
