"""Test-then-train learning of one example, its metrics, and when to publish a snapshot.

`learn_example` is the only way riverrun teaches a model: predict, score, then `learn_one`, one
example at a time in log order. The learner and `riverrun models verify` both call it, so a
replay of the examples log reproduces a snapshot's bytes exactly (`learn_many` is not a
sequence of `learn_one`: river #651).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from river import base
from river import metrics as river_metrics

from riverrun.schemas.loss import Task
from riverrun.workers.learner.roc_auc import BinnedROCAUC

_EPSILON = 1e-15  # river.metrics.LogLoss clips probabilities the same way

# Names in snapshot records and metric labels; the River class behind each, by task (the ROC
# AUC is River's, counted by bin: the same value at a tenth of the cost).
_METRICS: dict[str, dict[str, Callable[[], Any]]] = {
    "binary": {
        "accuracy": river_metrics.Accuracy,
        "log_loss": river_metrics.LogLoss,
        "roc_auc": BinnedROCAUC,
        "f1": river_metrics.F1,
    },
    "multiclass": {
        "accuracy": river_metrics.Accuracy,
        "cross_entropy": river_metrics.CrossEntropy,
        "macro_f1": river_metrics.MacroF1,
    },
    "regression": {
        "mae": river_metrics.MAE,
        "rmse": river_metrics.RMSE,
        "r2": river_metrics.R2,
    },
}


def is_classifier(estimator: Any) -> bool:
    """Whether a River estimator (or pipeline, judged by its final step) is a classifier."""
    return isinstance(estimator, base.Classifier) or (
        not isinstance(estimator, base.Regressor) and hasattr(estimator, "predict_proba_one")
    )


def task_of(estimator: Any, declared: str | None = None) -> Task:
    """Return the task a model learns: as released when known, else from the estimator."""
    if declared in ("binary", "multiclass", "regression"):
        return declared  # type: ignore[return-value]  # narrowed by the membership test
    return "binary" if is_classifier(estimator) else "regression"


class Prequential:
    """Prequential (test-then-train) metrics of one version, suited to its task."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.metrics = {name: cls() for name, cls in _METRICS[task].items()}
        self.count = 0
        # Split once: the update runs for every example learned.
        self._on_labels = [m for m in self.metrics.values() if getattr(m, "requires_labels", True)]
        self._on_probas = [m for m in self.metrics.values() if m not in self._on_labels]

    def update(self, label: Any, prediction: Any, proba: dict[Any, float] | None) -> None:
        """Score one prediction made before learning its label."""
        self.count += 1
        if prediction is not None:
            for metric in self._on_labels:
                metric.update(label, prediction)
        for metric in self._on_probas:
            if proba is not None:
                metric.update(label, proba)
            elif prediction is not None:
                metric.update(label, prediction)

    def values(self) -> dict[str, float]:
        """Every metric's current value, plus the number of examples scored."""
        out = {name: float(metric.get()) for name, metric in self.metrics.items()}
        out["examples"] = float(self.count)
        return out


class NotLearned(Exception):
    """An example the model raised on, predicting or learning it; the reason names the error."""


def learn_example(
    estimator: Any,
    features: dict[str, Any],
    label: Any,
    prequential: Prequential | None,
    classifier: bool | None = None,
) -> float:
    """Predict, learn, then score the prediction (when metrics are kept); return the loss.

    The loss is the log loss of the true class for a classifier (clipped like River's), the
    squared error for a regressor: what the guardrail and the drift detectors watch. A model
    that has learned no class yet predicts nothing (`{}`): like River's own progressive
    validation, the metrics skip that example.

    The prediction is made even when `prequential` is None, because predicting can change a
    River model (unseen features get weights); replays must make the same calls to match.
    Pass `classifier` (`is_classifier(estimator)`) when learning many: it is not free.

    Raises:
        NotLearned: the model raised on the example. The metrics have not counted it, but the
            model may be half-changed: the caller rebuilds it without the example.

    """
    try:
        if classifier is None:
            classifier = is_classifier(estimator)
        # Predicting on a copy, as River's progressive validation does: a transformer may
        # change the row it is given (`Renamer`, a feature function), and learning needs it whole.
        if classifier:
            proba = estimator.predict_proba_one(dict(features))
            # River's own `predict_one`: the most probable class, the first one on a tie.
            prediction = max(proba, key=proba.get) if proba else None
            p = proba.get(label, 0.0) if proba else 0.0
            loss = -math.log(min(max(p, _EPSILON), 1.0))
            proba = proba or None
        else:
            proba = None
            prediction = estimator.predict_one(dict(features))
            try:
                loss = (float(prediction) - float(label)) ** 2
            except (TypeError, ValueError):
                loss = 0.0 if prediction == label else 1.0
        estimator.learn_one(features, label)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001  # a model's error (a Rust panic too) is the example's
        raise NotLearned(f"{type(exc).__name__}: {exc}"[:500]) from exc
    if prequential is not None:
        prequential.update(label, prediction, proba)
    return loss


@dataclass
class SnapshotCadence:
    """Decide when to publish: every `every` examples or `interval_s` s, if the model changed."""

    every: int | None = 1000
    interval_s: float | None = 60.0
    last_at: float = 0.0
    changed: int = field(default=0)

    def learned(self, count: int = 1) -> None:
        """Count examples learned since the last snapshot."""
        self.changed += count

    def count_due(self) -> bool:
        """Whether `every` examples were learned since the last snapshot.

        Checked after each example, so count-based snapshots fall on exact multiples of
        `every` whatever the batching: a restarted learner publishes at the same offsets.
        """
        return self.every is not None and self.changed >= self.every

    def due(self, now: float) -> bool:
        """Whether a snapshot should be published now (`now` on a monotonic clock)."""
        if self.changed <= 0:
            return False
        if self.count_due():
            return True
        return self.interval_s is not None and now - self.last_at >= self.interval_s

    def published(self, now: float) -> None:
        """Start counting again: a snapshot went out."""
        self.changed = 0
        self.last_at = now
