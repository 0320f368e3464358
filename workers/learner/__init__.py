"""The learner: joins labels with features into an ordered examples log and learns it online."""

from __future__ import annotations

from workers.learner.join import (
    DUPLICATE_LABEL,
    UNJOINED_REASONS,
    UNKNOWN_REQUEST,
    WINDOW_EXPIRED,
    Joined,
    JoinWindow,
    Unjoined,
    outcome_loss,
)
from workers.learner.loop import Learner, LearnSummary
from workers.learner.metrics import LearnerMetrics
from workers.learner.prequential import Prequential, SnapshotCadence, learn_example, task_of
from workers.learner.settings import LearnerOptions, LearnerSettings
from workers.learner.verify import Verdict, parse_reference, verify_snapshot

__all__ = [
    "DUPLICATE_LABEL",
    "UNJOINED_REASONS",
    "UNKNOWN_REQUEST",
    "WINDOW_EXPIRED",
    "JoinWindow",
    "Joined",
    "LearnSummary",
    "Learner",
    "LearnerMetrics",
    "LearnerOptions",
    "LearnerSettings",
    "Prequential",
    "SnapshotCadence",
    "Unjoined",
    "Verdict",
    "learn_example",
    "outcome_loss",
    "parse_reference",
    "task_of",
    "verify_snapshot",
]
