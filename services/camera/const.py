"""Fixed values of the camera service."""

from __future__ import annotations

from pathlib import Path

SERVICE = "camera"
DEFAULT_ALARM_SOUND = Path(__file__).resolve().parent / "sounds" / "siren.wav"

# Reopening a failed source: first retry after 1 s, doubling up to CAMERA_RECONNECT_MAX.
REOPEN_MIN_DELAY_S = 1.0
# A live source waits CAMERA_TIMEOUT plus this for a frame before it gives up by itself: a stream's own
# read timeout (CAMERA_TIMEOUT, in FFmpeg) fires first and says more precisely what went wrong.
LIVE_FRAME_GRACE_S = 2.0
# What the RTSP check after a failed open reads of the camera's answer at most (status line and headers).
RTSP_PROBE_MAX_BYTES = 16_384

# A player that exits sooner than this is not relaunched at once, so a broken player cannot spin.
ALARM_MIN_PLAY_S = 0.5
ALARM_STOP_TIMEOUT_S = 2.0
# How long closing a live source waits for its reading thread before leaving it to finish on its own.
LIVE_CLOSE_WAIT_S = 2.0
# Frames handed to paho but not yet written to the socket; beyond this the network is behind and new
# frames are dropped rather than queued.
MAX_UNSENT_FRAMES = 2
UNSENT_FORGET_S = 5.0
