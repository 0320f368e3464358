"""Settings of the scoring worker: Kafka, topics and the scorer's own section."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from riverrun.schemas import KafkaSettings, RiverrunSettings, TopicSettings
from riverrun.workers.registry.client import RegistrySettings
from riverrun.workers.runtime.crashpoint import CrashPoints


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ScorerOptions(BaseModel):
    """The scorer's own knobs (`RIVERRUN_SCORER__<FIELD>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_file: Path | None = Field(
        default=None,
        description="Serve this pickled River model instead of following the registry.",
    )
    model_name: str | None = Field(
        default=None, description="Name the model file is served under; the file's stem if unset."
    )
    model_version: int = Field(default=1, ge=1, description="Version reported for the model file.")
    model_snapshot: int = Field(default=0, ge=0, description="Snapshot reported for the file.")
    group_id: str = Field(default="riverrun-scorer", description="Consumer group of the scorers.")
    worker_id: str = Field(
        default_factory=_default_worker_id,
        description="Stable id of this worker; names its transactional id. Use the pod name.",
    )
    batch_size: int = Field(default=1000, ge=1, le=100_000, description="Max records per batch.")
    batch_timeout_ms: int = Field(
        default=20, ge=1, le=60_000,
        description="How long to wait for a record when none has arrived, in milliseconds (a "
        "batch is what has arrived, never held back to fill).",
    )
    exactly_once: bool = Field(
        default=False, description="Use Kafka transactions (consume-transform-produce)."
    )
    transaction_interval_ms: int = Field(
        default=100, ge=0, le=60_000,
        description="Exactly-once: how long one transaction may take in batches, in "
        "milliseconds, while more requests keep arriving (Kafka Streams commits every 100 ms "
        "under exactly-once). It commits at once when nothing more has arrived, so a light load "
        "is not held back; 0 commits every batch on its own.",
    )
    max_request_bytes: int = Field(
        default=65_536, ge=64, description="Requests larger than this are dead-lettered."
    )
    missing_features: Literal["reject", "allow"] = Field(
        default="reject",
        description="What to do with a request lacking a feature the model was trained on.",
    )
    max_unacknowledged_ms: int = Field(
        default=1000, ge=1, le=60_000,
        description="Offsets are stored whenever every output handed to the producer is "
        "acknowledged; when that has not been so for this long, the scorer waits until it is.",
    )  # fmt: skip
    model_cache_size: int = Field(
        default=8, ge=1, le=1024, description="Models kept loaded at once (least recently used out)."
    )
    key_cache_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024,
        description="Per-key models: bytes of key states kept live (least recently used out; "
        "a key asked for once is kept only when asked for again).",
    )  # fmt: skip
    first_load_wait_ms: int = Field(
        default=5000, ge=0, le=600_000,
        description="How long a batch waits, at most, for the models its requests are the first "
        "to name; requests for a model still loading after it are dead-lettered as ModelLoading.",
    )
    fast_path: bool = Field(
        default=True, description="Score linear pipelines with the vectorised NumPy path."
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Port of /metrics, /livez and /readyz; off if unset."
    )
    crash_at: str | None = Field(
        default=None,
        description="Fault injection for tests: `POINT:N` SIGKILLs the worker at the N-th pass "
        "of POINT (after-consume, after-produce-before-commit, after-commit).",
    )
    shutdown_timeout_s: float = Field(
        default=20.0, gt=0, description="Time allowed to finish, flush and commit on SIGTERM."
    )
    statistics_interval_ms: int = Field(
        default=1000, ge=0, le=3_600_000,
        description="How often librdkafka reports statistics, in milliseconds: the consumer lag "
        "per partition on /metrics, and broker contact for /readyz (not ready after 2.5 "
        "intervals, at least 2 s, without a broker response). 0 turns them off, and /readyz "
        "then means in the group only.",
    )  # fmt: skip

    @field_validator("crash_at")
    @classmethod
    def _known_crash_point(cls, value: str | None) -> str | None:
        CrashPoints(value)  # raises with the list of known points
        return value

    @property
    def transactional_id(self) -> str:
        """Stable per worker, so a restarted worker fences its own zombie."""
        return f"{self.group_id}-{self.worker_id}"


class ScorerSettings(RiverrunSettings):
    """Everything the `riverrun score` process reads, from flags and `RIVERRUN_*`."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    scorer: ScorerOptions = Field(default_factory=ScorerOptions)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
