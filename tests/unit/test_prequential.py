"""Test-then-train, pure: River's own numbers, metrics per task, and the snapshot cadence."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from river import datasets, evaluate, linear_model, metrics, naive_bayes, preprocessing, tree

from riverrun.workers.learner.prequential import (
    NotLearned,
    Prequential,
    SnapshotCadence,
    learn_example,
    task_of,
)


def test_prequential_accuracy_is_rivers_progressive_validation() -> None:
    data = list(datasets.Phishing())
    ours = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    prequential = Prequential(task_of(ours))
    for x, y in data:
        learn_example(ours, x, y, prequential)
    theirs = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy, roc_auc = metrics.Accuracy(), metrics.ROCAUC()
    evaluate.progressive_val_score(data, theirs, accuracy + roc_auc)
    assert prequential.values()["accuracy"] == pytest.approx(accuracy.get(), abs=1e-12)
    assert prequential.values()["roc_auc"] == roc_auc.get()  # binned, still River's value
    assert set(prequential.values()) == {"accuracy", "log_loss", "roc_auc", "f1", "examples"}
    assert pickle.dumps(ours) == pickle.dumps(theirs)


def test_learning_without_metrics_gives_the_same_model() -> None:
    data = list(datasets.Phishing())[:300]
    a = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    b = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    prequential = Prequential("binary")
    for x, y in data:
        learn_example(a, x, y, prequential)
        learn_example(b, x, y, None)
    assert pickle.dumps(a) == pickle.dumps(b)


def test_regressors_get_regression_metrics() -> None:
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    assert task_of(model) == "regression"
    prequential = Prequential("regression")
    for x, y in list(datasets.TrumpApproval())[:200]:
        learn_example(model, x, y, prequential)
    values = prequential.values()
    assert set(values) == {"mae", "rmse", "r2", "examples"}
    assert values["examples"] == 200 and values["mae"] > 0


def test_the_released_task_wins_over_the_guess() -> None:
    model = linear_model.LogisticRegression()
    assert task_of(model) == "binary"
    assert task_of(model, "multiclass") == "multiclass"
    assert set(Prequential("multiclass").values()) == {
        "accuracy", "cross_entropy", "macro_f1", "examples"}


def test_cadence_by_count_only_when_changed() -> None:
    cadence = SnapshotCadence(every=3, interval_s=None, last_at=0.0)
    assert not cadence.due(1e9)  # nothing learned: never
    cadence.learned(2)
    assert not cadence.due(1.0)
    cadence.learned()
    assert cadence.due(1.0)
    cadence.published(1.0)
    assert not cadence.due(2.0)


def test_cadence_by_time_only_when_changed() -> None:
    cadence = SnapshotCadence(every=None, interval_s=10.0, last_at=100.0)
    assert not cadence.due(200.0)
    cadence.learned()
    assert not cadence.due(105.0)
    assert cadence.due(110.0)
    cadence.published(110.0)
    assert not cadence.due(500.0)


def test_count_cadence_is_checked_per_example_whatever_the_batch() -> None:
    cadence = SnapshotCadence(every=60, interval_s=None)
    published_at = []
    for n in range(1, 251):
        cadence.learned()
        if cadence.count_due():
            published_at.append(n)
            cadence.published(0.0)
    assert published_at == [60, 120, 180, 240]


@pytest.mark.parametrize(
    "factory",
    [lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=1),
     lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
     lambda: naive_bayes.GaussianNB()],
    ids=["hoeffding-adaptive-tree", "scaled-logistic", "gaussian-nb"],
)
def test_every_metric_is_rivers_from_an_untrained_model_on(factory: Any) -> None:
    """An untrained model first predicts nothing (`{}`); River's validation skips that example."""
    data = list(datasets.Phishing())
    ours = factory()
    prequential = Prequential("binary")
    for x, y in data:
        learn_example(ours, x, y, prequential)
    theirs = {name: cls() for name, cls in (("accuracy", metrics.Accuracy),
                                           ("log_loss", metrics.LogLoss),
                                           ("roc_auc", metrics.ROCAUC), ("f1", metrics.F1))}
    evaluate.progressive_val_score(data, factory(), metrics.base.Metrics(list(theirs.values())))
    values = prequential.values()
    for name, metric in theirs.items():
        assert values[name] == pytest.approx(metric.get(), abs=1e-12), name


def test_an_example_the_model_raises_on_counts_nowhere() -> None:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    prequential = Prequential("binary")
    for x, y in list(datasets.Phishing())[:50]:
        learn_example(model, x, y, prequential)
    before = prequential.values()
    with pytest.raises(NotLearned, match="TypeError"):
        learn_example(model, {"salary": "high", "age": 30.0}, True, prequential)
    assert prequential.values() == before
