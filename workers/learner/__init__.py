"""The learner: joins labels with features into an ordered examples log and learns it online."""

from __future__ import annotations

from riverrun.workers.learner.join import (
    DUPLICATE_LABEL,
    UNJOINED_REASONS,
    UNKNOWN_REQUEST,
    WINDOW_EXPIRED,
    Joined,
    JoinWindow,
    Unjoined,
    outcome_loss,
)
from riverrun.workers.learner.loop import Learner, LearnSummary
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.prequential import Prequential, SnapshotCadence, learn_example, task_of
from riverrun.workers.learner.settings import LearnerOptions, LearnerSettings
from riverrun.workers.learner.verify import Verdict, parse_reference, verify_snapshot

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
