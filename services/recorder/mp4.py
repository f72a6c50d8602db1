"""``ClipWriter``: JPEG frames (or pictures) to H.264 in a fragmented MP4, timed by their capture times.

The file is fragmented (``empty_moov``, a fragment per keyframe, a keyframe about every second), so a clip
that is still being written, or that a crash or power loss cut short, plays up to its last fragment. Closing
remuxes it (no re-encode) into a plain MP4 with its index at the front, written aside and renamed over the
fragmented one: browsers know its duration and seek in it at once.

Times: the stream's time base is 1/1000 and a frame's presentation time is its ``captured_ms`` minus the
first frame's, so a camera that drops frames makes a clip with true timing (variable frame rate).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import av
import numpy as np
import numpy.typing as npt

from services.common.jpeg import jpeg_size

TIME_BASE = Fraction(1, 1000)
KEYFRAME_INTERVAL_MS = 1000  # a crash loses at most about this much video
# veryfast with zerolatency: no B-frames and no lookahead, so every frame leaves the encoder at once and a
# fragment holds everything up to its keyframe; CRF 23 is x264's default quality.
X264_OPTIONS = {"preset": "veryfast", "tune": "zerolatency", "crf": "23", "forced-idr": "1"}
# The track's timescale stays 1/1000 (the muxer would pick its own), so pts are milliseconds in the file too.
# flush_packets: each fragment goes to the file at once, not when FFmpeg's 32 kB write buffer fills.
FRAGMENTED = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "video_track_timescale": "1000",
    "flush_packets": "1",
}
SEEKABLE = {"movflags": "+faststart", "video_track_timescale": "1000"}
NOMINAL_RATE = 5  # only a hint for the encoder's rate control; real times come from captured_ms

Picture = bytes | npt.NDArray[np.uint8]


class FrameRefused(ValueError):
    """A frame this clip cannot take: another size than the clip's, or not later than the previous one."""


class ClipWriter:
    """One MP4 being written. ``ClipWriter.open(path, width, height)``, then ``add`` frames, then ``close``.

    A picture is a JPEG (bytes, checked by the caller for size and pixels before it gets here) or a BGR
    ``uint8`` array of shape (height, width, 3) as OpenCV makes them.
    """

    def __init__(self, path: Path, width: int, height: int, *, threads: int = 1) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.frames = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self._last_key_ms: int | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container: Any = av.open(str(path), mode="w", format="mp4", options=FRAGMENTED)
        stream = self._container.add_stream("libx264", rate=NOMINAL_RATE, options=X264_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        stream.thread_count = threads
        self._stream = stream
        self._jpeg_decoder: Any = av.CodecContext.create("mjpeg", "r")

    @classmethod
    def open(cls, path: Path, width: int, height: int, *, threads: int = 1) -> Self:
        """A new clip at ``path`` (its directories made); frames must be ``width`` x ``height``."""
        return cls(path, width, height, threads=threads)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @property
    def duration_s(self) -> float:
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms) / 1000

    def add(self, picture: Picture, captured_ms: int) -> None:
        """Encode one frame captured at ``captured_ms`` (epoch ms). FrameRefused for a frame of another size,
        one not later than the previous frame, or a JPEG that does not decode; OSError or av.FFmpegError
        when the file cannot be written."""
        if self.last_ms is not None and captured_ms <= self.last_ms:
            raise FrameRefused(f"frame at {captured_ms} ms is not after the previous one ({self.last_ms} ms)")
        frame = self._frame_of(picture)
        first = self.first_ms if self.first_ms is not None else captured_ms
        frame.pts = captured_ms - first
        frame.time_base = TIME_BASE
        if self._last_key_ms is None or captured_ms - self._last_key_ms >= KEYFRAME_INTERVAL_MS:
            frame.pict_type = av.video.frame.PictureType.I
            self._last_key_ms = captured_ms
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.first_ms = first
        self.last_ms = captured_ms
        self.frames += 1

    def _frame_of(self, picture: Picture) -> Any:
        if isinstance(picture, bytes):
            size = jpeg_size(picture)
            self._check_size(size)
            try:
                decoded = self._jpeg_decoder.decode(av.Packet(picture))
            except av.FFmpegError as error:
                raise FrameRefused(f"JPEG does not decode: {error}") from error
            if not decoded:
                raise FrameRefused("JPEG decoded to no picture")
            frame = decoded[0]
        else:
            self._check_size((picture.shape[1], picture.shape[0]))
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
        return frame

    def _check_size(self, size: tuple[int, int]) -> None:
        if size != (self.width, self.height):
            raise FrameRefused(f"frame of {size[0]}x{size[1]} in a {self.width}x{self.height} clip")

    def close(self, *, seekable: bool = True) -> None:
        """Flush the encoder and finish the file; ``seekable``: then remux it to a plain MP4 in place."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        if seekable and self.frames:
            remux_seekable(self.path)
        sync(self.path)

    def abandon(self) -> None:
        """Close without flushing the encoder or remuxing: what is on disk stays as a crash would leave it."""
        if self._container is not None:
            self._container.close()
            self._container = None


def remux_seekable(path: Path, *, cut_short: bool = False) -> int | None:
    """Rewrite a fragmented MP4 as a plain one (moov first), packets copied; atomic: aside, then rename.
    ``cut_short``: the file ends mid-fragment (a crash), and the packets before the cut are kept. Returns
    the last packet's presentation time in ms from the start, None when there was none."""
    aside = path.with_name(f".{path.name}.remux")
    last_ms: int | None = None
    with av.open(str(path)) as source, av.open(str(aside), "w", "mp4", options=SEEKABLE) as target:
        video = source.streams.video[0]
        stream = target.add_stream_from_template(video)
        try:
            for packet in source.demux(video):
                if packet.dts is None or packet.is_corrupt:  # the demuxer's flush packet; a cut one
                    continue
                if packet.pts is not None and packet.time_base is not None:
                    last_ms = max(last_ms or 0, round(packet.pts * packet.time_base * 1000))
                packet.stream = stream
                target.mux(packet)
        except av.InvalidDataError:
            if not cut_short:
                raise
    sync(aside)
    os.replace(aside, path)
    return last_ms


def sync(path: Path) -> None:
    """The file's bytes and its directory entry on disk (a power loss keeps what was announced)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
