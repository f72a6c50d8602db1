"""Web relay benchmark: one camera at 10 fps (640x480 frames of the shared footage), 1, 10 and 50
concurrent viewers of the live page of the relay running as its own process: each viewer holds what the page
holds, the camera's MJPEG stream and the page's Server-Sent Events (the cards' clocks, once a second).

    .venv/bin/python -m bench.web [--seconds 20] [--viewers 1,10,50]

Per phase: share of the published frames each viewer got (min and mean over viewers), delay from the
frame's arrival at the relay (MQTT) to the viewer p50/p95, the relay's CPU seconds per viewer-minute and its
resident memory. Ratios are against baselines measured in the same run: the idle relay (no viewer) for CPU
and memory, the 1-viewer phase for delay.
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.results import Figure, Result, save
from scripts.localbroker import LocalBroker, free_port
from tests.support import REPO_ROOT, Collector, footage_frames, service_env
from tests.web_support import PASSWORD, USERNAME

CAMERA = "bench"
FPS = 10.0
WARMUP_S = 2.0
GOAL_SHARE = 0.95  # of the published frames, for every viewer
GOAL_P95_MS = 50.0


def clock_ticks(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match
    return int(match.group(1)) / 1024


def log_in(base: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    html = opener.open(f"{base}/login").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token
    form = urllib.parse.urlencode({"username": USERNAME, "password": PASSWORD, "csrf_token": token.group(1)})
    opener.open(f"{base}/login", data=form.encode())
    cookie = next(c for c in jar if c.name == "sentrycam_session")
    return f"{cookie.name}={cookie.value}"


async def viewer(
    port: int, cookie: str, until: float, parts: list[tuple[int, float, float]], camera: str = CAMERA
) -> None:
    """Read the stream, recording (camera seq, arrival at the relay ms, received here ms) per part."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /cam/{camera}/live.mjpg HTTP/1.0\r\nHost: bench\r\nCookie: {cookie}\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")  # response headers; HTTP/1.0, so the body is not chunked
    try:
        while time.time() < until:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            received = time.time() * 1000
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line)
            await reader.readexactly(int(headers["Content-Length"]) + 2)
            parts.append((int(headers["X-Frame-Seq"]), float(headers["X-Arrived-Ms"]), received))
    finally:
        writer.close()


async def page_events(port: int, cookie: str, until: float, clocks: list[float]) -> None:
    """Read the page's event stream as the live page does, recording when each clock message came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/stream HTTP/1.0\r\nHost: bench\r\nCookie: {cookie}\r\n\r\n".encode())
    await writer.drain()
    try:
        while (left := until - time.time()) > 0:
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=left)
            except TimeoutError:
                break
            if line.startswith(b"event: clock"):
                clocks.append(time.time())
    finally:
        writer.close()


async def watch(
    port: int, cookie: str, viewers: int, seconds: float
) -> tuple[list[list[tuple[int, float, float]]], list[list[float]]]:
    until = time.time() + seconds
    results: list[list[tuple[int, float, float]]] = [[] for _ in range(viewers)]
    clocks: list[list[float]] = [[] for _ in range(viewers)]
    await asyncio.gather(
        *(viewer(port, cookie, until, parts) for parts in results),
        *(page_events(port, cookie, until, times) for times in clocks),
    )
    return results, clocks


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def figures(count: int, phase: dict[str, Any], p95_base: float, idle_rss: float) -> list[Figure]:
    """One phase: the worst viewer's share of frames and the delay (goals), memory beside the idle relay."""
    worst = min(phase["shares"])
    viewers = f"{count} viewer{'s' if count > 1 else ''}"
    return [
        Figure(
            f"{viewers}: frames, worst viewer",
            round(worst * 100, 1),
            "%",
            100.0,
            "published",
            f">= {GOAL_SHARE:.0%}",
            worst >= GOAL_SHARE,
        ),
        Figure(
            f"{viewers}: delay p95",
            round(phase["p95_ms"], 1),
            "ms",
            round(p95_base, 1),
            "1 viewer",
            f"< {GOAL_P95_MS:g} ms",
            phase["p95_ms"] < GOAL_P95_MS,
        ),
        Figure(f"{viewers}: relay memory", round(phase["rss_mb"], 1), "MB", round(idle_rss, 1), "no viewer"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--viewers", default="1,10,50")
    parser.add_argument(
        "--server", choices=("waitress", "cheroot"), default="waitress", help="cheroot: for comparison only"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.viewers.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    broker = LocalBroker(workdir / "broker")
    broker.start()
    port = free_port()
    env = service_env(
        {
            **broker.env("web"),
            "WEB_USERNAME": USERNAME,
            "WEB_PASSWORD": PASSWORD,
            "WEB_PORT": str(port),
            "WEB_HOST": "127.0.0.1",
            "WEB_DATA_DIR": str(workdir / "web"),
            "LOG_LEVEL": "WARNING",
            # Each viewer's page holds two connections (the stream and its events), and so two threads.
            "WEB_THREADS": str(2 * max(counts) + 10),
        }
    )
    module = "services.web" if args.server == "waitress" else "bench.web_cheroot"
    env["PYTHONPATH"] = str(REPO_ROOT)
    relay = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=workdir)
    publisher = Collector(broker)
    publisher.announce(CAMERA)
    frames = footage_frames(count=50, step=2)
    stop = threading.Event()

    def publish() -> None:
        next_at = time.monotonic()
        index = 0
        while not stop.is_set():
            publisher.frame(CAMERA, frames[index % len(frames)])
            index += 1
            next_at += 1 / FPS
            time.sleep(max(0.0, next_at - time.monotonic()))

    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        cookie = log_in(base)
        threading.Thread(target=publish, daemon=True).start()
        time.sleep(WARMUP_S)

        cpu0 = clock_ticks(relay.pid)
        time.sleep(args.seconds)
        idle_cpu_per_min = (clock_ticks(relay.pid) - cpu0) / args.seconds * 60
        idle_rss = rss_mb(relay.pid)
        print(
            f"server {args.server}; frame size {statistics.mean(len(f) for f in frames) / 1024:.0f} KiB, "
            f"{FPS:.0f} fps, "
            f"{args.seconds:.0f} s per phase"
        )
        print(f"baseline (no viewer): relay CPU {idle_cpu_per_min:.2f} s/min, RSS {idle_rss:.1f} MB")
        print(
            "| viewers | frames per viewer, min / mean | delay p50 / p95 ms (x 1-viewer) "
            "| CPU s per viewer-min (above idle) | RSS MB (x idle) |"
        )
        print("| --- | --- | --- | --- | --- |")
        delay_base: tuple[float, float] | None = None
        result = Result(
            "web" if args.server == "waitress" else f"web-{args.server}",
            f"python -m bench.web --seconds {args.seconds:g} --viewers {args.viewers} --server {args.server}",
            data={"idle_cpu_s_per_min": idle_cpu_per_min, "idle_rss_mb": idle_rss, "phases": []},
        )
        for count in counts:
            cpu0 = clock_ticks(relay.pid)
            seq0 = publisher.seq
            results, clocks = asyncio.run(watch(port, cookie, count, args.seconds + WARMUP_S))
            cpu = clock_ticks(relay.pid) - cpu0
            rss = rss_mb(relay.pid)
            # Judge the steady window: from WARMUP_S after start to shortly before the end.
            first = seq0 + int(WARMUP_S * FPS)
            last = seq0 + int((args.seconds + WARMUP_S) * FPS) - 5
            expected = last - first
            shares = [len({s for s, _a, _r in parts if first <= s < last}) / expected for parts in results]
            delays = [r - a for parts in results for s, a, r in parts if first <= s < last]
            p50, p95 = percentile(delays, 0.5), percentile(delays, 0.95)
            if delay_base is None:
                delay_base = (p50, p95)
            extra_cpu = max(0.0, cpu - idle_cpu_per_min * (args.seconds + WARMUP_S) / 60)
            per_viewer_min = extra_cpu / count / ((args.seconds + WARMUP_S) / 60)
            print(
                f"| {count} | {min(shares):.1%} / {statistics.mean(shares):.1%} "
                f"| {p50:.1f} / {p95:.1f} ({p50 / delay_base[0]:.2f}x / {p95 / delay_base[1]:.2f}x) "
                f"| {per_viewer_min:.3f} ({cpu / (args.seconds + WARMUP_S) * 60:.1f} s/min in all) "
                f"| {rss:.1f} ({rss / idle_rss:.2f}x) |",
                flush=True,
            )
            # The cards' clocks: the clock messages each page got per second of the steady window.
            window = (time.time() - args.seconds, time.time() - 1)
            clock_rates = [
                len([t for t in times if window[0] <= t < window[1]]) / (window[1] - window[0])
                for times in clocks
            ]
            print(
                f"  clock messages per page-second, min / mean: {min(clock_rates):.2f} / "
                f"{statistics.mean(clock_rates):.2f}",
                flush=True,
            )
            phase = {
                "viewers": count,
                "shares": shares,
                "p50_ms": p50,
                "p95_ms": p95,
                "rss_mb": rss,
                "clock_per_s_min": min(clock_rates),
            }
            result.data["phases"].append({**phase, "cpu_s_per_viewer_min": per_viewer_min})
            result.figures += figures(count, phase, delay_base[1], idle_rss)
        print(f"saved {save(result)}")
    finally:
        stop.set()
        relay.terminate()
        relay.wait(15)
        publisher.forget(CAMERA)
        publisher.close()
        broker.stop()


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    main()
