"""Fixed values of the notifier that are not worth a setting."""

from __future__ import annotations

SERVICE = "notifier"
# A fixed client id: the broker keeps this session (subscriptions and queued QoS 1 events) while we are away.
CLIENT_ID = "sentrycam-notifier"
# How long the broker keeps the session and its queued events while the notifier is down.
SESSION_EXPIRY_S = 24 * 3600
OUTBOX_FILE = "outbox.sqlite3"
# When no retained arming state and no stored one arrive this soon after connecting, we are armed (default).
ARMED_SETTLE_S = 1.0
# The person label: only it triggers the deterrent.
PERSON = "person"
SMTP_DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
SENDER_NAME = "SentryCam"
BAD_INPUT_LOG_INTERVAL_S = 60.0
# How long an outbox write waits for a lock held by another process (an admin's sqlite3 shell, a backup)
# before it fails: the event's handler holds up the MQTT network thread meanwhile, and a failed write is
# redelivered by the broker anyway.
OUTBOX_BUSY_TIMEOUT_S = 1.0
# After the outbox failed, the sender tries again this much later.
OUTBOX_RETRY_S = 5.0
# The arming history keeps the changes of at least this long (the broker keeps events this long for us) or
# NOTIFY_MAX_AGE, whichever is longer, and never more than this many changes.
ARMING_KEEP_MIN_S = SESSION_EXPIRY_S
ARMING_HISTORY_MAX_CHANGES = 10_000
# Modes of NOTIFY_DATA_DIR and of the files in it: the outbox holds snapshots from inside the house.
DATA_DIR_MODE = 0o700
DATA_FILE_MODE = 0o600
# The outbox state key of the arming state.
ARMED_KEY = "armed"
# Apprise's timeouts for a push channel (its defaults are 4 s each): a refused or silent server is found
# soon, and retried with backoff from the outbox. Each channel sends on its own thread, so a slow one never
# holds up another. A URL may set its own with ?cto= and ?rto=.
PUSH_CONNECT_TIMEOUT_S = 3.0
PUSH_READ_TIMEOUT_S = 10.0
# The outbox channel of email.
EMAIL_CHANNEL = "email"
# The longest one push send takes with our timeouts: how long a stop waits for a send under way.
PUSH_SEND_MAX_S = PUSH_CONNECT_TIMEOUT_S + PUSH_READ_TIMEOUT_S
# How often the outbox is read for sentrycam/notifier/stats, published when a figure changed: the page that
# shows it is at most this late, and an idle notifier publishes nothing.
STATS_CHECK_S = 2.0
# Open events whose alert is not decided yet (each with its latest message and snapshot), across all
# cameras; beyond this the oldest is dropped (logged). Events end within seconds of their objects leaving.
OPEN_EVENTS_MAX = 64
# Decided events remembered, so that their further messages are not judged again (the outbox would refuse
# a second alert anyway).
DECIDED_EVENTS_KEPT = 1024
