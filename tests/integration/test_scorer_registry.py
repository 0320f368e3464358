"""The scorer follows the registry: releases and snapshots reach running workers between
batches, tampered artifacts are refused while the last good snapshot keeps serving."""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from river import linear_model, optim, preprocessing

from riverrun.schemas import (
    KafkaSettings,
    PolicyChanged,
    PredictionMade,
    SnapshotPublished,
    TopicSettings,
    decode,
    encode,
)
from riverrun.workers.registry import (
    ModelSpec,
    Registry,
    RegistrySettings,
    Signer,
    dump_model,
    seal,
    snapshot_key,
)
from riverrun.workers.registry.client import record_headers

from .conftest import MODEL_NAME, count_so_far, produce, read_all, request_payload, wait_for

KEY = "integration-test-signing-key-32-bytes"
SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression(optimizer=SGD(0.05))",
                 task="binary", label_type="bool")


def fresh_model(rows: list[tuple[dict[str, float], bool]]) -> Any:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    for x, y in rows:
        model.learn_one(x, y)
    return model


@pytest.fixture
def registry(kafka_settings: KafkaSettings, topics: TopicSettings) -> Any:
    with Registry(kafka_settings, topics, RegistrySettings(signing_key=KEY)) as reg:
        yield reg


def predictions_of(kafka: KafkaSettings, topics: TopicSettings, at_least: int) -> list[tuple[int, int, PredictionMade]]:
    return [(r.partition, r.offset, decode(PredictionMade, r.value))
            for r in read_all(kafka, topics.predictions, at_least=at_least, timeout=90)]


def test_releases_and_snapshots_reach_running_scorers_between_batches(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    models = {(1, 0): fresh_model(phishing[:100])}
    registry.release(MODEL_NAME, SPEC, models[(1, 0)])
    scorer = start_scorer(registry=True, env={"RIVERRUN_REGISTRY__SIGNING_KEY": KEY})
    rows = [x for x, _ in phishing]
    sending = threading.Event()
    stop = threading.Event()
    sent = [0]

    def send() -> None:
        producer = Producer(kafka_settings.client_config(
            {"enable.idempotence": True, "linger.ms": 5, "partitioner": "murmur2_random"}))
        sending.set()
        i = 0
        while not stop.is_set() and i < 20_000:
            producer.produce(topics.requests, request_payload(i, rows[i % len(rows)]), f"req-{i}".encode())
            producer.poll(0)
            i += 1
            time.sleep(0.002)
        producer.flush(30)
        sent[0] = i

    sender = threading.Thread(target=send)
    sender.start()
    sending.wait(10)
    wait_for(lambda: count_so_far(kafka_settings, topics.predictions, timeout=1) >= 100, 60,
             "the first answers, from phishing@1#0")
    # Releases and snapshots land while requests flow.
    for snapshot, upto in ((1, 300), (2, 600)):
        time.sleep(1.0)
        models[(1, snapshot)] = fresh_model(phishing[:upto])
        registry.publish_snapshot(MODEL_NAME, 1, snapshot, models[(1, snapshot)])
    time.sleep(1.0)
    models[(2, 0)] = fresh_model(phishing[600:1000])
    registry.release(MODEL_NAME, SPEC, models[(2, 0)], deploy=True)  # it answers from now on
    wait_for(lambda: "now serving phishing@2#0" in scorer.output(), 60, "version 2 to be served")
    time.sleep(1.0)
    stop.set()
    sender.join(120)
    n = sent[0]

    made = predictions_of(kafka_settings, topics, n)
    counts = Counter(p.request_id for _, _, p in made)
    assert len(counts) == n and max(counts.values()) == 1, "one answer per request, none failed"
    assert not read_all(kafka_settings, topics.dead_letters, timeout=2)
    served = {(p.version, p.snapshot) for _, _, p in made}
    assert (1, 0) in served and (2, 0) in served, served
    # Per partition the served snapshot never goes back.
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for partition, _offset, p in sorted(made, key=lambda m: (m[0], m[1])):
        by_partition[partition].append((p.version, p.snapshot))
    for sequence in by_partition.values():
        assert sequence == sorted(sequence)
    # No batch mixes snapshots: a batch shares one scored_at.
    per_batch: dict[Any, set[tuple[int, int]]] = defaultdict(set)
    for _, _, p in made:
        per_batch[p.scored_at].add((p.version, p.snapshot))
    assert all(len(s) == 1 for s in per_batch.values())
    # Each answer is its snapshot's own.
    for _, _, p in made[:: max(1, n // 200)]:
        model = models[(p.version, p.snapshot)]
        assert p.prediction == model.predict_one(p.features)


class Canary:
    """A pickle whose loading would run a command that creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_tampered_snapshots_are_refused_and_the_last_good_keeps_serving(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]], tmp_path: Path, unused_tcp_port: int,
) -> None:
    good = fresh_model(phishing[:200])
    registry.release(MODEL_NAME, SPEC, good)
    scorer = start_scorer("--metrics-port", str(unused_tcp_port), registry=True,
                          env={"RIVERRUN_REGISTRY__SIGNING_KEY": KEY})
    rows = [x for x, _ in phishing]
    sent = 0

    def ask(count: int) -> None:
        nonlocal sent
        produce(kafka_settings, topics.requests,
                [(f"req-{i}".encode(), request_payload(i, rows[i % len(rows)]))
                 for i in range(sent, sent + count)])
        sent += count

    ask(50)
    wait_for(lambda: count_so_far(kafka_settings, topics.predictions, timeout=1) >= 50, 60,
             "the first answers")

    canary = tmp_path / "canary"
    data = dump_model(fresh_model(phishing[:400]))
    signer = Signer(KEY.encode())
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    evil = pickle.dumps(Canary(canary))
    variants = {
        "flipped-byte": (bytes(flipped), seal(data, signer, "")),
        "wrong-signature": (data, seal(data, Signer(b"somebody else"), "")),
        "truncated": (data[:-100], seal(data, signer, "")),
        "forbidden-callable": (evil, seal(evil, signer, "")),
    }
    producer = Producer(kafka_settings.client_config({"enable.idempotence": True}))
    for snapshot, (name, (stored, ref)) in enumerate(variants.items(), start=1):
        location = registry.store.put(MODEL_NAME, 1, snapshot, stored)
        record = SnapshotPublished(model=MODEL_NAME, version=1, snapshot=snapshot,
                                   artifact=ref.model_copy(update={"location": location}))
        key, value = snapshot_key(MODEL_NAME, 1, snapshot), encode(record)
        # Written as a key holder would: a record nobody signed is not even looked at.
        producer.produce(topics.models, value, key, headers=record_headers(signer, key, value))
        producer.flush(10)
        wait_for(lambda name=name: f"refused snapshot {MODEL_NAME}@1#{snapshot}" in scorer.output(),
                 30, f"the {name} snapshot to be refused")
        ask(50)

    made = predictions_of(kafka_settings, topics, sent)
    assert len({p.request_id for _, _, p in made}) == sent
    assert {(p.version, p.snapshot) for _, _, p in made} == {(1, 0)}
    assert not canary.exists(), "the forbidden pickle ran code"
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{unused_tcp_port}/metrics") as response:  # noqa: S310  # loopback
        body = response.read().decode()
    refused = [line for line in body.splitlines()
               if line.startswith("riverrun_scorer_refused_snapshots_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in refused) == len(variants)
    # Staleness counts from the served snapshot's publication (#0), not from the refused ones.
    staleness = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(
        f'riverrun_scorer_model_staleness_seconds{{model="{MODEL_NAME}",version="1"}}')]
    assert len(staleness) == 1 and staleness[0] > 0

    # A good snapshot after the bad ones is taken.
    registry.publish_snapshot(MODEL_NAME, 1, 9, fresh_model(phishing[:500]))
    wait_for(lambda: "now serving phishing@1#9" in scorer.output(), 30, "the good snapshot")


def test_records_written_without_the_key_change_nothing_served_or_learned(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]], tmp_path: Path,
) -> None:
    """Anyone who may produce to `models` writes what an attacker would, with no key: a bare
    release, a policy naming v999, snapshots reusing another model's artifact or reading
    /dev/zero, drift records of 400 KB, a tombstone for the release. Running and fresh scorers
    answer as before, and the learner learns on."""
    from riverrun.schemas import DriftDetected, ModelVersionReleased, PolicyAssignment
    from riverrun.workers.learner import Learner, LearnerOptions, LearnerSettings
    from riverrun.workers.registry.records import drift_key, key_of, version_key

    _, first = registry.release(MODEL_NAME, SPEC, fresh_model(phishing[:300]))
    _, other = registry.release("another-model", SPEC, fresh_model(phishing[300:400]))
    env = {"RIVERRUN_REGISTRY__SIGNING_KEY": KEY}
    running = start_scorer(registry=True, env=env, worker="running")
    wait_for(lambda: "assigned" in running.output(), 60, "the running scorer to join")

    forged = [
        ModelVersionReleased(model=MODEL_NAME, version=2, spec=SPEC.model_dump(), task="binary"),
        PolicyChanged(model=MODEL_NAME, sequence=9, strategy="single",
                      assignments=[PolicyAssignment(version=999, role="champion")]),
        SnapshotPublished(model=MODEL_NAME, version=1, snapshot=5, artifact=other.artifact),
        SnapshotPublished(model=MODEL_NAME, version=1, snapshot=6,
                          artifact=first.artifact.model_copy(update={
                              "location": "file:///dev/zero", "size": 256 * 1024 * 1024})),
        *[DriftDetected(model=MODEL_NAME, version=1, stream="learning", detector="x" * 400_000,
                        position=i, mean_loss=0.5) for i in range(5)],
    ]  # fmt: skip
    producer = Producer(kafka_settings.client_config({"message.max.bytes": 2_000_000}))
    for record in forged:
        key = drift_key(record) if isinstance(record, DriftDetected) else key_of(record)
        producer.produce(topics.models, encode(record), key)
    producer.produce(topics.models, None, version_key(MODEL_NAME, 1))  # a tombstone
    assert producer.flush(30) == 0

    fresh = start_scorer(registry=True, env=env, worker="fresh")
    wait_for(lambda: "assigned" in fresh.output(), 60, "the fresh scorer to join")
    produce(kafka_settings, topics.requests, [
        (f"req-{i}".encode(), request_payload(i, x)) for i, (x, _) in enumerate(phishing[:400])])
    made = predictions_of(kafka_settings, topics, 400)
    assert len({p.request_id for _, _, p in made}) == 400
    assert {(p.version, p.snapshot) for _, _, p in made} == {(1, 0)}
    assert read_all(kafka_settings, topics.dead_letters, timeout=2) == []
    for scorer in (running, fresh):
        assert "ignoring registry record" in scorer.output()

    produce(kafka_settings, topics.feedback, [
        (f"req-{i}".encode(), orjson.dumps({"request_id": f"req-{i}", "model": MODEL_NAME,
                                            "label": y, "observed_at": "2026-01-01T00:00:00Z"}))
        for i, (_, y) in enumerate(phishing[:400])])  # fmt: skip
    settings = LearnerSettings(kafka=kafka_settings, topics=topics,
                               registry=RegistrySettings(signing_key=KEY),  # type: ignore[arg-type]
                               learner=LearnerOptions(model=MODEL_NAME, worker_id="keyless"))
    summary = Learner(settings, registry).run(max_examples=400, idle_timeout=30)
    assert summary.version == 1 and summary.examples_learned == 400
