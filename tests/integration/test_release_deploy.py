"""A release is not a deployment, on a real broker: a running scorer keeps answering with the
first version when a second is released, and moves to a version released with `--deploy`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from riverrun.schemas import KafkaSettings, PredictionMade, TopicSettings, decode
from riverrun.workers.registry import Registry, RegistrySettings

from .conftest import MODEL_NAME, produce, read_all, request_payload, wait_for
from .test_routing import ENV, KEY, SPEC, models_cli
from .test_scorer_registry import fresh_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(kafka_settings: KafkaSettings, topics: TopicSettings) -> Any:
    with Registry(kafka_settings, topics, RegistrySettings(signing_key=KEY)) as reg:
        yield reg


def answers(kafka: KafkaSettings, topics: TopicSettings, first: int, count: int,
            at_least: int) -> Counter[tuple[int, int, str]]:
    """(version, snapshot, route) of the answers to requests `first` .. `first + count - 1`."""
    made = [decode(PredictionMade, r.value)
            for r in read_all(kafka, topics.predictions, at_least=at_least, timeout=90)]
    wanted = {f"req-{i}" for i in range(first, first + count)}
    mine = [p for p in made if p.request_id in wanted]
    assert len({p.request_id for p in mine}) == count, "every request answered"
    return Counter((p.version, p.snapshot, p.route) for p in mine)


def ask(kafka: KafkaSettings, topics: TopicSettings, rows: list[dict[str, float]], first: int,
        count: int) -> None:
    produce(kafka, topics.requests, [(f"user-{i % 97}".encode(), request_payload(i, rows[i]))
                                     for i in range(first, first + count)])


@pytest.mark.timeout(300)
def test_a_release_takes_no_traffic_until_it_is_deployed(
    kafka_settings: KafkaSettings, topics: TopicSettings, registry: Any, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    rows = [x for x, _ in phishing]
    v1 = fresh_model(phishing[:100])
    registry.release(MODEL_NAME, SPEC, v1)
    scorer = start_scorer(registry=True, env=ENV)
    # The first version of a model answers without a policy.
    ask(kafka_settings, topics, rows, 0, 200)
    assert answers(kafka_settings, topics, 0, 200, 200) == {(1, 0, "champion"): 200}

    # Version 2 released, not deployed: version 1 keeps every request. A newer snapshot of
    # version 1, published after the release, shows the scorer has read past the release.
    v2 = fresh_model(phishing[100:700])
    released, _ = registry.release(MODEL_NAME, SPEC, v2)
    assert released.version == 2
    assert registry.refresh().policy(MODEL_NAME) is None
    registry.publish_snapshot(MODEL_NAME, 1, 1, fresh_model(phishing[:300]))
    wait_for(lambda: "now serving phishing@1#1" in scorer.output(), 60, "v1's newer snapshot")
    ask(kafka_settings, topics, rows, 200, 200)
    assert answers(kafka_settings, topics, 200, 200, 400) == {(1, 1, "champion"): 200}
    assert "phishing@2" not in scorer.output(), "version 2 was not even loaded"

    # Version 3 released with --deploy, by the operator's command: it answers everything.
    out = models_cli(kafka_settings, topics, "release", MODEL_NAME, "--spec",
                     str(ROOT / "deploy" / "specs" / "phishing-logreg.yaml"), "--limit", "100",
                     "--deploy")
    assert "released phishing@3" in out and "phishing@3 answers every request (policy #1, " \
        "single)" in out, out
    policy = registry.refresh().policy(MODEL_NAME)
    assert policy is not None and (policy.sequence, policy.strategy, policy.action) == (
        1, "single", "deploy")
    assert policy.reason == "released with --deploy" and policy.decided_by == "operator"
    assert [(a.version, a.snapshot, a.role) for a in policy.assignments] == [
        (3, None, "champion")]
    wait_for(lambda: "routing phishing by policy #1" in scorer.output(), 60, "the deployment")
    assert "now serving phishing@3#0" in scorer.output()
    ask(kafka_settings, topics, rows, 400, 200)
    assert answers(kafka_settings, topics, 400, 200, 600) == {(3, 0, "champion"): 200}
    assert "phishing@2" not in scorer.output()
    assert not read_all(kafka_settings, topics.dead_letters, timeout=2)
