"""Drift detection on a model's loss streams, with River's own detectors.

Each (version, stream) pair has its own detector: `learning` is the learner's test-then-train
loss, `served` the loss of the predictions the scorers served (the outcomes). The first
`warmup` losses of a stream are not shown to its detector: a model still converging makes its
loss fall, which is a change, but not the drift operators need to hear about.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from river import drift

from riverrun.schemas import DriftDetected
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.registry import Registry

logger = logging.getLogger(__name__)

Stream = Literal["learning", "served"]
_RECENT = 200  # losses averaged for the record of a detection


def build_detector(name: str) -> Any:
    """A fresh River detector by its setting's name (`adwin` or `page-hinkley`)."""
    if name == "adwin":
        return drift.ADWIN()  # type: ignore[no-untyped-call]  # River is untyped
    if name == "page-hinkley":
        return drift.PageHinkley()
    raise ValueError(f"unknown drift detector {name!r}: use adwin, page-hinkley or off")


@dataclass(frozen=True)
class Detection:
    """One detector firing: where in its stream, and the recent mean loss."""

    version: int
    stream: Stream
    detector: str
    position: int
    mean_loss: float
    mean_loss_before: float  # since the previous detection (or the start), this one's losses out


@dataclass
class _Watched:
    detector: Any
    seen: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))
    # Losses since the previous detection: whether a detection is for the worse or the better.
    total: float = 0.0
    count: int = 0


class DriftWatch:
    """Detectors per (version, stream); `observe_many` returns the detections of a batch."""

    def __init__(self, detector: str, warmup: int = 1000) -> None:
        self.enabled = detector != "off"
        self._name = detector
        self._warmup = warmup
        self._watched: dict[tuple[int, Stream], _Watched] = {}
        if self.enabled:
            build_detector(detector)  # an unknown name fails at start, not at the first loss

    def observe_many(
        self, version: int, stream: Stream, losses: Iterable[float]
    ) -> list[Detection]:
        """Feed a batch of one stream's losses, in order."""
        if not self.enabled:
            return []
        watched = self._watched.get((version, stream))
        if watched is None:
            watched = self._watched[(version, stream)] = _Watched(build_detector(self._name))
        detector, recent, warmup = watched.detector, watched.recent, self._warmup
        found: list[Detection] = []
        # Counted in locals (the same additions, in the same order), stored once per batch.
        seen, total, count = watched.seen, watched.total, watched.count
        remember, update = recent.append, detector.update
        try:
            for loss in losses:
                seen += 1
                remember(loss)
                total += loss
                count += 1
                if seen <= warmup:
                    continue
                update(loss)
                if detector.drift_detected:
                    mean = sum(recent) / len(recent)
                    earlier = count - len(recent)
                    before = (total - mean * len(recent)) / earlier if earlier > 0 else mean
                    found.append(Detection(version, stream, type(detector).__name__, seen,
                                           mean, before))  # fmt: skip
                    total, count = 0.0, 0
        finally:
            watched.seen, watched.total, watched.count = seen, total, count
        return found


class DriftReporter:
    """A model's drift watch and where its detections go: a metric, a log line, a record."""

    def __init__(
        self, model: str, watch: DriftWatch, registry: Registry, metrics: LearnerMetrics
    ) -> None:
        self._model = model
        self._watch = watch
        self._registry = registry
        self._metrics = metrics

    def observe_many(self, version: int, stream: Stream, losses: Iterable[float]) -> None:
        """Feed a batch of one stream's losses; publish a `DriftDetected` per detection."""
        for found in self._watch.observe_many(version, stream, losses):
            self._metrics.drift_detected.labels(self._model, str(version), stream).inc()
            logger.warning(
                "drift on %s@%d (%s loss): %s fired after %d losses, recent mean %.4f",
                self._model, version, stream, found.detector, found.position, found.mean_loss,
            )  # fmt: skip
            self._registry.publish_drift(DriftDetected(
                model=self._model, version=version, stream=stream, detector=found.detector,
                position=found.position, mean_loss=found.mean_loss,
                mean_loss_before=found.mean_loss_before,
            ))  # fmt: skip
