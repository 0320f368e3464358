"""Continuous training on a real broker: every version learns the same labels, a release is not
a deployment, and each version's loss is paired with the champion's on the same examples."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from riverrun.producers.dataset import load
from riverrun.schemas import KafkaSettings, PolicyChanged, TopicSettings
from riverrun.workers.judge.statistics import Moments, paired_test
from riverrun.workers.learner import Learner, verify_snapshot
from riverrun.workers.learner.prequential import learn_example
from riverrun.workers.registry import ModelSpec, Registry, build_estimator
from riverrun.workers.routing.policy import champion_target, deploy

from .conftest import judge_decisions, one_partition_feedback, produce, wait_for
from .test_learner import SIGNING_KEY, label_payload, learner_settings, registry_settings

LOGISTIC = ModelSpec(pipeline="StandardScaler | LogisticRegression", task="binary",
                     label_type="int")  # fmt: skip
TREE = ModelSpec(pipeline="HoeffdingTreeClassifier", task="binary", label_type="int")
ADAM = ModelSpec(pipeline="StandardScaler | LogisticRegression(optimizer=optim.Adam())",
                 task="binary", label_type="int")


def agrawal(n: int, seed: int = 7) -> list[tuple[dict[str, float], int]]:
    """`n` rows of River's Agrawal generator (function 0), as the dataset loader gives them."""
    return list(itertools.islice(load("agrawal", seed=seed), n))


def test_a_second_release_takes_no_traffic_and_both_versions_learn_paired_on_the_same_labels(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str]
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    rows = agrawal(1_200)
    with Registry(kafka_settings, topics, registry_settings()) as registry:
        registry.release("race", LOGISTIC, build_estimator(LOGISTIC))
        second, _ = registry.release("race", TREE, build_estimator(TREE))  # no deploy
        registry.release("race", ADAM, build_estimator(ADAM))
        assert second.version == 2
        view = registry.refresh()
        assert champion_target(view, "race") == (1, None), "a release without --deploy answered"
    labels = [(f"r{i}".encode(), label_payload(f"r{i}", "race", y, x))
              for i, (x, y) in enumerate(rows)]  # fmt: skip
    produce(kafka_settings, topics.feedback, labels)  # type: ignore[arg-type]

    settings = learner_settings(kafka_settings, topics, "race", snapshot_every=250)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        # Stopped part-way and started again: each version resumes from its own snapshots.
        first = Learner(settings, registry).run(max_examples=500, idle_timeout=60)
        assert first.examples_learned == 500
        Learner(settings, registry).run(max_examples=len(rows) - 500, idle_timeout=60)
        view = registry.refresh()
        assert champion_target(view, "race") == (1, None)
        v1, v2 = view.latest_snapshot("race", 1), view.latest_snapshot("race", 2)
        v3 = view.latest_snapshot("race", 3)
        assert v1 is not None and v2 is not None and v3 is not None
        assert v1.examples_seen == v2.examples_seen == v3.examples_seen == len(rows)
        assert v3.paired is not None and (v3.paired.against, v3.paired.n) == (1, len(rows))
        assert v1.paired is None
        assert v2.paired is not None and v2.paired.against == 1 and v2.paired.experiment == 0
        # Byte for byte where the model pickles the same twice: a Hoeffding tree draws an
        # unseeded random state when it first splits (two identical runs differ in bytes, not
        # in answers), so the pairs below cover the tree.
        for snapshot in (v1, v3):
            verdict = verify_snapshot(registry, kafka_settings, topics,
                                      f"race@{snapshot.version}#{snapshot.snapshot}")
            assert verdict.matches, verdict

    # The same pairs, from River alone: each model test-then-trained on the rows in order.
    logistic, tree = build_estimator(LOGISTIC), build_estimator(TREE)
    n, total, total_sq = 0, 0.0, 0.0
    for x, y in rows:
        difference = (learn_example(logistic, x, y, None) - learn_example(tree, x, y, None))
        n, total, total_sq = n + 1, total + difference, total_sq + difference * difference
    assert (v2.paired.n, v2.paired.diff_sum, v2.paired.diff_sum_sq) == (n, total, total_sq)
    assert total / n > 0.1, "the tree should beat the logistic regression on Agrawal"


def race(
    kafka: KafkaSettings, topics: TopicSettings, champion: ModelSpec, candidate: ModelSpec,
    **experiment: Any,
) -> PolicyChanged:
    """Release both specs of model `race` (no deploy) and race the second against the first."""
    with Registry(kafka, topics, registry_settings()) as registry:
        registry.release("race", champion, build_estimator(champion))
        registry.release("race", candidate, build_estimator(candidate))
        policy = deploy(registry.refresh(), "race", "race", version="1", challengers=["2"],
                        **experiment)
        registry.publish_policy(policy)
    return policy


def learn_in_background(
    kafka: KafkaSettings, topics: TopicSettings, registry: Registry
) -> tuple[Learner, threading.Thread]:
    # No guardrail: a real drift jumps the champion's loss as garbage labels would, and whether
    # it trips depends on where the 0.5 s snapshots cut the examples; the race is what is judged.
    settings = learner_settings(kafka, topics, "race", snapshot_every=200,
                                guardrail_loss_ratio=None)
    learner = Learner(settings, registry)
    thread = threading.Thread(target=lambda: learner.run(idle_timeout=60), daemon=True)
    thread.start()
    return learner, thread


def decisions_of(kafka: KafkaSettings, topics: TopicSettings) -> list[PolicyChanged]:
    return judge_decisions(kafka, topics)


def judged_race(
    kafka: KafkaSettings, topics: TopicSettings, start_judge: Any, champion: ModelSpec,
    candidate: ModelSpec, rows: list[tuple[dict[str, Any], Any]],
) -> Any:
    """A race of `candidate` against `champion`, its judge ready, and `rows` labelled."""
    race(kafka, topics, champion, candidate)
    judge = start_judge("--signing-key", SIGNING_KEY)
    judge.ready_state()
    produce(kafka, topics.feedback, [
        (f"r{i}".encode(), label_payload(f"r{i}", "race", y, x)) for i, (x, y) in enumerate(rows)
    ])  # type: ignore[arg-type]
    return judge


@pytest.mark.timeout(300)
def test_a_hoeffding_tree_racing_a_logistic_regression_on_agrawal_is_promoted(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    start_judge: Any,
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    judge = judged_race(kafka_settings, topics, start_judge, LOGISTIC, TREE, agrawal(3_000))
    with Registry(kafka_settings, topics, registry_settings()) as registry:
        learner, thread = learn_in_background(kafka_settings, topics, registry)
        try:
            wait_for(lambda: bool(decisions_of(kafka_settings, topics)), 120, "a decision")
        except AssertionError:
            print(orjson.dumps(judge.state(), option=orjson.OPT_INDENT_2).decode())
            print(judge.process.output()[-5000:])
            raise
        decision = decisions_of(kafka_settings, topics)[0]
        assert decision.action == "promote", decision.reason
        assert decision.numbers["version_winner"] == 2
        assert decision.numbers["lower"] > 0.0
        # The labels the evidence needed: the first of the tree's snapshots whose paired test
        # says better, at most 2,000 paired labels (the judge decides at its next look, later
        # where the broker holds fetches).
        first = min(s.paired.n for s in registry.refresh().snapshots("race", 2)
                    if s.paired is not None and s.paired.experiment == 1 and paired_test(
                        Moments(s.paired.n, s.paired.diff_sum, s.paired.diff_sum_sq),
                        margin=0.0, alpha=0.05, min_samples=200).verdict == "better")
        assert 200 <= first <= 2_000 and first <= decision.numbers["n"], (first, decision.numbers)
        assert [(a.version, a.role) for a in decision.assignments] == [
            (2, "champion"), (1, "candidate")], "the old champion races the new on probation"
        # The learner takes the promotion up: the tree answers and learns first.
        wait_for(lambda: learner.metrics.registry.get_sample_value(
            "riverrun_learner_version", {"model": "race"}) == 2, 60, "the learner to follow")
        view = registry.refresh()
        assert champion_target(view, "race") == (2, None)
        state = judge.ready_state()["models"]["race"]
        assert state["policy"]["sequence"] >= 2, state
        learner.stop()
        thread.join(60)


@pytest.mark.timeout(300)
def test_on_agrawal_drift_a_candidate_that_adapts_is_promoted_after_the_drift(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    start_judge: Any,
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    forest = ModelSpec(pipeline="forest.ARFClassifier(n_models=5, seed=1)", task="binary",
                       label_type="int")  # fmt: skip
    judged_race(kafka_settings, topics, start_judge, TREE, forest,
                list(load("agrawal-drift", seed=7, limit=7_000)))
    with Registry(kafka_settings, topics, registry_settings()) as registry:
        learner, thread = learn_in_background(kafka_settings, topics, registry)
        wait_for(lambda: any(d.action == "promote" for d in decisions_of(kafka_settings, topics)),
                 200, "a promotion")
        decisions = decisions_of(kafka_settings, topics)
        promote = next(d for d in decisions if d.action == "promote")
        restarts = [d for d in decisions if d.action == "restart"]
        assert restarts, "the champion's drift restarts the race's evidence"
        assert restarts[-1].sequence < promote.sequence
        # Before the drift the tree leads and nothing is promoted; after it, the forest is.
        assert promote.numbers["version_winner"] == 2
        assert promote.examples_from is not None and promote.examples_from > 5_000
        assert restarts[-1].examples_from is not None and restarts[-1].examples_from > 4_500
        print("race decisions:", [(d.sequence, d.action, d.examples_from, d.reason)
                                  for d in decisions])  # fmt: skip
        learner.stop()
        thread.join(60)
