"""What the detector publishes for a camera: its retained states, and the event message, annotated
snapshot and label state of each tracker change."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import cv2

from services.common import schemas, topics
from services.common.mqtt import MqttClient
from services.common.scores import percent
from services.detector.const import BOX_COLOUR_BGR, SNAPSHOT_JPEG_QUALITY
from services.detector.model import Detection, Image
from services.detector.tracker import Change


def box_label(detection: Detection, event: Detection, event_score: float) -> str:
    """``person 73 %``. The event's own box says the event's score (its ``top_score``, as the pages and the
    email say it), not this frame's raw score; other boxes of the label their own."""
    score = event_score if detection is event else detection.score
    return f"{detection.label} {percent(score)}"


def annotate(image: Image, detections: list[Detection], event: Detection, event_score: float) -> bytes:
    """The image with each detection's box and label drawn, as JPEG."""
    drawn = image.copy()
    height, width = drawn.shape[:2]
    thickness = max(2, width // 320)
    for detection in detections:
        x0, y0, x1, y1 = detection.box
        top_left = (int(x0 * width), int(y0 * height))
        cv2.rectangle(drawn, top_left, (int(x1 * width), int(y1 * height)), BOX_COLOUR_BGR, thickness)
        cv2.putText(
            drawn,
            box_label(detection, event, event_score),
            (top_left[0] + 3, max(top_left[1] - 6, 14)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * thickness / 2,
            BOX_COLOUR_BGR,
            max(1, thickness // 2),
        )
    ok, encoded = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def publish_detecting(client: MqttClient, camera: str, detecting: bool) -> None:
    client.publish(topics.detect_state(camera), schemas.on_off(detecting), qos=1, retain=True)


def publish_states(
    client: MqttClient, camera: str, detecting: bool, labels: Iterable[str], open_labels: set[str]
) -> None:
    """A camera's retained states: its detection switch, and each label ON while its event is open, else
    OFF. For a newly seen camera all are OFF, which also clears an ON left retained by a detector that died
    mid-event."""
    publish_detecting(client, camera, detecting)
    for label in labels:
        state = topics.ON if label in open_labels else topics.OFF
        client.publish(topics.label_state(camera, label), state, qos=1, retain=True)


def event_message(camera: str, change: Change, snapshot: bytes | None) -> schemas.DetectionEvent:
    event = change.event
    return schemas.DetectionEvent(
        type=change.type,
        event_id=event.event_id,
        camera=camera,
        label=change.label,
        score=round(event.score, 4),
        top_score=round(event.top_score, 4),
        box=event.detection.box,
        zones=event.zones,
        objects=change.objects,
        started_at=event.started_at,
        ended_at=change.ended_at,
        frame_time=change.frame_time,
        detected_at=time.time(),
        snapshot=schemas.DetectionEvent.encode_snapshot(snapshot) if snapshot else None,
    )


def publish_change(
    client: MqttClient, logger: logging.Logger, camera: str, change: Change, image: Image | None
) -> None:
    """The event message; with a snapshot (also retained on its own topic) when the change has boxes to
    draw; the label's retained state on start and end."""
    snapshot = None
    if image is not None and change.detections:
        snapshot = annotate(
            image, change.detections, change.event.detection, round(change.event.top_score, 4)
        )
    carried = snapshot
    if snapshot is not None and len(snapshot) > schemas.MAX_SNAPSHOT_BYTES:
        # The event must fit the broker's message limit: it goes out without the picture instead.
        logger.warning(
            "%s %s on %s: snapshot of %d bytes is too big for the event message; sent without it",
            change.type,
            change.label,
            camera,
            len(snapshot),
        )
        carried = None
    message = event_message(camera, change, carried)
    client.publish(topics.event(camera, change.label), message.to_json(), qos=1)
    if snapshot is not None:
        client.publish(topics.label_snapshot(camera, change.label), snapshot, qos=1, retain=True)
    if change.type in ("start", "end"):
        state = topics.ON if change.type == "start" else topics.OFF
        client.publish(topics.label_state(camera, change.label), state, qos=1, retain=True)
    logger.info(
        "%s %s on %s: score %.2f, box %s",
        change.type,
        change.label,
        camera,
        change.event.score,
        message.box,
    )
