"""Fixed values of the camera service."""

from __future__ import annotations

from pathlib import Path

SERVICE = "camera"
DEFAULT_ALARM_SOUND = Path(__file__).resolve().parent / "sounds" / "siren.wav"

# Reopening a failed source: first retry after 1 s, doubling up to 30 s.
REOPEN_MIN_DELAY_S = 1.0
REOPEN_MAX_DELAY_S = 30.0
# A live source that delivers no frame for this long is treated as lost and reopened.
LIVE_FRAME_TIMEOUT_S = 10.0
# Passed to OpenCV's FFmpeg backend so a dead RTSP/HTTP camera fails instead of hanging forever.
STREAM_TIMEOUT_MS = 10_000

# A player that exits sooner than this is not relaunched at once, so a broken player cannot spin.
ALARM_MIN_PLAY_S = 0.5
ALARM_STOP_TIMEOUT_S = 2.0
# How long closing a live source waits for its reading thread before leaving it to finish on its own.
LIVE_CLOSE_WAIT_S = 2.0
# Frames handed to paho but not yet written to the socket; beyond this the network is behind and new
# frames are dropped rather than queued.
MAX_UNSENT_FRAMES = 2
UNSENT_FORGET_S = 5.0
