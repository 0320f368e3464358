"""Scorers route by the registry's policies on a real broker: sticky canaries, shadows on their
own topic, a blue-green switch with no failed request, and a rollback that restores the earlier
version's predictions exactly."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from riverrun.schemas import KafkaSettings, PredictionMade, TopicSettings, decode
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings

from .conftest import (
    MODEL_NAME,
    RIVERRUN,
    count_so_far,
    produce,
    read_all,
    request_payload,
    wait_for,
)
from .test_scorer_registry import fresh_model

KEY = "integration-test-signing-key-32-bytes"
ENV = {"RIVERRUN_REGISTRY__SIGNING_KEY": KEY}
SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression(optimizer=SGD(0.05))",
                 task="binary", label_type="bool")


@pytest.fixture
def registry(kafka_settings: KafkaSettings, topics: TopicSettings) -> Any:
    with Registry(kafka_settings, topics, RegistrySettings(signing_key=KEY)) as reg:
        yield reg


def shadow_args(topics: TopicSettings) -> list[str]:
    return ["--topic-shadow-predictions", topics.shadow_predictions]


def models_cli(kafka: KafkaSettings, topics: TopicSettings, *argv: str) -> str:
    """`riverrun models ...` as an operator runs it; returns its output."""
    done = subprocess.run(
        [RIVERRUN, "--log-format", "text", "models", *argv,
         "--bootstrap-servers", kafka.bootstrap_servers, "--topic-models", topics.models,
         "--topic-artifacts", topics.artifacts, "--signing-key", KEY],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def predictions(
    kafka: KafkaSettings, topic: str, at_least: int
) -> list[tuple[Any, PredictionMade]]:
    return [(r, decode(PredictionMade, r.value))
            for r in read_all(kafka, topic, at_least=at_least, timeout=90)]


def ask(kafka: KafkaSettings, topics: TopicSettings, rows: list[dict[str, float]], start: int,
        count: int, keys: int) -> None:
    produce(kafka, topics.requests,
            [(f"user-{i % keys}".encode(), request_payload(i, rows[i % len(rows)]))
             for i in range(start, start + count)])


@pytest.mark.timeout(300)
def test_canary_and_ab_keep_every_key_on_one_version(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    rows = [x for x, _ in phishing]
    registry.release(MODEL_NAME, SPEC, fresh_model(phishing[:200]))
    registry.release(MODEL_NAME, SPEC, fresh_model(phishing[200:700]))
    models_cli(kafka_settings, topics, "deploy", MODEL_NAME, "--strategy", "canary",
               "--version", "1", "--challenger", "2", "--weight", "0.3")
    scorers = [start_scorer(*shadow_args(topics), registry=True, env=ENV) for _ in range(2)]
    ask(kafka_settings, topics, rows, 0, 3000, keys=300)
    made = predictions(kafka_settings, topics.predictions, 3000)
    assert len({p.request_id for _, p in made}) == 3000
    by_key: dict[bytes, set[tuple[int, str]]] = defaultdict(set)
    for record, p in made:
        by_key[record.key].add((p.version, p.route))
    assert all(len(seen) == 1 for seen in by_key.values()), "a key moved between versions"
    share = sum(1 for seen in by_key.values() if seen == {(2, "canary")}) / len(by_key)
    assert 0.2 < share < 0.4, share
    assert all(s.alive() for s in scorers)


@pytest.mark.timeout(300)
def test_shadow_predictions_go_to_their_own_topic_only(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    rows = [x for x, _ in phishing]
    champion, shadow = fresh_model(phishing[:200]), fresh_model(phishing[200:900])
    registry.release(MODEL_NAME, SPEC, champion)
    registry.release(MODEL_NAME, SPEC, shadow)
    models_cli(kafka_settings, topics, "deploy", MODEL_NAME, "--strategy", "shadow",
               "--version", "1", "--challenger", "2")
    start_scorer(*shadow_args(topics), registry=True, env=ENV)
    ask(kafka_settings, topics, rows, 0, 1000, keys=1000)
    answers = predictions(kafka_settings, topics.predictions, 1000)
    shadows = predictions(kafka_settings, topics.shadow_predictions, 1000)
    assert {(p.version, p.route) for _, p in answers} == {(1, "champion")}
    assert {(p.version, p.route) for _, p in shadows} == {(2, "shadow")}
    assert sorted(p.request_id for _, p in answers) == sorted(p.request_id for _, p in shadows)
    assert len(answers) == 1000
    for record, p in shadows[::50]:
        assert p.prediction == shadow.predict_one(p.features)
        assert record.key == f"user-{int(p.request_id.split('-')[1])}".encode()


@pytest.mark.timeout(300)
def test_blue_green_switches_on_every_scorer_with_no_failed_request(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    rows = [x for x, _ in phishing]
    blue, green = fresh_model(phishing[:200]), fresh_model(phishing[200:900])
    registry.release(MODEL_NAME, SPEC, blue)
    models_cli(kafka_settings, topics, "deploy", MODEL_NAME, "--strategy", "single",
               "--version", "1")
    scorers = [start_scorer(registry=True, env=ENV) for _ in range(2)]
    stop = threading.Event()
    sent = [0]

    def send() -> None:
        producer = Producer(kafka_settings.client_config(
            {"enable.idempotence": True, "linger.ms": 5, "partitioner": "murmur2_random"}))
        i = 0
        while not stop.is_set():
            producer.produce(topics.requests, request_payload(i, rows[i % len(rows)]),
                             f"user-{i % 500}".encode())
            producer.poll(0)
            i += 1
            time.sleep(0.002)
        producer.flush(30)
        sent[0] = i

    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_for(lambda: count_so_far(kafka_settings, topics.predictions, timeout=1) >= 200, 90,
                 "blue answering")
        registry.release(MODEL_NAME, SPEC, green)
        models_cli(kafka_settings, topics, "deploy", MODEL_NAME, "--strategy", "blue-green",
                   "--version", "1", "--challenger", "2")
        # Green is loaded and warm on every scorer while blue serves.
        for scorer in scorers:
            wait_for(lambda s=scorer: "now serving phishing@2#0" in s.output(), 60, "green warm")
        time.sleep(0.5)
        out = models_cli(kafka_settings, topics, "promote", MODEL_NAME)
        assert "policy #3: blue-green" in out
        switched_at = time.monotonic()
        for scorer in scorers:
            wait_for(lambda s=scorer: "routing phishing by policy #3" in s.output(), 30,
                     "the switch on every scorer")
        assert time.monotonic() - switched_at < 30
        time.sleep(1.0)
    finally:
        stop.set()
        sender.join(60)
    n = sent[0]
    made = predictions(kafka_settings, topics.predictions, n)
    counts = Counter(p.request_id for _, p in made)
    assert len(counts) == n and max(counts.values()) == 1, "every request answered once"
    assert not read_all(kafka_settings, topics.dead_letters, timeout=2), "no request failed"
    routes = {(p.version, p.route) for _, p in made}
    assert {(1, "champion"), (1, "blue"), (2, "green")} <= routes, routes
    # Per partition the switch happens once: blue, then green, never back.
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record, p in sorted(made, key=lambda m: (m[0].partition, m[0].offset)):
        by_partition[record.partition].append(p.version)
    for versions in by_partition.values():
        assert versions == sorted(versions)
    for _, p in made[:: max(1, n // 100)]:
        model = blue if p.version == 1 else green
        assert p.prediction == model.predict_one(p.features)


@pytest.mark.timeout(300)
def test_rollback_to_an_earlier_snapshot_restores_its_predictions_exactly(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    rows = [x for x, _ in phishing]
    registry.release(MODEL_NAME, SPEC, fresh_model(phishing[:100]))
    scorer = start_scorer(registry=True, env=ENV)
    ask(kafka_settings, topics, rows, 0, 300, keys=300)
    first = {p.request_id: p for _, p in predictions(kafka_settings, topics.predictions, 300)}
    assert {(p.version, p.snapshot) for p in first.values()} == {(1, 0)}
    # The version learns on and a new version is released and deployed (policy #1): the
    # earlier answers change.
    registry.publish_snapshot(MODEL_NAME, 1, 1, fresh_model(phishing[:600]))
    version_2 = fresh_model(phishing[600:1200])
    registry.release(MODEL_NAME, SPEC, version_2, deploy=True)
    wait_for(lambda: "now serving phishing@2#0" in scorer.output(), 60, "version 2")
    ask(kafka_settings, topics, rows, 300, 300, keys=300)
    wait_for(lambda: count_so_far(kafka_settings, topics.predictions, timeout=1) >= 600, 60,
             "answers of version 2")
    out = models_cli(kafka_settings, topics, "rollback", MODEL_NAME, "--to", "1#0")
    assert "champion phishing@1#0" in out
    wait_for(lambda: "routing phishing by policy #2" in scorer.output(), 60, "the rollback")
    # The first requests again, under new request ids.
    produce(kafka_settings, topics.requests,
            [(f"user-{i}".encode(), orjson.dumps({"request_id": f"again-{i}", "model": MODEL_NAME,
                                                  "features": rows[i]}))
             for i in range(300)])
    made = [p for _, p in predictions(kafka_settings, topics.predictions, 900)]
    second = [p for p in made if 300 <= int(p.request_id.split("-")[1]) < 600
              and p.request_id.startswith("req-")]
    assert {(p.version, p.snapshot) for p in second} == {(2, 0)}
    again = [p for p in made if p.request_id.startswith("again-")]
    assert len(again) == 300
    changed = 0
    for p in again:
        before = first[f"req-{p.request_id.split('-')[1]}"]
        assert (p.version, p.snapshot, p.route) == (1, 0, "champion")
        assert p.prediction == before.prediction and p.proba == before.proba
        theirs = version_2.predict_proba_one(p.features)
        changed += p.proba != {str(k): v for k, v in theirs.items()}
    assert changed, "version 2 answers differently: the rollback restored something"


def test_status_shows_the_policy_and_its_routes(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    registry.release(MODEL_NAME, SPEC, fresh_model(phishing[:100]))
    registry.release(MODEL_NAME, SPEC, fresh_model(phishing[:200]))
    models_cli(kafka_settings, topics, "deploy", MODEL_NAME, "--strategy", "canary",
               "--version", "1", "--challenger", "2", "--weight", "0.1", "--step", "0.5@3600")
    status = orjson.loads(models_cli(kafka_settings, topics, "status", MODEL_NAME, "--json",
                                     "--judge-url", "http://127.0.0.1:9"))
    assert status["policy"]["strategy"] == "canary" and status["judge"] is None
    assert [(r["route"], r["version"], r["weight"]) for r in status["routes"]] == [
        ("canary", 2, pytest.approx(0.1)), ("champion", 1, pytest.approx(0.9))]
    text = models_cli(kafka_settings, topics, "status", MODEL_NAME, "--judge-url",
                      "http://127.0.0.1:9")
    assert "canary, policy #1" in text and "judge: did not answer" in text
