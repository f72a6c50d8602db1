"""Camera benchmark: what capture + resize + encode + publish costs per frame at 640x480.

    .venv/bin/python -m bench.camera [--frames 100] [--runs 5] [--service-seconds 10]

Input: the person video cut to 4:3 and written at 1280x960 (a typical webcam mode), resized by the camera
to 640x480. Baseline, in the same run: bare ``cv2.imencode`` of the same 640x480 frames. Reported:

1. in-process pipeline (decode the next frame from the file unpaced, resize, encode, publish through a real
   Mosquitto started here, until the subscriber has it) per frame, as a ratio to the baseline; median of runs.
2. the real service (``python -m services.camera``, paced at the clip's 10 fps) for a while: CPU seconds
   of its process per published frame, and that as a ratio to the baseline.
3. the same service reading an RTSP camera instead: GStreamer's RTSP server (``tests/rtsp_server.py``)
   serving the same 1280x960 frames as H.264 at 10 fps; its CPU per published frame against the file
   source's of part 2, measured in the same run (the server's own CPU is not counted: it is the camera).

Figures are saved with ``bench/results.py`` as ``bench/results/camera.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.results import Figure, Result, save
from scripts.localbroker import ADMIN_USER, LocalBroker
from services.camera.handler import encode_jpeg, resize_to_width
from services.camera.settings import CameraSettings
from services.common import topics
from services.common.mqtt import MqttClient
from services.common.schemas import FrameMeta
from tests.rtsp_support import RtspServer, write_frames
from tests.support import PERSON_VIDEO, service_env

WIDTH = 640
QUALITY = 80
CLIP_FPS = 10.0


def make_clip(path: Path, frames: int) -> Path:
    capture = cv2.VideoCapture(str(PERSON_VIDEO))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), CLIP_FPS, (1280, 960))
    for _ in range(frames):
        ok, image = capture.read()
        assert ok
        height, width = image.shape[:2]
        crop = (width - height * 4 // 3) // 2
        writer.write(cv2.resize(image[:, crop : width - crop], (1280, 960)))
    writer.release()
    capture.release()
    return path


def clip_frames(path: Path, width: int | None = WIDTH) -> list[np.ndarray]:
    """The clip's frames, resized to ``width`` (None: as they are)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(resize_to_width(image, width))
    capture.release()
    return frames


def baseline_s(frames: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for image in frames:
        cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    return (time.perf_counter() - started) / len(frames)


class Counter:
    def __init__(self, broker: LocalBroker, topic: str) -> None:
        self.count = 0
        self.changed = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(ADMIN_USER, broker.passwords[ADMIN_USER])
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, 0)
        assert subscribed.wait(5)

    def _on_message(self, *_args: object) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.count >= count, timeout), f"{self.count} of {count}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def pipeline_s(clip: Path, client: MqttClient, counter: Counter, camera: str) -> float:
    """Per-frame wall time of decode + resize + encode + publish, until the subscriber has them all."""
    capture = cv2.VideoCapture(str(clip))
    expected = counter.count
    started = time.perf_counter()
    seq = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        image = resize_to_width(image, WIDTH)
        height, width = image.shape[:2]
        meta = FrameMeta(captured_ms=time.time_ns() // 1_000_000, seq=seq, width=width, height=height)
        client.publish(topics.frame(camera), encode_jpeg(image, QUALITY), properties=meta.to_properties())
        seq += 1
    counter.wait_for(expected + seq)
    elapsed = time.perf_counter() - started
    capture.release()
    return elapsed / seq


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_cpu_per_frame(
    source: str, broker: LocalBroker, seconds: float, workdir: Path, camera: str = "bench-service"
) -> tuple[float, int]:
    """CPU seconds of ``python -m services.camera`` per frame it published, reading ``source``."""
    counter = Counter(broker, topics.frame(camera))
    env = service_env(
        {
            **broker.camera_env(camera),
            "CAMERA_ID": camera,
            "CAMERA_SOURCE": source,
            "CAMERA_LOOP": "true",
            "CAMERA_FPS": str(CLIP_FPS),
            "CAMERA_WIDTH": str(WIDTH),
            "LOG_LEVEL": "WARNING",
        }
    )
    process = subprocess.Popen([sys.executable, "-m", "services.camera"], env=env, cwd=workdir)
    try:
        counter.wait_for(1)  # started up; measure from here
        cpu_before, frames_before = cpu_seconds(process.pid), counter.count
        time.sleep(seconds)
        cpu_after, frames_after = cpu_seconds(process.pid), counter.count
    finally:
        process.terminate()
        process.wait()
        counter.close()
    frames = frames_after - frames_before
    return (cpu_after - cpu_before) / frames, frames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--service-seconds", type=float, default=10.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        clip = make_clip(workdir / "clip-1280x960.mp4", args.frames)
        frames = clip_frames(clip)
        broker = LocalBroker(workdir / "broker")
        broker.start()
        try:
            camera = "bench"
            for key, value in {**broker.camera_env(camera), "CAMERA_SOURCE": str(clip)}.items():
                os.environ[key] = value
            client = MqttClient(
                CameraSettings(),
                client_id="bench-camera",
                status_topic=topics.status(camera),
                logger=logging.getLogger("bench"),
            )
            client.start()
            assert client.connected.wait(10)
            counter = Counter(broker, topics.frame(camera))
            ratios, baselines, pipelines = [], [], []
            for _ in range(args.runs):
                base = baseline_s(frames)
                piped = pipeline_s(clip, client, counter, camera)
                baselines.append(base)
                pipelines.append(piped)
                ratios.append(piped / base)
            counter.close()
            client.stop()
            base_now = statistics.median(baseline_s(frames) for _ in range(3))
            cpu_per_frame, published = service_cpu_per_frame(str(clip), broker, args.service_seconds, workdir)
            rtsp = RtspServer(write_frames(workdir / "rtsp-frames", clip_frames(clip, None)), fps=10).start()
            try:
                rtsp_cpu, rtsp_published = service_cpu_per_frame(
                    rtsp.url(), broker, args.service_seconds, workdir, camera="bench-rtsp"
                )
            finally:
                rtsp.stop()
        finally:
            broker.stop()

    print(f"frames: {len(frames)} of 1280x960 -> {WIDTH}x480, JPEG quality {QUALITY}, {args.runs} runs")
    print(
        f"pipeline / bare imencode (median of runs): {statistics.median(ratios):.2f}x "
        f"(runs: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    print(
        f"  absolute: pipeline {statistics.median(pipelines) * 1000:.2f} ms/frame, "
        f"imencode {statistics.median(baselines) * 1000:.2f} ms/frame"
    )
    print(
        f"service process at {CLIP_FPS:.0f} fps for {args.service_seconds:.0f} s: {published} frames, "
        f"{cpu_per_frame * 1000:.2f} CPU ms per published frame "
        f"= {cpu_per_frame / base_now:.2f}x bare imencode"
    )
    print(
        f"service process reading RTSP (H.264 1280x960, 10 fps) for {args.service_seconds:.0f} s: "
        f"{rtsp_published} frames, {rtsp_cpu * 1000:.2f} CPU ms per published frame "
        f"= {rtsp_cpu / cpu_per_frame:.2f}x the file source"
    )
    figures = [
        Figure(
            "in-process pipeline per frame (decode, resize, encode, publish), median of runs",
            round(statistics.median(pipelines) * 1000, 2),
            "ms",
            round(statistics.median(baselines) * 1000, 2),
            "bare cv2.imencode of the same 640x480 frames",
        ),
        Figure(
            "service, file source: CPU per published frame",
            round(cpu_per_frame * 1000, 2),
            "ms",
            round(base_now * 1000, 2),
            "bare cv2.imencode",
        ),
        Figure(
            "service, RTSP source: CPU per published frame",
            round(rtsp_cpu * 1000, 2),
            "ms",
            round(cpu_per_frame * 1000, 2),
            "the service reading the file source, same run",
            "none set (issue 15 asks for the figure)",
        ),
    ]
    data = {"published": [published, rtsp_published], "pipeline_ratios": [round(r, 3) for r in ratios]}
    command = " ".join([".venv/bin/python -m bench.camera", *sys.argv[1:]])
    print(f"saved {save(Result(benchmark='camera', command=command, figures=figures, data=data))}")


if __name__ == "__main__":
    main()
