"""Requests checked against their version's signature before any model sees them.

A row that lacks a required feature, or carries a string where the version learned numbers (or
a number where it learned a category), fails as `FeatureTypeMismatch` naming the feature; the
rest go to the model's own scorer, fast path or River's alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from riverrun.schemas import Signature
from riverrun.workers.scorer.model.protocol import BatchScorer, Features, RowFailure, ScoredBatch

FEATURE_TYPE_MISMATCH = "FeatureTypeMismatch"


class SignatureChecker:
    """The checks of one signature, prepared once per loaded version."""

    def __init__(self, signature: Signature) -> None:
        self._numbers = tuple(f.name for f in signature.features if f.kind == "number")
        self._categories = tuple(f.name for f in signature.features if f.kind == "category")
        self._required = tuple(f.name for f in signature.features if f.required)

    def __bool__(self) -> bool:
        return bool(self._numbers or self._categories)

    def check(self, row: Features) -> RowFailure | None:
        """Why the row breaks the signature, or None when it keeps it."""
        for name in self._required:
            if row.get(name) is None:
                return RowFailure(FEATURE_TYPE_MISMATCH,
                                  f"feature {name!r} is required by this version and missing")
        for name in self._numbers:
            value = row.get(name)
            if isinstance(value, str):
                return RowFailure(FEATURE_TYPE_MISMATCH, f"feature {name!r} must be a number, "
                                  f"got the string {value[:64]!r}")
        for name in self._categories:
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                return RowFailure(FEATURE_TYPE_MISMATCH, f"feature {name!r} must be a category "
                                  f"(a string), got {value!r}: send it as a string")
        return None


class SignatureScorer:
    """Checks rows against a signature, and scores those that keep it with the inner scorer."""

    def __init__(self, inner: BatchScorer, checker: SignatureChecker) -> None:
        self._inner = inner
        self._checker = checker

    @property
    def is_classifier(self) -> bool:
        """Whether predictions come with class probabilities."""
        return bool(self._inner.is_classifier)

    def predict_many(self, rows: Sequence[Features]) -> ScoredBatch:
        """Score the rows that keep the signature; the others fail, named."""
        check = self._checker.check
        failed = {}
        for i, row in enumerate(rows):
            failure = check(row)
            if failure is not None:
                failed[i] = failure
        if not failed:
            return self._inner.predict_many(rows)
        kept = [i for i in range(len(rows)) if i not in failed]
        inner = self._inner.predict_many([rows[i] for i in kept])
        n = len(rows)
        batch = ScoredBatch([None] * n, [None] * n, failed)
        for j, i in enumerate(kept):
            batch.predictions[i] = inner.predictions[j]
            batch.probas[i] = inner.probas[j]
            if j in inner.failures:
                batch.failures[i] = inner.failures[j]
        return batch


def checked(scorer: BatchScorer, signature: Signature | None) -> BatchScorer:
    """The scorer behind a signature check, or as it is when the signature names no feature."""
    if signature is None:
        return scorer
    checker = SignatureChecker(signature)
    return SignatureScorer(scorer, checker) if checker else scorer
