"""Recorder: CPU per camera, bytes per hour, `end` -> clip `done`, and the cameras one recorder keeps up with.

    .venv/bin/python -m bench.recorder [--seconds 30] [--repeats 2] [--ends 3] [--cameras 1 2 4 ...]

Runs a private Mosquitto (the project's config) and the recorder as a child process, and publishes real
footage (the shared person clip, 640x480 JPEGs) at 5 fps per camera with an event open, so every frame goes
into a clip. Figures:

- CPU per camera: the recorder process's CPU time (user + system, from /proc) per frame, for a whole clip
  (receiving, header checks, decoding, encoding, writing, finishing), times 5 fps. Baseline, measured in the
  same run on the same frames at the same moment: a bare PyAV decode (MJPEG) + encode (libx264, the
  recorder's options) into a plain MP4, paced at 5 fps in a process of its own beside the recorder, so that
  the load of the moment (this machine is shared) weighs on both alike. Each is measured --repeats times and
  the least CPU of each counts. Also printed: the baseline alone, with nothing else of the benchmark
  running. Goal: at most 1.3x the baseline.
- Bytes per hour per camera: the finished clip's size over its duration.
- `end` -> `done`: from publishing an event's end (its ended_at = the newest frame's capture time) to the
  clip's `done` announcement. Goal: at most RECORD_POST_S + 2 s.
- Cameras sustained: for each camera count, frames published for a while at 5 fps each; sustained when the
  recorder dropped none and had written every one within 2 s of the last.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

from bench.results import Figure, Result, save
from scripts.localbroker import LocalBroker
from services.common import schemas, topics
from services.recorder.mp4 import NOMINAL_RATE, TIME_BASE, X264_OPTIONS
from tests.support import Collector, ServiceProcess, detection_event, footage_frames

FPS = 5
POST_S = 5.0
GOAL_CPU_RATIO = 1.3
GOAL_END_TO_DONE_S = POST_S + 2.0
TICKS = os.sysconf("SC_CLK_TCK")
STATUS = topics.service_status("recorder")


def frames() -> tuple[bytes, ...]:
    """150 distinct 640x480 JPEGs of people walking (30 s at 5 fps), looped by the publishers."""
    return footage_frames(count=150, first=62, step=3)


def baseline_cpu_per_frame(jpegs: tuple[bytes, ...], path: Path, *, paced: bool = False) -> float:
    """CPU seconds per frame of a bare PyAV decode + encode of ``jpegs`` into a plain MP4; ``paced``: one
    frame every 1/FPS s, as they come from a camera (the waits cost no CPU)."""
    started = time.process_time()
    wall = time.monotonic()
    decoder = av.CodecContext.create("mjpeg", "r")
    with av.open(str(path), "w", "mp4") as container:
        stream = container.add_stream("libx264", rate=NOMINAL_RATE, options=X264_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        stream.thread_count = 1
        for index, jpeg in enumerate(jpegs):
            if paced:
                time.sleep(max(0.0, wall + index / FPS - time.monotonic()))
            for frame in decoder.decode(av.Packet(jpeg)):
                frame.pts = index * 1000 // FPS
                frame.time_base = TIME_BASE
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return (time.process_time() - started) / len(jpegs)


def baseline_child(count: int, path: Path) -> None:
    """``--baseline-child``: the baseline in a process of its own, started on a line on stdin, paced."""
    jpegs = frames()
    looped = tuple(jpegs[index % len(jpegs)] for index in range(count))
    print("ready", flush=True)
    sys.stdin.readline()
    print(baseline_cpu_per_frame(looped, path, paced=True), flush=True)


class Baseline:
    """The baseline running beside the recorder, at the same moment and pace: whatever else loads the
    machine then weighs on both alike."""

    def __init__(self, count: int, path: Path) -> None:
        command = [sys.executable, "-m", "bench.recorder", "--baseline-child", str(count), str(path)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def cpu_per_frame(self) -> float:
        out, _err = self.process.communicate(timeout=120)
        return float(out.strip())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Bench:
    def __init__(self, broker: LocalBroker, workdir: Path) -> None:
        self.broker = broker
        self.workdir = workdir
        self.watch = Collector(broker, topics.ALL_CLIPS, topics.RECORDER_STATS, STATUS)
        self.jpegs = frames()

    def recorder(self, name: str) -> ServiceProcess:
        env = {
            **self.broker.env("recorder"),
            "RECORD_DIR": str(self.workdir / name),
            "RECORD_POST_S": str(POST_S),
            "RECORD_STATS_INTERVAL": "1",
        }
        since = time.time()
        process = ServiceProcess("recorder", env, self.workdir).start()
        self.watch.online(STATUS, since)
        return process

    def publish(self, cameras: list[str], seconds: float) -> int:
        """Frames of every camera at FPS in real time for ``seconds``; returns the frames per camera."""
        count = round(seconds * FPS)
        started = time.monotonic()
        for index in range(count):
            time.sleep(max(0.0, started + index / FPS - time.monotonic()))
            for camera in cameras:
                self.watch.frame(camera, self.jpegs[index % len(self.jpegs)])
        return count

    def event(self, camera: str, kind: str, started_at: float) -> None:
        payload = detection_event(
            camera, f"{camera}-ev", kind=kind, started_at=started_at, ended_at=time.time()
        )
        self.watch.publish(topics.event(camera, "person"), payload)

    def done(self, camera: str, timeout: float = 30.0) -> tuple[schemas.ClipInfo, float]:
        message = self.watch.wait_for(topics.clip(camera), lambda m: b'"done"' in m.payload, timeout)
        return schemas.ClipInfo.parse(message.payload), message.at

    def stats(self, since: float) -> schemas.RecorderStats:
        message = self.watch.wait_for(topics.RECORDER_STATS, lambda m: m.at >= since, timeout=5)
        return schemas.RecorderStats.parse(message.payload)

    def one_camera(self, seconds: float, camera: str) -> tuple[float, float, schemas.ClipInfo]:
        """CPU seconds per frame of a whole clip of one camera, of the baseline beside it, and the clip."""
        process = self.recorder(camera)
        assert process.process is not None
        baseline = Baseline(round(seconds * FPS), self.workdir / f"{camera}-baseline.mp4")
        try:
            self.publish([camera], 1.0)  # the ring's frames before the event
            before = cpu_seconds(process.process.pid)
            baseline.go()
            self.event(camera, "start", time.time())
            count = self.publish([camera], seconds)
            self.event(camera, "end", time.time() - seconds)
            self.publish([camera], POST_S + 0.5)
            clip, _at = self.done(camera)
            used = cpu_seconds(process.process.pid) - before
            written = self.stats(time.time()).cameras[camera].frames_written
            base = baseline.cpu_per_frame()
            print(
                f"one camera: {count} frames published in the event, {written} written, {used:.2f} s CPU; "
                f"baseline beside it {base * 1000:.2f} ms per frame"
            )
        finally:
            process.stop()
            baseline.process.kill()
        return used / written, base, clip

    def end_to_done(self, ends: int) -> list[float]:
        process = self.recorder("ends")
        timings = []
        try:
            for index in range(ends):
                camera = f"bench-end-{index}"
                self.publish([camera], 2.0)
                self.event(camera, "start", time.time() - 1)
                self.publish([camera], 2.0)
                published = time.time()
                self.event(camera, "end", published - 3)
                self.publish([camera], POST_S + 3.0)
                _clip, at = self.done(camera)
                timings.append(at - published)
        finally:
            process.stop()
        return timings

    def sustained(self, counts: list[int], seconds: float) -> dict[int, dict[str, int]]:
        """Per camera count, each on a fresh recorder: frames published, dropped and not written 2 s after
        the last."""
        outcome: dict[int, dict[str, int]] = {}
        for count in counts:
            process = self.recorder(f"ramp-{count}")
            try:
                outcome[count] = self.step([f"bench-{count}-{index}" for index in range(count)], seconds)
            finally:
                process.stop()
            if any(outcome[count][key] for key in ("dropped", "behind")) or outcome[count]["late_ms"] > 1000:
                break
        return outcome

    def step(self, cameras: list[str], seconds: float) -> dict[str, int]:
        self.publish(cameras, 1.0)
        for camera in cameras:
            self.event(camera, "start", time.time())
        began = time.monotonic()
        published = self.publish(cameras, seconds) + FPS  # with the second before the event, from the ring
        late_s = time.monotonic() - began - seconds  # the publisher itself fell behind 5 fps
        time.sleep(2.0)
        stats = self.stats(time.time()).cameras
        counted = [stats.get(camera, schemas.RecorderCameraStats()) for camera in cameras]
        dropped = sum(camera.frames_dropped for camera in counted)
        behind = sum(max(0, published - camera.frames_written) for camera in counted)
        print(
            f"{len(cameras):3} cameras: {published * len(cameras)} frames, {dropped} dropped, "
            f"{behind} not written 2 s later (publisher {late_s * 1000:.0f} ms late)"
        )
        for camera in cameras:
            self.event(camera, "end", time.time())
        total = published * len(cameras)
        return {"published": total, "dropped": dropped, "behind": behind, "late_ms": round(late_s * 1000)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the CPU run's clip")
    parser.add_argument("--ends", type=int, default=3, help="events timed from end to done")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4, 8, 16, 24, 32, 40, 48, 64])
    parser.add_argument(
        "--repeats", type=int, default=2, help="CPU runs; the least CPU counts, as for the baseline"
    )
    parser.add_argument("--ramp-seconds", type=float, default=10.0)
    parser.add_argument("--baseline-child", nargs=2, metavar=("FRAMES", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        baseline_child(int(args.baseline_child[0]), Path(args.baseline_child[1]))
        return 0
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        broker = LocalBroker(workdir / "broker")
        broker.start()
        try:
            bench = Bench(broker, workdir)
            jpegs = bench.jpegs[: round(args.seconds * FPS)]
            alone = min(baseline_cpu_per_frame(jpegs, workdir / f"alone-{n}.mp4") for n in range(3))
            runs = [bench.one_camera(args.seconds, f"cpu-{repeat}") for repeat in range(args.repeats)]
            ours = min(run[0] for run in runs)
            base = min(run[1] for run in runs)
            clip = runs[0][2]
            ends = bench.end_to_done(args.ends)
            ramp = bench.sustained(args.cameras, args.ramp_seconds)
        finally:
            broker.stop()
    print(f"baseline alone (nothing else of this benchmark running): {alone * 1000:.2f} ms per frame")
    result = report(args, base=base, ours=ours, clip=clip, ends=ends, ramp=ramp)
    result.data["baseline_alone_ms_per_frame"] = round(alone * 1000, 3)
    print(f"saved {save(result)}")
    return 0


def report(
    args: argparse.Namespace,
    *,
    base: float,
    ours: float,
    clip: schemas.ClipInfo,
    ends: list[float],
    ramp: dict[int, dict[str, int]],
) -> Result:
    ratio = ours / base
    per_hour = clip.bytes / clip.duration_s * 3600
    sustained = max(
        (n for n, r in ramp.items() if not (r["dropped"] or r["behind"] or r["late_ms"] > 1000)),
        default=0,
    )
    print(
        f"CPU per frame: baseline {base * 1000:.2f} ms, recorder {ours * 1000:.2f} ms, ratio {ratio:.2f}; "
        f"at {FPS} fps: {ours * FPS * 100:.1f}% of one core (baseline {base * FPS * 100:.1f}%)"
    )
    print(
        f"clip: {clip.bytes} bytes for {clip.duration_s:.1f} s: {per_hour / 1e6:.0f} MB per hour per camera"
    )
    print(f"end -> done: {', '.join(f'{t:.2f}' for t in ends)} s (RECORD_POST_S {POST_S})")
    print(f"cameras sustained at {FPS} fps: {sustained}")
    command = (
        f"python -m bench.recorder --seconds {args.seconds:g} --repeats {args.repeats} --ends {args.ends} "
        f"--cameras {' '.join(map(str, args.cameras))} --ramp-seconds {args.ramp_seconds:g}"
    )
    result = Result("recorder", command)
    result.figures = [
        Figure(
            "CPU per camera at 5 fps 640x480",
            round(ours * FPS * 100, 2),
            "% of one core",
            round(base * FPS * 100, 2),
            "bare PyAV decode+encode",
            f"<= {GOAL_CPU_RATIO}x baseline",
            ratio <= GOAL_CPU_RATIO,
        ),
        Figure("bytes per hour per camera", round(per_hour / 1e6, 1), "MB"),
        Figure(
            "end -> clip done (max)",
            round(max(ends), 2),
            "s",
            goal=f"<= RECORD_POST_S + 2 s = {GOAL_END_TO_DONE_S:g} s",
            met=max(ends) <= GOAL_END_TO_DONE_S,
        ),
        Figure("cameras sustained at 5 fps", sustained, "cameras"),
    ]
    result.data = {"end_to_done_s": [round(t, 3) for t in ends], "ramp": {str(n): r for n, r in ramp.items()}}
    return result


if __name__ == "__main__":
    sys.exit(main())
