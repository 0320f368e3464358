"""What a bounded run of the learner did: both stages add to it, `riverrun learn` logs it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LearnSummary:
    """Counts and figures of one run; `riverrun learn` logs it at exit."""

    version: int = 0
    labels_joined: int = 0
    labels_unjoined: int = 0
    examples_learned: int = 0
    snapshots_published: int = 0
    next_offset: int = 0
    last_snapshot: int = 0
    metrics: dict[str, float] | None = None
    learn_seconds: float = 0.0  # reading and learning examples, snapshots not included
    snapshot_seconds: float = 0.0  # publishing snapshots (dump, sign, store, record)
