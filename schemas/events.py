"""The event contracts: every record riverrun reads or writes on Kafka, as frozen pydantic models.

Schemas only grow. Unknown fields are ignored so that an old worker survives a newer producer;
a breaking change is a new model and a new topic version, never an edit here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, NewType

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ModelName = NewType("ModelName", str)
Version = NewType("Version", int)
SnapshotId = NewType("SnapshotId", int)

SCHEMA_VERSION = 1

# A model name travels in keys, metric labels and file names: keep it to a safe alphabet.
ModelNameField = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
]
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
# Features are flat: a number (finite; NaN and infinity are refused) or a categorical string.
FeatureValue = Annotated[float, Field(allow_inf_nan=False)] | Annotated[
    str, StringConstraints(max_length=1024)
]
Features = Annotated[dict[FeatureName, FeatureValue], Field(min_length=1, max_length=4096)]
Label = bool | int | float | str


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every contract: frozen, versioned, tolerant of fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    schema_version: int = Field(
        default=SCHEMA_VERSION, ge=1, description="Version of this event's schema."
    )


class PredictionRequested(Event):
    """An upstream service asks a model for a prediction (topic `requests`)."""

    request_id: RequestId = Field(description="Unique id; the prediction carries it back.")
    model: ModelNameField = Field(description="Name of the model asked, e.g. `fraud`.")
    features: Features = Field(description="Flat map of feature name to number or category.")
    key: str | None = Field(
        default=None,
        max_length=256,
        description="Entity key the record is partitioned by; the request id when absent.",
    )
    sent_at: datetime | None = Field(default=None, description="When the request was sent.")
    context: dict[str, str] | None = Field(
        default=None, description="Opaque strings echoed for tracing; never used for scoring."
    )


class PredictionMade(Event):
    """A scorer's answer to one request (topics `predictions` and `predictions.shadow`)."""

    request_id: RequestId
    model: ModelNameField
    version: int = Field(ge=0, description="Model version that answered.")
    snapshot: int = Field(ge=0, description="Snapshot of that version that answered.")
    route: str = Field(description="Why this version answered: champion, canary, shadow, ...")
    prediction: Label = Field(description="Predicted class or value.")
    proba: dict[str, float] | None = Field(
        default=None, description="Class probabilities, for classifiers."
    )
    features: Features = Field(description="The features scored, echoed for the label join.")
    key_examples: int | None = Field(
        default=None, ge=0,
        description="A per-key model: the labels the request key's own model had learned when "
        "it answered; absent when the global model answered alone.",
    )  # fmt: skip
    key_weight: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="The key's own model's share of the answer (the global one has the rest).",
    )  # fmt: skip
    scored_at: datetime = Field(description="When the prediction was made (UTC).")
    latency_ms: float = Field(
        ge=0, description="From the request's Kafka timestamp to the prediction, in ms."
    )


class LabelObserved(Event):
    """The true outcome of an earlier request, from a labeller (topic `feedback`)."""

    request_id: RequestId
    model: ModelNameField
    label: Label
    observed_at: datetime = Field(default_factory=utc_now)
    key: str | None = Field(default=None, max_length=256)
    features: Features | None = Field(
        default=None, description="Features to learn from; joined from predictions when absent."
    )


def dead_letter_headers(
    error_class: str,
    reason: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    failed_at: str,
    worker: str,
    *,
    schema_version: int = SCHEMA_VERSION,
    model: str | None = None,
    version: int | None = None,
    route: str | None = None,
    key_bytes: int | None = None,
    value_bytes: int | None = None,
) -> list[tuple[str, bytes]]:
    """A `DeadLetter`'s headers from its fields (`failed_at` in ISO 8601).

    `DeadLetter.to_headers` renders through this; the scorer calls it directly, without building
    the model (a poisoned request's dead letter was a third of its cost).
    """
    headers = [
        ("riverrun.error.class", error_class.encode()),
        ("riverrun.error.reason", reason.encode()),
        ("riverrun.source.topic", source_topic.encode()),
        ("riverrun.source.partition", str(source_partition).encode()),
        ("riverrun.source.offset", str(source_offset).encode()),
        ("riverrun.failed_at", failed_at.encode()),
        ("riverrun.worker", worker.encode()),
        ("riverrun.schema_version", str(schema_version).encode()),
    ]
    if model is not None and version is not None:
        headers.append(("riverrun.model", model.encode()))
        headers.append(("riverrun.model.version", str(version).encode()))
        headers.append(("riverrun.route", (route or "").encode()))
    if key_bytes is not None or value_bytes is not None:
        headers += truncation_headers(key_bytes or 0, value_bytes or 0)
    return headers


def truncation_headers(key_bytes: int, value_bytes: int) -> list[tuple[str, bytes]]:
    """The headers a dead letter cut to fit gains: the original key's and value's sizes."""
    return [
        ("riverrun.truncated.key_bytes", str(key_bytes).encode()),
        ("riverrun.truncated.value_bytes", str(value_bytes).encode()),
    ]


class DeadLetter(Event):
    """Why a record was dead-lettered; travels as Kafka headers beside the original bytes."""

    error_class: str = Field(description="Short class of the failure, e.g. `NotJson`.")
    reason: str = Field(description="Readable reason, with the field path where there is one.")
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: datetime = Field(default_factory=utc_now)
    worker: str = Field(default="", description="Client id of the worker that gave up.")
    model: str | None = Field(
        default=None, description="Model whose version failed on the record, when one did."
    )
    version: int | None = Field(
        default=None, ge=0, description="Version that failed (the judge's error rate)."
    )
    route: str | None = Field(default=None, description="Why that version was asked.")
    key_bytes: int | None = Field(
        default=None, ge=0,
        description="Set when the dead letter had to be cut to fit the broker's limit: the "
        "original key's size. The original is where `source_*` says.",
    )  # fmt: skip
    value_bytes: int | None = Field(
        default=None, ge=0, description="Set when cut to fit: the original value's size."
    )

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Render as Kafka headers, `riverrun.<field>`, values UTF-8."""
        return dead_letter_headers(
            self.error_class, self.reason, self.source_topic, self.source_partition,
            self.source_offset, self.failed_at.isoformat(), self.worker,
            schema_version=self.schema_version, model=self.model, version=self.version,
            route=self.route, key_bytes=self.key_bytes, value_bytes=self.value_bytes,
        )  # fmt: skip

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]] | None) -> DeadLetter:
        """Read back the headers written by `to_headers`."""
        values = {name: value.decode() for name, value in headers or [] if value is not None}
        return cls(
            error_class=values["riverrun.error.class"],
            reason=values["riverrun.error.reason"],
            source_topic=values["riverrun.source.topic"],
            source_partition=int(values["riverrun.source.partition"]),
            source_offset=int(values["riverrun.source.offset"]),
            failed_at=datetime.fromisoformat(values["riverrun.failed_at"]),
            worker=values.get("riverrun.worker", ""),
            model=values.get("riverrun.model"),
            version=int(values["riverrun.model.version"])
            if "riverrun.model.version" in values
            else None,
            route=values.get("riverrun.route"),
            key_bytes=int(values["riverrun.truncated.key_bytes"])
            if "riverrun.truncated.key_bytes" in values
            else None,
            value_bytes=int(values["riverrun.truncated.value_bytes"])
            if "riverrun.truncated.value_bytes" in values
            else None,
        )


class ArtifactRef(BaseModel):
    """Where a snapshot's bytes live and how to check them before trusting them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    location: str = Field(description="`kafka://topic/key` or `file:///path`.")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(description="HMAC-SHA256 of the bytes, hex.")


class FeatureSignature(BaseModel):
    """One feature a model version expects: its name, its kind, and whether it may be absent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: FeatureName
    kind: Literal["number", "category"] = Field(
        description="`number` (int or float) or `category` (a string)."
    )
    required: bool = Field(default=True, description="Whether every request must carry it.")


class Signature(BaseModel):
    """What a model version expects: its features and the type of its label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: list[FeatureSignature] = Field(default_factory=list, max_length=4096)
    label_type: Literal["bool", "int", "str", "float"]

    def describe(self) -> str:
        """One line per feature, as `models show` prints it."""
        return "\n".join(f"{f.name}: {f.kind}{'' if f.required else ' (optional)'}"
                         for f in self.features)  # fmt: skip


class ModelVersionReleased(Event):
    """A new version of a model was released (topic `models`, compacted)."""

    kind: Literal["version"] = "version"
    model: ModelNameField
    version: int = Field(ge=1)
    spec: dict[str, object] = Field(description="The declarative pipeline spec, as released.")
    task: Literal["binary", "multiclass", "regression"]
    released_at: datetime = Field(default_factory=utc_now)
    description: str = ""
    signature: Signature | None = Field(
        default=None,
        description="The features and label type this version expects (declared in its spec or "
        "inferred from its warm start); requests that break it are dead-lettered "
        "(`FeatureTypeMismatch`). None: no check.",
    )


class PairedLoss(BaseModel):
    """A version's prequential loss against the champion's, on the very same examples.

    The learner learns every version a policy names from one examples log, in log order, so
    each example gives one loss per version: the difference is paired, and its moments are
    counted only from the experiment's start (`since_offset` of the examples log).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    experiment: int = Field(
        ge=0, description="Sequence of the policy that began the experiment (0: no policy yet)."
    )
    against: int = Field(ge=1, description="The champion version the losses are paired with.")
    since_offset: int = Field(ge=0, description="Examples-log offset the pairing began at.")
    n: int = Field(default=0, ge=0, description="Examples both versions learned since then.")
    diff_sum: float = Field(
        default=0.0, description="Sum of (champion's loss - this version's loss): > 0 is better."
    )
    diff_sum_sq: float = Field(default=0.0, ge=0.0, description="Sum of squared differences.")


class SnapshotPublished(Event):
    """The learned state of a version at one moment (topic `models`, compacted)."""

    kind: Literal["snapshot"] = "snapshot"
    model: ModelNameField
    version: int = Field(ge=1)
    snapshot: int = Field(ge=0)
    artifact: ArtifactRef
    metrics: dict[str, float] = Field(default_factory=dict)
    examples_seen: int = Field(default=0, ge=0)
    restored_from: int | None = Field(
        default=None, ge=0,
        description="Set when a guardrail restored an earlier snapshot: the artifact is that "
        "snapshot's, republished under a new id so every scorer moves to it.",
    )
    reason: str = Field(default="", description="Why this snapshot was published, if special.")
    lineage: dict[str, int] = Field(
        default_factory=dict,
        description="Feedback offsets trained up to, `topic:partition` to next offset.",
    )
    paired: PairedLoss | None = Field(
        default=None,
        description="This version's loss against the champion's on the same examples, since "
        "the experiment began (versions learning beside a champion only).",
    )
    published_at: datetime = Field(default_factory=utc_now)


class DriftDetected(Event):
    """A drift detector fired on a version's loss stream (topic `models`, one key each)."""

    kind: Literal["drift"] = "drift"
    model: ModelNameField
    version: int = Field(ge=1)
    stream: Literal["learning", "served"] = Field(
        description="`learning`: the learner's test-then-train loss; `served`: the loss of the "
        "predictions the scorers served (outcomes)."
    )
    detector: str = Field(description="River detector that fired, e.g. `ADWIN`.")
    position: int = Field(ge=0, description="Losses seen on this stream when it fired.")
    mean_loss: float = Field(description="Mean loss of the stream's recent window.")
    mean_loss_before: float | None = Field(
        default=None,
        description="Mean loss of the stream before that window, since the previous detection: "
        "above it, the loss rose (a concept the version no longer fits); below, it fell.",
    )
    detected_at: datetime = Field(default_factory=utc_now)


class ModelRetired(Event):
    """A model, or one version of it, is withdrawn: no longer served, listed or learned.

    The record stays on `models` (compaction keeps it) while the retired facts are deleted, so a
    name released again numbers its versions after `last_version`.
    """

    kind: Literal["retired"] = "retired"
    model: ModelNameField
    version: int | None = Field(
        default=None, ge=1, description="The version retired; the whole model when absent."
    )
    last_version: int = Field(
        ge=0, description="The highest version released when retired: new versions follow it."
    )
    reason: str = Field(default="", description="Why, for operators.")
    retired_at: datetime = Field(default_factory=utc_now)


class PolicyAssignment(BaseModel):
    """One version's part in a policy."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = Field(ge=1)
    snapshot: int | None = Field(default=None, ge=0, description="Pinned snapshot, else latest.")
    role: Literal[
        "champion", "challenger", "canary", "arm", "shadow", "blue", "green", "candidate"
    ]
    weight: float = Field(default=1.0, ge=0.0, le=1.0)


class CanaryStep(BaseModel):
    """One step of a canary's schedule: from `after_s` seconds on, the canary takes `weight`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    weight: float = Field(ge=0.0, le=1.0, description="The canary's share of traffic.")
    after_s: float = Field(
        ge=0.0, description="Seconds after the policy was decided (`decided_at`)."
    )


class PolicyChanged(Event):
    """How a model's traffic is split among its versions (topic `models`, compacted)."""

    kind: Literal["policy"] = "policy"
    model: ModelNameField
    sequence: int = Field(ge=1, description="Monotonic per model; a decision applies once.")
    strategy: Literal["single", "shadow", "canary", "ab", "bandit", "blue-green", "race"]
    assignments: list[PolicyAssignment] = Field(min_length=1)
    reason: str = ""
    numbers: dict[str, float] = Field(default_factory=dict)
    decided_by: str = "operator"
    decided_at: datetime = Field(default_factory=utc_now)
    action: str = Field(
        default="deploy",
        description="What this record did: deploy, promote, rollback, reweight, switch.",
    )
    experiment: int | None = Field(
        default=None,
        ge=1,
        description="Sequence of the policy whose experiment this one continues (a bandit's "
        "re-weighting keeps its evidence); None starts a new one at this sequence.",
    )
    experiment_began: datetime | None = Field(
        default=None,
        description="When the experiment this policy continues began (None: at `decided_at`); "
        "outcomes of predictions made before it are not counted.",
    )
    examples_from: int | None = Field(
        default=None,
        ge=0,
        description="Examples-log offset the experiment's paired losses count from (None: "
        "where the learner takes the policy up).",
    )
    hypothesis: str = Field(default="", description="What an A/B test or canary sets out to show.")
    metric: Literal["accuracy", "log_loss", "loss"] = Field(
        default="accuracy",
        description="What the judge compares: accuracy (higher is better, two-proportion test) "
        "or the outcome's loss (log_loss/loss; lower is better, Welch's t-test).",
    )
    margin: float = Field(
        default=0.0,
        ge=0.0,
        description="Non-inferiority margin in the metric's units: a challenger no worse than "
        "the champion by more than this is promoted; worse by more is rolled back.",
    )
    alpha: float = Field(
        default=0.05, gt=0.0, lt=0.5, description="False-decision rate the judge holds to."
    )
    min_samples: int = Field(
        default=200, ge=1, description="Outcomes each version needs before the judge decides."
    )
    max_error_rate: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="A canary whose error and dead-letter rate exceeds the champion's by more "
        "than this is rolled back.",
    )
    exploration: float = Field(
        default=0.05,
        ge=0.0,
        le=0.5,
        description="Bandit: the smallest share any version keeps, so evidence keeps coming.",
    )
    schedule: list[CanaryStep] = Field(
        default_factory=list,
        description="Canary: later weights of the canary, stepping up with time.",
    )

    @property
    def experiment_id(self) -> int:
        """The sequence that started the experiment this policy belongs to."""
        return self.experiment if self.experiment is not None else self.sequence

    @property
    def experiment_began_at(self) -> datetime:
        """When the experiment this policy belongs to began."""
        return self.experiment_began if self.experiment_began is not None else self.decided_at


class OutcomeRecorded(Event):
    """A prediction joined with its label (topic `outcomes`)."""

    request_id: RequestId
    model: ModelNameField
    version: int = Field(ge=0)
    snapshot: int = Field(ge=0)
    route: str
    prediction: Label
    label: Label
    loss: float
    proba: dict[str, float] | None = None
    observed_at: datetime = Field(default_factory=utc_now)
    scored_at: datetime | None = Field(
        default=None, description="When the prediction was made, so a judge counts it only in "
        "the experiment it was served in.",
    )


class ExampleJoined(Event):
    """A label joined with its features, as the learner learns it (topic `examples`)."""

    request_id: RequestId
    model: ModelNameField
    features: Features = Field(description="What the model learns from.")
    label: Label = Field(description="The true outcome it learns.")
    version: int | None = Field(
        default=None, ge=0, description="Version that predicted, when a prediction was joined."
    )
    snapshot: int | None = Field(default=None, ge=0, description="Snapshot that predicted.")
    route: str | None = Field(default=None, description="Why that version answered.")
    prediction: Label | None = Field(default=None, description="What it predicted.")
    proba: dict[str, float] | None = Field(default=None, description="Its class probabilities.")
    key: str | None = Field(
        default=None, max_length=256,
        description="The feedback record's key, when it names an entity (not the request id): "
        "what a per-key model learns the example for.",
    )  # fmt: skip
    key_partition: int | None = Field(
        default=None, ge=0,
        description="The feedback partition that key's labels arrive on: its state goes to the "
        "key-state changelog partition of that number, read by the scorer that owns the "
        "requests partition of that number.",
    )  # fmt: skip
    observed_at: datetime = Field(description="When the label was observed (UTC).")


EVENTS: dict[str, type[Event]] = {
    "PredictionRequested": PredictionRequested,
    "PredictionMade": PredictionMade,
    "LabelObserved": LabelObserved,
    "DeadLetter": DeadLetter,
    "ModelVersionReleased": ModelVersionReleased,
    "SnapshotPublished": SnapshotPublished,
    "PolicyChanged": PolicyChanged,
    "OutcomeRecorded": OutcomeRecorded,
    "DriftDetected": DriftDetected,
    "ModelRetired": ModelRetired,
    "ExampleJoined": ExampleJoined,
}
