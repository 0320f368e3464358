"""The protocol between the scorer's loop and a model: score a batch of feature dicts at once.

Routing and the loop never touch River directly: they call `predict_many`, so a vectorised
fast path can stand beside the generic per-row one. A leaf: it imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Features = Mapping[str, float | str]
Label = bool | int | float | str


@dataclass(frozen=True, slots=True)
class RowFailure:
    """A row the model could not score; the loop dead-letters it with this reason."""

    error_class: str
    reason: str


@dataclass(slots=True)
class ScoredBatch:
    """Per row: the prediction and class probabilities, or the failure that replaced them."""

    predictions: list[Label | None]
    probas: list[dict[str, float] | None]
    failures: dict[int, RowFailure] = field(default_factory=dict)


class KeyBlender(Protocol):
    """A per-key version's keys: blends each key's own answer into the global ones."""

    def blend_into(
        self, scored: ScoredBatch, rows: Sequence[Features], keys: Sequence[str | None]
    ) -> list[tuple[int, float] | None]:
        """Per row, the key's (examples, weight) when its own model answered, else None."""
        ...


class BatchScorer(Protocol):
    """Scores many rows in one call and never changes the model it wraps."""

    @property
    def is_classifier(self) -> bool:
        """Whether predictions come with class probabilities."""
        ...

    def predict_many(self, rows: Sequence[Features]) -> ScoredBatch:
        """Score rows; a row that fails is reported in `failures`, the others still scored."""
        ...


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One snapshot of one version of a model, ready to score."""

    name: str
    version: int
    snapshot: int
    scorer: BatchScorer
    estimator: Any
    expected_features: frozenset[str] | None = None
    # Unix time the snapshot was published; the scorer reports its age as staleness.
    published_at: float | None = None
    keys: KeyBlender | None = None  # a per-key version's keys; None for a global model

    @property
    def label(self) -> str:
        """`name@version#snapshot`, the way operators write it."""
        return f"{self.name}@{self.version}#{self.snapshot}"
