"""The learner: joins labels with features into an ordered examples log and learns it online.

Its settings import nothing heavy; the rest is loaded on first use, so that the command line
builds its parser without importing River.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from riverrun.workers.learner.settings import LearnerOptions, LearnerSettings
from riverrun.workers.learner.summary import LearnSummary

if TYPE_CHECKING:
    from riverrun.workers.learner.loop import Learner
    from riverrun.workers.learner.metrics import LearnerMetrics
    from riverrun.workers.learner.verify import Verdict, parse_reference, verify_snapshot

_ON_FIRST_USE = {
    "Learner": "riverrun.workers.learner.loop",
    "LearnerMetrics": "riverrun.workers.learner.metrics",
    "Verdict": "riverrun.workers.learner.verify",
    "parse_reference": "riverrun.workers.learner.verify",
    "verify_snapshot": "riverrun.workers.learner.verify",
}

__all__ = [
    "LearnSummary",
    "Learner",
    "LearnerMetrics",
    "LearnerOptions",
    "LearnerSettings",
    "Verdict",
    "parse_reference",
    "verify_snapshot",
]


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
