"""The generic scorer: River's own `predict_proba_one`/`predict_one`, one row at a time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from river import base

from riverrun.workers.scorer.model.protocol import Features, Label, RowFailure, ScoredBatch


class NonFiniteAnswer(ArithmeticError):
    """The model answered NaN or infinity."""


def _classifier_answer(estimator: Any, row: Features) -> tuple[Label, dict[str, float]]:
    proba = estimator.predict_proba_one(row)
    if not proba:
        raise ValueError("the model has not learned any class yet")
    # River's own predict_one: the first class with the highest probability.
    prediction = max(proba, key=proba.get)
    out = {}
    for label, p in proba.items():
        if not math.isfinite(p):
            raise NonFiniteAnswer(f"probability of class {label!r} is {p}")
        out[str(label)] = p
    return prediction, out


class RiverScorer:
    """Works for any River classifier or regressor; isolates a failing row."""

    def __init__(self, estimator: Any) -> None:
        self._estimator = estimator
        # River's pipelines pass isinstance() as their final step's kind.
        self._is_classifier = isinstance(estimator, base.Classifier) or (
            not isinstance(estimator, base.Regressor) and hasattr(estimator, "predict_proba_one")
        )

    @property
    def is_classifier(self) -> bool:
        """Whether predictions come with class probabilities."""
        return self._is_classifier

    def predict_many(self, rows: Sequence[Features]) -> ScoredBatch:
        """Score each row with River; a row that raises or yields NaN becomes a failure."""
        n = len(rows)
        batch = ScoredBatch([None] * n, [None] * n)
        estimator = self._estimator
        for i, row in enumerate(rows):
            # A copy: a transformer may change the row it is given (`Renamer`, a feature
            # function), and the row travels on with its prediction.
            row = dict(row)
            try:
                if self._is_classifier:
                    batch.predictions[i], batch.probas[i] = _classifier_answer(estimator, row)
                else:
                    value = estimator.predict_one(row)
                    if value is None or not math.isfinite(float(value)):
                        raise NonFiniteAnswer(f"the model predicted {value!r}")
                    batch.predictions[i] = float(value)
            except NonFiniteAnswer as exc:
                batch.failures[i] = RowFailure("ModelReturnedNonFinite", str(exc))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001  # the row's, not the worker's: a Rust panic too
                batch.failures[i] = RowFailure(
                    "ModelRaised", f"{type(exc).__name__}: {exc}"[:500]
                )
        return batch
