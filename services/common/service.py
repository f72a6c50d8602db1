"""What every service's ``__main__`` needs around its handler: a stop signal."""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM (docker stop) or SIGINT (Ctrl-C), so the main loop can stop cleanly.

    The event is set by a watcher thread, never by a Python signal handler: such a handler runs in the main
    thread between two bytecodes, possibly inside ``stop.wait()`` while that thread holds the event's own
    (non-reentrant) lock, and ``stop.set()`` would then deadlock the service. CPython's C-level handler
    writes the signal number to the wakeup fd instead, and the watcher reads it. Call from the main thread.
    """
    stop = threading.Event()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in STOP_SIGNALS:
        # A Python-level handler must exist so the signal does not kill the process; it has nothing to do.
        signal.signal(signum, lambda _signum, _frame: None)

    def watch() -> None:
        while os.read(read_fd, 1)[0] not in STOP_SIGNALS:
            pass
        stop.set()

    threading.Thread(target=watch, name="stop-signals", daemon=True).start()
    return stop
