"""Per-key models on a real broker: every key learns its own concept, the scorer answers each key
with its own model blended into the global one (a key never seen gets the global answer as it
is), and a learner SIGKILLed between writing its keys and its snapshot resumes every key exactly."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from riverrun.producers.keyed import keyed_concepts
from riverrun.schemas import KafkaSettings, PredictionMade, TopicSettings, decode
from riverrun.workers.keys import KeyModel, read_states
from riverrun.workers.keys.changelog import load_state
from riverrun.workers.learner import Learner
from riverrun.workers.registry import ModelSpec, Registry, build_estimator
from riverrun.workers.registry.spec import PerKey

from .conftest import RIVERRUN, ScorerProcess, one_partition_feedback, produce, read_all, wait_for
from .test_learner import (
    SIGNING_KEY,
    label_payload,
    latest,
    learner_settings,
    registry_settings,
    start_learner,
)

SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression(optimizer=SGD(0.1))",
                 task="binary", label_type="bool", per_key=PerKey(tau=10.0))  # fmt: skip
KEYS, LABELS = 40, 2400


def release(kafka: KafkaSettings, topics: TopicSettings, name: str, spec: ModelSpec = SPEC) -> None:
    with Registry(kafka, topics, registry_settings()) as registry:
        registry.release(name, spec, build_estimator(spec))


def keyed_labels(model: str, rows: list[tuple[str, dict[str, float], bool]],
                 first: int = 0) -> list[tuple[bytes, bytes]]:
    """Each label keyed by its entity (the key its requests carry), features on the label."""
    return [(key.encode(), label_payload(f"{model}-{first + i}", model, y, x))
            for i, (key, x, y) in enumerate(rows)]


def learn_labels(
    kafka: KafkaSettings, topics: TopicSettings, model: str,
    rows: list[tuple[str, dict[str, float], bool]], first: int = 0, **options: Any,
) -> list[tuple[int, int]]:
    """Produce `rows` as `model`'s keyed labels and learn every one in an in-process learner
    (snapshots every 400 examples unless `options` say otherwise); where each label went."""
    where = produce(kafka, topics.feedback,
                    keyed_labels(model, rows, first=first))  # type: ignore[arg-type]
    settings = learner_settings(kafka, topics, model,
                                **{"snapshot_every": 400, "snapshot_interval": 3600.0, **options})
    with Registry(kafka, topics, settings.registry) as registry:
        assert Learner(settings, registry).run(max_examples=len(rows),
                                               idle_timeout=60).examples_learned == len(rows)
    return where


def keys_cli(kafka: KafkaSettings, topics: TopicSettings, *argv: str, code: int = 0) -> str:
    """`riverrun models keys ...` as an operator runs it; its output (and log, on failure)."""
    return models_cli(kafka, topics, "keys", *argv, code=code)


def models_cli(kafka: KafkaSettings, topics: TopicSettings, *argv: str, code: int = 0) -> str:
    """`riverrun models ...` as an operator runs it; its output (and log, on failure)."""
    done = subprocess.run(
        [RIVERRUN, "--log-format", "text", "models", *argv,
         "--bootstrap-servers", kafka.bootstrap_servers, "--topic-models", topics.models,
         "--topic-key-states", topics.key_states, "--signing-key", SIGNING_KEY],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout if code == 0 else done.stdout + done.stderr


def states(
    kafka: KafkaSettings, topics: TopicSettings, model: str, version: int = 1
) -> dict[str, Any]:
    with Registry(kafka, topics, registry_settings()) as registry:
        verifier = registry.verifier
    found = read_states(kafka, topics.key_states, verifier,
                        lambda m, v: m == model and v == version)  # fmt: skip
    return {key: state for (_, _, key), state in found.items()}


@pytest.mark.timeout(300)
def test_each_key_learns_its_own_concept_and_is_answered_by_it(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
) -> None:
    rows = list(keyed_concepts(KEYS, LABELS))
    release(kafka_settings, topics, "keyed")
    where = learn_labels(kafka_settings, topics, "keyed", rows)

    snapshot = latest(kafka_settings, topics, "keyed")
    metrics = snapshot.metrics
    assert metrics["keys"] == KEYS and metrics["keys_scored"] == LABELS
    # Each key's own model, blended in, beats the global model on the same labels by over 5 %.
    assert metrics["keys_log_loss"] < 0.95 * metrics["keys_global_log_loss"], metrics
    stored = states(kafka_settings, topics, "keyed")
    assert sorted(stored) == sorted({key for key, _, _ in rows})
    assert sum(s.counts.examples for s in stored.values()) == LABELS
    # Every key's record is in the partition of the same number as its labels' (and requests').
    arrived_on = {key: partition for (key, _, _), (partition, _) in zip(rows, where, strict=True)}
    records = read_all(kafka_settings, topics.key_states, at_least=KEYS)
    assert {r.key.partition(b"/")[2].decode(): r.partition for r in records} == arrived_on
    assert len(set(arrived_on.values())) == 4
    # What an operator sees of them.
    listed = orjson.loads(keys_cli(kafka_settings, topics, "keyed", "--json", "--top", "3"))
    assert (listed["version"], listed["keys"], listed["examples"]) == (1, KEYS, LABELS)
    busiest = sorted(stored.values(), key=lambda s: (-s.counts.examples, s.key))[0]
    assert listed["shown"][0]["key"] == busiest.key
    one = orjson.loads(keys_cli(kafka_settings, topics, "keyed", "--key", "user-3", "--json"))
    n = stored["user-3"].counts.examples
    assert (one["examples"], one["weight"]) == (n, round(n / (n + 10.0), 4))
    assert one["log_loss"] == pytest.approx(
        stored["user-3"].counts.blend_loss / stored["user-3"].counts.scored)
    assert "no state for key 'nobody'" in keys_cli(kafka_settings, topics, "keyed", "--key",
                                                    "nobody", code=1)

    # Two scorers in a group: each holds the keys of the partitions it owns, and every key is
    # answered by its own state wherever its requests land.
    scorers = [start_scorer("--topic-key-states", topics.key_states, registry=True,
                            env={"RIVERRUN_REGISTRY__SIGNING_KEY": SIGNING_KEY})
               for _ in range(2)]  # fmt: skip
    wait_for(lambda: all("assigned [" in s.output() for s in scorers)
             and any("revoked [" in s.output() for s in scorers), 90, "the group to settle")
    x = {f"x{i}": 0.5 - 0.3 * i for i in range(5)}
    asked = [(key, f"ask-{key}") for key in sorted(stored)]
    asked += [("never-seen", "ask-stranger"), (None, "ask-no-key")]
    produce(kafka_settings, topics.requests, [
        (key.encode() if key else rid.encode(),
         orjson.dumps({"request_id": rid, "model": "keyed", "features": x}))
        for key, rid in asked])  # type: ignore[arg-type]
    answers = {p.request_id: p for p in (decode(PredictionMade, r.value) for r in read_all(
        kafka_settings, topics.predictions, at_least=len(asked), timeout=90))}
    assert len(answers) == len(asked), [s.output() for s in scorers]
    held = [int(re.search(r"key states read from \S+: (\d+) keys", s.output()).group(1))
            for s in scorers]  # type: ignore[union-attr]
    assert sum(held) == KEYS and max(held) < KEYS, held

    with Registry(kafka_settings, topics, registry_settings()) as registry:
        global_model = registry.load(snapshot)
    global_proba = global_model.predict_proba_one(dict(x))
    as_sent = {str(label): p for label, p in global_proba.items()}
    # A key never seen, and a request keyed by its own id, get the global answer as it is.
    for rid in ("ask-stranger", "ask-no-key"):
        answer = answers[rid]
        assert answer.key_examples is None and answer.key_weight is None
        assert answer.proba == pytest.approx(as_sent, rel=1e-9)
    assert answers["ask-stranger"].proba == answers["ask-no-key"].proba
    # A known key: w * its own + (1 - w) * global, w = n / (n + tau).
    for key, rid in asked[:-2]:
        answer, state = answers[rid], stored[key]
        n = state.counts.examples
        assert answer.key_examples == n and answer.key_weight == pytest.approx(n / (n + 10.0))
        own = load_state(state).estimator.predict_proba_one(dict(x))
        w = n / (n + 10.0)
        for label in (True, False):
            expected = w * own.get(label, 0.0) + (1 - w) * global_proba.get(label, 0.0)
            assert answer.proba[str(label)] == pytest.approx(expected, rel=1e-9)
    assert answers["ask-user-0"].proba != answers["ask-stranger"].proba

    # One scorer leaves: the other takes its partitions over, and holds their requests back
    # until it has read their keys' states, so that no key is answered without its own.
    leaving, staying = scorers
    leaving.signal(signal.SIGTERM)
    assert leaving.wait(60) == 0, leaving.output()
    produce(kafka_settings, topics.requests, [
        (key.encode(), orjson.dumps({"request_id": f"after-{key}", "model": "keyed",
                                     "features": x}))
        for key in sorted(stored)])  # type: ignore[arg-type]
    after = {p.request_id: p for p in (decode(PredictionMade, r.value) for r in read_all(
        kafka_settings, topics.predictions, at_least=len(asked) + KEYS, timeout=90))
        if p.request_id.startswith("after-")}
    assert len(after) == KEYS, staying.output()
    assert {rid: p.key_examples for rid, p in after.items()} == {
        f"after-{key}": state.counts.examples for key, state in stored.items()}
    assert "wait for their keys' states to be read" in staying.output()

    # More labels of user-0, learned by a learner restarted while the scorers run: the key's
    # newer state answers its next requests.
    more = [row for row in keyed_concepts(KEYS, 4000, seed=21) if row[0] == "user-0"][:30]
    learn_labels(kafka_settings, topics, "keyed", more, first=LABELS)
    grown = stored["user-0"].counts.examples + len(more)
    attempts = iter(range(1000))

    def answered_by_the_newer_state() -> bool:
        rid = f"again-{next(attempts)}"
        produce(kafka_settings, topics.requests, [(b"user-0", orjson.dumps(
            {"request_id": rid, "model": "keyed", "features": x}))])
        made = [decode(PredictionMade, r.value) for r in read_all(
            kafka_settings, topics.predictions, at_least=1, timeout=10)]
        return any(p.request_id == rid and p.key_examples == grown for p in made)

    wait_for(answered_by_the_newer_state, 60, "user-0's newer state to answer")


def _same_keys(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].value == b[key].value, f"key {key} learned differently"
        assert a[key].counts.examples == b[key].counts.examples


@pytest.mark.timeout(420)
def test_a_learner_killed_between_its_keys_and_its_snapshot_resumes_every_key_exactly(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Any, tmp_path: Path,
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    rows = list(keyed_concepts(KEYS, 1200, seed=11))
    for name in ("killed", "calm"):
        release(kafka_settings, topics, name)
    labels = keyed_labels("killed", rows)
    runs: list[ScorerProcess] = []

    def start(crash_at: str | None, *extra: str) -> ScorerProcess:
        run = start_learner(kafka_settings, topics, "killed", tmp_path / f"learner-{len(runs)}.log",
                            crash_at, "--topic-key-states", topics.key_states, *extra)  # fmt: skip
        runs.append(run)
        return run

    try:
        produce(kafka_settings, topics.feedback, labels[:600])  # type: ignore[arg-type]
        for crash_at in ("after-keys-before-snapshot:3", "after-learn-before-snapshot:2"):
            run = start(crash_at)
            assert run.wait(120) == -signal.SIGKILL, run.output()
            assert f"crash point {crash_at.split(':')[0]} reached" in run.output()
        run = start(None)
        produce(kafka_settings, topics.feedback, labels[600:900])  # type: ignore[arg-type]
        before = latest(kafka_settings, topics, "killed").snapshot
        wait_for(lambda: latest(kafka_settings, topics, "killed").snapshot > before + 1, 120,
                 "two more snapshots before the SIGKILL")
        run.signal(signal.SIGKILL)
        assert run.wait(30) == -signal.SIGKILL
        produce(kafka_settings, topics.feedback, labels[900:])  # type: ignore[arg-type]
        assert start(None, "--idle-timeout", "5").wait(180) == 0, runs[-1].output()
    finally:
        for run in runs:
            run.close()

    produce(kafka_settings, topics.feedback, keyed_labels("calm", rows))  # type: ignore[arg-type]
    settings = learner_settings(kafka_settings, topics, "calm", snapshot_every=60,
                                snapshot_interval=3600.0)  # fmt: skip
    with Registry(kafka_settings, topics, settings.registry) as registry:
        assert Learner(settings, registry).run(idle_timeout=5).examples_learned == len(rows)
    killed, calm = states(kafka_settings, topics, "killed"), states(kafka_settings, topics, "calm")
    _same_keys(killed, calm)
    assert sum(s.counts.examples for s in killed.values()) == len(rows)
    assert latest(kafka_settings, topics, "killed").metrics == latest(
        kafka_settings, topics, "calm").metrics
    assert isinstance(load_state(killed["user-0"]), KeyModel)


@pytest.mark.requires("read_committed")
@pytest.mark.timeout(600)
def test_a_group_of_key_learners_grown_shrunk_and_killed_learns_each_key_as_one_learner(
    kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path,
) -> None:
    rows = list(keyed_concepts(KEYS, 1600, seed=17))
    for name in ("grown", "alone"):
        release(kafka_settings, topics, name)
    members: list[ScorerProcess] = []

    def member(model: str, *extra: str) -> ScorerProcess:
        run = start_learner(kafka_settings, topics, model, tmp_path / f"keys-{len(members)}.log",
                            None, "--stage", "keys", "--topic-key-states", topics.key_states,
                            *extra)  # fmt: skip
        members.append(run)
        return run

    def learn_globally(model: str, first: int, last: int) -> None:
        """The model's learner, its keys left to the group: the examples they read."""
        learn_labels(kafka_settings, topics, model, rows[first:last], first, keys="apart")

    def owning(run: ScorerProcess) -> Any:
        return lambda: "owns partitions [" in run.output()

    try:
        a, b = member("grown"), member("grown")
        wait_for(lambda: owning(a)() and owning(b)(), 60, "two key learners in the group")
        learn_globally("grown", 0, 400)
        c = member("grown")  # the group grows to three
        wait_for(owning(c), 60, "the third key learner's partitions")
        learn_globally("grown", 400, 800)
        b.signal(signal.SIGKILL)  # killed mid-stream, then restarted
        assert b.wait(30) == -signal.SIGKILL
        member("grown")
        learn_globally("grown", 800, 1200)
        c.signal(signal.SIGTERM)  # and shrunk back to two
        assert c.wait(60) == 0, c.output()
        learn_globally("grown", 1200, 1600)
        wait_for(lambda: sum(s.counts.examples for s in states(
            kafka_settings, topics, "grown").values()) == len(rows), 120, "every label learned")
        for run in members:
            if run.alive():
                run.signal(signal.SIGTERM)
                assert run.wait(60) == 0, run.output()
    finally:
        for run in members:
            run.close()

    learn_globally("alone", 0, len(rows))
    lone = member("alone", "--idle-timeout", "10")
    try:
        assert lone.wait(180) == 0, lone.output()
    finally:
        lone.close()
    grown, alone = states(kafka_settings, topics, "grown"), states(kafka_settings, topics, "alone")
    _same_keys(grown, alone)
    assert sum(s.counts.examples for s in grown.values()) == len(rows)
    assert all(s.counts.scored == 0 for s in grown.values())  # no global answer here to count


@pytest.mark.timeout(300)
def test_a_canary_of_a_new_per_key_version_answers_with_that_versions_keys(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
) -> None:
    rows = list(keyed_concepts(KEYS, 1200, seed=23))
    release(kafka_settings, topics, "canaried")
    release(kafka_settings, topics, "canaried",
            SPEC.model_copy(update={"per_key": PerKey(tau=30.0)}))  # fmt: skip
    models_cli(kafka_settings, topics, "deploy", "canaried", "--strategy", "canary",
               "--version", "1", "--challenger", "2", "--weight", "0.5")
    learn_labels(kafka_settings, topics, "canaried", rows)
    # Both versions learn every label, each its own keys (the canary's blend with tau 30).
    by_version = {v: states(kafka_settings, topics, "canaried", v) for v in (1, 2)}
    assert sorted(by_version[1]) == sorted(by_version[2]) and len(by_version[1]) == KEYS

    start_scorer("--topic-key-states", topics.key_states, registry=True,
                 env={"RIVERRUN_REGISTRY__SIGNING_KEY": SIGNING_KEY})
    x = {f"x{i}": 0.1 * i for i in range(5)}
    produce(kafka_settings, topics.requests, [(key.encode(), orjson.dumps(
        {"request_id": f"ask-{key}", "model": "canaried", "features": x}))
        for key in sorted(by_version[1])])  # type: ignore[arg-type]
    made = [decode(PredictionMade, r.value) for r in read_all(
        kafka_settings, topics.predictions, at_least=KEYS, timeout=90)]
    assert len(made) == KEYS
    tau = {1: 10.0, 2: 30.0}
    for answer in made:
        n = by_version[answer.version][answer.request_id.removeprefix("ask-")].counts.examples
        assert (answer.route, answer.key_examples) == (
            {1: "champion", 2: "canary"}[answer.version], n)
        assert answer.key_weight == pytest.approx(n / (n + tau[answer.version]))
    assert {a.version for a in made} == {1, 2}


@pytest.mark.requires("read_committed")
@pytest.mark.timeout(420)
def test_key_learners_take_up_a_new_per_key_version_as_the_one_process_learner_does(
    kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path,
) -> None:
    rows = list(keyed_concepts(KEYS, 800, seed=29))
    second = SPEC.model_copy(update={"per_key": PerKey(tau=30.0)})

    def learn(model: str, first: int, last: int, keys: str) -> None:
        learn_labels(kafka_settings, topics, model, rows[first:last], first, keys=keys)

    for name in ("pkgroup", "pkone"):
        release(kafka_settings, topics, name)
    member = start_learner(kafka_settings, topics, "pkgroup", tmp_path / "keys.log", None,
                           "--stage", "keys", "--topic-key-states", topics.key_states)  # fmt: skip
    try:
        learn("pkgroup", 0, 400, "apart")
        learn("pkone", 0, 400, "here")
        for name in ("pkgroup", "pkone"):  # a second per-key version, learning beside the first
            release(kafka_settings, topics, name, second)
        learn("pkgroup", 400, 800, "apart")
        learn("pkone", 400, 800, "here")
        wait_for(lambda: sum(s.counts.examples for s in states(
            kafka_settings, topics, "pkgroup", 2).values()) == 400, 120, "version 2's keys")
        member.signal(signal.SIGTERM)
        assert member.wait(60) == 0, member.output()
        assert "the per-key versions of pkgroup that learn are now [1, 2]" in member.output()
    finally:
        member.close()
    for version, labels in ((1, 800), (2, 400)):
        grouped = states(kafka_settings, topics, "pkgroup", version)
        _same_keys(grouped, states(kafka_settings, topics, "pkone", version))
        assert sum(s.counts.examples for s in grouped.values()) == labels


@pytest.mark.timeout(300)
def test_a_key_without_labels_for_its_expiry_is_forgotten(
    kafka_settings: KafkaSettings, topics: TopicSettings,
) -> None:
    release(kafka_settings, topics, "expiring",
            SPEC.model_copy(update={"per_key": PerKey(tau=10.0, expire_after_s=2.0)}))
    rows = list(keyed_concepts(KEYS, 400, seed=31))
    early = [row for row in rows if row[0] in ("user-1", "user-2")]
    late = [row for row in rows if row[0] == "user-3"]

    def learn(labels: list[tuple[str, dict[str, float], bool]], first: int) -> None:
        learn_labels(kafka_settings, topics, "expiring", labels, first, snapshot_every=1000,
                     snapshot_interval=0.5)  # fmt: skip

    learn(early, 0)
    assert sorted(states(kafka_settings, topics, "expiring")) == ["user-1", "user-2"]
    time.sleep(3.0)  # the examples log's clock moves on: user-1 and user-2 get no label
    learn(late, len(early))
    # Their tombstones went out with user-3's state: only user-3 is left, and the scorer's store
    # (which drops a key at its tombstone) would answer the others with the global model.
    assert sorted(states(kafka_settings, topics, "expiring")) == ["user-3"]
    assert latest(kafka_settings, topics, "expiring").metrics["keys"] == 1
