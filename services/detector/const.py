"""Constants of the detector that are not settings."""

from __future__ import annotations

from pathlib import Path

SERVICE = "detector"

# Where the model is looked for when DETECTOR_MODEL is not set, in this order. The Docker image puts it in
# /models (python -m scripts.fetch_model --dest /models); a checkout keeps it in ./models.
DEFAULT_MODEL_DIRS = (Path("/models"), Path("models"))
MODEL_FILE = "detect.tflite"
# Label files looked for next to the model when DETECTOR_LABELS is not set.
LABEL_FILES = ("labelmap.txt", "coco_labels.txt", "labels.txt")
FETCH_HINT = "run `python -m scripts.fetch_model --dest models` or set DETECTOR_MODEL"

# The motion check works on a copy this small: cheap, and blind to sensor noise.
MOTION_WIDTH = 64
MOTION_HEIGHT = 36
# How fast the motion background follows the scene (weight of the newest frame).
MOTION_BACKGROUND_ALPHA = 0.1
# A change over this much of the frame at once is lighting (or a bumped camera), not something walking in.
MOTION_GLOBAL_FRACTION = 0.25

SNAPSHOT_JPEG_QUALITY = 85
BOX_COLOUR_BGR = (0, 0, 255)
# An update carries a new snapshot when the smoothed score beats the event's best by this much.
BETTER_VIEW_MARGIN = 0.03
# How long the worker sleeps at most when no frame arrives, so events still end on a silent camera.
WORKER_TICK_S = 0.25
# Weight of the newest measurement in the running inference and preparation times.
EMA_WEIGHT = 0.2
# Preparing the next frame starts this long (plus twice its usual duration) before the running inference
# is expected to end: late enough for a fresh frame, early enough that the interpreter never waits.
PREPARE_MARGIN_S = 0.002
# Scheduling across cameras: each step of priority (feed.CONFIRMING, IDLE, OPEN) counts as this much less
# waiting. Under load frames wait a frame interval (0.2 s at 5 fps) at most, so the order is in effect
# strict; under heavy overload a camera that has been passed over long enough still gets its turn.
PRIORITY_HEAD_START_S = 0.5
# Python's GIL switch interval for the detector process (default 0.005 s); see __main__.
GIL_SWITCH_INTERVAL_S = 0.0005

# Tracked objects (services/detector/objects.py). A detection continues an object when their boxes overlap
# by more than MATCH_IOU, or else when its centre is less than MATCH_CENTRE_DISTANCE of the object's box
# diagonal away (it moved further than its own overlap between two processed frames)
MATCH_IOU = 0.2
MATCH_CENTRE_DISTANCE = 1.0
MATCH_GAP_S = 1.0  # ...which only an object seen this recently may do
# A new box lying this much within the box of an object just matched is the model's second box on it.
DUPLICATE_COVER = 0.8
# An object has moved once its box overlaps where it last stood by less than this: box jitter of a parked
# car or a person standing at a table stays well above it on the footage.
STATIONARY_IOU = 0.7
# Objects that stood still when lost are remembered this long (at most PARKED_MEMORY of them per label),
# and one found again overlapping its old box by PARKED_IOU is the same object.
PARKED_MEMORY_S = 24 * 3600.0
PARKED_MEMORY = 16
PARKED_IOU = 0.5
