"""The whole pipe on a real broker: a scorer routes a canary, a learner records outcomes, the
judge promotes the challenger that learned the new concept, and the scorer follows."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from river import tree

from riverrun.producers.dataset import load
from riverrun.schemas import KafkaSettings, PolicyChanged, PredictionMade, TopicSettings, decode
from riverrun.workers.broker.process import free_port
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings, read_registry

from .conftest import RIVERRUN, ScorerProcess, produce, read_all, wait_for

KEY = "integration-test-signing-key-32-bytes"
MODEL = "loans"
SPEC = ModelSpec(pipeline="HoeffdingTreeClassifier(grace_period=50)", task="binary",
                 label_type="int")


def topic_flags(topics: TopicSettings) -> list[str]:
    return [arg for role, name in topics.all().items()
            for arg in (f"--topic-{role.replace('_', '-')}", name)]


@pytest.mark.timeout(400)
def test_scorer_learner_and_judge_promote_the_challenger_that_learned_the_drift(
    kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path,
    unique: Callable[[str], str],
) -> None:
    rows = list(load("agrawal-drift", seed=7, limit=10_000))
    old, new = tree.HoeffdingTreeClassifier(grace_period=50), tree.HoeffdingTreeClassifier(
        grace_period=50)
    for x, y in rows[:3000]:
        old.learn_one(x, y)
    for x, y in rows[5000:7000]:
        new.learn_one(x, y)
    with Registry(kafka_settings, topics, RegistrySettings(signing_key=KEY)) as registry:  # type: ignore[arg-type]
        registry.release(MODEL, SPEC, old)
        registry.release(MODEL, SPEC, new)
    common = ["--bootstrap-servers", kafka_settings.bootstrap_servers, *topic_flags(topics)]
    deploy = [RIVERRUN, "--log-format", "text", "models", "deploy", MODEL, "--strategy", "canary",
              "--version", "1", "--challenger", "2", "--weight", "0.3", "--signing-key", KEY,
              *common]
    assert os.spawnv(os.P_WAIT, deploy[0], deploy) == 0
    judge_port = free_port()
    env = {**os.environ, "RIVERRUN_REGISTRY__SIGNING_KEY": KEY}
    processes = [
        ScorerProcess([RIVERRUN, "--log-format", "text", "score", *common,
                       "--group-id", unique("scorers"), "--batch-size", "200"],
                      env, tmp_path / "scorer.log"),
        ScorerProcess([RIVERRUN, "--log-format", "text", "learn", *common, "--model", MODEL,
                       "--snapshot-every", "500", "--snapshot-interval", "3600"],
                      env, tmp_path / "learner.log"),
        ScorerProcess([RIVERRUN, "--log-format", "text", "judge", *common,
                       "--app-id", unique("judge"), "--http-port", str(judge_port),
                       "--decide-interval-s", "0.5", "--data-dir", str(tmp_path / "judge")],
                      env, tmp_path / "judge.log"),
    ]
    try:
        stream = rows[7000:]
        sent = 0
        decision: PolicyChanged | None = None
        while decision is None and sent < len(stream):
            chunk = stream[sent:sent + 250]
            keys = [f"applicant-{sent + i}".encode() for i in range(len(chunk))]
            produce(kafka_settings, topics.requests, [
                (key, orjson.dumps({"request_id": f"r{sent + i}", "model": MODEL, "features": x}))
                for i, (key, (x, _)) in enumerate(zip(keys, chunk, strict=True))])
            answered = sent + len(chunk)
            wait_for(lambda n=answered: len(read_all(
                kafka_settings, topics.predictions, timeout=1)) >= n, 90, "the predictions")
            produce(kafka_settings, topics.feedback, [
                (key, orjson.dumps({"request_id": f"r{sent + i}", "model": MODEL, "label": y,
                                    "observed_at": "2026-01-01T00:00:00Z"}))
                for i, (key, (_, y)) in enumerate(zip(keys, chunk, strict=True))])
            sent += len(chunk)
            time.sleep(1.0)
            decisions = [r for r in read_registry(kafka_settings, topics.models, timeout=5)
                         if isinstance(r, PolicyChanged) and r.decided_by == "judge"]
            decision = decisions[0] if decisions else None
        if decision is None:
            wait_for(lambda: any(isinstance(r, PolicyChanged) and r.decided_by == "judge"
                                 for r in read_registry(kafka_settings, topics.models, timeout=5)),
                     60, "the judge's decision")
            decision = next(r for r in read_registry(kafka_settings, topics.models, timeout=5)
                            if isinstance(r, PolicyChanged) and r.decided_by == "judge")
        assert (decision.action, [a.version for a in decision.assignments]) == ("promote", [2])
        judged = decision.numbers["n_control"] + decision.numbers["n_challenger"]
        assert judged <= 2500, judged
        # The scorer follows the judge: new requests are all answered by version 2.
        wait_for(lambda: "routing loans by policy #2" in processes[0].output(), 60,
                 "the scorer to take the promotion")
        produce(kafka_settings, topics.requests, [
            (f"applicant-{i}".encode(),
             orjson.dumps({"request_id": f"after-{i}", "model": MODEL, "features": stream[i][0]}))
            for i in range(200)])
        wait_for(lambda: sum(1 for r in read_all(kafka_settings, topics.predictions, timeout=1)
                             if b'"after-' in (r.value or b"")) >= 200, 60, "answers after")
        after = [decode(PredictionMade, r.value) for r in read_all(
            kafka_settings, topics.predictions, timeout=1) if b'"after-' in (r.value or b"")]
        assert {(p.version, p.route) for p in after} == {(2, "champion")}
    finally:
        for process in processes:
            process.close()
