"""The deterrent ("scarecrow"): plays the alarm sound through a player command, one player at a time.

The sound is replayed until the alarm's duration has elapsed. ``OFF`` and a service stop end it. After an
alarm ends, ``ON`` commands are ignored for the cooldown, so a burst of detections cannot retrigger it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from services.camera.const import ALARM_MIN_PLAY_S, ALARM_STOP_TIMEOUT_S
from services.common.schemas import AlarmCommand

StateCallback = Callable[[bool], None]


class Alarm:
    def __init__(
        self,
        player: list[str],
        sound: Path,
        *,
        default_duration_s: float,
        cooldown_s: float,
        on_state: StateCallback,
        logger: logging.Logger,
    ) -> None:
        self._argv = [*player, str(sound)]
        self._default_duration_s = default_duration_s
        self._cooldown_s = cooldown_s
        self._on_state = on_state
        self._logger = logger
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._ended_at: float | None = None  # time.monotonic() when the last alarm ended

    def command(self, command: AlarmCommand) -> None:
        if command.state == "OFF":
            self.stop()
            return
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                self._logger.info("alarm already sounding; ON ignored")
                return
            if self._ended_at is not None and time.monotonic() - self._ended_at < self._cooldown_s:
                left = self._cooldown_s - (time.monotonic() - self._ended_at)
                self._logger.info("alarm cooling down for %.0f s more; ON ignored", left)
                return
            duration = command.duration or self._default_duration_s
            self._stop = threading.Event()
            self._worker = threading.Thread(
                target=self._sound, args=(duration, self._stop), name="alarm", daemon=True
            )
            self._logger.info("alarm ON for %.0f s", duration)
            self._on_state(True)
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
        try:
            while not stop.is_set() and time.monotonic() < until:
                started = time.monotonic()
                if not self._play_once(until, stop):
                    break
                if time.monotonic() - started < ALARM_MIN_PLAY_S:
                    stop.wait(ALARM_MIN_PLAY_S)
        finally:
            with self._lock:
                self._ended_at = time.monotonic()
                if self._worker is threading.current_thread():
                    self._worker = None
            self._logger.info("alarm OFF")
            self._on_state(False)

    def _play_once(self, until: float, stop: threading.Event) -> bool:
        """Run the player once; False when it cannot run, so the alarm gives up instead of spinning."""
        try:
            # Own session: the player and anything it spawns are stopped together. Output is discarded so
            # a chatty player can never block on a full pipe.
            process = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            self._logger.error("alarm player %r cannot start: %s", self._argv[0], error)
            return False
        while process.poll() is None:
            if stop.wait(0.05) or time.monotonic() >= until:
                end_process_group(process)
                return True
        if process.returncode != 0:
            self._logger.error("alarm player %r exited with %s", self._argv[0], process.returncode)
            return False
        return True


def end_process_group(process: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, ALARM_STOP_TIMEOUT_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
