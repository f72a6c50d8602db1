"""Each camera's zones, masks and overrides taken live from its retained ``cam/<id>/config/set`` (written by
the web relay or Home Assistant), kept in DETECTOR_DATA_DIR across restarts, and reported on the retained
``cam/<id>/config/state`` (docs/mqtt.md, docs/detector.md).

A config/set is checked as a DETECTOR_CONFIG section is (:func:`scene.resolved`), over the camera's section
of the file. A bad one is refused with the reason on config/state, and the last good one stays in use; an
empty retained message (the topic cleared) brings back the file's config.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from services.common import schemas, topics
from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient
from services.detector.discovery import HassDiscovery
from services.detector.pipeline import Pipeline
from services.detector.scene import CameraConfig, CameraConfigs, resolved

Source = Literal["file", "topic", "saved"]


class SavedConfigs:
    """The last good config/set of each camera, as received: one ``<camera>.json`` in DETECTOR_DATA_DIR.
    The directory is made on the first save; a file that cannot be read or parsed is logged and ignored."""

    def __init__(self, directory: Path, logger: logging.Logger) -> None:
        """``directory``: DETECTOR_DATA_DIR, checked at start (startup.load)."""
        self._directory = directory
        self._logger = logger

    def _path(self, camera: str) -> Path:
        return self._directory / f"{topics.validate_camera_id(camera)}.json"

    def load(self) -> dict[str, schemas.CameraConfigSet]:
        try:
            paths = sorted(self._directory.glob("*.json")) if self._directory.is_dir() else []
        except OSError as error:
            self._logger.error("cannot read the saved camera configs in %s: %s", self._directory, error)
            return {}
        found = {}
        for path in paths:
            try:
                topics.validate_camera_id(path.stem)
                with path.open("rb") as file:
                    found[path.stem] = schemas.CameraConfigSet.parse(file.read(schemas.MAX_CONFIG_BYTES + 1))
            except (OSError, ValueError) as error:
                self._logger.warning("ignored the saved camera config %s: %s", path, error)
        return found

    def save(self, camera: str, message: schemas.CameraConfigSet) -> None:
        """Written whole or not at all: a crash mid-write leaves the previous file (temp file + rename)."""
        path = self._path(camera)
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as file:
                file.write(message.to_json())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as error:
            self._logger.error(
                "cannot keep the config of camera %s in %s (it applies until a restart): %s",
                camera,
                self._directory,
                error,
            )

    def remove(self, camera: str) -> None:
        try:
            self._path(camera).unlink(missing_ok=True)
        except OSError as error:
            self._logger.error("cannot remove the saved config of camera %s: %s", camera, error)


class LiveConfigs:
    """What each served camera uses now and where it came from; calls run on the network thread, except
    the loading of saved configs, which the constructor does before the broker connects."""

    def __init__(
        self,
        *,
        cameras: CameraConfigs,
        labels: frozenset[str],
        served: Iterable[str],
        saved: SavedConfigs,
        client: MqttClient,
        pipeline: Pipeline,
        discovery: HassDiscovery,
        logger: logging.Logger,
        bad_log: RateLimitedLog,
    ) -> None:
        """``served``: DETECTOR_CAMERAS (empty: every camera)."""
        self._cameras = cameras
        self._labels = labels
        self._served = frozenset(served)
        self._saved = saved
        self._client = client
        self._pipeline = pipeline
        self._discovery = discovery
        self._logger = logger
        self._bad_log = bad_log
        self._lock = threading.Lock()
        self._states: dict[str, schemas.CameraConfigState] = {}
        # The last good message per camera (received, or saved), while one is in use.
        self._good: dict[str, schemas.CameraConfigSet] = {}
        for camera in (*cameras.cameras, *self._served):
            if self._serves(camera):
                self._states[camera] = self._state(camera, cameras.of(camera), "file")
        self._load_saved()

    def _serves(self, camera: str) -> bool:
        return not self._served or camera in self._served

    def _load_saved(self) -> None:
        for camera, message in self._saved.load().items():
            if not self._serves(camera):
                continue
            try:
                config = resolved(self._cameras.of(camera), message, self._labels)
            except ValueError as error:
                self._logger.warning("ignored the saved config of camera %s: %s", camera, error)
                continue
            self._apply(camera, config)
            self._good[camera] = message
            self._states[camera] = self._state(camera, config, "saved")
            self._logger.info("camera %s: the saved config from config/set is in use", camera)

    def _state(
        self, camera: str, config: CameraConfig, source: Source, error: str | None = None
    ) -> schemas.CameraConfigState:
        return schemas.CameraConfigState(
            camera=camera,
            objects=list(config.objects),
            threshold=config.threshold,
            min_area=config.min_area,
            max_area=config.max_area,
            zones=dict(config.zones),
            masks=dict(config.masks),
            source=source,
            error=None if error is None else error[: schemas.MAX_TEXT_CHARS],
            updated_at=time.time(),
        )

    def _publish(self, state: schemas.CameraConfigState) -> None:
        with self._lock:
            self._states[state.camera] = state
        self._client.publish(topics.config_state(state.camera), state.to_json(), qos=1, retain=True)

    def _apply(self, camera: str, config: CameraConfig) -> None:
        """In use from the camera's next frame; Home Assistant told when the labels change."""
        before = self._pipeline.config_of(camera)
        self._pipeline.reconfigure(camera, config)
        if before.objects != config.objects:
            self._discovery.set_labels(camera, config.objects)

    def republish(self) -> None:
        """Every known camera's config/state again: on each (re)connect, for a broker that lost them."""
        with self._lock:
            states = list(self._states.values())
        for state in states:
            self._client.publish(topics.config_state(state.camera), state.to_json(), qos=1, retain=True)

    def seen(self, camera: str) -> None:
        """A camera's message arrived: the first time, its config/state is published."""
        if camera in self._states:  # the frames' path: no lock, the network thread alone adds cameras
            return
        self._publish(self._state(camera, self._pipeline.config_of(camera), "file"))

    def receive(self, camera: str, payload: bytes) -> None:
        """A config/set message of a served camera: taken, refused, or (empty) back to the file's."""
        if not payload:
            self._back_to_file(camera)
            return
        try:
            message = schemas.CameraConfigSet.parse(payload)
            config = resolved(self._cameras.of(camera), message, self._labels)
        except ValueError as error:  # BadPayload among them
            self._refuse(camera, str(error))
            return
        if self._good.get(camera) != message:
            self._apply(camera, config)
            self._good[camera] = message
            self._saved.save(camera, message)
            self._logger.info(
                "camera %s: config/set in use: objects %s, zones %s, masks %s",
                camera,
                ",".join(config.objects),
                ",".join(config.zones) or "none",
                ",".join(config.masks) or "none",
            )
        self._publish(self._state(camera, config, "topic"))

    def _refuse(self, camera: str, why: str) -> None:
        """The last good config stays in use, with its source; the reason goes on config/state."""
        self._pipeline.count_bad_command(camera)
        self._bad_log.report(f"{camera}-config", f"camera {camera}: refused config/set: {why}")
        with self._lock:
            state = self._states.get(camera)
        if state is None:
            state = self._state(camera, self._pipeline.config_of(camera), "file")
        self._publish(
            state.model_copy(update={"error": why[: schemas.MAX_TEXT_CHARS], "updated_at": time.time()})
        )

    def _back_to_file(self, camera: str) -> None:
        config = self._cameras.of(camera)
        if self._good.pop(camera, None) is not None:
            self._saved.remove(camera)
            self._apply(camera, config)
            self._logger.info("camera %s: config/set cleared, back to DETECTOR_CONFIG's config", camera)
        self._publish(self._state(camera, config, "file"))
