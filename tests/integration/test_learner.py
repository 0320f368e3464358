"""The learner on a real broker: River's own prequential numbers, unjoined labels dead-lettered
with their reason, and exactly-once learning through SIGKILLs, checked byte for byte."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from riverrun.schemas import (
    DeadLetter,
    ExampleJoined,
    KafkaSettings,
    OutcomeRecorded,
    SnapshotPublished,
    TopicSettings,
    decode,
)
from riverrun.workers.learner import Learner, LearnerOptions, LearnerSettings, verify_snapshot
from riverrun.workers.learner.prequential import learn_example
from riverrun.workers.registry import (
    ModelSpec,
    Registry,
    RegistrySettings,
    build_estimator,
    dump_model,
)

from .conftest import (
    RIVERRUN,
    ScorerProcess,
    one_partition_feedback,
    produce,
    read_all,
    wait_for,
)

SIGNING_KEY = "learner-test-signing-key-of-32-bytes"
SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression", task="binary", label_type="bool")
RIVER_PHISHING_ACCURACY = 0.8928  # river.evaluate.progressive_val_score, same pipeline and data


def registry_settings() -> RegistrySettings:
    return RegistrySettings(signing_key=SIGNING_KEY)  # type: ignore[arg-type]  # str -> SecretStr


def release(kafka: KafkaSettings, topics: TopicSettings, name: str) -> SnapshotPublished:
    """Version 1 of `name`, untrained (no warm start), with its snapshot 0."""
    # A topic created a moment ago may not be in every broker's metadata yet.
    admin = AdminClient(kafka.client_config())
    wait_for(lambda: all(
        (info := admin.list_topics(topic, timeout=5).topics.get(topic)) is not None
        and info.error is None and info.partitions
        for topic in (topics.models, topics.artifacts)), 30, "the registry topics")
    with Registry(kafka, topics, registry_settings()) as registry:
        _, snapshot = registry.release(name, SPEC, build_estimator(SPEC))
    return snapshot


def label_payload(
    request_id: str, model: str, label: Any, features: dict[str, Any] | None
) -> bytes:
    event: dict[str, Any] = {"request_id": request_id, "model": model, "label": label,
                             "observed_at": "2026-01-01T00:00:00+00:00"}
    if features is not None:
        event["features"] = features
    return orjson.dumps(event)


def labels_of(data: list[tuple[dict[str, float], bool]], model: str) -> list[tuple[bytes, bytes]]:
    return [(f"req-{i}".encode(), label_payload(f"req-{i}", model, y, x))
            for i, (x, y) in enumerate(data)]


def learner_settings(
    kafka: KafkaSettings, topics: TopicSettings, model: str, **options: Any
) -> LearnerSettings:
    return LearnerSettings(
        kafka=kafka, topics=topics, registry=registry_settings(),
        learner=LearnerOptions(model=model, worker_id="in-process", **options),
    )  # fmt: skip


def latest(kafka: KafkaSettings, topics: TopicSettings, model: str) -> SnapshotPublished:
    with Registry(kafka, topics, registry_settings()) as registry:
        snapshot = registry.refresh().latest_snapshot(model)
    assert snapshot is not None
    return snapshot


def test_prequential_accuracy_on_phishing_equals_rivers_progressive_validation(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "phish")
    produce(kafka_settings, topics.feedback, labels_of(phishing, "phish"))  # type: ignore[arg-type]

    settings = learner_settings(kafka_settings, topics, "phish", snapshot_every=500)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        learner = Learner(settings, registry)
        summary = learner.run(max_examples=len(phishing), idle_timeout=60)
        sample = learner.metrics.registry.get_sample_value
        assert sample("riverrun_learner_examples_learned_total",
                      {"model": "phish", "version": "1"}) == len(phishing)
        assert sample("riverrun_learner_labels_joined_total",
                      {"model": "phish", "source": "feedback"}) == len(phishing)
        assert sample("riverrun_learner_snapshots_published_total",
                      {"model": "phish", "version": "1"}) == 3
        assert sample("riverrun_learner_prequential",
                      {"model": "phish", "version": "1", "metric": "accuracy"}) == pytest.approx(
            RIVER_PHISHING_ACCURACY, abs=1e-4)
        assert summary.examples_learned == len(phishing)
        assert summary.labels_joined == len(phishing) and summary.labels_unjoined == 0
        assert summary.metrics is not None
        assert summary.metrics["accuracy"] * 100 == pytest.approx(
            RIVER_PHISHING_ACCURACY * 100, abs=0.01
        )
        assert summary.snapshots_published == 3  # at 500, 1000, and the last 250 at exit
        final = latest(kafka_settings, topics, "phish")
        assert final.metrics["accuracy"] == summary.metrics["accuracy"]
        assert final.examples_seen == len(phishing)
        assert final.lineage == {f"{topics.examples}:0": summary.next_offset}
        verdict = verify_snapshot(registry, kafka_settings, topics, f"phish@1#{final.snapshot}")
        assert verdict.matches, verdict
        assert verdict.examples == len(phishing)
    examples = read_all(kafka_settings, topics.examples, at_least=len(phishing))
    learned = [decode(ExampleJoined, r.value) for r in examples]
    assert [e.request_id for e in learned] == [f"req-{i}" for i in range(len(phishing))]


def prediction_payload(i: int, model: str, features: dict[str, float]) -> bytes:
    return orjson.dumps({
        "request_id": f"req-{i}", "model": model, "version": 1, "snapshot": 0,
        "route": "champion", "prediction": True, "proba": {"True": 0.7, "False": 0.3},
        "features": features, "scored_at": datetime.now(UTC).isoformat(), "latency_ms": 1.0,
    })  # fmt: skip


def test_labels_join_predictions_and_unjoined_ones_are_dead_lettered_with_their_reason(
    kafka_settings: KafkaSettings, topics: TopicSettings,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    release(kafka_settings, topics, "joiner")
    produce(kafka_settings, topics.predictions, [
        (f"req-{i}".encode(), prediction_payload(i, "joiner", phishing[i][0])) for i in range(20)
    ] + [(b"req-x", prediction_payload(99, "someone-else", phishing[0][0]))])  # fmt: skip
    feedback: list[tuple[bytes | None, bytes | None]] = [
        (f"req-{i}".encode(), label_payload(f"req-{i}", "joiner", phishing[i][1], None))
        for i in range(20)
    ]
    feedback += [
        (b"req-404", label_payload("req-404", "joiner", True, None)),  # never predicted
        (b"req-3", label_payload("req-3", "joiner", False, None)),  # a second label
        (b"req-99", label_payload("req-99", "joiner", True, None)),  # another model's request
        (b"req-5", label_payload("req-5", "someone-else", True, None)),  # a model not released
        (b"junk", b"{not json"),
    ]
    where = produce(kafka_settings, topics.feedback, feedback)

    settings = learner_settings(kafka_settings, topics, "joiner")
    with Registry(kafka_settings, topics, settings.registry) as registry:
        summary = Learner(settings, registry).run(idle_timeout=5)
    assert summary.labels_joined == 20 and summary.examples_learned == 20
    assert summary.labels_unjoined == 5

    examples = [decode(ExampleJoined, r.value) for r in
                read_all(kafka_settings, topics.examples, at_least=20)]
    assert sorted(e.request_id for e in examples) == sorted(f"req-{i}" for i in range(20))
    assert all(e.features == phishing[int(e.request_id[4:])][0] for e in examples)
    outcomes = [decode(OutcomeRecorded, r.value) for r in
                read_all(kafka_settings, topics.outcomes, at_least=20)]
    assert len(outcomes) == 20
    assert all(o.version == 1 and o.route == "champion" for o in outcomes)

    letters = read_all(kafka_settings, topics.dead_letters, at_least=4)
    reasons = Counter(DeadLetter.from_headers(list(r.headers.items())).error_class for r in letters)
    assert reasons == {"UnknownRequest": 2, "DuplicateLabel": 1, "NotJson": 1, "UnknownModel": 1}
    by_source = {}
    for r in letters:
        letter = DeadLetter.from_headers(list(r.headers.items()))
        assert letter.source_topic == topics.feedback
        by_source[(letter.source_partition, letter.source_offset)] = r
    for index in (20, 21, 22, 23, 24):
        assert by_source[where[index]].value == feedback[index][1]  # the original bytes


@pytest.mark.requires("read_committed")
def start_learner(
    kafka: KafkaSettings, topics: TopicSettings, model: str, log: Path, crash_at: str | None,
    *extra: str,
) -> ScorerProcess:
    """`riverrun learn` of `model` on these topics, snapshotting on counts only (every 60
    examples), so that two learners snapshot at the same examples; SIGKILLed at `crash_at`
    (`POINT:N`) if given."""
    argv = [
        RIVERRUN, "--log-format", "text", "learn",
        "--bootstrap-servers", kafka.bootstrap_servers,
        "--topic-feedback", topics.feedback, "--topic-predictions", topics.predictions,
        "--topic-examples", topics.examples, "--topic-outcomes", topics.outcomes,
        "--topic-dead-letters", topics.dead_letters, "--topic-models", topics.models,
        "--topic-artifacts", topics.artifacts, "--signing-key", SIGNING_KEY,
        "--model", model, "--snapshot-every", "60", "--snapshot-interval", "3600",
        "--batch-size", "40", *extra,
    ]  # fmt: skip
    env = dict(os.environ)
    if crash_at:
        env["RIVERRUN_LEARNER__CRASH_AT"] = crash_at
    return ScorerProcess(argv, env, log)


def learned_as_one_uninterrupted_learner(
    kafka: KafkaSettings, topics: TopicSettings, rows: list[tuple[dict[str, float], bool]],
    interrupted: str,
) -> SnapshotPublished:
    """Learn `rows` as model `calm` with one learner nobody interrupts, and hold `interrupted`
    (which learned the same rows) to it: every 60 examples, the same artifact byte for byte.
    Returns the interrupted model's latest snapshot."""
    produce(kafka, topics.feedback, labels_of(rows, "calm"))  # type: ignore[arg-type]
    settings = learner_settings(kafka, topics, "calm", snapshot_every=60,
                                snapshot_interval=3600.0)
    with Registry(kafka, topics, settings.registry) as registry:
        assert Learner(settings, registry).run(idle_timeout=5).examples_learned == len(rows)
    mine, calm = latest(kafka, topics, interrupted), latest(kafka, topics, "calm")
    assert mine.examples_seen == calm.examples_seen == len(rows)
    assert mine.artifact.sha256 == calm.artifact.sha256
    with Registry(kafka, topics, registry_settings()) as registry:
        view = registry.refresh()
    by_count = {name: {s.examples_seen: s.artifact.sha256 for s in view.snapshots(name, 1)}
                for name in (interrupted, "calm")}
    assert set(range(0, len(rows), 60)) <= set(by_count[interrupted]) & set(by_count["calm"])
    for count, digest in by_count[interrupted].items():
        assert by_count["calm"].get(count, digest) == digest, f"differs after {count} examples"
    assert mine.metrics == calm.metrics  # prequential metrics carried through the restarts
    return mine


def test_sigkilled_learner_learns_each_example_once_byte_for_byte(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    phishing: list[tuple[dict[str, float], bool]], tmp_path: Path,
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "killed")
    release(kafka_settings, topics, "calm")
    labels = labels_of(phishing, "killed")
    chunks = [labels[i:i + 250] for i in range(0, len(labels), 250)]

    def start(crash_at: str | None, *extra: str) -> ScorerProcess:
        return start_learner(kafka_settings, topics, "killed",
                             tmp_path / f"learner-{len(runs)}.log", crash_at, *extra)  # fmt: skip

    runs: list[ScorerProcess] = []
    crashes = ["after-learn-before-snapshot:3", "after-snapshot-before-commit:2",
               "after-join-before-commit:4"]
    try:
        for crash_at, chunk in zip(crashes, chunks, strict=False):
            produce(kafka_settings, topics.feedback, chunk)  # type: ignore[arg-type]
            runs.append(start(crash_at))
            assert runs[-1].wait(120) == -signal.SIGKILL, runs[-1].output()
            assert f"crash point {crash_at.split(':')[0]} reached" in runs[-1].output()
        # A SIGKILL from outside, at no chosen point, while feedback flows.
        runs.append(start(None))
        produce(kafka_settings, topics.feedback, chunks[3])  # type: ignore[arg-type]
        before = latest(kafka_settings, topics, "killed").snapshot
        wait_for(lambda: latest(kafka_settings, topics, "killed").snapshot > before + 1, 120,
                 "two more snapshots before the SIGKILL")
        runs[-1].signal(signal.SIGKILL)
        assert runs[-1].wait(30) == -signal.SIGKILL
        produce(kafka_settings, topics.feedback, chunks[4])  # type: ignore[arg-type]
        runs.append(start(None, "--idle-timeout", "5"))
        assert runs[-1].wait(180) == 0, runs[-1].output()
    finally:
        for run in runs:
            run.close()

    killed = learned_as_one_uninterrupted_learner(kafka_settings, topics, phishing, "killed")
    examples = [orjson.loads(r.value) for r in read_all(kafka_settings, topics.examples,
                                                           at_least=2 * len(phishing))]
    assert Counter(e["model"] for e in examples) == {"killed": len(phishing), "calm": len(phishing)}

    verify = subprocess.run(
        [RIVERRUN, "models", "verify", f"killed@1#{killed.snapshot}",
         "--bootstrap-servers", kafka_settings.bootstrap_servers,
         "--topic-models", topics.models, "--topic-artifacts", topics.artifacts,
         "--topic-examples", topics.examples, "--signing-key", SIGNING_KEY],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith(f"OK killed@1#{killed.snapshot}")
    assert killed.artifact.sha256 in verify.stdout


def test_a_restarted_learner_keeps_its_prequential_metrics(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "resumed")
    produce(kafka_settings, topics.feedback, labels_of(phishing, "resumed"))  # type: ignore[arg-type]

    settings = learner_settings(kafka_settings, topics, "resumed", snapshot_every=400)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        first = Learner(settings, registry).run(max_examples=600, idle_timeout=60)
        second = Learner(settings, registry).run(
            max_examples=len(phishing) - first.examples_learned, idle_timeout=60
        )
    assert first.examples_learned + second.examples_learned == len(phishing)
    assert second.metrics is not None
    # The same numbers as one uninterrupted pass: River's own, over every example.
    assert second.metrics["examples"] == len(phishing)
    assert second.metrics["accuracy"] == pytest.approx(RIVER_PHISHING_ACCURACY, abs=1e-4)
    final = latest(kafka_settings, topics, "resumed")
    assert final.metrics["examples"] == len(phishing)


def test_a_version_released_while_learning_takes_over_from_its_release_on(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "evolving")
    before, after = phishing[:300], phishing[300:800]
    produce(kafka_settings, topics.feedback, labels_of(before, "evolving"))  # type: ignore[arg-type]

    settings = learner_settings(kafka_settings, topics, "evolving", snapshot_every=100)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        learner = Learner(settings, registry)
        finished: list[Any] = []
        import threading

        runner = threading.Thread(target=lambda: finished.append(learner.run(idle_timeout=8)))
        runner.start()
        wait_for(lambda: learner.metrics.registry.get_sample_value(
            "riverrun_learner_examples_learned_total",
            {"model": "evolving", "version": "1"}) == len(before), 60, "version 1 to learn")
        _, released = registry.release("evolving", SPEC, build_estimator(SPEC), deploy=True)
        assert released.version == 2
        learned_to = learner.metrics.registry.get_sample_value(
            "riverrun_learner_examples_offset", {"model": "evolving"})
        assert learned_to is not None
        # The end of the log at release (past the last transaction's marker).
        assert released.lineage[f"{topics.examples}:0"] >= learned_to
        wait_for(lambda: learner.metrics.registry.get_sample_value(
            "riverrun_learner_version", {"model": "evolving"}) == 2, 30, "the switch to version 2")
        labels = [(f"late-{i}".encode(), label_payload(f"late-{i}", "evolving", y, x))
                  for i, (x, y) in enumerate(after)]
        produce(kafka_settings, topics.feedback, labels)  # type: ignore[arg-type]
        runner.join(120)
        assert finished and finished[0].version == 2, finished
        view = registry.refresh()
        v1 = view.latest_snapshot("evolving", 1)
        v2 = view.latest_snapshot("evolving", 2)
        assert v1 is not None and v1.examples_seen == len(before)
        # Version 2 learned only what was joined after its release, from its own snapshot 0.
        assert v2 is not None and v2.examples_seen == len(after)
        assert v2.metrics["examples"] == len(after)
        verdict = verify_snapshot(registry, kafka_settings, topics, f"evolving@2#{v2.snapshot}")
        assert verdict.matches and verdict.examples == len(after), verdict


def test_concurrent_releases_take_distinct_versions(
    kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    release(kafka_settings, topics, "raced")  # the topics answer before the race starts
    import threading

    taken: list[int] = []

    def release_three() -> None:
        with Registry(kafka_settings, topics, registry_settings()) as registry:
            for _ in range(3):
                released, _ = registry.release("raced", SPEC, build_estimator(SPEC))
                taken.append(released.version)

    racers = [threading.Thread(target=release_three) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(180)
    assert sorted(taken) == [2, 3, 4, 5, 6, 7]
    with Registry(kafka_settings, topics, registry_settings()) as registry:
        view = registry.refresh()
        assert [v.version for v in view.versions("raced")] == [1, 2, 3, 4, 5, 6, 7]
        for version in range(1, 8):
            snapshot = view.latest_snapshot("raced", version)
            assert snapshot is not None and snapshot.snapshot == 0
            registry.load(snapshot)  # each version's own artifact, intact


def test_a_drifting_stream_trips_the_detector_near_the_drift(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
) -> None:
    from riverrun.producers.dataset import describe, load

    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "drifty")
    rows = list(load("agrawal-drift", seed=3, limit=8000))
    drift_at = describe("agrawal-drift").drift_at
    assert drift_at == 5000
    produce(kafka_settings, topics.feedback, labels_of(rows, "drifty"))  # type: ignore[arg-type]

    settings = learner_settings(kafka_settings, topics, "drifty", snapshot_every=1000)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        learner = Learner(settings, registry)
        learner.run(max_examples=len(rows), idle_timeout=60)
        fired = learner.metrics.registry.get_sample_value(
            "riverrun_learner_drift_detected_total",
            {"model": "drifty", "version": "1", "stream": "learning"})
        assert fired is not None and fired >= 1
        wait_for(lambda: registry.refresh().drifts("drifty"), 30, "the drift record")
        drifts = registry.refresh().drifts("drifty")
    first = drifts[0]
    assert (first.version, first.stream, first.detector) == (1, "learning", "ADWIN")
    assert drift_at <= first.position <= drift_at + 1500, [d.position for d in drifts]


def test_a_poisoned_burst_trips_the_guardrail_and_the_last_good_snapshot_is_restored(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "poisoned")
    clean = labels_of(phishing, "poisoned")
    flipped = [(f"bad-{i}".encode(), label_payload(f"bad-{i}", "poisoned", not y, x))
               for i, (x, y) in enumerate(phishing[:300])]
    produce(kafka_settings, topics.feedback, clean + flipped)  # type: ignore[arg-type]

    settings = learner_settings(kafka_settings, topics, "poisoned", snapshot_every=100,
                                snapshot_interval=None, guardrail_min_examples=50)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        learner = Learner(settings, registry)
        summary = learner.run(max_examples=len(clean) + len(flipped), idle_timeout=60)
        sample = learner.metrics.registry.get_sample_value
        assert sample("riverrun_learner_guardrail_trips_total",
                      {"model": "poisoned", "version": "1"}) == 1
        assert sample("riverrun_learner_publishing", {"model": "poisoned"}) == 0
        snapshots = registry.refresh().snapshots("poisoned", 1)
        restored = snapshots[-1]
        assert restored.snapshot == summary.last_snapshot
        assert restored.restored_from is not None and "guardrail" in restored.reason
        good = next(s for s in snapshots if s.snapshot == restored.restored_from)
        # The last good snapshot learned only clean labels; what scorers load now is its bytes.
        assert good.examples_seen <= len(clean)
        assert restored.artifact.sha256 == good.artifact.sha256
        assert all(s.restored_from is None for s in snapshots[:-1])
        verdict = verify_snapshot(registry, kafka_settings, topics,
                                  f"poisoned@1#{restored.snapshot}")
        assert verdict.matches, verdict


def test_the_learner_teaches_the_champion_the_policy_names(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    import threading

    from riverrun.workers.routing.policy import deploy, rollback

    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "steered")
    batches = [phishing[:200], phishing[200:400], phishing[400:600]]

    def send(batch: int) -> None:
        produce(kafka_settings, topics.feedback, [  # type: ignore[arg-type]
            (f"b{batch}-{i}".encode(), label_payload(f"b{batch}-{i}", "steered", y, x))
            for i, (x, y) in enumerate(batches[batch])])

    settings = learner_settings(kafka_settings, topics, "steered", snapshot_every=100)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        registry.publish_policy(deploy(registry.refresh(), "steered", "single", version="1"))
        learner = Learner(settings, registry)
        sample = learner.metrics.registry.get_sample_value
        finished: list[Any] = []
        runner = threading.Thread(target=lambda: finished.append(learner.run(idle_timeout=10)))
        runner.start()

        def learned(version: int) -> float:
            return sample("riverrun_learner_examples_learned_total",
                          {"model": "steered", "version": str(version)}) or 0.0

        send(0)
        wait_for(lambda: learned(1) == 200, 60, "version 1 to learn the first labels")
        registry.release("steered", SPEC, build_estimator(SPEC))  # released, not deployed
        send(1)
        # The policy still names version 1: it keeps learning, version 2 waits.
        wait_for(lambda: learned(1) == 400, 60, "version 1 to learn the second labels")
        assert sample("riverrun_learner_version", {"model": "steered"}) == 1
        registry.publish_policy(deploy(registry.refresh(), "steered", "single", version="2"))
        wait_for(lambda: learned(2) == 200, 60, "version 2 to catch up from its release")
        send(2)
        wait_for(lambda: learned(2) == 400, 60, "version 2 to learn the third labels")
        registry.publish_policy(rollback(registry.refresh(), "steered", "1"))
        # Version 1 catches up on what it missed while version 2 answered.
        wait_for(lambda: learned(1) == 600, 60, "version 1 to catch up after the rollback")
        runner.join(120)
        assert finished and finished[0].version == 1
        view = registry.refresh()
        v1, v2 = view.latest_snapshot("steered", 1), view.latest_snapshot("steered", 2)
        assert v1 is not None and v1.examples_seen == 600
        assert v2 is not None and v2.examples_seen == 400
        for reference in (f"steered@1#{v1.snapshot}", f"steered@2#{v2.snapshot}"):
            verdict = verify_snapshot(registry, kafka_settings, topics, reference)
            assert verdict.matches, verdict


def test_an_example_the_model_cannot_learn_is_dead_lettered_and_the_rest_learned(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    """A poison example among 1,000 good ones, with a restart after it: the learner goes on,
    dead-letters it, and ends on the very model of a learner that never saw it; labels a bool
    model cannot take are dead-lettered at the door."""
    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "poisoned")
    good = labels_of(phishing[:1000], "poisoned")
    poison = (b"req-poison", label_payload("req-poison", "poisoned", True,
                                           {"salary": "high", "age": 30.0}))  # type: ignore[dict-item]
    refused = [(b"req-two", label_payload("req-two", "poisoned", 2, phishing[0][0])),
               (b"req-yes", label_payload("req-yes", "poisoned", "yes", phishing[0][0])),
               (b"req-nan", b'{"request_id": "req-nan", "model": "poisoned", "label": NaN, '
                            b'"observed_at": "2026-01-01T00:00:00+00:00"}')]  # fmt: skip
    produce(kafka_settings, topics.feedback,
            [*good[:500], poison, *refused, *good[500:]])  # type: ignore[arg-type]

    settings = learner_settings(kafka_settings, topics, "poisoned", snapshot_every=100,
                                snapshot_interval=3600.0)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        first = Learner(settings, registry)
        first.run(max_examples=650, idle_timeout=60)  # past the poison, then a restart
        assert first.metrics.registry.get_sample_value(
            "riverrun_learner_examples_not_learned_total",
            {"model": "poisoned", "version": "1"}) == 1
        Learner(settings, registry).run(max_examples=1001 - 650, idle_timeout=60)
        final = latest(kafka_settings, topics, "poisoned")
        assert final.examples_seen == 1001
        for snapshot in (5, 6, final.snapshot):  # before the poison, just after it, the last
            verdict = verify_snapshot(registry, kafka_settings, topics, f"poisoned@1#{snapshot}")
            assert verdict.matches, verdict

    clean = build_estimator(SPEC)
    for x, y in phishing[:1000]:
        learn_example(clean, x, y, None)
    assert hashlib.sha256(dump_model(clean)).hexdigest() == final.artifact.sha256

    letters = read_all(kafka_settings, topics.dead_letters, at_least=4)
    by_class: dict[str, list[DeadLetter]] = {}
    for r in letters:
        letter = DeadLetter.from_headers(list(r.headers.items()))
        by_class.setdefault(letter.error_class, []).append(letter)
    (not_learned,) = by_class["NotLearned"]
    assert "TypeError" in not_learned.reason and not_learned.source_topic == topics.examples
    assert len(by_class["LabelTypeMismatch"]) == 2 and len(by_class["NotJson"]) == 1
