"""Where the scorer's models come from, and how an estimator becomes a model ready to serve."""

from __future__ import annotations

from typing import Any, Protocol

from riverrun.schemas import Signature
from riverrun.workers.scorer.model.deployment import Deployment
from riverrun.workers.scorer.model.generic import RiverScorer
from riverrun.workers.scorer.model.linear import linear_fast_path
from riverrun.workers.scorer.model.protocol import BatchScorer, RowFailure, ServedModel
from riverrun.workers.scorer.model.readonly import freeze_for_scoring
from riverrun.workers.scorer.model.signature import checked


class ModelSource(Protocol):
    """Where the scorer gets its models: one file, or the registry on Kafka."""

    def deployment(self, name: str) -> Deployment | None:
        """The model's route plan and its loaded snapshots, or None when it is not served."""
        ...

    def refresh(self) -> None:
        """Take in new snapshots; called between batches, never inside one."""
        ...

    def unavailable(self, name: str) -> RowFailure:
        """Why `deployment(name)` gave None: the request's dead letter's class and reason."""
        ...

    def served(self) -> list[ServedModel]:
        """The snapshots held for serving now; read by the metrics thread at each scrape."""
        ...


def build_scorer(
    estimator: Any, *, fast_path: bool = True, signature: Signature | None = None
) -> BatchScorer:
    """The fastest scorer that reproduces River's own answers, behind the signature's check."""
    if fast_path:
        fast = linear_fast_path(estimator)
        if fast is not None:
            return checked(fast, signature)
    return checked(RiverScorer(estimator), signature)


def expected_features_of(estimator: Any) -> frozenset[str] | None:
    """Feature names a trained pipeline relies on, when River exposes them."""
    steps = list(getattr(estimator, "steps", {}).values()) or [estimator]
    first = steps[0]
    for attribute in ("means", "_weights"):
        table = getattr(first, attribute, None)
        if table:
            return frozenset(str(k) for k in dict(table))
    return None


def serve(
    estimator: Any,
    name: str,
    version: int,
    snapshot: int,
    published_at: float | None,
    *,
    fast_path: bool = True,
    signature: Signature | None = None,
) -> ServedModel:
    """Make an estimator read-only and wrap it in its fastest scorer: every source does this."""
    estimator = freeze_for_scoring(estimator)
    return ServedModel(
        name=name,
        version=version,
        snapshot=snapshot,
        scorer=build_scorer(estimator, fast_path=fast_path, signature=signature),
        estimator=estimator,
        expected_features=expected_features_of(estimator),
        published_at=published_at,
    )
