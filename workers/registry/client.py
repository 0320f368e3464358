"""The registry on Kafka: release versions, publish snapshots and policies, read and follow them.

The `models` topic (compacted, one partition) holds the records; artifact bytes go to an
`ArtifactStore` (Kafka chunks by default). `Registry` does the I/O; `RegistryView` (pure) folds
the records. `RegistryFollower` is a background thread that keeps reading the topic, so a
scorer learns of every new snapshot and policy while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from riverrun.schemas import (
    DecodeError,
    DriftDetected,
    KafkaSettings,
    ModelRetired,
    ModelVersionReleased,
    PairedLoss,
    PolicyAssignment,
    PolicyChanged,
    Signature,
    SnapshotPublished,
    TopicSettings,
    encode,
)
from riverrun.workers.registry.artifact import (
    ArtifactStore,
    artifact_store,
    dump_model,
    store_for_location,
)
from riverrun.workers.registry.loading import open_artifact, seal, snapshot_subject
from riverrun.workers.registry.records import (
    RegistryRecord,
    decode_registry_record,
    drift_key,
    key_of,
    lineage_key,
    policy_key,
    snapshot_key,
    version_key,
)
from riverrun.workers.registry.signing import Signer
from riverrun.workers.registry.spec import ModelSpec, SpecError, build_estimator
from riverrun.workers.registry.view import RegistryView
from riverrun.workers.runtime.errors import ConfigurationError, FatalError
from riverrun.workers.runtime.kafka import (
    consumer_config,
    produce,
    producer_config,
    topic_partitions,
    watermarks,
)

logger = logging.getLogger(__name__)

# Well known on purpose: anyone can forge artifacts signed with it. Development only.
INSECURE_DEV_KEY = b"riverrun-insecure-dev-key-do-not-use-in-production"

# HMAC-SHA256 keys shorter than its output are guessable sooner than they need be.
MIN_KEY_BYTES = 32

# How long a refresh waits for more records once no watermark can be trusted (Tansu).
_QUIET_SECONDS = 1.0


class RegistrySettings(BaseModel):
    """How to reach and trust the model registry (`RIVERRUN_REGISTRY__<FIELD>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    artifact_store: str = Field(
        default="kafka",
        description="Where artifact bytes live: `kafka` (chunked on the artifacts topic) or "
        "file:///abs/path.",
    )
    signing_key: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key that signs and verifies model artifacts."
    )
    insecure_dev: bool = Field(
        default=False,
        description="Without a signing key, use a fixed, publicly known development key.",
    )
    max_artifact_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="Largest artifact loaded, in bytes."
    )
    load_budget_mb: int = Field(
        default=1024, ge=16,
        description="Memory a trial load of an artifact may take (MiB), in a process of its "
        "own: over it, the artifact is refused and the last good snapshot keeps serving.",
    )  # fmt: skip
    load_deadline_s: float = Field(
        default=30.0, gt=0, description="Time a trial load of an artifact may take."
    )
    feature_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Python modules whose functions specs and artifacts may name as feature "
        "functions (`module:function`); installed where the workers run. Comma-separated in "
        "the environment.",
    )

    @field_validator("feature_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for module in value if isinstance(value, list) else ():
            if not all(part.isidentifier() for part in str(module).split(".")):
                raise ValueError(f"{module!r} is not a Python module name (e.g. myfeatures or "
                                 "acme.features)")
        return value

    def signer(self) -> Signer:
        """The signer of the configured key (or the dev key in insecure-dev mode).

        Raises:
            ConfigurationError: no key and not in insecure-dev mode.

        """
        key = self.signing_key.get_secret_value().encode() if self.signing_key else b""
        if len(key) >= MIN_KEY_BYTES:
            return Signer(key)
        if key and not self.insecure_dev:
            raise ConfigurationError(
                f"RIVERRUN_REGISTRY__SIGNING_KEY is {len(key)} bytes: a key that signs models "
                f"needs at least {MIN_KEY_BYTES} (make one with `openssl rand -hex 32`)"
            )
        if key:
            return Signer(key)
        if self.insecure_dev:
            logger.warning(
                "INSECURE: no RIVERRUN_REGISTRY__SIGNING_KEY, signing and verifying model "
                "artifacts with the publicly known development key; anyone can forge models. "
                "Never use --insecure-dev outside a laptop."
            )
            return Signer(INSECURE_DEV_KEY)
        raise ConfigurationError(
            "RIVERRUN_REGISTRY__SIGNING_KEY is not set: set it (or --signing-key) to the secret "
            "that signs model artifacts, or pass --insecure-dev for a local trial"
        )


def release_policy(view: RegistryView, name: str, version: int) -> PolicyChanged:
    """The policy a release with `deploy` carries: `version` alone answers, as champion.

    A `single` policy with the next sequence (past a retired policy's too), decided by the
    operator, action "deploy", reason "released with --deploy" (what `riverrun models deploy
    NAME --strategy single --version V` would publish, bar the reason). The version is unpinned,
    so it serves its newest snapshot as it learns. Built here rather than by the routing
    helpers, which sit beside the registry and import it: it names the version being released,
    so there is nothing to check.
    """
    return PolicyChanged(
        model=name, sequence=view.policy_sequence(name) + 1, strategy="single",
        assignments=[PolicyAssignment(version=version, role="champion", weight=1.0)],
        reason="released with --deploy", decided_by="operator", action="deploy",
    )  # fmt: skip


_RELEASE_ATTEMPTS = 8
_FENCED_WAIT_S = 2.0  # per attempt: how long a fenced release lets the other one finish
_RELEASE_TIMEOUT_S = 30.0


def _reader_config(kafka: KafkaSettings) -> dict[str, Any]:
    # Assigned, never joined: the group id is only what librdkafka requires.
    return consumer_config(kafka, f"riverrun-registry-reader-{uuid.uuid4().hex[:8]}")


SIGNATURE_HEADER = "riverrun.signature"


def record_headers(signer: Signer, key: bytes, value: bytes | None) -> list[tuple[str, bytes]]:
    """The signature a registry record travels with: of its key and value, by the key holder."""
    return [(SIGNATURE_HEADER, signer.sign(value or b"", subject=key.decode()).encode())]


_REFUSED_PLACES: set[str] = set()  # topic/partition/offset of records already reported


class RecordCheck:
    """Decodes registry records and, with a signer, refuses those it did not sign.

    Anyone allowed to produce to `models` can write a record; only a key holder can sign one.
    An unsigned or forged record, or one too large, is counted, logged (at most every few
    seconds) and ignored: what a worker serves changes only by signed records.
    """

    def __init__(self, signer: Signer | None) -> None:
        self.signer = signer
        self.refused = 0
        self._logged_at = float("-inf")

    def __call__(self, msg: Any, where: str) -> RegistryRecord | None:
        raw = msg.value()
        if raw is None:  # a tombstone: compaction deletes the key, nothing to fold
            return None
        if self.signer is not None:
            headers = dict(msg.headers() or [])
            given = (headers.get(SIGNATURE_HEADER) or b"").decode("ascii", "replace")
            key = msg.key() or b""
            if not self.signer.verify(raw, given, subject=key.decode("utf-8", "replace")):
                return self._refuse(where, "it is not signed with this signing key")
        try:
            return decode_registry_record(raw)
        except DecodeError as exc:
            return self._refuse(where, str(exc))

    def _refuse(self, where: str, why: str) -> None:
        self.refused += 1
        now = time.monotonic()
        # Each place once per process: every refresh reads the same ignored records again.
        if where in _REFUSED_PLACES:
            return None
        if len(_REFUSED_PLACES) < 10_000:
            _REFUSED_PLACES.add(where)
        if now - self._logged_at > 10.0:
            self._logged_at = now
            logger.warning("ignoring registry record at %s: %s (%d ignored so far)", where, why,
                           self.refused)  # fmt: skip
        return None


def read_registry(
    kafka: KafkaSettings, topic: str, timeout: float = 10.0, check: RecordCheck | None = None
) -> list[RegistryRecord]:
    """Every registry record from the beginning to the end of the topic at the time of the call.

    The end is each partition's high watermark when the call starts; because some brokers
    (Tansu) report watermarks wrongly, reading also stops after a short quiet period. With a
    `check` of a signer, records it did not sign are left out.
    """
    check = check or RecordCheck(None)
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(_reader_config(kafka))
    records: list[RegistryRecord] = []
    try:
        partitions = topic_partitions(consumer, topic, "registry", timeout)
        ends: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        for partition in partitions:
            low, high = watermarks(consumer, TopicPartition(topic, partition), deadline)
            if high > low:
                ends[partition] = high
        if not ends:
            return records
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(ends)])
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        done: set[int] = set()
        while len(done) < len(ends) and time.monotonic() < deadline:
            batch = consumer.consume(500, 0.2)
            now = time.monotonic()
            if batch:
                quiet_since = now
            elif now - quiet_since > _QUIET_SECONDS:
                break
            for msg in batch:
                part, offset = msg.partition(), msg.offset()
                if msg.error() is not None or part is None or offset is None:
                    continue
                record = check(msg, f"{topic}/{part}/{offset}")
                if record is not None:
                    records.append(record)
            # By position, not by the last record's offset: records are written in transactions,
            # so a partition ends with a commit marker, which no record reaches.
            reading = [TopicPartition(topic, p) for p in ends if p not in done]
            for tp in consumer.position(reading):
                if tp.offset >= ends[tp.partition]:
                    done.add(tp.partition)
        return records
    finally:
        consumer.close()


class Registry:
    """Releases, snapshots and policies of models on Kafka."""

    def __init__(
        self, kafka: KafkaSettings, topics: TopicSettings, settings: RegistrySettings
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.settings = settings
        self._signer: Signer | None = None
        self._store: ArtifactStore | None = None
        self._producer: Any = None

    @property
    def signer(self) -> Signer:
        """The artifact signer (raises `ConfigurationError` without a key)."""
        if self._signer is None:
            self._signer = self.settings.signer()
        return self._signer

    @property
    def store(self) -> ArtifactStore:
        """Where new artifacts are written."""
        if self._store is None:
            self._store = artifact_store(self.settings.artifact_store, self.kafka, self.topics)
        return self._store

    @property
    def verifier(self) -> Signer | None:
        """The signer that checks records read: the configured key's, or None without one."""
        try:
            return self.signer
        except ConfigurationError:
            return None  # a reader with no key (`models list` on a laptop) checks nothing

    def follower(self, on_record: Callable[[RegistryRecord], None]) -> RegistryFollower:
        """A follower of the models topic that passes on only records this key signed."""
        return RegistryFollower(self.kafka, self.topics, on_record, signer=self.verifier)

    def refresh(self, timeout: float = 10.0, *, history: bool = False) -> RegistryView:
        """Read the models topic from the beginning to its current end into a fresh view."""
        check = RecordCheck(self.verifier)
        return RegistryView(read_registry(self.kafka, self.topics.models, timeout, check),
                            history=history)  # fmt: skip

    def release(
        self,
        name: str,
        spec: ModelSpec,
        estimator: Any,
        *,
        metrics: dict[str, float] | None = None,
        examples_seen: int = 0,
        signature: Signature | None = None,
        deploy: bool = False,
    ) -> tuple[ModelVersionReleased, SnapshotPublished]:
        """Release the next version of a model (latest + 1) with its first snapshot, 0.

        The version carries `signature`, else the spec's declared features and label type.

        A release takes no traffic: with no policy the model's first live version answers
        (`RegistryView.default_version`), and a later version answers once a policy names it
        (`riverrun models deploy`). With `deploy`, the release carries that policy itself: a
        `single` policy naming the new version (action "deploy", reason "released with
        --deploy"), written in the same transaction, so every reader sees the version and the
        policy that makes it answer at once.

        Releases of one model are serialised by a transactional id of their own: a release
        fences any other in flight, reads the registry, then writes the version and snapshot
        records in one transaction, so two concurrent releases never take the same number (the
        fenced one starts again). Snapshot 0's lineage is the end of the examples log: the
        version learns from the examples joined after its release.
        """
        from confluent_kafka import KafkaException

        signer = self.signer  # fail on a missing key before writing anything
        data = self.dump(estimator)
        lineage = self._examples_lineage()
        producer = self._release_producer(name)
        try:
            for attempt in range(1, _RELEASE_ATTEMPTS + 1):
                latest: int | None = None
                try:
                    producer.begin_transaction()
                    view = self.refresh()
                    latest = view.latest_version(name)
                    version = view.next_version(name)
                    released = ModelVersionReleased(
                        model=name, version=version, spec=spec.released_form(),
                        task=spec.task, description=spec.description,
                        signature=signature or Signature(features=spec.features or [],
                                                         label_type=spec.label_type),
                    )  # fmt: skip
                    location = self.store.put(name, version, 0, data)
                    snapshot = SnapshotPublished(
                        model=name, version=version, snapshot=0,
                        artifact=seal(data, signer, location, snapshot_subject(name, version, 0)),
                        metrics=metrics or {},
                        examples_seen=examples_seen, lineage=lineage,
                    )  # fmt: skip
                    records: list[RegistryRecord] = [released, snapshot]
                    if deploy:
                        records.append(release_policy(view, name, version))
                    for record in records:
                        key, value = key_of(record), encode(record)
                        producer.produce(self.topics.models, value, key,
                                         headers=record_headers(signer, key, value))
                    producer.commit_transaction(_RELEASE_TIMEOUT_S)
                except KafkaException as exc:
                    producer = self._after_release_error(exc, producer, name, attempt, latest)
                    continue
                logger.info("released %s@%d (%d bytes at %s)%s", name, version, len(data),
                            location, "; it answers now (single policy)" if deploy else "")
                return released, snapshot
        finally:
            producer.flush(_RELEASE_TIMEOUT_S)
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def _release_producer(self, name: str) -> Any:
        from confluent_kafka import Producer

        producer = Producer(producer_config(
            self.kafka, transactional_id=f"riverrun-release-{name}",
            transaction_timeout_s=_RELEASE_TIMEOUT_S,
        ))  # fmt: skip
        producer.init_transactions(_RELEASE_TIMEOUT_S)  # fences a release of `name` in flight
        return producer

    def _after_release_error(
        self, exc: Any, producer: Any, name: str, attempt: int, latest: int | None
    ) -> Any:
        """Abort or replace the release producer after a failed attempt; raise on the last."""
        error = exc.args[0]
        if attempt >= _RELEASE_ATTEMPTS:
            raise FatalError(
                f"could not release {name} after {attempt} attempts: {error.str()}; check the "
                f"broker and that {self.topics.models} exists, then release again"
            ) from exc
        logger.warning("release of %s: attempt %d failed (%s); starting again",
                       name, attempt, error.str())
        if error.fatal():
            # Fenced: another release of `name` took the transactional id. Taking it straight
            # back would fence that one in turn, and two racers can go on fencing each other
            # for ever; let it commit its version first.
            self._wait_for_release(name, latest, _FENCED_WAIT_S * attempt)
            return self._release_producer(name)
        time.sleep(random.uniform(0.05, 0.3) * attempt)  # noqa: S311  # jitter, not a secret
        with contextlib.suppress(Exception):
            producer.abort_transaction(_RELEASE_TIMEOUT_S)
        return producer

    def _wait_for_release(self, name: str, latest: int | None, timeout: float) -> None:
        """Until a version of `name` newer than `latest` is in the registry, or `timeout` s."""
        deadline = time.monotonic() + timeout
        if latest is None:  # fenced before this attempt read the registry
            latest = self.refresh().latest_version(name)
        while time.monotonic() < deadline:
            if (self.refresh().latest_version(name) or 0) > (latest or 0):
                break
            time.sleep(0.1)
        # Jitter, so the racers that waited do not all take the id back at once.
        time.sleep(random.uniform(0.0, 0.2))  # noqa: S311  # jitter, not a secret

    def examples_end(self) -> int | None:
        """The end offset of the examples log now (where an experiment begun now counts from)."""
        return self._examples_lineage().get(lineage_key(self.topics.examples))

    def _examples_lineage(self) -> dict[str, int]:
        """The end of the examples log now, as a lineage; empty when there is no such log."""
        from confluent_kafka import Consumer, TopicPartition

        topic = self.topics.examples
        consumer = Consumer(_reader_config(self.kafka))
        try:
            info = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                return {}
            _low, high = watermarks(consumer, TopicPartition(topic, 0), time.monotonic() + 10)
            return {lineage_key(topic): high}
        finally:
            consumer.close()

    def release_pipeline(
        self,
        name: str,
        pipeline: Any,
        *,
        label_type: Literal["bool", "int", "str", "float"],
        task: Literal["binary", "multiclass", "regression"] | None = None,
        sample: Iterable[Mapping[str, Any]] = (),
        examples_seen: int = 0,
        description: str = "",
        deploy: bool = False,
    ) -> tuple[ModelVersionReleased, SnapshotPublished]:
        """Release a River pipeline built in Python, as it is (its learned state included).

        Like `release`, the new version takes no traffic unless `deploy` (a `single` policy
        naming it, published with the release) or it is the model's first.

        Accepted only when the spec grammar can write it and the loader admits every object in
        it: the release records the spec that rebuilds it, so `models show` prints it and a
        restart can rebuild it. `task` defaults from the final estimator (a regressor, else
        binary for a bool label, else multiclass); `sample` rows (e.g. the first thousand it
        learned) give the version its signature.

        Raises:
            SpecError: a part of the pipeline is outside the spec grammar, named.
            RefusedArtifact: the pipeline pickles into something the loader refuses.

        """
        from riverrun.workers.registry.render import render_pipeline
        from riverrun.workers.registry.signature import infer_signature

        text = render_pipeline(pipeline)
        if task is None:
            from river import base

            final = pipeline
            while hasattr(final, "steps"):
                final = list(final.steps.values())[-1]
            task = ("regression" if isinstance(final, base.Regressor)
                    else "binary" if label_type == "bool" else "multiclass")  # fmt: skip
        spec = ModelSpec(pipeline=text, task=task, label_type=label_type, description=description)
        rebuilt = build_estimator(spec, self.settings.feature_modules)
        if render_pipeline(rebuilt) != text:
            raise SpecError(f"the spec {text!r} does not rebuild the pipeline it was written "
                            "from; release it from a spec file instead")
        signature = infer_signature(sample, label_type)
        return self.release(name, spec, pipeline, examples_seen=examples_seen,
                            signature=signature, deploy=deploy)

    def publish_snapshot(
        self,
        name: str,
        version: int,
        snapshot: int,
        estimator_or_bytes: Any,
        *,
        metrics: dict[str, float] | None = None,
        examples_seen: int = 0,
        lineage: dict[str, int] | None = None,
        restored_from: int | None = None,
        reason: str = "",
        paired: PairedLoss | None = None,
    ) -> SnapshotPublished:
        """Write a snapshot's artifact and its record; `bytes` are taken as a dumped model."""
        signer = self.signer
        data = (
            bytes(estimator_or_bytes)
            if isinstance(estimator_or_bytes, bytes | bytearray | memoryview)
            else self.dump(estimator_or_bytes)
        )
        location = self.store.put(name, version, snapshot, data)
        record = SnapshotPublished(
            model=name,
            version=version,
            snapshot=snapshot,
            artifact=seal(data, signer, location, snapshot_subject(name, version, snapshot)),
            metrics=metrics or {},
            examples_seen=examples_seen,
            lineage=lineage or {},
            restored_from=restored_from,
            reason=reason,
            paired=paired,
        )
        self._produce([record])
        logger.info("published %s@%d#%d (%d bytes)", name, version, snapshot, len(data))
        return record

    def retire(self, name: str, version: int | None = None, reason: str = "") -> ModelRetired:
        """Withdraw a model, or one version, and delete what it retires from the registry.

        A `ModelRetired` record says so for good; tombstones for the retired records and their
        artifact chunks let compaction reclaim them.

        Raises:
            ConfigurationError: nothing to retire, or the version is in the model's policy.

        """
        view = self.refresh()
        versions = [v.version for v in view.versions(name)]
        if not versions:
            raise ConfigurationError(f"model {name!r} has no live release to retire")
        if version is not None:
            if version not in versions:
                raise ConfigurationError(f"{name}@{version} is not a live version of {name}: "
                                         f"it has {', '.join(map(str, versions))}")
            policy = view.policy(name)
            if policy is not None and any(a.version == version for a in policy.assignments):
                raise ConfigurationError(
                    f"{name}@{version} is in {name}'s {policy.strategy} policy: deploy without "
                    "it first (`riverrun models deploy`), then retire it"
                )
        retired = versions if version is None else [version]
        record = ModelRetired(model=name, version=version, last_version=max(versions),
                              reason=reason)  # fmt: skip
        doomed: list[bytes] = []
        for number in retired:
            doomed.append(version_key(name, number))
            for snapshot in view.snapshots(name, number):
                doomed.append(snapshot_key(name, number, snapshot.snapshot))
                location = snapshot.artifact.location
                store_for_location(location, self.kafka).forget(location, name, number,
                                                                snapshot.snapshot)  # fmt: skip
        doomed += [drift_key(d) for d in view.drifts(name) if d.version in retired]
        if version is None and view.policy(name) is not None:
            doomed.append(policy_key(name))
        self._produce([record], tombstones=doomed)
        logger.info("retired %s (%d records deleted)", f"{name}@{version}" if version else name,
                    len(doomed))  # fmt: skip
        return record

    def publish_drift(self, detection: DriftDetected) -> None:
        """Write a drift detection (each keeps its own key)."""
        self._produce([detection])

    def publish_policy(self, policy: PolicyChanged) -> None:
        """Write a policy record (compaction keeps a model's latest)."""
        self._produce([policy])

    def load(self, snapshot: SnapshotPublished) -> Any:
        """Fetch a snapshot's artifact and open it: size, signature, digest, restricted unpickle."""
        ref = snapshot.artifact
        store = store_for_location(ref.location, self.kafka)
        data = store.get(ref.location, ref.size, self.settings.max_artifact_bytes)
        subject = snapshot_subject(snapshot.model, snapshot.version, snapshot.snapshot)
        settings = self.settings
        return open_artifact(data, ref, self.signer, settings.max_artifact_bytes, subject,
                             settings.load_budget_mb * 1024 * 1024, settings.load_deadline_s,
                             settings.feature_modules)

    def dump(self, estimator: Any) -> bytes:
        """The canonical bytes of a model (`dump_model`), with this registry's feature modules."""
        return dump_model(estimator, self.settings.feature_modules)

    def close(self) -> None:
        """Flush and drop the producers (records and artifact chunks)."""
        if self._producer is not None:
            self._producer.flush(30)
            self._producer = None
        close_store = getattr(self._store, "close", None)
        if close_store is not None:
            close_store()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _produce(self, records: list[RegistryRecord], tombstones: list[bytes] = ()) -> None:
        from confluent_kafka import Producer

        if self._producer is None:
            self._producer = Producer(producer_config(self.kafka))
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err.str())

        signer = self.signer
        for record in records:
            key, value = key_of(record), encode(record)
            produce(self._producer, self.topics.models, value, key,
                    headers=record_headers(signer, key, value), on_delivery=on_delivery)
            self._producer.poll(0)
        for key in tombstones:
            produce(self._producer, self.topics.models, None, key,
                    headers=record_headers(signer, key, None), on_delivery=on_delivery)
        remaining = self._producer.flush(30)
        if errors or remaining:
            raise FatalError(
                f"could not write {len(records)} registry records to {self.topics.models}: "
                f"{errors[0] if errors else f'{remaining} not acknowledged in 30s'}"
            )


class RegistryFollower:
    """A background thread that reads the models topic from the beginning, forever.

    Each decoded record is handed to `on_record` in topic order, on the follower's thread;
    the callback must be quick and thread-safe (hand the record to the owner's loop).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        on_record: Callable[[RegistryRecord], None],
        *,
        poll_timeout: float = 0.05,
        signer: Signer | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = topics.models
        self.on_record = on_record
        self.check = RecordCheck(signer)
        self.poll_timeout = poll_timeout
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-follower", daemon=True)

    def start(self) -> RegistryFollower:
        """Start following; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether the thread is still following."""
        return self._thread.is_alive()

    def _run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(_reader_config(self.kafka))
        try:
            partitions = topic_partitions(consumer, self.topic, "registry", 15.0)
            consumer.assign([TopicPartition(self.topic, p, 0) for p in partitions])
            while not self._stop.is_set():
                for msg in consumer.consume(500, self.poll_timeout):
                    if msg.error() is not None:
                        logger.debug("registry follower: %s", msg.error())
                        continue
                    where = f"{self.topic}/{msg.partition()}/{msg.offset()}"
                    record = self.check(msg, where)
                    if record is not None:
                        self.on_record(record)
        except BaseException as exc:
            self.error = exc
            logger.exception("registry follower stopped")
        finally:
            consumer.close()
