"""Test-then-train, pure: River's own numbers, metrics per task, and the snapshot cadence."""

from __future__ import annotations

import pickle

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

from riverrun.workers.learner.prequential import (
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
