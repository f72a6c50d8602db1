"""The recorder's fixed values."""

from __future__ import annotations

SERVICE = "recorder"
CLIENT_ID = "sentrycam-recorder"

# The ring keeps this much more than RECORD_PRE_S: an event's started_at is its first sighting, which the
# detector confirms a few frames later (and publishes later still), so the clip's start lies that far back.
RING_SLACK_S = 10.0
RING_MAX_BYTES = 64 * 1024 * 1024  # per camera: a flood of huge frames cannot take more memory than this
# Frames waiting for a camera's writer thread; past it new frames are dropped (and counted): the recorder
# never falls ever further behind, and its memory stays bounded.
INBOX_MAX_FRAMES = 50
MAX_CAMERAS = 100  # cameras the recorder keeps state for; frames of more are refused and counted
# A camera without frames or events for this long, and with no clip open, loses its thread and ring (its
# continuous segment is finished): cameras that went away do not hold memory, nor places among MAX_CAMERAS.
WORKER_IDLE_S = 120.0

# A closing clip is closed this long after its end time (wall clock) even when no frame comes to close it.
FRAME_WAIT_S = 1.0
# An event that has had no message for this long is taken as ended (a detector that died without `end`);
# the detector sends an update every DETECTOR_UPDATE_INTERVAL (5 s) while the object stays.
EVENT_SILENCE_S = 300.0
TICK_S = 0.25  # how often a camera's thread looks at the clock when no frame comes

RETENTION_INTERVAL_S = 60.0  # retention also runs at start and whenever a file is finished
DISK_RETRY_S = 2.0  # after a write error, the next file is tried no sooner than this
