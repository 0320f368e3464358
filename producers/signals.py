"""SIGTERM and SIGINT answered on a thread of their own, so a stop can never deadlock.

Every riverrun command that runs until stopped (replay, scorer, learner, judge, broker) stops
through `StopSignals`; it lives with the client so the replay can use it too.

A Python signal handler runs on the main thread between two bytecodes, possibly while that thread
holds a lock the stop needs: setting a `threading.Event` from a handler that interrupted the same
event's `wait()` blocks forever on the event's own lock. So the handler installed here does
nothing; the interpreter writes the signal's number to a pipe (`signal.set_wakeup_fd`, from C, at
the moment the signal arrives) and a watcher thread reads it and calls the stop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WATCHER_EXIT = b"\0"  # no signal has number 0


def _do_nothing(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: the signal's number already went down the wakeup pipe."""


def _watch(read_fd: int, on_stop: Callable[[str], None]) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        for number in data:
            if number == 0:
                return
            if number in STOP_SIGNALS:
                try:
                    on_stop(signal.Signals(number).name)
                except Exception:  # a failing stop must not end the watcher: log, keep watching
                    logger.exception("stopping on %s failed", signal.Signals(number).name)
        if not data:
            return


class StopSignals:
    """While started, calls `on_stop(signal_name)` on a watcher thread for each SIGTERM or SIGINT.

    Start it from the main thread (Python lets only that one install handlers); closing it brings
    the previous handlers and wakeup fd back. Also a context manager.
    """

    def __init__(self, on_stop: Callable[[str], None]) -> None:
        self._on_stop = on_stop
        self._fds: tuple[int, int] | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._previous_fd = -1
        self._watcher: threading.Thread | None = None

    def start(self) -> StopSignals:
        """Install the handlers and the watcher."""
        read_fd, write_fd = self._fds = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd needs a write that never blocks
        self._previous_handlers = {n: signal.signal(n, _do_nothing) for n in STOP_SIGNALS}
        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._watcher = threading.Thread(
            target=_watch, args=(read_fd, self._on_stop), name="riverrun-stop-signals", daemon=True
        )
        self._watcher.start()
        return self

    def close(self) -> None:
        """Put the previous handlers back and end the watcher (idempotent)."""
        if self._fds is None:
            return
        read_fd, write_fd = self._fds
        self._fds = None
        signal.set_wakeup_fd(self._previous_fd)
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        try:
            os.write(write_fd, _WATCHER_EXIT)
        except BlockingIOError:  # a full pipe: the watcher reads it all, then the end of file
            pass
        os.close(write_fd)
        if self._watcher is not None:
            self._watcher.join(5.0)
        os.close(read_fd)

    def __enter__(self) -> StopSignals:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()
