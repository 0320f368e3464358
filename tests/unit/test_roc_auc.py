"""The binned ROC AUC is River's ROCAUC, value for value, on any stream of predictions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from river import datasets, linear_model, metrics, preprocessing

from riverrun.workers.learner.roc_auc import BinnedROCAUC

probability = st.one_of(
    st.floats(min_value=0.0, max_value=1.0),
    # The thresholds themselves and their neighbours: where `>` against `>=` would differ.
    st.sampled_from([i / 9 for i in range(10)] + [-1e-7, 1 + 1e-7, 1 / 9 + 1e-16, 0.5]),
)


@given(st.lists(st.tuples(st.booleans(), probability), max_size=200))
def test_equals_rivers_rocauc_on_any_stream(stream: list[tuple[bool, float]]) -> None:
    ours, theirs = BinnedROCAUC(), metrics.ROCAUC()
    for label, p in stream:
        ours.update(label, {True: p, False: 1.0 - p})
        theirs.update(label, {True: p, False: 1.0 - p})
        assert ours.get() == theirs.get()


def test_equals_rivers_rocauc_along_a_real_learning_run() -> None:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    ours, theirs = BinnedROCAUC(), metrics.ROCAUC()
    for x, y in datasets.Phishing():
        proba = model.predict_proba_one(x)
        ours.update(y, proba)
        theirs.update(y, proba)
        model.learn_one(x, y)
    assert ours.get() == theirs.get()
    assert 0.9 < ours.get() <= 1.0


def test_a_bare_probability_and_a_missing_class_count_like_rivers() -> None:
    rng = random.Random(7)
    ours, theirs = BinnedROCAUC(), metrics.ROCAUC()
    for _ in range(500):
        label, p = rng.random() < 0.3, rng.random()
        ours.update(label, p)
        theirs.update(label, p)
        ours.update(label, {False: 1.0})  # no True key: probability 0 of the positive class
        theirs.update(label, {False: 1.0})
    assert ours.get() == pytest.approx(theirs.get(), abs=0.0)
