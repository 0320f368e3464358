"""Stop signals: answered on a watcher thread, so a stop never deadlocks the thread it interrupts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

from riverrun.producers.signals import StopSignals

# SIGTERM lands while the main thread spins on `Event.wait(0)`: most of the time it holds the
# event's own lock. A handler that set the event itself would wait on that lock forever.
RACE = textwrap.dedent(
    """
    import os, signal, threading, time
    from riverrun.producers.signals import StopSignals

    for round in range(400):
        stop = threading.Event()
        def kill_soon():
            time.sleep(0.0005 + (round % 7) * 0.0003)
            os.kill(os.getpid(), signal.SIGTERM)
        with StopSignals(lambda name: stop.set()):
            killer = threading.Thread(target=kill_soon)
            killer.start()
            while not stop.wait(0):
                pass
            killer.join()
    print("stopped 400 times")
    """
)


def test_a_signal_that_lands_inside_the_event_wait_still_stops() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", RACE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert stdout.strip() == "stopped 400 times"


def test_the_stop_gets_the_signal_name_and_the_previous_handler_comes_back() -> None:
    names: list[str] = []
    called = threading.Event()

    def on_stop(name: str) -> None:
        names.append(name)
        called.set()

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(on_stop):
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        assert called.wait(10)
    assert names == ["SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd was given back too
