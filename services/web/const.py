"""Constants of the web relay that are not worth a setting."""

from __future__ import annotations

SERVICE = "web"
CLIENT_ID_PREFIX = "sentrycam-web"
# How long the broker keeps the relay's session (its subscriptions and the events sent meanwhile) while the
# relay is away: a restart, an upgrade, a night with the host switched off.
SESSION_EXPIRY_S = 24 * 3600

# The newest frame wins: a viewer waiting longer than this for a new one gets a keep-alive repeat, so
# proxies and browsers do not time the stream out while a camera is quiet.
FRAME_WAIT_S = 5.0
# SSE comment lines keep idle connections alive through proxies.
SSE_KEEPALIVE_S = 15.0
# At a stop, how long the server waits for its requests (streams just told to end) before closing.
SERVER_STOP_WAIT_S = 3.0
# Each open page holds one queue of pending SSE messages; a page that stops reading loses the oldest.
SSE_QUEUE_LENGTH = 100

# Waitress hands a viewer's bytes to the socket as soon as they are written (SSE and MJPEG must not wait
# for a buffer to fill) and blocks the writer when this much is queued, so a slow viewer skips frames
# instead of growing memory.
SEND_BYTES = 1
OUTBUF_HIGH_WATERMARK = 1024 * 1024

# Waitress closes a connection that has no request running and has been silent this long (an idle keep-alive,
# a client that connected and said nothing or half a request), checking every CLEANUP_INTERVAL_S; its
# default, 120 s, let a few hundred idle connections hold every connection slot for two minutes.
IDLE_CONNECTION_S = 30
CLEANUP_INTERVAL_S = 5
# Connections beyond WEB_THREADS (each stream holds a thread and a connection): idle and half-open ones
# cost a file descriptor and a few kilobytes each, and must not lock out /healthz, the login or a viewer.
SPARE_CONNECTIONS = 1000
# File descriptors the relay needs besides its connections (database, MQTT, pictures being written).
SPARE_FILES = 100

MAX_REQUEST_BYTES = 64 * 1024
SESSION_DAYS = 30
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name, not a secret)
# The signed-in sessions (hashes of their ids), so that a logout revokes a copied cookie, also across a
# restart; the oldest of more than MAX_SESSIONS sign-ins is forgotten (signed out).
SESSIONS_FILE = "sessions"
MAX_SESSIONS = 100
# Password checks running at once: a scrypt check takes 32 MB and about 0.1 s of one core, so many logins
# at once could take gigabytes. A login that finds no free check within LOGIN_WAIT_S answers 503.
LOGIN_CHECKS = 2
LOGIN_WAIT_S = 3.0
# Everything in WEB_DATA_DIR is the owner's only: pictures of the home, the session key, the sessions.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
DATABASE_FILE = "events.sqlite3"
# A write waits this long for a lock someone else holds on the database (a backup, the sqlite3 shell)
# before it fails and the broker sends the event again.
BUSY_TIMEOUT_MS = 5000
SNAPSHOT_DIR = "snapshots"
RETENTION_INTERVAL_S = 300.0
EVENTS_PAGE_SIZE = 100
# An open event without any message for this long is closed by the relay (its end was lost: the detector
# died, or the end never reached the broker). While an event is open the detector sends an update every
# DETECTOR_UPDATE_INTERVAL (5 s by default), or ends it DETECTOR_END_AFTER (10 s) after the object was
# last seen: 15 s is the longest normal silence, and 60 s is four of those (twelve missed updates). An
# update that comes after all reopens the event, so a late message costs a moment of a wrong end, never
# an event lost. Checked every OPEN_EVENT_CHECK_S, only while the broker is connected.
OPEN_EVENT_TIMEOUT_S = 60.0
OPEN_EVENT_CHECK_S = 10.0
