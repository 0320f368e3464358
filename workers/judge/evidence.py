"""What the judge knows of each version: correctness, loss and errors, as additive moments.

Evidence is kept per (model, experiment, version). An experiment starts with an operator's
deployment and carries on through the judge's re-weightings (`PolicyChanged.experiment_id`), so
a bandit's evidence survives its own weight changes while a new canary starts from nothing.
Values are plain JSON dicts in the store, so a changelog-backed table can hold them.

A race's evidence is not counted here: its candidates never answer, and the learner pairs their
losses with the champion's on the same examples (`PairedEvidence`, read off their snapshots).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from riverrun.schemas import SnapshotPublished
from riverrun.workers.judge.statistics import Metric, Moments

Label = bool | int | float | str


@dataclass(frozen=True, slots=True)
class VersionEvidence:
    """A version's outcomes in one experiment: 0/1 correctness, loss, and failed requests."""

    correct: Moments = field(default_factory=Moments)
    loss: Moments = field(default_factory=Moments)
    errors: int = 0

    @property
    def n(self) -> int:
        """Outcomes observed."""
        return self.loss.n

    def score(self, metric: Metric) -> Moments:
        """The moments the metric's test reads."""
        return self.correct if metric == "accuracy" else self.loss

    def merge(self, other: VersionEvidence) -> VersionEvidence:
        """Both bodies of evidence together."""
        return VersionEvidence(self.correct.merge(other.correct), self.loss.merge(other.loss),
                               self.errors + other.errors)

    def to_json(self) -> dict[str, float]:
        """A flat dict for the store."""
        return {
            "n": self.loss.n, "correct": self.correct.total,
            "loss": self.loss.total, "loss_sq": self.loss.total_sq, "errors": self.errors,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VersionEvidence:
        """Read back `to_json`."""
        n = int(data.get("n", 0))
        correct = float(data.get("correct", 0.0))
        return cls(Moments(n, correct, correct),
                   Moments(n, float(data.get("loss", 0.0)), float(data.get("loss_sq", 0.0))),
                   int(data.get("errors", 0)))


def evidence_key(model: str, experiment: int, version: int) -> str:
    """Key of one version's evidence in one experiment of a model."""
    return f"{model}#{experiment}#{version}"


def parse_key(key: str) -> tuple[str, int, int]:
    """(model, experiment, version) of an evidence key."""
    model, experiment, version = key.rsplit("#", 2)
    return model, int(experiment), int(version)


def is_correct(prediction: Label, label: Label) -> bool:
    """Whether a prediction got its label right (labels may arrive as their strings)."""
    return prediction == label or str(prediction) == str(label)


class Tally:
    """Evidence gathered from one batch of outcomes, written to the store once per key."""

    def __init__(self) -> None:
        self._counts: dict[str, list[float]] = {}

    def add_outcome(self, key: str, correct: bool, loss: float) -> None:
        """Count one outcome."""
        row = self._counts.get(key)
        if row is None:
            row = self._counts[key] = [0.0, 0.0, 0.0, 0.0, 0.0]
        row[0] += 1
        row[1] += 1.0 if correct else 0.0
        row[2] += loss
        row[3] += loss * loss

    def add_error(self, key: str) -> None:
        """Count one request the version failed on."""
        row = self._counts.get(key)
        if row is None:
            row = self._counts[key] = [0.0, 0.0, 0.0, 0.0, 0.0]
        row[4] += 1

    def write(self, store: MutableMapping[str, Any]) -> int:
        """Add the batch into the store (one read-modify-write per key); return keys written."""
        for key, (n, correct, loss, loss_sq, errors) in self._counts.items():
            batch = VersionEvidence(Moments(int(n), correct, correct),
                                    Moments(int(n), loss, loss_sq), int(errors))
            current = store.get(key)
            merged = VersionEvidence.from_json(current).merge(batch) if current else batch
            store[key] = merged.to_json()
        written = len(self._counts)
        self._counts.clear()
        return written


def evidence_of(
    store: Mapping[str, Any], model: str, experiment: int, versions: list[int]
) -> dict[int, VersionEvidence]:
    """The evidence of some versions in one experiment (empty evidence for unseen ones)."""
    out = {}
    for version in versions:
        data = store.get(evidence_key(model, experiment, version))
        out[version] = VersionEvidence.from_json(data) if data else VersionEvidence()
    return out


@dataclass(frozen=True, slots=True)
class PairedEvidence:
    """A version's losses paired with the champion's, as its newest snapshot carried them.

    The learner's counts are cumulative since the experiment began, so the newest snapshot
    holds all of it; `reached` is the examples-log offset it learned up to (its lineage).
    """

    version: int
    snapshot: int
    experiment: int
    against: int
    since_offset: int
    differences: Moments
    reached: int | None = None

    @classmethod
    def from_snapshot(
        cls, snapshot: SnapshotPublished, lineage_key: str | None = None
    ) -> PairedEvidence | None:
        """The paired evidence a snapshot carries, None when it carries none.

        `lineage_key` names the examples log in the lineage (`<topic>:0`); None takes the
        furthest offset the lineage names.
        """
        paired = snapshot.paired
        if paired is None:
            return None
        lineage = snapshot.lineage
        reached = (lineage.get(lineage_key) if lineage_key is not None
                   else max(lineage.values(), default=None))  # fmt: skip
        return cls(snapshot.version, snapshot.snapshot, paired.experiment, paired.against,
                   paired.since_offset, Moments(paired.n, paired.diff_sum, paired.diff_sum_sq),
                   reached)  # fmt: skip

    def counts_in(self, experiment: int, against: int) -> bool:
        """Whether this evidence belongs to that experiment, paired with that champion."""
        return self.experiment == experiment and self.against == against
