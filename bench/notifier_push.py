"""The push part of ``bench/notifier.py``: a ``start`` event published -> a real HTTP receiver having the
alert, through Apprise's ``json://`` and ``ntfy://`` (the snapshot attached), p50/p95 over the events.

Baseline, measured in the same run against the same receiver: a bare Apprise notify of the same alert (a new
``Apprise`` object per send, as the notifier makes a new plugin per alert). Goal (issue 13): p95 < 200 ms and
at most 1.5x the bare send.
"""

from __future__ import annotations

import time
from pathlib import Path

import apprise
from apprise.attachment.memory import AttachMemory

from bench.results import Figure
from scripts.localbroker import LocalBroker
from services.common import topics
from tests.notifier_support import PushReceiver
from tests.support import Collector, ServiceProcess, detection_event

GOAL_P95_MS = 200.0
GOAL_RATIO = 1.5
# Each scheme and the receiver path its alerts arrive on.
SCHEMES = {"json": "/alerts", "ntfy": "/sentrycam"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def urls(receiver: PushReceiver) -> dict[str, str]:
    return {"json": receiver.json_url("alerts"), "ntfy": receiver.ntfy_url("sentrycam")}


def bare_send(receiver: PushReceiver, scheme: str, jpeg: bytes, count: int) -> list[float]:
    """Seconds from starting a bare Apprise notify to the receiver having the request."""
    path, url = SCHEMES[scheme], urls(receiver)[scheme]
    timings = []
    for index in range(count):
        before = len(receiver.on(path))
        started = time.time()
        sender = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
        sender.add(url)
        name = f"bench-{index}-person.jpg"
        memory = AttachMemory(content=jpeg, name=name, mimetype="image/jpeg")  # type: ignore[no-untyped-call]
        text = f"A person was seen by camera bench-{index}.\nTime: {time.ctime()}\nScore: 71 %"
        sender.notify(body=text, title="SentryCam: person", attach=apprise.AppriseAttachment(memory))
        timings.append(receiver.wait_count(path, before + 1)[-1].at - started)
    return timings


def notifier_latency(
    receiver: PushReceiver, broker: LocalBroker, workdir: Path, jpeg: bytes, count: int
) -> dict[str, list[float]]:
    """Per scheme, seconds from publishing a start event (each on its own camera, so no cooldown) to the
    receiver having the alert; both channels set, email off."""
    status = topics.service_status("notifier")
    publisher = Collector(broker, status)
    env = {
        **broker.env("notifier"),
        "NOTIFY_URLS": ",".join(urls(receiver).values()),
        "NOTIFY_DATA_DIR": str(workdir / "data-push"),
    }
    notifier = ServiceProcess("notifier", env, workdir).start()
    timings: dict[str, list[float]] = {scheme: [] for scheme in SCHEMES}
    try:
        publisher.wait_for(status, lambda m: m.payload == b"online", timeout=15)
        for index in range(count):
            camera = f"bench-push-{index}"
            before = {scheme: len(receiver.on(path)) for scheme, path in SCHEMES.items()}
            started = time.time()
            publisher.publish(topics.event(camera, "person"), detection_event(camera, f"{camera}-e", jpeg))
            for scheme, path in SCHEMES.items():
                timings[scheme].append(receiver.wait_count(path, before[scheme] + 1)[-1].at - started)
    finally:
        notifier.stop()
        publisher.close()
    return timings


def run(
    broker: LocalBroker, workdir: Path, jpeg: bytes, count: int
) -> tuple[list[Figure], dict[str, object]]:
    """Prints a line per scheme; returns the figures and the series for the notifier's Result."""
    receiver = PushReceiver().start()
    try:
        base = {scheme: bare_send(receiver, scheme, jpeg, count) for scheme in SCHEMES}
        ours = notifier_latency(receiver, broker, workdir, jpeg, count)
    finally:
        receiver.stop()
    figures: list[Figure] = []
    data: dict[str, object] = {}
    print(f"{'push':9} {'bare Apprise p50/p95 ms':>24} {'notifier p50/p95 ms':>20} {'ratio p50/p95':>14}")
    for scheme in SCHEMES:
        b50, b95 = (percentile(base[scheme], share) * 1000 for share in (0.5, 0.95))
        n50, n95 = (percentile(ours[scheme], share) * 1000 for share in (0.5, 0.95))
        print(
            f"{scheme:9} {b50:11.1f} / {b95:7.1f}  {n50:11.1f} / {n95:7.1f}  "
            f"{n50 / b50:6.2f} / {n95 / b95:5.2f}"
        )
        figures += [
            Figure(
                f"push {scheme}: event -> receiver p50",
                round(n50, 1),
                "ms",
                round(b50, 1),
                "bare Apprise notify",
            ),
            Figure(
                f"push {scheme}: event -> receiver p95",
                round(n95, 1),
                "ms",
                round(b95, 1),
                "bare Apprise notify",
                f"< 200 ms and <= {GOAL_RATIO}x the bare send",
                n95 < GOAL_P95_MS and n95 <= GOAL_RATIO * b95,
            ),
        ]
        data[f"push-{scheme}"] = {"baseline_ms": to_ms(base[scheme]), "latency_ms": to_ms(ours[scheme])}
    return figures, data


def to_ms(seconds: list[float]) -> list[float]:
    return [round(s * 1000, 2) for s in seconds]
