"""Watching workers from outside while faults are injected: readiness, liveness and lag."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .harness.processes import Worker


@dataclass(frozen=True)
class Sample:
    """One look at every watched worker."""

    at: float
    ready: dict[str, bool]
    alive: dict[str, bool]
    lag: float  # records behind, summed over the workers' partitions


@dataclass
class Watcher:
    """Samples /readyz, liveness and consumer lag of some workers every `every` seconds."""

    workers: list[Worker]
    every: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, alive, lag = {}, {}, 0.0
            for worker in self.workers:
                alive[worker.name] = worker.alive()
                ready[worker.name] = alive[worker.name] and worker.ready()
                if alive[worker.name]:
                    lag += worker.metric_sum("riverrun_scorer_consumer_lag_records")
            self.samples.append(Sample(time.monotonic(), ready, alive, lag))
            self._stop.wait(self.every)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at < end]
