"""The judge on a real broker, with River-generated data: it promotes a challenger that learned
the new concept, rolls back one stuck on the old, re-weights a bandit, compares shadows, and
keeps its evidence and windows across a restart."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from river import tree

from riverrun.producers.dataset import load
from riverrun.schemas import (
    DeadLetter,
    KafkaSettings,
    OutcomeRecorded,
    PolicyAssignment,
    PolicyChanged,
    PredictionMade,
    TopicSettings,
    encode,
    utc_now,
)
from riverrun.schemas.loss import outcome_loss
from riverrun.workers.routing import plan_for

from .conftest import RIVERRUN, Judge, judge_decisions, produce, publish, wait_for

MODEL = "agrawal"


@pytest.fixture(scope="module")
def concepts() -> dict[str, Any]:
    """Agrawal's first concept, then (from record 5,000) its second: a model of each."""
    rows = list(load("agrawal-drift", seed=7, limit=10_000))
    old, new = tree.HoeffdingTreeClassifier(grace_period=50), tree.HoeffdingTreeClassifier(
        grace_period=50)
    for x, y in rows[:3000]:
        old.learn_one(x, y)
    for x, y in rows[5000:7000]:
        new.learn_one(x, y)
    return {"old": old, "new": new, "stream": rows[7000:]}


Rows = list[tuple[dict[str, Any], Any]]


def outcomes_of(
    policy: PolicyChanged, models: dict[int, Any], rows: Rows, start: int
) -> list[tuple[bytes, bytes]]:
    """What the learner would record: each row routed by the policy (sticky by key), answered
    by its version's model, joined with its label."""
    plan = plan_for(policy, MODEL, None)
    assert plan is not None
    out = []
    keys = [f"user-{start + i}".encode() for i in range(len(rows))]
    arms = plan.assign_many(keys, time.time())
    for i, (x, y) in enumerate(rows):
        arm = plan.arms[0 if arms is None else int(arms[i])]
        model = models[arm.version]
        proba = {str(k): float(v) for k, v in model.predict_proba_one(x).items()}
        prediction = model.predict_one(x)
        outcome = OutcomeRecorded(
            request_id=f"r{start + i}", model=MODEL, version=arm.version, snapshot=0,
            route=arm.route, prediction=prediction, label=y, proba=proba or None,
            loss=outcome_loss(prediction, proba or None, y),
        )  # fmt: skip
        out.append((keys[i], encode(outcome)))
    return out


def feed_until_decided(
    kafka: KafkaSettings, topics: TopicSettings, judge: Judge, policy: PolicyChanged,
    models: dict[int, Any], rows: Rows, chunk: int = 100,
) -> tuple[PolicyChanged, int]:
    """Feed outcomes a chunk at a time, letting the judge look after each; the decision and
    how many outcomes it took."""
    judge.ready_state()
    sent = 0
    while sent < len(rows):
        produce(kafka, topics.outcomes, outcomes_of(policy, models, rows[sent:sent + chunk], sent))
        sent += chunk
        wait_for(lambda n=sent: (judge.state() or {}).get("outcomes_observed", 0) >= n, 60,
                 f"the judge to read {sent} outcomes")
        looked = (judge.state() or {}).get("at", "")
        wait_for(lambda t=looked: (judge.state() or {}).get("at", "") > t, 30, "the judge to look")
        decisions = judge_decisions(kafka, topics)
        if decisions:
            return decisions[0], sent
    raise AssertionError(f"no decision after {sent} outcomes")


def canary(champion: int, challenger: int, **extra: Any) -> PolicyChanged:
    return PolicyChanged(model=MODEL, sequence=1, strategy="canary", assignments=[
        PolicyAssignment(version=champion, role="champion", weight=0.7),
        PolicyAssignment(version=challenger, role="canary", weight=0.3)], **extra)


@pytest.mark.timeout(300)
def test_a_challenger_that_learned_the_new_concept_is_promoted(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_judge: Any, concepts: dict[str, Any]
) -> None:
    policy = canary(1, 2, hypothesis="v2 learned the post-drift concept")
    publish(kafka_settings, topics, policy)
    judge = start_judge()
    decision, sent = feed_until_decided(kafka_settings, topics, judge, policy,
                                        {1: concepts["old"], 2: concepts["new"]},
                                        concepts["stream"])
    assert sent <= 1500, f"promoted only after {sent} outcomes"
    assert (decision.sequence, decision.action, decision.strategy) == (2, "promote", "single")
    assert [(a.version, a.role) for a in decision.assignments] == [(2, "champion")]
    numbers = decision.numbers
    assert numbers["mean_challenger"] > numbers["mean_control"]
    assert numbers["always_valid_p"] < 0.05
    assert min(numbers["n_control"], numbers["n_challenger"]) >= 200
    assert decision.reason.startswith("promote: canary agrawal@2 is no worse than champion")
    assert decision.hypothesis == "v2 learned the post-drift concept"
    # The decision is applied once: the judge follows its own record and decides no more.
    time.sleep(1.0)
    assert len(judge_decisions(kafka_settings, topics)) == 1
    state = judge.ready_state()
    assert state["models"][MODEL]["policy"]["sequence"] == 2


@pytest.mark.timeout(300)
def test_a_challenger_stuck_on_the_old_concept_is_rolled_back(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_judge: Any, concepts: dict[str, Any]
) -> None:
    policy = canary(3, 4)
    publish(kafka_settings, topics, policy)
    judge = start_judge()
    decision, sent = feed_until_decided(kafka_settings, topics, judge, policy,
                                        {3: concepts["new"], 4: concepts["old"]},
                                        concepts["stream"])
    assert sent <= 1500
    assert (decision.action, [a.version for a in decision.assignments]) == ("rollback", [3])
    assert decision.numbers["mean_challenger"] < decision.numbers["mean_control"]
    assert decision.reason.startswith("rollback: canary agrawal@4 is worse")


@pytest.mark.timeout(300)
def test_a_bandit_is_reweighted_towards_the_better_version(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_judge: Any, concepts: dict[str, Any]
) -> None:
    policy = PolicyChanged(model=MODEL, sequence=1, strategy="bandit", exploration=0.05,
                           assignments=[PolicyAssignment(version=1, role="arm", weight=0.5),
                                        PolicyAssignment(version=2, role="arm", weight=0.5)])
    publish(kafka_settings, topics, policy)
    judge = start_judge("--bandit-interval-s", "0.5")
    judge.ready_state()
    models = {1: concepts["old"], 2: concepts["new"]}
    rows = concepts["stream"]
    current, sent = policy, 0
    shares = []
    while sent < 2000:
        # Requests follow the latest weights, as scorers route them.
        batch = outcomes_of(current, models, rows[sent:sent + 100], sent)
        produce(kafka_settings, topics.outcomes, batch)
        sent += 100
        wait_for(lambda n=sent: (judge.state() or {}).get("outcomes_observed", 0) >= n, 60,
                 "the judge to read the outcomes")
        decisions = judge_decisions(kafka_settings, topics)
        if decisions and decisions[-1].sequence > current.sequence:
            current = decisions[-1]
            shares.append({a.version: a.weight for a in current.assignments}[2])
            if shares[-1] > 0.9:
                break
    assert shares and shares[-1] > 0.9, shares
    decisions = judge_decisions(kafka_settings, topics)
    assert [d.sequence for d in decisions] == list(range(2, 2 + len(decisions)))
    assert all((d.strategy, d.action, d.experiment) == ("bandit", "reweight", 1) for d in decisions)
    assert all(min(a.weight for a in d.assignments) >= 0.05 - 1e-9 for d in decisions)


@pytest.mark.timeout(300)
def test_the_judge_keeps_its_evidence_and_windows_across_a_restart_and_compares_shadows(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_judge: Any, concepts: dict[str, Any]
) -> None:
    policy = PolicyChanged(model=MODEL, sequence=1, strategy="shadow", assignments=[
        PolicyAssignment(version=1, role="champion"), PolicyAssignment(version=2, role="shadow")])
    publish(kafka_settings, topics, policy)
    judge = start_judge("--window-s", "3600")
    judge.ready_state()
    rows = concepts["stream"][:600]
    new = concepts["new"]
    shadows = [(f"user-{i}".encode(), encode(PredictionMade(
        request_id=f"r{i}", model=MODEL, version=2, snapshot=0, route="shadow",
        prediction=new.predict_one(x), features=x, scored_at=utc_now(), latency_ms=1.0)))
        for i, (x, _) in enumerate(rows)]
    produce(kafka_settings, topics.shadow_predictions, shadows)
    wait_for(lambda: (judge.state() or {}).get("pending_shadow_predictions", 0) == len(rows), 60,
             "the shadow predictions")
    produce(kafka_settings, topics.outcomes, outcomes_of(policy, {1: concepts["old"]}, rows, 0))
    wait_for(lambda: (judge.state() or {}).get("outcomes_observed", 0) >= len(rows), 60,
             "the outcomes")
    time.sleep(0.5)
    before = judge.ready_state()["models"][MODEL]
    assert before["versions"]["1"]["n"] == before["versions"]["2"]["n"] == len(rows)
    assert before["versions"]["1"]["recent_n"] == len(rows)
    comparison = before["comparisons"][0]
    assert (comparison["control"], comparison["challenger"], comparison["verdict"]) == (
        1, 2, "better")
    judge.process.signal(15)
    assert judge.process.wait(60) == 0

    restarted = start_judge("--window-s", "3600")
    after = restarted.ready_state()["models"][MODEL]
    for version in ("1", "2"):
        for field in ("n", "accuracy", "mean_loss", "recent_n"):
            assert after["versions"][version][field] == before["versions"][version][field], field
    # Dead letters that name a version count as its errors.
    letters = [DeadLetter(error_class="ModelRaised", reason="boom", source_topic=topics.requests,
                          source_partition=0, source_offset=i, model=MODEL, version=2,
                          route="shadow").to_headers() for i in range(7)]
    producer = Producer(kafka_settings.client_config())
    for headers in letters:
        producer.produce(topics.dead_letters, b"{}", b"k", headers=headers)
    producer.produce(topics.dead_letters, b"not json", b"k", headers=DeadLetter(
        error_class="NotJson", reason="bad", source_topic=topics.requests, source_partition=0,
        source_offset=99).to_headers())
    assert producer.flush(30) == 0
    wait_for(lambda: (restarted.state() or {}).get("models", {}).get(MODEL, {})
             .get("versions", {}).get("2", {}).get("errors") == 7, 60, "the errors of version 2")
    # `riverrun models status` shows the policy, the routes and the judge's evidence.
    status = subprocess.run(
        [RIVERRUN, "--log-format", "text", "models", "status", MODEL, "--json",
         "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-models", topics.models,
         "--judge-url", f"http://127.0.0.1:{restarted.port}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    shown = orjson.loads(status)
    assert shown["policy"]["strategy"] == "shadow"
    assert [(r["route"], r["version"]) for r in shown["routes"]] == [("champion", 1), ("shadow", 2)]
    assert shown["judge"]["versions"]["1"]["n"] == len(rows)
    assert shown["judge"]["comparisons"][0]["verdict"] == "better"
    # New outcomes add to the recovered evidence, none counted twice.
    produce(kafka_settings, topics.outcomes,
            outcomes_of(policy, {1: concepts["old"]}, concepts["stream"][600:700], 600))
    wait_for(lambda: (restarted.state() or {}).get("outcomes_observed", 0) >= 100, 60,
             "the new outcomes")
    time.sleep(0.5)
    assert restarted.ready_state()["models"][MODEL]["versions"]["1"]["n"] == len(rows) + 100
