"""Soak: every service for half an hour, with 4 cameras and a few viewers; does anything grow or get lost?

    .venv/bin/python -m bench.soak [--minutes 30] [--warmup 60] [--sample 15]

A real Mosquitto with the project's config, and each service as its own process, as in production: 4 cameras
(``python -m services.camera``) looping the shared person footage at 5 fps, the detector
(``DETECTOR_END_AFTER=2``, so that every person who walks in makes an event of their own), the notifier
(default cooldown) on a real aiosmtpd server, its deterrent played by each camera through mpv with a null
audio output, and the web relay with 3 viewers of the live streams. Reported:

- each service's resident memory (VmRSS) and open file descriptors after the warm-up and at the end, sampled
  every ``--sample`` seconds (the series goes into the saved result for a plot). Goal: growth under 10 %;
- the start events published (an admin subscriber), the emails received and the relay's timeline entries
  (``/api/events``) at the end: emails must be exactly the start events the notifier's cooldown rule lets
  through, and the timeline must hold every start event;
- that every service still runs, and the frames each viewer got per second (the cameras send 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bench.detector import rss_mb
from bench.results import Figure, Result, save
from bench.web import log_in, viewer
from scripts.localbroker import LocalBroker, free_port
from services.common import schemas, topics
from tests.notifier_support import SmtpServer
from tests.support import PERSON_VIDEO, Collector
from tests.system_support import ServiceRun, Timeline, detector_env, mail_ids
from tests.web_support import PASSWORD, USERNAME

CAMERAS = ("soak-1", "soak-2", "soak-3", "soak-4")
SERVERS = ("detector", "notifier", "web")
VIEWERS = 3
COOLDOWN_S = 60.0  # the notifier's default NOTIFY_COOLDOWN, set explicitly so the check below knows it
GROWTH_GOAL = 0.10
ALARM_PLAYER = "mpv --really-quiet --no-video --ao=null"  # a real player, with no sound card needed


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Services:
    """The cameras, detector, notifier and web relay as processes, each in a directory of its own."""

    def __init__(self, workdir: Path, broker: LocalBroker, smtp: SmtpServer) -> None:
        self.port = free_port()
        self.codes: dict[str, int] = {}

        def run(name: str, folder: str, env: dict[str, str]) -> ServiceRun:
            (workdir / folder).mkdir()
            return ServiceRun(name, env, workdir / folder)

        self.runs = {
            "detector": run("detector", "detector", detector_env(broker, DETECTOR_END_AFTER="2")),
            "notifier": run(
                "notifier",
                "notifier",
                {
                    **broker.env("notifier"),
                    **smtp.env(),
                    "NOTIFY_DATA_DIR": str(workdir / "notifier" / "data"),
                    "NOTIFY_COOLDOWN": str(COOLDOWN_S),
                },
            ),
            "web": run(
                "web",
                "web",
                {
                    **broker.env("web"),
                    "WEB_DATA_DIR": str(workdir / "web" / "data"),
                    "WEB_HOST": "127.0.0.1",
                    "WEB_PORT": str(self.port),
                    "WEB_USERNAME": USERNAME,
                    "WEB_PASSWORD": PASSWORD,
                },
            ),
        }
        for camera in CAMERAS:
            self.runs[camera] = run(
                "camera",
                camera,
                {
                    **broker.camera_env(camera),
                    "CAMERA_ID": camera,
                    "CAMERA_SOURCE": str(PERSON_VIDEO),
                    "CAMERA_LOOP": "true",
                    "CAMERA_FPS": "5",
                    "ALARM_PLAYER": ALARM_PLAYER,
                },
            )

    def start(self, watcher: Collector) -> None:
        since = time.time()
        for name in SERVERS:
            self.runs[name].start()
        for name in SERVERS:
            watcher.online(topics.service_status(name), since, timeout=60)
        for camera in CAMERAS:
            self.runs[camera].start()
        for camera in CAMERAS:
            watcher.online(topics.status(camera), since, timeout=30)

    def sample(self) -> dict[str, tuple[float, int]]:
        """(RSS MB, open fds) of each service that runs."""
        return {
            name: (rss_mb(run.pid), open_fds(run.pid)) for name, run in self.runs.items() if run.running()
        }

    def stop(self, names: tuple[str, ...]) -> None:
        """SIGTERM, as ``docker stop`` sends it; exit codes in ``codes``."""
        for name in names:
            if self.runs[name].running():
                self.codes[name] = self.runs[name].stop()


def watch_streams(port: int, until: float, frames: list[int], reconnects: list[int]) -> None:
    """VIEWERS viewers of the cameras' live streams until ``until``; each reconnects if its stream ends."""
    cookie = log_in(f"http://127.0.0.1:{port}")

    async def one(index: int) -> None:
        while time.time() < until:
            parts: list[tuple[int, float, float]] = []
            try:
                await viewer(port, cookie, until, parts, camera=CAMERAS[index % len(CAMERAS)])
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                reconnects[index] += 1
                await asyncio.sleep(1)
            frames[index] += len(parts)

    async def all_viewers() -> None:
        await asyncio.gather(*(one(i) for i in range(VIEWERS)))

    asyncio.run(all_viewers())


def emailed_by_rule(starts: list[schemas.DetectionEvent]) -> set[str]:
    """The start events the notifier emails (docs/notifier.md): per camera, in the order they came, one
    whose start is within the cooldown of the last emailed one is recorded, not emailed."""
    last: dict[str, float] = {}
    emailed = set()
    for event in starts:
        previous = last.get(event.camera)
        if previous is None or abs(event.started_at - previous) >= COOLDOWN_S:
            last[event.camera] = event.started_at
            emailed.add(event.event_id)
    return emailed


def timeline_ids(timeline: Timeline) -> set[str]:
    """Every event id on the relay's timeline, page by page (the oldest last)."""
    found: set[str] = set()
    for camera in CAMERAS:
        before = ""
        while True:
            _type, body = timeline.get(f"/api/events?camera={camera}&limit=100{before}")
            page = json.loads(body)
            found |= {event["event_id"] for event in page}
            if len(page) < 100:
                break
            before = f"&before={page[-1]['started_at']}"
    return found


def growth_figures(first: dict[str, tuple[float, int]], last: dict[str, tuple[float, int]]) -> list[Figure]:
    found = []
    for name, (rss0, fds0) in first.items():
        rss1, fds1 = last.get(name, (float("nan"), -1))
        found += [
            Figure(
                f"{name}: resident memory at the end",
                round(rss1, 1),
                "MB",
                round(rss0, 1),
                "after the warm-up",
                f"< +{GROWTH_GOAL:.0%}",
                rss1 < rss0 * (1 + GROWTH_GOAL),
            ),
            Figure(
                f"{name}: open file descriptors at the end",
                fds1,
                "",
                fds0,
                "after the warm-up",
                f"< +{GROWTH_GOAL:.0%}",
                0 <= fds1 < fds0 * (1 + GROWTH_GOAL),
            ),
        ]
    return found


def count_figures(starts: list[schemas.DetectionEvent], mails: list[str], timeline: set[str]) -> list[Figure]:
    ids = {event.event_id for event in starts}
    expected = emailed_by_rule(starts)
    return [
        Figure("start events", len(starts), "", goal="> 0", met=bool(starts)),
        Figure(
            "emails",
            len(mails),
            "",
            len(expected),
            "starts outside the cooldown",
            "the same events",
            set(mails) == expected and len(mails) == len(expected),
        ),
        Figure(
            "timeline entries",
            len(timeline),
            "",
            len(ids),
            "start events",
            "the same events",
            timeline == ids,
        ),
    ]


@dataclass
class Samples:
    """(RSS MB, open fds) of each service over the run; ``first`` is the first sample after the warm-up."""

    t_s: list[float] = field(default_factory=list)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    fds: dict[str, list[int]] = field(default_factory=dict)
    first: dict[str, tuple[float, int]] = field(default_factory=dict)
    last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def add(self, t_s: float, sample: dict[str, tuple[float, int]]) -> None:
        self.t_s.append(round(t_s, 1))
        for name, (mb, count) in sample.items():
            self.rss_mb.setdefault(name, []).append(round(mb, 1))
            self.fds.setdefault(name, []).append(count)
        self.last = sample


def sample_until(services: Services, began: float, args: argparse.Namespace) -> Samples:
    samples = Samples()
    until = began + args.minutes * 60
    while (now := time.time()) < until:
        samples.add(now - began, services.sample())
        if not samples.first and now - began >= args.warmup:
            samples.first = samples.last
            print(f"after the warm-up ({now - began:.0f} s): {format_sample(samples.first)}", flush=True)
        time.sleep(min(args.sample, max(0.0, until - time.time())))
    samples.add(time.time() - began, services.sample())
    print(f"at the end ({time.time() - began:.0f} s): {format_sample(samples.last)}", flush=True)
    return samples


@dataclass
class Counts:
    starts: list[schemas.DetectionEvent]
    mails: list[str]
    timeline: set[str]


def count_at_end(services: Services, watcher: Collector, smtp: SmtpServer) -> Counts:
    """The cameras stop; once the last events have ended (2 s) and been emailed and stored, the counts."""
    services.stop(CAMERAS)
    time.sleep(10)
    events = [schemas.DetectionEvent.parse(m.payload) for m in watcher.on(topics.all_events("person"))]
    return Counts(
        [event for event in events if event.type == "start"],
        mail_ids(smtp.mails),
        timeline_ids(Timeline(services.port, USERNAME, PASSWORD)),
    )


def soak(args: argparse.Namespace, workdir: Path) -> Result:
    broker = LocalBroker(workdir / "broker")
    broker.start()
    smtp = SmtpServer(workdir, "none").start()
    statuses = [topics.status(c) for c in CAMERAS] + [topics.service_status(n) for n in SERVERS]
    watcher = Collector(broker, topics.all_events("person"), *statuses)
    services = Services(workdir, broker, smtp)
    frames, reconnects = [0] * VIEWERS, [0] * VIEWERS
    try:
        services.start(watcher)
        began = time.time()
        viewers = threading.Thread(
            target=watch_streams,
            args=(services.port, began + args.minutes * 60, frames, reconnects),
            daemon=True,  # an interrupted soak must not wait for the viewers
        )
        viewers.start()
        samples = sample_until(services, began, args)
        running = sum(run.running() for run in services.runs.values())
        viewers.join()
        counts = count_at_end(services, watcher, smtp)
    finally:
        services.stop(tuple(services.runs))
        watcher.close()
        smtp.stop()
        broker.stop()
    fps = [round(f / (args.minutes * 60), 2) for f in frames]
    clean = sum(code == 0 for code in services.codes.values())
    print(f"exit codes {services.codes}; viewers got {fps} frames/s, reconnected {reconnects} times")
    figures = [
        Figure(
            "services running at the end",
            running,
            "",
            len(services.runs),
            "started",
            "all",
            running == len(services.runs),
        ),
        Figure(
            "clean stops (exit 0 on SIGTERM)",
            clean,
            "",
            len(services.runs),
            "started",
            "all",
            clean == len(services.runs),
        ),
        *count_figures(counts.starts, counts.mails, counts.timeline),
        *growth_figures(samples.first or samples.last, samples.last),
        *(
            Figure(f"viewer {i + 1}: frames per second", f, "fps", 5.0, "camera fps")
            for i, f in enumerate(fps)
        ),
    ]
    show(figures)
    data = {"minutes": args.minutes, "warmup_s": args.warmup, "t_s": samples.t_s}
    return Result(
        "soak",
        f"python -m bench.soak --minutes {args.minutes:g}",
        figures,
        data={**data, "rss_mb": samples.rss_mb, "fds": samples.fds},
    )


def show(figures: list[Figure]) -> None:
    for figure in figures:
        verdict = "" if figure.met is None else (" (met)" if figure.met else " (NOT met)")
        against = f" vs {figure.baseline:g} {figure.baseline_name}" if figure.baseline is not None else ""
        print(f"{figure.name}: {figure.value:g} {figure.unit}{against}{verdict}")


def format_sample(sample: dict[str, tuple[float, int]]) -> str:
    return ", ".join(f"{name} {mb:.0f} MB {count} fds" for name, (mb, count) in sample.items())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the first sample counts")
    parser.add_argument("--sample", type=float, default=15.0, help="seconds between samples")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # aiosmtpd's own warnings
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    print(f"soak for {args.minutes:g} min; logs in {workdir}", flush=True)
    result = soak(args, workdir)
    print(f"saved {save(result)}")
    if all(figure.met is not False for figure in result.figures):
        shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
