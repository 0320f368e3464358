"""A mixed, deterministic workload for the learner, and a digest of everything it wrote.

Three runs of a real learner on a real broker: labels joined with predictions, labels carrying
their own features, unknown, duplicate, unreadable and invalid labels, another model's labels,
a restart, a second release deployed with it and taken up, drift records and a guardrail trip.
The digest holds the examples log, the outcomes, the dead letters, every registry record but the
operator's policy (artifact hashes, lineage, metrics) and the run summaries, with times and topic
names taken out, so two runs of the same learner code compare equal byte for byte.

`test_learner_workload.py` holds the learner to the digest recorded in
`learner_workload.sha256.json`; as a script it prints the digest, so a learner before and after
a change can be compared on one broker:

    python tests/integration/learner_workload.py --bootstrap-servers 127.0.0.1:9092 > after.json
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import sys
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.learner import Learner, LearnerOptions, LearnerSettings, LearnSummary
from riverrun.workers.learner.log_learner import LogLearner
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings, build_estimator

MODEL = "workload"
OTHER_MODEL = "someone-else"
SIGNING_KEY = "workload-signing-key-of-32-bytes!"
SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression", task="binary", label_type="bool")
OBSERVED_AT = "2026-01-01T00:00:00+00:00"
SCORED_AT = "2026-01-01T00:00:00+00:00"
_VOLATILE = {"published_at", "released_at", "decided_at", "detected_at", "changed_at"}


def phishing_rows() -> list[tuple[dict[str, float], bool]]:
    """River's phishing dataset, 1,250 rows (imported here: River is a server dependency)."""
    from river import datasets

    return [(dict(x), bool(y)) for x, y in datasets.Phishing()]


def _prediction(request_id: str, model: str, features: dict[str, float], i: int) -> bytes:
    p = round(0.05 + 0.9 * ((i * 37) % 100) / 100, 4)
    return orjson.dumps({
        "request_id": request_id, "model": model, "version": 1, "snapshot": 0,
        "route": "champion", "prediction": p >= 0.5, "proba": {"True": p, "False": 1 - p},
        "features": features, "scored_at": SCORED_AT, "latency_ms": 1.0,
    })  # fmt: skip


def _label(request_id: str, model: str, label: Any, features: dict[str, float] | None) -> bytes:
    event: dict[str, Any] = {
        "request_id": request_id, "model": model, "label": label, "observed_at": OBSERVED_AT,
    }  # fmt: skip
    if features is not None:
        event["features"] = features
    return orjson.dumps(event)


def phase_records(
    rows: list[tuple[dict[str, float], bool]], start: int, stop: int, flip_from: int | None = None
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], int]:
    """Predictions and feedback for rows [start, stop), and how many examples they make.

    Every tenth row's label carries its own features and has no prediction; every 25th is
    labelled twice; every 40th has an unknown id; a few are unreadable or invalid; another
    model's predictions and labels are mixed in. From `flip_from` on, labels are flipped.
    """
    predictions: list[tuple[bytes, bytes]] = []
    feedback: list[tuple[bytes, bytes]] = []
    examples = 0
    for i in range(start, stop):
        features, label = rows[i]
        if flip_from is not None and i >= flip_from:
            label = not label
        rid = f"req-{i}"
        key = rid.encode()
        if i % 10 == 0:
            feedback.append((key, _label(rid, MODEL, label, features)))
            examples += 1
            continue
        predictions.append((key, _prediction(rid, MODEL, features, i)))
        feedback.append((key, _label(rid, MODEL, label, None)))
        examples += 1
        if i % 25 == 0:
            feedback.append((key, _label(rid, MODEL, not label, None)))  # DuplicateLabel
        if i % 40 == 7:
            feedback.append((f"lost-{i}".encode(), _label(f"lost-{i}", MODEL, label, None)))
        if i % 97 == 3:
            feedback.append((b"junk", b"{not json"))  # NotJson
        if i % 113 == 5:
            feedback.append((key, orjson.dumps({"request_id": rid, "model": MODEL})))  # invalid
        if i % 31 == 11:
            other = f"other-{i}"
            predictions.append((other.encode(), _prediction(other, OTHER_MODEL, features, i)))
            feedback.append((other.encode(), _label(other, OTHER_MODEL, label, None)))
    return predictions, feedback, examples


def _produce(kafka: KafkaSettings, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    producer = Producer(kafka.client_config({"enable.idempotence": True, "linger.ms": 5}))
    for key, value in records:
        producer.produce(topic, value, key)
        producer.poll(0)
    if producer.flush(30) != 0:
        raise RuntimeError(f"records to {topic} not delivered within 30 s")


def _read(kafka: KafkaSettings, topic: str) -> list[Any]:
    """Every committed record of a one-partition topic, up to its end."""
    consumer = Consumer(kafka.client_config({
        "group.id": f"workload-reader-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True,
    }))  # fmt: skip
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[Any] = []
        while True:
            record = consumer.poll(5)
            if record is None:
                break
            err = record.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                raise RuntimeError(f"reading {topic}: {err}")
            out.append(record)
            if record.offset() + 1 >= high:
                break
        return out
    finally:
        consumer.close()


def _plain(record: Any, topics: TopicSettings, examples_before: Any = None) -> dict[str, Any]:
    value = record.value()
    try:
        decoded: Any = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        decoded = value.decode("utf-8", "replace")
    if isinstance(decoded, dict):
        decoded = {k: v for k, v in decoded.items() if k not in _VOLATILE}
        if isinstance(decoded.get("artifact"), dict):  # where it is stored is random
            decoded["artifact"] = {k: v for k, v in decoded["artifact"].items() if k != "location"}
        if "lineage" in decoded:
            # An offset counts the transaction markers too, and where those fall depends on
            # how the feedback was batched: count the examples before it instead.
            decoded["lineage"] = {k.replace(topics.examples, "EXAMPLES"): examples_before(v)
                                  for k, v in decoded["lineage"].items()}  # fmt: skip
    headers = {
        k: v.decode("utf-8", "replace").replace(topics.feedback, "FEEDBACK")
        for k, v in (record.headers() or [])
        # A registry record's signature covers its timestamps: as volatile as they are.
        if k not in ("riverrun.failed_at", "riverrun.signature")
    }
    key = record.key().decode("utf-8", "replace") if record.key() else None
    if key and "/d/" in key:  # a drift record's key ends with its time
        key = key.rpartition("/")[0]
    return {"key": key, "value": decoded,
            "headers": headers}  # fmt: skip


def _operator_policy(record: dict[str, Any]) -> bool:
    value = record["value"]
    return (isinstance(value, dict) and value.get("kind") == "policy"
            and value.get("decided_by") == "operator")


def _run_split(settings: LearnerSettings, registry: Registry, examples: int) -> LearnSummary:
    """A join stage and a learn stage side by side, as `--stage join` and `--stage learn`;
    one summary of the two (the labels the join counted, the rest the learn stage's)."""
    def stage(name: str) -> LearnerSettings:
        return settings.model_copy(update={
            "learner": settings.learner.model_copy(update={"stage": name})})

    learned: list[LearnSummary] = []
    failed: list[BaseException] = []

    def learn() -> None:
        try:
            with Registry(settings.kafka, settings.topics, settings.registry) as own:
                learned.append(LogLearner(stage("learn"), own).run(max_examples=examples,
                                                                   idle_timeout=30))
        except BaseException as exc:  # noqa: BLE001  # raised below, in the test's thread
            failed.append(exc)

    thread = threading.Thread(target=learn)
    thread.start()
    joined = Learner(stage("join"), registry).run(max_examples=examples, idle_timeout=30)
    thread.join(120)
    if failed:
        raise failed[0]
    summary = learned[0]
    summary.labels_joined, summary.labels_unjoined = joined.labels_joined, joined.labels_unjoined
    return summary


def run_workload(kafka: KafkaSettings, prefix: str, *, split: bool = False) -> dict[str, Any]:
    """Run the three learner phases on fresh topics named after `prefix`; return the digest.

    With `split`, each phase runs a join stage and a learn stage side by side instead of one
    learner process.
    """
    names = TopicSettings().all()
    topics = TopicSettings(**{role: f"{prefix}-{name}" for role, name in names.items()})
    admin = AdminClient(kafka.client_config())
    new = [NewTopic(name, num_partitions=1) for name in topics.all().values()]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    registry_settings = RegistrySettings(signing_key=SIGNING_KEY)  # type: ignore[arg-type]
    rows = phishing_rows()
    summaries: list[dict[str, Any]] = []

    def learn(examples: int, **options: Any) -> None:
        settings = LearnerSettings(
            kafka=kafka, topics=topics, registry=registry_settings,
            learner=LearnerOptions(model=MODEL, worker_id="workload", snapshot_every=100,
                                   snapshot_interval=3600, batch_size=64, drift_warmup=50,
                                   **options),
        )  # fmt: skip
        with Registry(kafka, topics, registry_settings) as registry:
            if split:
                summary = _run_split(settings, registry, examples)
            else:
                summary = Learner(settings, registry).run(max_examples=examples, idle_timeout=30)
        summaries.append({
            "version": summary.version, "labels_joined": summary.labels_joined,
            "labels_unjoined": summary.labels_unjoined,
            "examples_learned": summary.examples_learned,
            "snapshots_published": summary.snapshots_published,
            "next_offset": summary.next_offset, "last_snapshot": summary.last_snapshot,
            "metrics": summary.metrics,
        })  # fmt: skip

    def release(*, deploy: bool = False) -> None:
        with Registry(kafka, topics, registry_settings) as registry:
            registry.release(MODEL, SPEC, build_estimator(SPEC), deploy=deploy)

    release()
    # Phase 1: v1 learns the first 500 rows.
    predictions, feedback, examples = phase_records(rows, 0, 500)
    _produce(kafka, topics.predictions, predictions)
    _produce(kafka, topics.feedback, feedback)
    learn(examples)
    # Phase 2: a restarted learner, v1 still, rows 500-800.
    predictions, feedback, examples = phase_records(rows, 500, 800)
    _produce(kafka, topics.predictions, predictions)
    _produce(kafka, topics.feedback, feedback)
    learn(examples)
    # Phase 3: v2 released with a deployment (it answers now); rows 800-1250, labels flipped
    # from 1000 on, so drift fires and the guardrail trips.
    release(deploy=True)
    predictions, feedback, examples = phase_records(rows, 800, 1250, flip_from=1000)
    _produce(kafka, topics.predictions, predictions)
    _produce(kafka, topics.feedback, feedback)
    learn(examples, guardrail_min_examples=50, guardrail_loss_ratio=1.5)

    examples_log = _read(kafka, topics.examples)
    offsets = [record.offset() for record in examples_log]

    def examples_before(offset: int) -> int:
        return bisect.bisect_left(offsets, offset)

    for summary in summaries:
        summary["next_offset"] = examples_before(summary["next_offset"])
    digest = {
        "summaries": summaries,
        "examples": [_plain(r, topics) for r in examples_log],
        "outcomes": [_plain(r, topics) for r in _read(kafka, topics.outcomes)],
        "dead_letters": [_plain(r, topics) for r in _read(kafka, topics.dead_letters)],
        # The operator's policy (phase 3's release with --deploy) is the workload's input,
        # not the learner's output: left out, as before releases deployed themselves.
        "models": [record for record in (_plain(r, topics, examples_before)
                                         for r in _read(kafka, topics.models))
                   if not _operator_policy(record)],
    }
    digest["sha256"] = {
        part: hashlib.sha256(orjson.dumps(digest[part], option=orjson.OPT_SORT_KEYS)).hexdigest()
        for part in ("summaries", "examples", "outcomes", "dead_letters", "models")
    }
    return digest


def main(argv: list[str] | None = None) -> int:
    """Print the digest of one run as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--split", action="store_true", help="A join and a learn stage apart.")
    args = parser.parse_args(argv)
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap_servers)
    digest = run_workload(kafka, f"workload-{uuid.uuid4().hex[:8]}", split=args.split)
    options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    sys.stdout.write(orjson.dumps(digest, option=options).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
