"""Settings of the judge: Kafka, topics, the registry and the judge's own section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from riverrun.schemas import KafkaSettings, RiverrunSettings, TopicSettings
from riverrun.workers.registry import RegistrySettings


class JudgeOptions(BaseModel):
    """The judge's own knobs (`RIVERRUN_JUDGE__<FIELD>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: str = Field(
        default="riverrun-judge",
        description="The faust app id: the judge's consumer group and its tables' changelog "
        "topic prefix. Keep it across restarts, or the judge forgets its evidence.",
    )
    http_port: int | None = Field(
        default=9102, ge=0, le=65535,
        description="Port of the judge's state as JSON (/state, /state/MODEL); off if unset.",
    )  # fmt: skip
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Port of /metrics, /livez and /readyz."
    )
    decide_interval_s: float = Field(
        default=2.0, gt=0, description="How often the judge looks at the evidence and decides."
    )
    bandit_interval_s: float = Field(
        default=10.0, gt=0, description="How often a bandit's weights may be republished."
    )
    window_s: float = Field(
        default=60.0, gt=0, description="Width of the tumbling windows of recent outcomes."
    )
    window_expires_s: float = Field(
        default=3600.0, gt=0, description="How long a window of recent outcomes is kept."
    )
    effect: float = Field(
        default=0.1, gt=0,
        description="Standardised effect size the sequential test is tuned to detect quickly "
        "(its mixture's spread); any value keeps the false-decision rate at alpha.",
    )  # fmt: skip
    seed: int | None = Field(
        default=None, description="Seed of the bandit's Monte Carlo draws (reproducible runs)."
    )
    batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Outcomes read per batch, at most."
    )
    batch_within_s: float = Field(
        default=0.5, gt=0, description="Max wait to fill a batch of outcomes, in seconds."
    )
    data_dir: str = Field(
        default="riverrun-judge-data",
        description="Directory of the tables' local state (rebuilt from the changelog).",
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replicas of the judge's changelog topics."
    )


class JudgeSettings(RiverrunSettings):
    """Everything the `riverrun judge` process reads, from flags and `RIVERRUN_*`."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    judge: JudgeOptions = Field(default_factory=JudgeOptions)
