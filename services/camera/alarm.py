"""The deterrent ("scarecrow"): plays the alarm sound through a player command, one player at a time.

The sound is replayed until the alarm's duration has elapsed. ``OFF`` and a service stop end it. After an
alarm ends, ``ON`` commands are ignored for the cooldown, so a burst of detections cannot retrigger it; an
alarm whose player failed made no sound and starts no cooldown. What became of each command is reported
(``on_result``): sounding, already sounding, cooling down (seconds left), player failed (why), stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from services.camera.const import ALARM_MIN_PLAY_S, ALARM_STOP_TIMEOUT_S
from services.common.schemas import AlarmCommand, AlarmOutcome

StateCallback = Callable[[bool], None]
# (outcome, cooldown seconds left, error): what became of a command.
ResultCallback = Callable[[AlarmOutcome, float | None, str | None], None]
STDERR_TAIL_BYTES = 400  # of a failed player's error output, for its last line


class Alarm:
    def __init__(
        self,
        player: list[str],
        sound: Path,
        *,
        default_duration_s: float,
        cooldown_s: float,
        on_state: StateCallback,
        on_result: ResultCallback,
        logger: logging.Logger,
    ) -> None:
        self._argv = [*player, str(sound)]
        self._default_duration_s = default_duration_s
        self._cooldown_s = cooldown_s
        self._on_state = on_state
        self._on_result = on_result
        self._logger = logger
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._ended_at: float | None = None  # time.monotonic() when the last alarm ended

    def command(self, command: AlarmCommand) -> None:
        if command.state == "OFF":
            self.stop()
            self._on_result("stopped", None, None)
            return
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                self._logger.info("alarm already sounding; ON ignored")
                self._on_result("already_sounding", None, None)
                return
            if self._ended_at is not None and time.monotonic() - self._ended_at < self._cooldown_s:
                left = self._cooldown_s - (time.monotonic() - self._ended_at)
                self._logger.info("alarm cooling down for %.0f s more; ON ignored", left)
                self._on_result("cooling_down", round(left, 1), None)
                return
            duration = command.duration or self._default_duration_s
            self._stop = threading.Event()
            self._worker = threading.Thread(
                target=self._sound, args=(duration, self._stop), name="alarm", daemon=True
            )
            self._logger.info("alarm ON for %.0f s", duration)
            self._on_state(True)
            self._on_result("sounding", None, None)
            self._worker.start()

    def stop(self) -> None:
        """End the alarm, if one sounds, and wait until its player is gone."""
        with self._lock:
            worker, self._worker = self._worker, None
            self._stop.set()
        if worker is not None:
            worker.join()

    def _sound(self, duration_s: float, stop: threading.Event) -> None:
        until = time.monotonic() + duration_s
        failed: str | None = None
        try:
            while not stop.is_set() and time.monotonic() < until:
                started = time.monotonic()
                failed = self._play_once(until, stop)
                if failed is not None:
                    self._on_result("player_failed", None, failed)
                    break
                if time.monotonic() - started < ALARM_MIN_PLAY_S:
                    stop.wait(ALARM_MIN_PLAY_S)
        finally:
            with self._lock:
                if failed is None:  # no sound, no cooldown: the next press tries again and says why
                    self._ended_at = time.monotonic()
                if self._worker is threading.current_thread():
                    self._worker = None
            self._logger.info("alarm OFF")
            self._on_state(False)

    def _play_once(self, until: float, stop: threading.Event) -> str | None:
        """Run the player once; why it failed (then the alarm gives up instead of spinning), else None."""
        # Error output goes to a file, never a pipe: a chatty player can never block on a full pipe.
        with tempfile.TemporaryFile() as errors:
            try:
                # Own session: the player and anything it spawns are stopped together.
                process = subprocess.Popen(
                    self._argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    start_new_session=True,
                )
            except OSError as error:
                why = f"{self._argv[0]} cannot start: {error.strerror or error}"
                self._logger.error("alarm player %s", why)
                return why
            while process.poll() is None:
                if stop.wait(0.05) or time.monotonic() >= until:
                    end_process_group(process)
                    return None
            if process.returncode == 0:
                return None
            why = f"{self._argv[0]} exited with {process.returncode}"
            said = last_line(errors)
            why += f": {said}" if said else ""
            self._logger.error("alarm player %s", why)
            return why


def last_line(output: IO[bytes]) -> str:
    """The last non-empty line of what a process wrote, from its last few hundred bytes."""
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - STDERR_TAIL_BYTES))
    lines = output.read().decode("utf-8", "replace").splitlines()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def end_process_group(process: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, ALARM_STOP_TIMEOUT_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
