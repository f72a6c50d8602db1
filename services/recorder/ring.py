"""``Ring``: one camera's last seconds of JPEG frames in memory, the start of the next clip."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    """A checked JPEG (size and pixels read from its header) and its capture time."""

    jpeg: bytes
    captured_ms: int
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


class Ring:
    """Frames of the last ``keep_ms`` milliseconds (by capture time), at most ``max_bytes`` of them."""

    def __init__(self, keep_ms: int, max_bytes: int) -> None:
        self.keep_ms = keep_ms
        self.max_bytes = max_bytes
        self._frames: deque[Frame] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: Frame) -> None:
        self._frames.append(frame)
        self._bytes += len(frame.jpeg)
        oldest_kept = frame.captured_ms - self.keep_ms
        while self._frames and (self._frames[0].captured_ms < oldest_kept or self._bytes > self.max_bytes):
            self._bytes -= len(self._frames.popleft().jpeg)

    def since(self, first_ms: int) -> list[Frame]:
        """The frames captured at or after ``first_ms`` that have the newest frame's size, oldest first."""
        if not self._frames:
            return []
        size = self._frames[-1].size
        found: list[Frame] = []
        for frame in reversed(self._frames):
            if frame.captured_ms < first_ms or frame.size != size:
                break
            found.append(frame)
        found.reverse()
        return found
