"""The loss an outcome records: how one prediction is scored against its later label.

`OutcomeRecorded.loss` means this: the log loss of the true class for a classifier that gave
probabilities (clipped like River's `LogLoss`), the 0/1 error for one that did not, and the
squared error for a regressor. The learner writes it; the judge computes it for shadows.
"""

from __future__ import annotations

import math
from typing import Literal

Task = Literal["binary", "multiclass", "regression"]

# Log loss of a probability of zero is infinite; clip as river.metrics.LogLoss does.
_EPSILON = 1e-15


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def outcome_loss(
    prediction: object, proba: dict[str, float] | None, label: object, task: Task | None = None
) -> float:
    """Return the loss of one prediction against its label.

    Classifiers with probabilities: log loss of the true class. Classifiers without: 0/1 error.
    Regressors: squared error. The task is inferred when not given: probabilities mean a
    classifier, a numeric (non-boolean) prediction and label mean a regressor.
    """
    if task is None:
        if proba:
            task = "binary"
        elif _is_number(prediction) and _is_number(label):
            task = "regression"
        else:
            task = "multiclass"
    if task == "regression":
        if not (_is_number(prediction) and _is_number(label)):
            return 0.0 if prediction == label else 1.0
        error = float(prediction) - float(label)  # type: ignore[arg-type]  # numbers, checked
        return error * error
    if proba:
        p = proba.get(str(label), 0.0)
        return -math.log(min(max(p, _EPSILON), 1.0))
    return 0.0 if prediction == label else 1.0
