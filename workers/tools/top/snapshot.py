"""What `riverrun top` reads and shows: scrapes of metrics endpoints, and one frame's snapshot.

`Scrape` is one endpoint's Prometheus text at one moment, already parsed; `TopSnapshot` is the
fold of the scrapes and the registry that `render` draws. Both are plain data, so the fold and
the drawing are tested from canned text and records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["scorer", "learner", "judge", "unknown"]

_PREFIXES: tuple[tuple[str, Role], ...] = (
    ("riverrun_scorer_", "scorer"),
    ("riverrun_learner_", "learner"),
    ("riverrun_judge_", "judge"),
)


class Sample(BaseModel):
    """One Prometheus sample: full name (`_total`, `_bucket` included), labels, value."""

    model_config = ConfigDict(frozen=True)

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class Scrape(BaseModel):
    """One endpoint's metrics at one moment; `up` is False with the reason when unreachable."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    at: float = Field(description="Unix time of the scrape.")
    up: bool
    error: str = ""
    samples: tuple[Sample, ...] = ()

    @property
    def role(self) -> Role:
        """Which riverrun process serves these metrics, told by their names."""
        for sample in self.samples:
            for prefix, role in _PREFIXES:
                if sample.name.startswith(prefix):
                    return role
        return "unknown"


class EndpointStatus(BaseModel):
    """An endpoint as the frame shows it: up or down, and what it is."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    role: Role
    up: bool
    error: str = ""


class VersionStatus(BaseModel):
    """One version of a model: the registry's latest snapshot, its share, and live figures."""

    model_config = ConfigDict(frozen=True)

    version: int
    route: str | None = Field(default=None, description="Role under the policy, None when idle.")
    share: float | None = Field(default=None, description="Share of live traffic, 0 to 1.")
    latest_snapshot: int | None = None
    examples_seen: int | None = None
    snapshot_age_s: float | None = Field(default=None, description="Since the latest snapshot.")
    snapshot_metrics: dict[str, float] = Field(default_factory=dict)
    served_snapshots: list[int] = Field(
        default_factory=list, description="Snapshots the scorers report in use."
    )
    staleness_s: float | None = Field(default=None, description="Age of the snapshot served.")
    scored_total: float = 0.0
    scored_per_s: float | None = None
    live_metrics: dict[str, float] = Field(
        default_factory=dict, description="The learner's prequential metrics of this version."
    )
    examples_learned: float | None = None
    examples_learned_per_s: float | None = None


class Decision(BaseModel):
    """A policy record: who changed the split, how, and why (the judge's decisions among them)."""

    model_config = ConfigDict(frozen=True)

    sequence: int
    strategy: str
    action: str
    decided_by: str
    decided_at: datetime
    reason: str = ""
    assignments: list[str] = Field(
        default_factory=list, description="`v2 canary 0.2` per assignment."
    )


class ModelStatus(BaseModel):
    """A model: its policy, versions and recent decisions."""

    model_config = ConfigDict(frozen=True)

    name: str
    strategy: str = Field(description="The current policy's strategy; `default` without one "
                          "(the model's first live version answers).")
    policy_sequence: int | None = None
    versions: list[VersionStatus] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list, description="Newest first.")
    drifts: int = 0
    scored_total: float = 0.0
    scored_per_s: float | None = None


class PartitionLag(BaseModel):
    """Records of a partition the scorers have not committed yet."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    records: float


class Latency(BaseModel):
    """End-to-end latency quantiles estimated from the scorers' histogram buckets."""

    model_config = ConfigDict(frozen=True)

    p50_s: float
    p99_s: float
    observations: float
    window: Literal["last interval", "since start"]


class TopSnapshot(BaseModel):
    """One frame of `riverrun top`."""

    model_config = ConfigDict(frozen=True)

    taken_at: float = Field(description="Unix time of the frame.")
    endpoints: list[EndpointStatus] = Field(default_factory=list)
    registry: str = Field(default="", description="How the registry was read, or why not.")
    models: list[ModelStatus] = Field(default_factory=list)
    lag: list[PartitionLag] = Field(default_factory=list)
    latency: Latency | None = None
    scored_total: float = 0.0
    scored_per_s: float | None = None
    dead_letters_total: float = 0.0
    dead_letters_per_s: float | None = None
    dead_letter_classes: dict[str, float] = Field(default_factory=dict)

    @property
    def total_lag(self) -> float:
        """Records behind over every partition reported."""
        return sum(p.records for p in self.lag)
