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
# Each open page holds one queue of pending SSE messages; a page that stops reading loses the oldest.
SSE_QUEUE_LENGTH = 100

# Waitress hands a viewer's bytes to the socket as soon as they are written (SSE and MJPEG must not wait
# for a buffer to fill) and blocks the writer when this much is queued, so a slow viewer skips frames
# instead of growing memory.
SEND_BYTES = 1
OUTBUF_HIGH_WATERMARK = 1024 * 1024

MAX_REQUEST_BYTES = 64 * 1024
SESSION_DAYS = 30
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name, not a secret)
DATABASE_FILE = "events.sqlite3"
# A write waits this long for a lock someone else holds on the database (a backup, the sqlite3 shell)
# before it fails and the broker sends the event again.
BUSY_TIMEOUT_MS = 5000
SNAPSHOT_DIR = "snapshots"
RETENTION_INTERVAL_S = 300.0
EVENTS_PAGE_SIZE = 100
