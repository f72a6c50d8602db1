"""Detector benchmark: the service against the bare interpreter, in one run, on the real model and footage.

    .venv/bin/python -m bench.detector [--threads 2] [--seconds 15]

A real Mosquitto (the project's config) is started here; the detector runs as ``python -m services.detector``
exactly as in production; a camera-like publisher sends JPEG frames of the real footage with the camera's
metadata. Reported:

1. Pipeline efficiency: inferences per second of the service while the publisher sends frames faster than
   it can infer (motion gating off), divided by the bare interpreter's frames per second on the same
   frames, model and threads (``invoke()`` alone, and with the service's own pre-processing). Goal >= 0.9.
   Run with 1 and with 2 interpreter threads (``--pipeline-threads``). Also reported: the CPU ceiling, the
   best ratio the machine's cores allow once the CPU the whole pipeline spends per inference (detector,
   broker and publisher) is counted against the CPU a bare ``invoke()`` needs.
2. Latency: capture time of the frame that completes the confirmation -> ``start`` event at a subscriber,
   p50/p95 over repeated events, against the bare inference time. Goal: p50 <= inference + 15 ms.
   Time to alert: first frame of the footage that shows the person (frame 62) -> ``start`` event, at 5 fps.
   Goal: under 1 s.
3. Motion gating: CPU seconds per minute of the detector on a static scene (the real empty room) at 10 fps,
   with gating against without. Goal <= 0.2.
4. Resident memory (VmRSS) of the detector serving 1 camera and 8 cameras.
5. Contention: the bare ``invoke()`` time with 1 and 2 threads, alone and while another process decodes
   JPEG frames on one core (what the service's preparing thread, the broker and a camera do beside it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.detector.model import Detector
from tests.detector_support import MODEL, FramePublisher
from tests.support import MODEL_DIR, PERSON_VIDEO, Collector, ServiceProcess, jpeg, read_frames

FIRST_PERSON_FRAME = 62
CLOCK_TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_detector(broker: LocalBroker, workdir: Path, **settings: str) -> ServiceProcess:
    status = Collector(broker, topics.service_status("detector"))
    env = {
        **broker.env("detector"),
        "DETECTOR_MODEL": str(MODEL),
        "DETECTOR_STATS_INTERVAL": "1",
        **{key.upper(): value for key, value in settings.items()},
    }
    process = ServiceProcess("detector", env, workdir).start()
    deadline = time.monotonic() + 60
    while not [
        m for m in status.on(topics.service_status("detector")) if m.payload == b"online" and not m.retain
    ]:
        if time.monotonic() > deadline:
            raise RuntimeError(process.log[-2000:])
        time.sleep(0.05)
    status.close()
    return process


@dataclass(frozen=True)
class Bare:
    invoke_fps: float  # invoke() only
    full_fps: float  # pre-processing + invoke()
    invoke_ms: float  # median
    invoke_cpu_ms: float  # CPU time of the process per invoke(), all interpreter threads together


def bare_fps(frames: list[np.ndarray], threads: int, min_seconds: float = 3.0) -> Bare:
    """invoke() only, and pre-processing + invoke, on the same frames, each for at least ``min_seconds``
    after a second of warm-up (the first second of a fresh interpreter runs slow)."""
    detector = Detector(MODEL, MODEL_DIR / "labelmap.txt", threads)
    prepared = [detector.prepare(frame) for frame in frames]
    warm_until = time.perf_counter() + 1.0
    while time.perf_counter() < warm_until:
        detector.infer(prepared[0], 0.4)
    times = []
    started, cpu_started = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < min_seconds:
        for rgb in prepared:
            t0 = time.perf_counter()
            detector.infer(rgb, 0.4)
            times.append(time.perf_counter() - t0)
    invoke_fps = len(times) / (time.perf_counter() - started)
    invoke_cpu_ms = (time.process_time() - cpu_started) / len(times) * 1000
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        for frame in frames:
            detector.detect(frame, 0.4)
        done += len(frames)
    full_fps = done / (time.perf_counter() - started)
    return Bare(invoke_fps, full_fps, statistics.median(times) * 1000, invoke_cpu_ms)


def decode_forever(payloads: list[bytes]) -> None:
    """A process that keeps one core busy decoding frames, as the rest of the pipeline does."""
    cv2.setNumThreads(1)
    buffers = [np.frombuffer(payload, np.uint8) for payload in payloads]
    while True:
        for buffer in buffers:
            cv2.imdecode(buffer, cv2.IMREAD_COLOR)


def contention(frames: list[np.ndarray], payloads: list[bytes], threads: int) -> tuple[float, float]:
    """Median invoke() ms alone, and with a decoding process beside it."""
    alone = bare_fps(frames, threads, min_seconds=2.0).invoke_ms
    decoder = multiprocessing.get_context("spawn").Process(target=decode_forever, args=(payloads,))
    decoder.start()
    try:
        time.sleep(1.0)  # the child imports numpy and OpenCV first
        shared = bare_fps(frames, threads, min_seconds=2.0).invoke_ms
    finally:
        decoder.kill()
        decoder.join()
    return alone, shared


def blast(publisher: FramePublisher, payloads: list[bytes], fps: float, stop: threading.Event) -> None:
    index = 0
    start = time.monotonic()
    while not stop.is_set():
        delay = start + index / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        publisher.send(payloads[index % len(payloads)])
        index += 1


def stats_of(collector: Collector, camera: str) -> list[tuple[float, schemas.CameraStats]]:
    found = []
    for message in collector.on(topics.DETECTOR_STATS):
        stats = schemas.DetectorStats.parse(message.payload)
        if camera in stats.cameras:
            found.append((stats.published_at, stats.cameras[camera]))
    return found


def pipeline(
    broker: LocalBroker, workdir: Path, payloads: list[bytes], *, threads: int, seconds: float, rate: float
) -> dict[str, float]:
    camera = "bench-pipe"
    watch = Collector(broker, topics.DETECTOR_STATS)
    detector = start_detector(broker, workdir, detector_motion="false", detector_threads=str(threads))
    publisher = FramePublisher(broker, camera)
    stop = threading.Event()
    thread = threading.Thread(target=blast, args=(publisher, payloads, rate, stop))
    thread.start()
    time.sleep(3)  # warm-up
    assert detector.process is not None and broker.pid is not None
    pids = (detector.process.pid, broker.pid)
    begin = stats_of(watch, camera)[-1]
    cpu_begin = sum(cpu_seconds(pid) for pid in pids) + time.process_time()
    time.sleep(seconds)
    end = stats_of(watch, camera)[-1]
    cpu_end = sum(cpu_seconds(pid) for pid in pids) + time.process_time()
    stop.set()
    thread.join()
    detector.stop()
    publisher.close()
    watch.close()
    elapsed = end[0] - begin[0]
    inferences = end[1].inferences - begin[1].inferences
    return {
        "service_fps": inferences / elapsed,
        # Detector, broker and publisher (this process) together; the stats' window is the same span.
        "cpu_ms_per_inference": (cpu_end - cpu_begin) / inferences * 1000,
        "in_fps": (end[1].frames_in - begin[1].frames_in) / elapsed,
        "stale_fraction": (end[1].frames_stale - begin[1].frames_stale)
        / max(end[1].frames_in - begin[1].frames_in, 1),
        "frame_age_p50": end[1].frame_age_ms_p50 or 0.0,
        "frame_age_p95": end[1].frame_age_ms_p95 or 0.0,
        "inference_ms_p50": end[1].inference_ms_p50 or 0.0,
    }


def latency(
    broker: LocalBroker, workdir: Path, clips: tuple[list[bytes], list[bytes]], threads: int, rounds: int
) -> list[float]:
    """Person for a second, empty room until the event ended, again and again: start latency each time."""
    camera = "bench-latency"
    watch = Collector(broker, topics.event(camera, "person"))
    detector = start_detector(
        broker, workdir, detector_threads=str(threads), detector_end_after="0.5", detector_cameras=camera
    )
    publisher = FramePublisher(broker, camera)
    person, empty = clips
    for _ in range(rounds):
        publisher.stream(person, 10.0)
        publisher.stream(empty, 10.0)
    time.sleep(1)
    latencies = []
    for message in watch.on(topics.event(camera, "person")):
        event = schemas.DetectionEvent.parse(message.payload)
        if event.type == "start":
            latencies.append((message.at - event.frame_time) * 1000)
    detector.stop()
    publisher.close()
    watch.close()
    return latencies


def time_to_alert(broker: LocalBroker, workdir: Path, clip: list[bytes], runs: int) -> list[float]:
    """The footage from the empty room to the person, at 5 fps: first person frame -> start event."""
    results = []
    detector = start_detector(broker, workdir)
    for run in range(runs):
        camera = f"bench-alert-{run}"
        watch = Collector(broker, topics.event(camera, "person"))
        publisher = FramePublisher(broker, camera)
        publisher.stream(clip[0 : FIRST_PERSON_FRAME - 20 : 2], 5.0)  # empty room first
        first_person_seq = publisher.seq + (FIRST_PERSON_FRAME - (FIRST_PERSON_FRAME - 20)) // 2
        publisher.stream(clip[FIRST_PERSON_FRAME - 20 : FIRST_PERSON_FRAME + 30 : 2], 5.0)
        message = watch.wait_for(
            topics.event(camera, "person"), lambda m: b'"start"' in m.payload, timeout=10
        )
        results.append((message.at - publisher.sent_at[first_person_seq] / 1000) * 1000)
        publisher.close()
        watch.close()
    detector.stop()
    return results


def static_cpu(
    broker: LocalBroker, workdir: Path, static: list[bytes], seconds: float, gating: bool
) -> float:
    camera = f"bench-static-{'on' if gating else 'off'}"
    detector = start_detector(broker, workdir, detector_motion=str(gating).lower(), detector_cameras=camera)
    assert detector.process is not None
    publisher = FramePublisher(broker, camera)
    publisher.stream(static[:20], 10.0)  # warm-up: background learnt, first inferences done
    before = cpu_seconds(detector.process.pid)
    started = time.monotonic()
    repeats = int(seconds * 10 / len(static)) + 1
    publisher.stream((static + static[::-1]) * repeats, 10.0)
    used = cpu_seconds(detector.process.pid) - before
    elapsed = time.monotonic() - started
    detector.stop()
    publisher.close()
    return used / elapsed * 60


def memory(broker: LocalBroker, workdir: Path, payloads: list[bytes], cameras: int, seconds: float) -> float:
    detector = start_detector(broker, workdir)
    assert detector.process is not None
    publishers = [FramePublisher(broker, f"bench-mem-{cameras}-{i}") for i in range(cameras)]
    threads = [
        threading.Thread(target=p.stream, args=(payloads[: int(seconds * 10)], 10.0)) for p in publishers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rss = rss_mb(detector.process.pid)
    detector.stop()
    for publisher in publishers:
        publisher.close()
    return rss


def report_pipeline(
    broker: LocalBroker,
    workdir: Path,
    footage: tuple[list[np.ndarray], list[bytes]],
    threads: int,
    args: argparse.Namespace,
) -> None:
    frames, payloads = footage
    bare = bare_fps(frames[60:260], threads)
    # The camera publishes a quarter faster than the bare interpreter can infer (--overdrive).
    pipe = pipeline(
        broker,
        workdir,
        payloads[60:260],
        threads=threads,
        seconds=args.seconds,
        rate=bare.invoke_fps * args.overdrive,
    )
    cores = len(os.sched_getaffinity(0))
    # No pipeline on this machine can beat all its cores spending the measured CPU on each inference.
    ceiling = min(1.0, cores * 1000 / pipe["cpu_ms_per_inference"] / bare.invoke_fps)
    print(f"== 1. pipeline efficiency ({threads} threads, {cores} cores)")
    print(
        f"bare invoke(): {bare.invoke_fps:.1f} fps ({bare.invoke_ms:.1f} ms median, "
        f"{bare.invoke_cpu_ms:.1f} CPU ms); with pre-processing {bare.full_fps:.1f} fps"
    )
    print(
        f"service: {pipe['service_fps']:.1f} inferences/s with {pipe['in_fps']:.0f} frames/s in "
        f"({pipe['stale_fraction']:.0%} dropped as stale, "
        f"frame age at inference p50 {pipe['frame_age_p50']:.1f} ms, p95 {pipe['frame_age_p95']:.1f} ms, "
        f"inference in the service p50 {pipe['inference_ms_p50']:.1f} ms)"
    )
    print(
        f"CPU per inference, detector + broker + publisher: {pipe['cpu_ms_per_inference']:.1f} ms "
        f"(bare invoke() {bare.invoke_cpu_ms:.1f} ms): CPU ceiling of the ratio here {ceiling:.2f}"
    )
    print(
        f"ratio service / bare invoke = {pipe['service_fps'] / bare.invoke_fps:.2f}; "
        f"service / bare with pre-processing = {pipe['service_fps'] / bare.full_fps:.2f} (goal >= 0.9)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (parts 2 to 4)")
    parser.add_argument(
        "--pipeline-threads", default="1,2", help="interpreter threads of the pipeline runs, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--overdrive", type=float, default=1.25, help="publish rate / bare inference rate")
    parser.add_argument(
        "--only", choices=["pipeline", "latency", "motion", "memory", "contention"], help="run one part"
    )
    args = parser.parse_args()
    frames = read_frames(PERSON_VIDEO, 0, 300)
    payloads = [jpeg(frame) for frame in frames]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = LocalBroker(workdir / "broker")
        broker.start()
        try:
            if args.only in (None, "pipeline"):
                for threads in (int(t) for t in args.pipeline_threads.split(",")):
                    report_pipeline(broker, workdir, (frames, payloads), threads, args)
            if args.only in (None, "latency"):
                invoke_ms = bare_fps(frames[60:260], args.threads).invoke_ms
                person, empty = payloads[70:80], payloads[0:15]
                lat = latency(broker, workdir, (person, empty), args.threads, rounds=15)
                p50, p95 = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
                print("== 2. latency")
                print(
                    f"confirming frame -> start at subscriber: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                    f"over {len(lat)} events; bare inference {invoke_ms:.1f} ms; "
                    f"p50 - inference = {p50 - invoke_ms:.1f} ms (goal <= 15 ms)"
                )
                alert = time_to_alert(broker, workdir, payloads, runs=5)
                print(
                    "time to alert at 5 fps (first person frame -> start): "
                    f"median {statistics.median(alert):.0f} ms, "
                    f"max {max(alert):.0f} ms over {len(alert)} runs (goal < 1000 ms)"
                )

            if args.only in (None, "motion"):
                static = payloads[0:56]
                with_gate = static_cpu(broker, workdir, static, args.seconds * 2, gating=True)
                without = static_cpu(broker, workdir, static, args.seconds * 2, gating=False)
                print("== 3. motion gating (static real scene, 10 fps)")
                print(
                    f"CPU s per minute: gated {with_gate:.2f}, ungated {without:.2f}; "
                    f"ratio {with_gate / without:.2f} (goal <= 0.2)"
                )

            if args.only in (None, "memory"):
                one = memory(broker, workdir, payloads, 1, 10)
                eight = memory(broker, workdir, payloads, 8, 10)
                print("== 4. resident memory")
                print(f"VmRSS: 1 camera {one:.0f} MB, 8 cameras {eight:.0f} MB (ratio {eight / one:.2f})")

            if args.only in (None, "contention"):
                print("== 5. contention: bare invoke() median, alone and beside a process decoding JPEGs")
                for threads in (1, 2):
                    alone, shared = contention(frames[60:160], payloads[60:160], threads)
                    print(
                        f"{threads} threads: {alone:.1f} ms alone, {shared:.1f} ms beside the decoder "
                        f"({shared / alone:.2f}x)"
                    )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
