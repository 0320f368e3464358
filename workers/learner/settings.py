"""Settings of the learner: Kafka, topics, the registry and the learner's own section."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from riverrun.schemas import KafkaSettings, RiverrunSettings, TopicSettings
from riverrun.workers.registry import RegistrySettings
from riverrun.workers.runtime.crashpoint import LEARNER_POINTS, CrashPoints


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class LearnerOptions(BaseModel):
    """The learner's own knobs (`RIVERRUN_LEARNER__<FIELD>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(
        default="",
        description="Name of the model to learn; its champion and every version its policy "
        "names learn.",
    )
    stage: Literal["both", "join", "learn", "keys"] = Field(
        default="both",
        description="What this process runs: `both` stages in one process, or one of the two "
        "on its own, so that they use two cores: `join` (labels and predictions into the "
        "examples log) and `learn` (the examples log into snapshots). Run a `join` and a "
        "`learn` process together, never beside a `both`. `keys`: one of a group of learners "
        "of a per-key version's keys, beside a learner started with `--keys apart`.",
    )
    keys: Literal["here", "apart"] = Field(
        default="here",
        description="Per-key versions: learn their keys in this learner (`here`), or leave "
        "them to a group of `--stage keys` learners (`apart`).",
    )
    snapshot_every: int | None = Field(
        default=10_000, ge=1,
        description="Publish a snapshot after this many examples learned: what a restart "
        "learns again at most (the interval sets freshness; under a backlog, this bounds it).",
    )  # fmt: skip
    snapshot_interval: float | None = Field(
        default=0.5, gt=0,
        description="Publish a snapshot after this many seconds (if changed): the freshness "
        "of what scorers serve.",
    )
    batch_size: int = Field(
        default=2000, ge=1, le=100_000,
        description="Max records per batch: one join transaction each, so a backlog is "
        "committed in few of them.",
    )  # fmt: skip
    batch_timeout_ms: int = Field(
        default=100, ge=1, le=60_000, description="Max wait to fill a batch, in milliseconds."
    )
    window_max_count: int = Field(
        default=100_000, ge=1, description="Predictions kept for the label join, at most."
    )
    window_max_age_s: float = Field(
        default=3600.0, gt=0, description="Predictions older than this (before a label) expire."
    )
    max_pending_labels: int = Field(
        default=10_000, ge=1,
        description="Labels held while predictions catch up; feedback pauses beyond this.",
    )  # fmt: skip
    drift_detector: Literal["adwin", "page-hinkley", "off"] = Field(
        default="adwin",
        description="River drift detector run on each version's loss streams (learning and "
        "served): `adwin`, `page-hinkley` or `off`.",
    )
    drift_warmup: int = Field(
        default=1000, ge=0,
        description="Losses of a stream not shown to its detector at first: a model still "
        "converging is not a drift.",
    )  # fmt: skip
    guardrail_loss_ratio: float | None = Field(
        default=3.0, gt=1.0,
        description="Refuse to publish a snapshot whose examples' mean loss exceeds the "
        "accepted ones' by this factor; the last good snapshot is restored and publishing "
        "stops until the learner restarts. Unset to turn the guardrail off.",
    )
    guardrail_min_examples: int = Field(
        default=100, ge=1, description="Examples an interval needs before the guardrail judges it."
    )
    worker_id: str = Field(
        default_factory=_default_worker_id,
        description="Stable id of this learner; part of its transactional id. Use the pod name.",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Port of /metrics, /livez and /readyz; off if unset.",
    )
    crash_at: str | None = Field(
        default=None,
        description="Fault injection for tests: `POINT:N` SIGKILLs the learner at the N-th pass "
        f"of POINT ({', '.join(sorted(LEARNER_POINTS))}).",
    )
    shutdown_timeout_s: float = Field(
        default=20.0, gt=0, description="Time allowed to finish, flush and commit on SIGTERM."
    )

    @field_validator("crash_at")
    @classmethod
    def _known_crash_point(cls, value: str | None) -> str | None:
        CrashPoints(value, LEARNER_POINTS)  # raises with the list of known points
        return value

    @property
    def group_id(self) -> str:
        """One consumer group per model: one writer per model's latest version."""
        return f"riverrun-learner-{self.model}"

    @property
    def transactional_id(self) -> str:
        """Stable per model, so a restarted learner fences its zombie whatever its worker id."""
        return f"riverrun-learner-{self.model}"


class LearnerSettings(RiverrunSettings):
    """Everything the `riverrun learn` process reads, from flags and `RIVERRUN_*`."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    learner: LearnerOptions = Field(default_factory=LearnerOptions)
