"""Notifier latency: a ``start`` event published -> the email accepted by the SMTP server.

    .venv/bin/python -m bench.notifier [--events 50] [--security none ssl starttls] [--no-push]

Runs a private Mosquitto (the project's config), a real aiosmtpd server per security mode, and the notifier
as a child process. Baseline, measured in the same run against the same server: a bare yagmail send of an
email of the same size (connect, TLS, login, send). Prints p50/p95 of both and their ratio. Then the
push channels (bench/notifier_push.py): the event -> an HTTP receiver behind Apprise's json:// and
ntfy://, beside a bare Apprise notify (``--security`` with no mode: push only).
"""

from __future__ import annotations

import argparse
import logging
import ssl
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yagmail

from bench import notifier_push
from bench.results import Figure, Result, percentile, save
from scripts.localbroker import LocalBroker
from services.common import topics
from tests.notifier_support import RECIPIENTS, SMTP_USER, SmtpServer, snapshot_jpeg
from tests.support import Collector, ServiceProcess, detection_event

GOAL_P95_MS = 200.0


def baseline(server: SmtpServer, jpeg_path: Path, count: int) -> list[float]:
    """Seconds from starting a bare yagmail send (one connection per email, as the notifier does) to the
    server accepting the email."""
    context = ssl.create_default_context(cafile=str(server.cert_file) if server.cert_file else None)
    kwargs = {"context": context} if server.security == "ssl" else {}
    timings = []
    for index in range(count):
        before = len(server.mails)
        started = time.time()
        client = yagmail.SMTP(
            user=SMTP_USER,
            password=server.password,
            host="127.0.0.1",
            port=server.port,
            smtp_ssl=server.security == "ssl",
            smtp_starttls={"context": context} if server.security == "starttls" else False,
            **kwargs,
        )
        client.send(
            list(RECIPIENTS), f"baseline {index}", "body", attachments=[str(jpeg_path)], prettify_html=False
        )
        client.close()
        # Measured to the server's acceptance, as for the notifier (not to the end of QUIT).
        timings.append(server.wait_count(before + 1)[-1].at - started)
    return timings


def notifier_latency(
    server: SmtpServer, broker: LocalBroker, workdir: Path, jpeg: bytes, count: int
) -> list[float]:
    """Seconds from publishing a start event (each on its own camera) to the server accepting the email."""
    status = topics.service_status("notifier")
    publisher = Collector(broker, status)
    env = {
        **broker.env("notifier"),
        **server.env(),
        "NOTIFY_DATA_DIR": str(workdir / f"data-{server.security}"),
    }
    notifier = ServiceProcess("notifier", env, workdir).start()
    try:
        publisher.wait_for(status, lambda m: m.payload == b"online", timeout=15)
        timings = []
        for index in range(count):
            camera = f"bench-{server.security}-{index}"
            before = len(server.mails)
            started = time.time()
            publisher.publish(topics.event(camera, "person"), detection_event(camera, f"{camera}-e", jpeg))
            mail = server.wait_count(before + 1)[-1]
            timings.append(mail.at - started)
    finally:
        notifier.stop()
        publisher.close()
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--security", nargs="*", default=["none", "ssl", "starttls"])
    parser.add_argument("--no-push", action="store_true", help="leave out the push channels")
    args = parser.parse_args()
    # aiosmtpd's own warnings (AUTH on the ssl port, a deprecation) are noise here.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    jpeg = snapshot_jpeg()
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        jpeg_path = workdir / "front-person.jpg"
        jpeg_path.write_bytes(jpeg)
        broker = LocalBroker(workdir / "broker")
        broker.start()
        try:
            command = f"python -m bench.notifier --events {args.events} --security {' '.join(args.security)}"
            command += " --no-push" if args.no_push else ""
            result = Result("notifier", command)
            print(f"{args.events} events, snapshot {len(jpeg)} bytes, loopback")
            print(f"{'mode':9} {'baseline p50/p95 ms':>20} {'notifier p50/p95 ms':>20} {'ratio p50/p95':>14}")
            for security in args.security:
                server = SmtpServer(workdir, security).start()
                try:
                    base = baseline(server, jpeg_path, args.events)
                    ours = notifier_latency(server, broker, workdir, jpeg, args.events)
                finally:
                    server.stop()
                b50, b95 = percentile(base, 0.5) * 1000, percentile(base, 0.95) * 1000
                n50, n95 = percentile(ours, 0.5) * 1000, percentile(ours, 0.95) * 1000
                print(
                    f"{security:9} {b50:9.1f} / {b95:7.1f}  {n50:9.1f} / {n95:7.1f}  "
                    f"{n50 / b50:6.2f} / {n95 / b95:5.2f}   (notifier max {max(ours) * 1000:.1f} ms,"
                    f" mean {statistics.mean(ours) * 1000:.1f} ms)"
                )
                result.figures += figures(security, (b50, b95), (n50, n95))
                result.data[security] = {"baseline_ms": to_ms(base), "latency_ms": to_ms(ours)}
            if not args.no_push:
                push_figures, push_data = notifier_push.run(broker, workdir, jpeg, args.events)
                result.figures += push_figures
                result.data.update(push_data)
        finally:
            broker.stop()
    print(f"saved {save(result)}")
    return 0


def to_ms(seconds: list[float]) -> list[float]:
    return [round(s * 1000, 2) for s in seconds]


def figures(security: str, base: tuple[float, float], ours: tuple[float, float]) -> list[Figure]:
    """p50 and p95 of one mode beside the bare send; the goal is on p95."""
    return [
        Figure(
            f"{security}: event -> email p50", round(ours[0], 1), "ms", round(base[0], 1), "bare yagmail send"
        ),
        Figure(
            f"{security}: event -> email p95",
            round(ours[1], 1),
            "ms",
            round(base[1], 1),
            "bare yagmail send",
            "< 200 ms",
            ours[1] < GOAL_P95_MS,
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
