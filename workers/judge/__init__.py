"""The judge: outcomes per version, the statistics of each policy, and its decisions."""

from __future__ import annotations

from riverrun.workers.judge.core import Judge, ShadowJoin
from riverrun.workers.judge.decision import assess, decide
from riverrun.workers.judge.evidence import Tally, VersionEvidence, evidence_key

__all__ = ["Judge", "ShadowJoin", "Tally", "VersionEvidence", "assess", "decide", "evidence_key"]
