"""Push channels (Apprise) of the notifier: a real HTTP receiver behind Apprise's ``json://`` and ``ntfy://``,
the real notifier process on a real Mosquitto, email on a real SMTP server beside them."""

from __future__ import annotations

import base64
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.localbroker import LocalBroker
from services.notifier.outbox import open_outbox
from services.notifier.push import channel_key
from tests.notifier_support import PushReceiver, SilentServer, SmtpServer, snapshot_jpeg
from tests.support import Collector, wait_until
from tests.test_notifier import NOTIFIER_STATUS, Rig, StartService

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

# Secrets in the URLs (basic auth for json://, a login for ntfy://): none may reach a log or the outbox.
JSON_SECRET = "json-Pa55word-77"
NTFY_SECRET = "ntfy-Tok3n-secret-99"
# A webhook path is a secret too (Telegram's bot token is in the path of every request Apprise makes).
HOOK = "/alerts-Hk7Qz93Lp"


@pytest.fixture
def rig(
    own_broker: LocalBroker, collector: Callable[..., Collector], service: StartService, tmp_path: Path
) -> Iterator[Rig]:
    """test_notifier.py's rig, with email on a plain SMTP server."""
    smtp = SmtpServer(tmp_path, "none").start()
    yield Rig(own_broker, collector(NOTIFIER_STATUS, on=own_broker), smtp, tmp_path / "data", service)
    smtp.stop()


@pytest.fixture
def jpeg() -> bytes:
    return snapshot_jpeg()


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    server = PushReceiver().start()
    yield server
    server.stop()


def json_url(receiver: PushReceiver) -> str:
    return receiver.json_url(HOOK.lstrip("/")).replace("json://", f"json://owner:{JSON_SECRET}@")


def ntfy_url(receiver: PushReceiver, topic: str = "sentrycam") -> str:
    return receiver.ntfy_url(topic).replace("ntfy://", f"ntfy://owner:{NTFY_SECRET}@")


def outbox_rows(data_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(data_dir / "outbox.sqlite3") as db:
        rows = db.execute("SELECT event_id, channel, status FROM alerts ORDER BY event_id, channel")
        return [(str(a), str(b), str(c)) for a, b, c in rows.fetchall()]


def stored_snapshots(data_dir: Path) -> list[bytes]:
    """Every snapshot the outbox holds, in the event table and in the alert rows."""
    with sqlite3.connect(data_dir / "outbox.sqlite3") as db:
        kept = db.execute("SELECT jpeg FROM snapshots").fetchall()
        in_rows = db.execute("SELECT snapshot FROM alerts WHERE snapshot IS NOT NULL").fetchall()
    return [bytes(jpeg) for (jpeg,) in kept + in_rows]


def assert_no_secrets(*texts: str | bytes) -> None:
    for text in texts:
        raw = text.encode() if isinstance(text, str) else text
        assert JSON_SECRET.encode() not in raw and NTFY_SECRET.encode() not in raw
        assert HOOK.encode() not in raw


def test_an_alert_reaches_every_channel_once_with_its_snapshot(
    rig: Rig, receiver: PushReceiver, jpeg: bytes, tmp_path: Path
) -> None:
    urls = tmp_path / "notify-urls"  # the Docker secret form: one per line, comments allowed
    urls.write_text(f"# phone\n{json_url(receiver)}\n{ntfy_url(receiver)}\n")
    notifier = rig.start(NOTIFY_URLS_FILE=str(urls), WEB_BASE_URL="http://cam.home:8080")
    started = time.time() - 2
    rig.event("porch", "porch-1", jpeg, started_at=started)
    rig.event("porch", "porch-2", jpeg)  # within the cooldown: no channel alerts it

    (sent,) = receiver.wait_count(HOOK, 1)
    assert sent.method == "POST"
    login = base64.b64encode(f"owner:{JSON_SECRET}".encode()).decode()
    assert sent.headers["Authorization"] == f"Basic {login}"
    payload = sent.json()
    assert payload["title"] == "SentryCam: person on camera porch"
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) in payload["message"]
    assert "camera porch" in payload["message"] and "Score: 71 %" in payload["message"]
    assert "http://cam.home:8080/events/porch-1" in payload["message"]
    (attachment,) = payload["attachments"]
    assert base64.b64decode(attachment["base64"]) == jpeg
    assert attachment["mimetype"] == "image/jpeg"
    assert re.fullmatch(r"porch-person-\d{8}-\d{6}\.jpg", attachment["filename"])

    (pushed,) = receiver.wait_count("/sentrycam", 1)
    assert pushed.body == jpeg  # ntfy uploads the snapshot as the body, the text in the query
    assert pushed.query["title"] == "SentryCam: person on camera porch"
    assert "http://cam.home:8080/events/porch-1" in pushed.query["message"]
    assert pushed.query["filename"] == attachment["filename"]
    assert rig.smtp.wait_count(1)[0].attachment()[1] == jpeg

    notifier.wait_for_log(r"porch-2\): recorded, not alerted: cooldown")
    assert notifier.stop() == 0
    assert len(receiver.requests) == 2 and len(rig.smtp.mails) == 1
    keys = sorted(["email", channel_key(json_url(receiver)), channel_key(ntfy_url(receiver))])
    assert outbox_rows(rig.data_dir) == [
        *[("porch-1", key, "sent") for key in keys],
        *[("porch-2", key, "suppressed") for key in keys],
    ]
    assert "push 1 (json), push 2 (ntfy)" in notifier.log
    assert_no_secrets(notifier.log, (rig.data_dir / "outbox.sqlite3").read_bytes())


def test_a_receiver_down_across_a_restart_still_gets_one_alert_per_channel(
    rig: Rig, receiver: PushReceiver, jpeg: bytes
) -> None:
    receiver.stop()
    down_since = time.monotonic()
    urls = f"{json_url(receiver)},{ntfy_url(receiver)}"
    first = rig.start(NOTIFY_URLS=urls, LOG_LEVEL="DEBUG")  # not even debug lines show the URLs
    rig.event("gate", "gate-1", jpeg)
    first.wait_for_log(r"sending alert gate-1 to push 1 \(json\) failed \(attempt 2\)")
    first.wait_for_log(r"sending alert gate-1 to push 2 \(ntfy\) failed \(attempt 2\)")
    assert rig.smtp.wait_count(1)[0].attachment()[1] == jpeg  # email is not held up meanwhile
    first.wait_for_log(r"alert gate-1 emailed")
    # One copy of the snapshot for the three channels, kept while the push channels still need it.
    assert stored_snapshots(rig.data_dir) == [jpeg]
    assert first.stop() == 0

    second = rig.start(NOTIFY_URLS=urls, LOG_LEVEL="DEBUG")
    second.wait_for_log(r"sending alert gate-1 to push 1 \(json\) failed")
    time.sleep(max(0.0, 20 - (time.monotonic() - down_since)))
    receiver.start()
    (sent,) = receiver.wait_count(HOOK, 1)
    (pushed,) = receiver.wait_count("/sentrycam", 1)
    second.wait_for_log(r"alert gate-1 sent to push 1 \(json\)")
    second.wait_for_log(r"alert gate-1 sent to push 2 \(ntfy\)")
    assert base64.b64decode(sent.json()["attachments"][0]["base64"]) == jpeg
    assert pushed.body == jpeg
    assert second.stop() == 0
    assert len(receiver.requests) == 2 and len(rig.smtp.mails) == 1
    assert {status for _event, _channel, status in outbox_rows(rig.data_dir)} == {"sent"}
    assert stored_snapshots(rig.data_dir) == []  # dropped with the last channel's send
    assert_no_secrets(first.log, second.log)


def test_a_channel_that_never_answers_holds_up_no_other(
    rig: Rig, receiver: PushReceiver, jpeg: bytes
) -> None:
    silent = SilentServer()
    try:
        # The silent channel first: Apprise's read timeout (10 s) would hold up anything sent after it.
        urls = f"json://127.0.0.1:{silent.port}/hang, {json_url(receiver)}"
        notifier = rig.start(NOTIFY_URLS=urls)
        rig.event("yard", "yard-1", jpeg)
        rig.event("lane", "lane-1", jpeg)
        assert len(receiver.wait_count(HOOK, 2)) == 2
        assert len(rig.smtp.wait_count(2)) == 2
        # Both went out while the silent channel still waits for its first answer.
        assert "to push 1 (json) failed" not in notifier.log
    finally:
        silent.close()  # its waiting connection is reset: the send fails at once
    notifier.wait_for_log(r"sending alert yard-1 to push 1 \(json\) failed \(attempt 1\)")
    assert notifier.stop() == 0
    assert len(receiver.requests) == 2


def test_push_settings_that_cannot_work_stop_the_service_without_showing_them(
    rig: Rig, receiver: PushReceiver, tmp_path: Path
) -> None:
    base = {**rig.broker.env("notifier"), "NOTIFY_DATA_DIR": str(rig.data_dir)}
    secret_file = tmp_path / "urls"
    secret_file.write_text(json_url(receiver))
    for bad, expected in (
        (
            {"NOTIFY_URLS": f"{json_url(receiver)}, nosuchscheme://{NTFY_SECRET}@host/x"},
            "invalid setting NOTIFY_URLS: entry 2 is not an Apprise URL that Apprise can use",
        ),
        (
            {"NOTIFY_URLS": json_url(receiver), "NOTIFY_URLS_FILE": str(secret_file)},
            "invalid setting NOTIFY_URLS_FILE: set NOTIFY_URLS or NOTIFY_URLS_FILE, not both",
        ),
        (
            {"NOTIFY_URLS": f"{json_url(receiver)}\n{json_url(receiver)}"},
            "invalid setting NOTIFY_URLS: entry 2 repeats an earlier entry",
        ),
    ):
        process = rig.service("notifier", {**base, **bad})
        assert process.wait() == 2
        lines = process.log.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], process.log
        assert_no_secrets(process.log)


def test_an_outbox_from_before_push_channels_keeps_its_pending_alerts(
    rig: Rig, receiver: PushReceiver, jpeg: bytes
) -> None:
    rig.data_dir.mkdir(mode=0o700)
    now = time.time()
    with sqlite3.connect(rig.data_dir / "outbox.sqlite3") as db:  # the layout of the notifier before push
        db.execute(
            "CREATE TABLE alerts (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
            " camera TEXT NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, started_at REAL NOT NULL,"
            " snapshot BLOB, status TEXT NOT NULL, reason TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
            " next_attempt_at REAL, created_at REAL NOT NULL, sent_at REAL)"
        )
        db.execute("CREATE INDEX alerts_due ON alerts (status, next_attempt_at)")
        row = "INSERT INTO alerts VALUES (?, ?, 'old', 'person', 0.8, ?, ?, ?, ?, ?, ?, ?, ?)"
        db.execute(row, (1, "old-sent", now - 60, None, "sent", None, 1, now - 60, now - 60, now - 59))
        db.execute(row, (2, "old-pending", now - 5, jpeg, "pending", "SMTP down", 3, now, now - 5, None))
    notifier = rig.start(NOTIFY_URLS=json_url(receiver))
    mail = rig.smtp.wait_count(1)[0]
    assert mail.message["Message-ID"] == "<old-pending@sentrycam>" and mail.attachment()[1] == jpeg
    rig.event("new", "new-1", jpeg)
    assert receiver.wait_count(HOOK, 1)[0].json()["title"] == "SentryCam: person on camera new"
    rig.smtp.wait_count(2)
    wait_until(lambda: ("new-1", channel_key(json_url(receiver)), "sent") in outbox_rows(rig.data_dir))
    assert notifier.stop() == 0
    assert outbox_rows(rig.data_dir) == [
        ("new-1", "email", "sent"),
        ("new-1", channel_key(json_url(receiver)), "sent"),
        ("old-pending", "email", "sent"),
        ("old-sent", "email", "sent"),
    ]
    assert len(receiver.requests) == 1  # the old alerts were email's only


def test_an_outbox_from_before_alert_rules_gains_the_zone_and_keeps_its_pending_alert(
    tmp_path: Path, jpeg: bytes
) -> None:
    """The layout push channels brought (a snapshot in each row, no zone): the zone column is added, the
    pending alert stays due with its snapshot, and a new alert names its zone."""
    tmp_path.chmod(0o700)
    now = time.time()
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as db:
        db.execute(
            "CREATE TABLE alerts (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, channel TEXT NOT NULL,"
            " camera TEXT NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, started_at REAL NOT NULL,"
            " snapshot BLOB, status TEXT NOT NULL, reason TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
            " next_attempt_at REAL, created_at REAL NOT NULL, sent_at REAL, UNIQUE (event_id, channel))"
        )
        db.execute(
            "INSERT INTO alerts VALUES (1, 'old-pending', 'email', 'old', 'person', 0.8, ?, ?, 'pending',"
            " NULL, 1, ?, ?, NULL)",
            (now - 5, jpeg, now - 1, now - 5),
        )
    outbox = open_outbox(tmp_path, logging.getLogger("test"))
    [old] = outbox.due("email", now)
    assert (old.event_id, old.snapshot, old.zone) == ("old-pending", jpeg, None)
    stored = outbox.record(
        event_id="new-1",
        camera="front",
        label="person",
        score=0.8,
        started_at=now,
        snapshot=jpeg,
        status="pending",
        reason=None,
        channels=["email"],
        now=now,
        zone="porch",
    )
    assert stored
    assert [(alert.event_id, alert.zone) for alert in outbox.due("email", now)] == [
        ("old-pending", None),
        ("new-1", "porch"),
    ]
