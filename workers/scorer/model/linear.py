"""A vectorised scorer for linear River pipelines (`StandardScaler | LogisticRegression` and kin).

River scores one dict at a time; for a linear model the whole batch is one matrix product.
The fast path is only used when a self-check on probe rows reproduces River's own predictions
exactly and its probabilities to 1e-12, so routing never sees a different answer. Only rows of
plain numbers over exactly the trained features take it; any other row (a category or a
numeric string, a missing or an extra feature) goes through River itself, alone, so a row is
answered or refused as River would, whatever its neighbours in the batch.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
from river import compose, linear_model, preprocessing

from riverrun.workers.scorer.model.generic import RiverScorer
from riverrun.workers.scorer.model.protocol import Features, RowFailure, ScoredBatch

_PROBA_TOLERANCE = 1e-12
_PROBE_ROWS = 64
# Values River does arithmetic on as numbers (bool is an int to Python and to River).
_NUMBERS = frozenset({float, int, bool})


class LinearPipelineScorer:
    """Scores a batch as `(X - means) / stds @ weights + intercept`, then River's link."""

    def __init__(
        self,
        columns: list[str],
        means: np.ndarray,
        stds: np.ndarray,
        weights: np.ndarray,
        intercept: float,
        *,
        logistic: bool,
        fallback: RiverScorer,
    ) -> None:
        self._columns = columns
        # itemgetter builds a row's tuple in C; with one column it returns a bare value.
        getter = operator.itemgetter(*columns)
        self._pick = getter if len(columns) > 1 else (lambda row: (getter(row),))
        self._means = means
        self._stds = stds
        self._safe_stds = np.where(stds > 0, stds, 1.0)
        self._zero_std = stds == 0
        self._weights = weights
        self._intercept = intercept
        self._logistic = logistic
        self._fallback = fallback

    @property
    def is_classifier(self) -> bool:
        """Whether predictions come with class probabilities."""
        return self._logistic

    @property
    def columns(self) -> list[str]:
        """The feature names the model was trained on."""
        return list(self._columns)

    def predict_many(self, rows: Sequence[Features]) -> ScoredBatch:
        """Score rows in one product; rows of another shape or kind go through River itself."""
        n = len(rows)
        width = len(self._columns)
        fast_index, matrix = self._plain_rows(rows, width)
        x = None
        # Numbers only, checked over the whole batch in one pass: a string (even "1.5", which a
        # float array would parse and River refuses) is River's to answer, row by row.
        if set(map(type, chain.from_iterable(matrix))) <= _NUMBERS:
            with contextlib.suppress(OverflowError):  # an int beyond any float
                x = np.array(matrix, dtype=np.float64).reshape(len(matrix), width)
        if x is None:
            fast_index, x = self._numbers_only(matrix, fast_index, width)

        scaled = (x - self._means) / self._safe_stds
        scaled[:, self._zero_std] = 0.0
        # Summed row by row (not a matrix product, whose blocking depends on the batch's size),
        # so that a row's answer is bit for bit the same whatever batch it comes in.
        raw = (scaled * self._weights).sum(axis=1) + self._intercept
        values = raw.tolist()
        if self._logistic:
            exp = math.exp
            # River's utils.math.sigmoid, clamps included, so saturated rows match exactly.
            ps = [0.0 if z < -30 else 1.0 if z > 30 else 1.0 / (1.0 + exp(-z)) for z in values]
            answers: list[Any] = [p > 1.0 - p for p in ps]
            odds: list[Any] = [{"False": 1.0 - p, "True": p} for p in ps]
        else:
            answers, odds = values, [None] * len(values)
        if len(fast_index) == n:  # every row took the fast path (fast_index is 0..n-1)
            batch = ScoredBatch(answers, odds)
        else:
            batch = ScoredBatch([None] * n, [None] * n)
            for i, answer, odd in zip(fast_index, answers, odds, strict=True):
                batch.predictions[i] = answer
                batch.probas[i] = odd
            self._score_rest(rows, fast_index, batch)
        self._flag_non_finite(batch, fast_index, raw)
        return batch

    def _plain_rows(self, rows: Sequence[Features], width: int) -> tuple[list[int], list[Any]]:
        """The rows over exactly the trained features, as value tuples, and their positions."""
        pick = self._pick
        if set(map(len, rows)) == {width}:  # the usual batch: try it whole, in C
            try:
                return list(range(len(rows))), list(map(pick, rows))
            except KeyError:
                pass
        fast_index: list[int] = []
        matrix: list[Any] = []
        for i, row in enumerate(rows):
            if len(row) == width:
                try:
                    matrix.append(pick(row))
                except KeyError:
                    continue
                fast_index.append(i)
        return fast_index, matrix

    @staticmethod
    def _numbers_only(
        matrix: list[Any], fast_index: list[int], width: int
    ) -> tuple[list[int], np.ndarray]:
        """Keep the rows whose every value is a number; the others are River's to answer."""
        numbers = _NUMBERS.issuperset
        kept = [j for j, values in enumerate(matrix) if numbers(map(type, values))]
        try:
            x = np.array([matrix[j] for j in kept], dtype=np.float64)
        except OverflowError:  # an int beyond any float, which River refuses too: row by row
            floats: list[list[float]] = []
            fits: list[int] = []
            for j in kept:
                try:
                    floats.append([float(v) for v in matrix[j]])
                except OverflowError:
                    continue
                fits.append(j)
            kept, x = fits, np.array(floats, dtype=np.float64)
        return [fast_index[j] for j in kept], x.reshape(len(kept), width)

    def _score_rest(
        self, rows: Sequence[Features], fast_index: list[int], batch: ScoredBatch
    ) -> None:
        done = set(fast_index)
        rest = [i for i in range(len(rows)) if i not in done]
        slow = self._fallback.predict_many([rows[i] for i in rest])
        for j, i in enumerate(rest):
            batch.predictions[i] = slow.predictions[j]
            batch.probas[i] = slow.probas[j]
            if j in slow.failures:
                batch.failures[i] = slow.failures[j]

    def _flag_non_finite(self, batch: ScoredBatch, fast_index: list[int], raw: np.ndarray) -> None:
        # River's sigmoid turns an infinite score into a certain class; only NaN has no answer.
        bad = np.isnan(raw) if self._logistic else ~np.isfinite(raw)
        if len(fast_index) and bad.any():
            for i, z in zip(fast_index, raw.tolist(), strict=True):
                if math.isnan(z) or not (self._logistic or math.isfinite(z)):
                    batch.failures[i] = RowFailure(
                        "ModelReturnedNonFinite", f"the linear score is {z}"
                    )


def _unpack(estimator: Any) -> tuple[Any, Any] | None:
    """(scaler or None, linear model) when the estimator has a shape the fast path knows."""
    linear_types = (linear_model.LogisticRegression, linear_model.LinearRegression)
    # Exact types: River's Pipeline passes isinstance() checks for its last step's class.
    if type(estimator) in linear_types:
        return None, estimator
    if type(estimator) is not compose.Pipeline:
        return None
    steps = list(estimator.steps.values())
    if len(steps) == 2 and type(steps[1]) in linear_types:
        scaler = steps[0]
        if (
            type(scaler) is preprocessing.StandardScaler
            and scaler.with_std
            and scaler.window_size is None
        ):
            return scaler, steps[1]
    return None


def linear_fast_path(estimator: Any) -> LinearPipelineScorer | None:
    """A vectorised scorer for this estimator, or None when it would not match River exactly."""
    parts = _unpack(estimator)
    if parts is None:
        return None
    scaler, model = parts
    weights_dict = {k: float(v) for k, v in dict(model._weights).items()}
    columns = list(weights_dict)
    if scaler is not None:
        columns = list(dict.fromkeys([*scaler.means, *columns]))
    if not columns:
        return None
    if any(not isinstance(c, str) for c in columns):
        return None
    weights = np.array([weights_dict.get(c, 0.0) for c in columns], dtype=np.float64)
    if scaler is not None:
        means = np.array([float(scaler.means[c]) for c in columns], dtype=np.float64)
        stds = np.array(
            [float(scaler.vars[c]) ** 0.5 if scaler.vars[c] else 0.0 for c in columns],
            dtype=np.float64,
        )
    else:
        means = np.zeros(len(columns))
        stds = np.ones(len(columns))
    scorer = LinearPipelineScorer(
        columns,
        means,
        stds,
        weights,
        float(model.intercept),
        logistic=type(model) is linear_model.LogisticRegression,
        fallback=RiverScorer(estimator),
    )
    return scorer if _agrees_with_river(scorer, estimator, means, stds) else None


def _agrees_with_river(
    scorer: LinearPipelineScorer, estimator: Any, means: np.ndarray, stds: np.ndarray
) -> bool:
    rng = np.random.default_rng(0)
    spread = np.where(stds > 0, stds, 1.0)
    probe = means + rng.normal(size=(_PROBE_ROWS, len(means))) * spread * 2
    rows = [dict(zip(scorer.columns, r.tolist(), strict=True)) for r in probe]
    # River's scaler ignores features it never saw; so does the fast path.
    fast = scorer.predict_many(rows)
    slow = RiverScorer(estimator).predict_many(rows)
    if fast.failures or slow.failures:
        return False
    for i in range(len(rows)):
        if fast.predictions[i] != slow.predictions[i] and scorer.is_classifier:
            return False
        if scorer.is_classifier:
            fp, sp = fast.probas[i] or {}, slow.probas[i] or {}
            if fp.keys() != sp.keys():
                return False
            if any(abs(fp[k] - sp[k]) > _PROBA_TOLERANCE for k in fp):
                return False
        else:
            a, b = fast.predictions[i], slow.predictions[i]
            if not isinstance(a, float) or not isinstance(b, float):
                return False
            if abs(a - b) > _PROBA_TOLERANCE * max(1.0, abs(b)):
                return False
    return True

