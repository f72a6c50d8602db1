"""``python -m services.detector``: detect objects on camera frames and publish events over MQTT."""

from __future__ import annotations

import os
import socket
import sys

from services.common import topics
from services.common.hass import HassDiscovery
from services.common.mqtt import MqttClient
from services.common.service import stop_on_signals
from services.common.settings import EXIT_BAD_SETTINGS, load_settings, setup_logging
from services.detector.const import GIL_SWITCH_INTERVAL_S, SERVICE
from services.detector.handler import DetectorHandler
from services.detector.model import (
    Detector,
    ModelError,
    read_labels,
    resolve_labels,
    resolve_model,
    topic_labels,
)
from services.detector.scene import SceneConfig, SceneConfigError, load_scene_config
from services.detector.settings import DetectorSettings


def fail(message: str) -> None:
    """A start-up problem the user must fix: one line, exit code 2, like a bad setting."""
    print(f"sentrycam-{SERVICE}: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_SETTINGS)


def check_objects(settings: DetectorSettings, scene: SceneConfig, labels: set[str]) -> None:
    unknown = sorted({*settings.detector_objects} - labels)
    if unknown:
        fail(f"invalid setting DETECTOR_OBJECTS: the model has no label {', '.join(unknown)}")
    for camera, rules in scene.cameras.items():
        unknown = sorted({*(rules.objects or [])} - labels)
        if unknown:
            fail(f"invalid setting DETECTOR_CONFIG: camera {camera}: no label {', '.join(unknown)}")


def main() -> None:
    settings = load_settings(DetectorSettings, SERVICE)
    logger = setup_logging(SERVICE, settings.log_level)
    try:
        model_path = resolve_model(settings.detector_model)
        labels_path = resolve_labels(settings.detector_labels, model_path)
        scene = load_scene_config(settings.detector_config)
        # Checked before the model loads, so a typo costs no time and the error is the only line.
        check_objects(settings, scene, set(topic_labels(read_labels(labels_path)).values()))
        detector = Detector(model_path, labels_path, settings.detector_threads)
    except (ModelError, SceneConfigError) as error:
        fail(str(error))
        return
    logger.info(
        "model %s (%dx%d, %s, %d threads), objects %s, cameras %s",
        model_path,
        detector.width,
        detector.height,
        detector.runtime,
        settings.detector_threads,
        ",".join(settings.detector_objects),
        ",".join(settings.detector_cameras) or "all",
    )
    # The interpreter releases the GIL while it runs; when it returns, it must get the GIL back from the
    # network thread quickly, not after Python's default 5 ms switch interval.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    instance = settings.detector_instance or f"{socket.gethostname()[:20]}-{os.getpid()}"
    client = MqttClient(
        settings,
        client_id=f"sentrycam-detector-{instance}",
        status_topic=topics.service_status(SERVICE),
        logger=logger,
    )
    handler = DetectorHandler(
        settings=settings, detector=detector, scene=scene, client=client, instance=instance, logger=logger
    )
    # Home Assistant discovery rides on the detector: it knows the cameras it serves and their labels.
    discovery = HassDiscovery(
        client,
        settings.ha_discovery_prefix,
        settings.detector_objects,
        logger.getChild("hass"),
        cameras=settings.detector_cameras,
        camera_labels={camera: rules.objects for camera, rules in scene.cameras.items() if rules.objects},
    )
    stop = stop_on_signals()
    handler.start()
    discovery.start()
    client.start()
    stop.wait()
    logger.info("stopping")
    handler.stop()
    client.stop()


if __name__ == "__main__":
    main()
