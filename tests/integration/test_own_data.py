"""A data scientist's own CSV and notebook pipeline, through riverrun on a real broker.

A CSV with numeric, categorical and key columns; a spec with a feature function from an allowed
module, `+`, `Select` and a one-hot encoder; a warm start from the CSV; a replay of the CSV with
0/1 labels for a bool model. The learner's prequential accuracy is River's own, every outcome's
loss is River's log loss, the version carries the CSV's signature, and a pipeline released from
Python serves exactly what it predicts in the notebook.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import evaluate, metrics
from river.datasets import synth

from riverrun.producers.dataset import load
from riverrun.producers.files import FileOptions
from riverrun.schemas import DeadLetter, KafkaSettings, OutcomeRecorded, TopicSettings, decode
from riverrun.workers.learner import Learner, LearnerOptions, LearnerSettings
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings, build_estimator

from .conftest import (
    RIVERRUN,
    ScorerProcess,
    one_partition_feedback,
    produce,
    read_all,
    request_payload,
    wait_for,
)

KEY = "own-data-test-signing-key-of-32-bytes"
ROWS = 3000
WARM = 1000
MODULE = "dsfeatures"
# The module says when it is imported: a refused spec must not import it.
FEATURES_SOURCE = '''
import os, pathlib
pathlib.Path(os.environ["DSFEATURES_MARKER"]).touch()

def add_features(x):
    return {**x, "loan_to_salary": x["loan"] / x["salary"]}
'''
PIPELINE = (f'FuncTransformer("{MODULE}:add_features") '
            '| (Select("salary", "age", "loan", "loan_to_salary") | StandardScaler()) '
            '+ (Select("zipcode") | OneHotEncoder()) '
            "| LogisticRegression()")  # fmt: skip
FILE = FileOptions(target="label", key="id")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The data scientist's folder: the CSV, the spec, the feature module (importable here)."""
    (tmp_path / f"{MODULE}.py").write_text(FEATURES_SOURCE)
    monkeypatch.setenv("DSFEATURES_MARKER", str(tmp_path / "imported"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with (tmp_path / "loans.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "salary", "age", "loan", "zipcode", "label"])
        stream = synth.Agrawal(classification_function=2, seed=7)
        for i, (x, y) in enumerate(itertools.islice(stream, ROWS)):
            writer.writerow([f"c{i}", round(x["salary"], 2), x["age"], round(x["loan"], 2),
                             f"z{x['zipcode']}", int(y)])  # fmt: skip
    spec = {"pipeline": PIPELINE, "task": "binary", "label_type": "bool"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    yield tmp_path


def cli(args: list[str], kafka: KafkaSettings, topics: TopicSettings, workspace: Path,
        **env: str) -> subprocess.CompletedProcess[str]:
    names = [arg for role, name in topics.all().items()
             for arg in (f"--topic-{role.replace('_', '-')}", name)]
    command = [RIVERRUN, *args, "--bootstrap-servers", kafka.bootstrap_servers, *names]
    environment = {**os.environ, "PYTHONPATH": str(workspace),
                   "RIVERRUN_REGISTRY__SIGNING_KEY": KEY, **env}  # fmt: skip
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180,
                          check=False)  # fmt: skip


def start_scorer(kafka: KafkaSettings, topics: TopicSettings, workspace: Path, tmp_path: Path,
                 group: str) -> ScorerProcess:
    """`riverrun score` on the registry, the feature module importable and allowed."""
    argv = [RIVERRUN, "--log-format", "text", "score", "--bootstrap-servers",
            kafka.bootstrap_servers, "--topic-requests", topics.requests,
            "--topic-predictions", topics.predictions, "--topic-dead-letters", topics.dead_letters,
            "--topic-models", topics.models, "--topic-artifacts", topics.artifacts,
            "--group-id", group, "--batch-size", "200"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(workspace), "RIVERRUN_REGISTRY__SIGNING_KEY": KEY,
           "RIVERRUN_REGISTRY__FEATURE_MODULES": MODULE}
    return ScorerProcess(argv, env, tmp_path / "scorer.log")


def rows(workspace: Path) -> list[tuple[dict[str, Any], Any]]:
    return list(load(str(workspace / "loans.csv"), file=FILE))


def test_the_data_scientists_csv_and_pipeline_learn_as_in_river(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    workspace: Path, tmp_path: Path,
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    release = ["models", "release", "loans", "--spec", str(workspace / "spec.json"),
               "--warm-start", str(workspace / "loans.csv"), "--target", "label", "--key", "id",
               "--limit", str(WARM)]  # fmt: skip

    refused = cli(release, kafka_settings, topics, workspace)
    assert refused.returncode == 2, refused.stderr
    assert f"module '{MODULE}'" in refused.stderr
    assert "RIVERRUN_REGISTRY__FEATURE_MODULES" in refused.stderr
    assert not (workspace / "imported").exists()  # refused before anything of it ran

    allowed = {"RIVERRUN_REGISTRY__FEATURE_MODULES": MODULE}
    released = cli(release, kafka_settings, topics, workspace, **allowed)
    assert released.returncode == 0, released.stderr
    shown = cli(["models", "show", "loans", "--json"], kafka_settings, topics, workspace)
    signature = json.loads(shown.stdout)["version"]["signature"]
    assert signature == {"label_type": "bool", "features": [
        {"name": "salary", "kind": "number", "required": True},
        {"name": "age", "kind": "number", "required": True},
        {"name": "loan", "kind": "number", "required": True},
        {"name": "zipcode", "kind": "category", "required": True},
    ]}  # fmt: skip

    scorer = start_scorer(kafka_settings, topics, workspace, tmp_path, unique("scorers"))
    try:
        replayed = cli(["replay", "--dataset", str(workspace / "loans.csv"), "--target", "label",
                        "--key", "id", "--model", "loans", "--rate", "0",
                        "--label-fraction", "0"], kafka_settings, topics, workspace)  # fmt: skip
        assert replayed.returncode == 0, replayed.stderr
        # Labels come once their requests were scored, as 0/1 (the CSV's) for a bool model.
        assert len(read_all(kafka_settings, topics.predictions, at_least=ROWS)) == ROWS
        produce(kafka_settings, topics.feedback, [
            (f"c{i}".encode(), orjson.dumps({"request_id": f"loans-42-{i}", "model": "loans",
                                             "label": y}))
            for i, (_, y) in enumerate(rows(workspace))
        ])  # fmt: skip
        settings = LearnerSettings(
            kafka=kafka_settings, topics=topics,
            registry=RegistrySettings(signing_key=KEY, feature_modules=[MODULE]),  # type: ignore[arg-type]
            learner=LearnerOptions(model="loans", worker_id="in-process"),
        )  # fmt: skip
        with Registry(kafka_settings, topics, settings.registry) as registry:
            summary = Learner(settings, registry).run(max_examples=ROWS, idle_timeout=90)
    finally:
        scorer.close()

    data = rows(workspace)
    spec = ModelSpec(pipeline=PIPELINE, task="binary", label_type="bool")
    reference = build_estimator(spec, [MODULE])
    for x, y in data[:WARM]:
        reference.learn_one(x, bool(y))
    river_accuracy = evaluate.progressive_val_score(
        [(x, bool(y)) for x, y in data], reference, metrics.Accuracy()
    ).get()
    assert summary.examples_learned == ROWS
    assert summary.metrics is not None
    assert summary.metrics["accuracy"] * 100 == pytest.approx(river_accuracy * 100, abs=0.01)

    # Labels came as 0/1 for a bool model: each outcome's loss is River's log loss.
    outcomes = [decode(OutcomeRecorded, r.value) for r in
                read_all(kafka_settings, topics.outcomes, at_least=ROWS) if r.value]  # fmt: skip
    assert len(outcomes) == ROWS
    for outcome in outcomes:
        assert isinstance(outcome.label, bool)
        loss = metrics.LogLoss()
        loss.update(outcome.label, {True: outcome.proba["True"], False: outcome.proba["False"]})
        assert outcome.loss == pytest.approx(loss.get(), rel=1e-9, abs=1e-12)
    assert max(o.loss for o in outcomes) < 20  # nothing clamped at log(1e-15)


def test_a_pipeline_released_from_python_serves_its_notebook_predictions(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    workspace: Path, tmp_path: Path,
) -> None:
    import dsfeatures  # type: ignore[import-not-found]  # written by the fixture
    from river import compose, linear_model, preprocessing

    pipeline = (compose.FuncTransformer(dsfeatures.add_features)
                | (compose.Select("salary", "age", "loan_to_salary")
                   | preprocessing.StandardScaler())
                + (compose.Select("zipcode") | preprocessing.OneHotEncoder())
                | linear_model.LogisticRegression())  # fmt: skip
    data = rows(workspace)
    for x, y in data[:WARM]:
        pipeline.learn_one(x, bool(y))
    settings = RegistrySettings(signing_key=KEY, feature_modules=[MODULE])  # type: ignore[arg-type]
    with Registry(kafka_settings, topics, settings) as registry:
        released, _ = registry.release_pipeline("notebook", pipeline, label_type="bool",
                                                sample=(x for x, _ in data[:WARM]))
    assert released.spec["pipeline"] == (
        f"FuncTransformer('{MODULE}:add_features') | TransformerUnion(Select('age', "
        "'loan_to_salary', 'salary') | StandardScaler(), Select('zipcode') | OneHotEncoder()) "
        "| LogisticRegression()"
    )
    assert released.signature is not None and len(released.signature.features) == 4

    asked = data[WARM:WARM + 200]
    produce(kafka_settings, topics.requests,
            [(None, request_payload(i, x, "notebook")) for i, (x, _) in enumerate(asked)])
    # One row breaks the signature: a string where the version learned numbers.
    produce(kafka_settings, topics.requests,
            [(None, request_payload(999, {**asked[0][0], "age": "forty"}, "notebook"))])
    scorer = start_scorer(kafka_settings, topics, workspace, tmp_path, unique("scorers"))
    try:
        predictions = read_all(kafka_settings, topics.predictions, at_least=len(asked),
                               timeout=90)  # fmt: skip
        wait_for(lambda: bool(read_all(kafka_settings, topics.dead_letters, at_least=1,
                                       timeout=5)), 30, "the dead letter")  # fmt: skip
    finally:
        scorer.close()
    by_id = {p["request_id"]: p for p in (orjson.loads(r.value) for r in predictions if r.value)}
    assert len(by_id) == len(asked)
    for i, (x, _) in enumerate(asked):
        served = by_id[f"req-{i}"]
        expected = pipeline.predict_proba_one(dict(x))
        assert served["prediction"] == pipeline.predict_one(dict(x))
        # River's `Select` keeps its columns in a set, whose order (and so the order a dot
        # product sums in) follows each process's string hashing: equal to the last few ulps.
        assert served["proba"] == pytest.approx({str(k): v for k, v in expected.items()},
                                                rel=1e-12, abs=1e-15)  # fmt: skip
    dead = [DeadLetter.from_headers(list(r.headers.items()))
            for r in read_all(kafka_settings, topics.dead_letters)]  # fmt: skip
    assert [(d.error_class, "'age'" in d.reason) for d in dead] == [("FeatureTypeMismatch", True)]
