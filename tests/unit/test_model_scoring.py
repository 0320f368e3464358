"""Model wrappers: the vectorised path answers as River does, and scoring never changes a model."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from river import datasets, linear_model, naive_bayes, optim, preprocessing, tree

from riverrun.workers.scorer.model import (
    LinearPipelineScorer,
    RiverScorer,
    build_scorer,
    freeze_for_scoring,
    linear_fast_path,
)


def trained(model: Any, n: int = 600) -> tuple[Any, list[dict[str, float]]]:
    data = list(datasets.Phishing())
    for x, y in data[:n]:
        model.learn_one(x, y)
    return model, [x for x, _ in data]


def linear_pipeline() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.05)
    )


def test_fast_path_reproduces_river_on_phishing() -> None:
    model, rows = trained(linear_pipeline())
    fast = linear_fast_path(model)
    assert isinstance(fast, LinearPipelineScorer)
    ours = fast.predict_many(rows)
    river = RiverScorer(model).predict_many(rows)
    assert ours.predictions == river.predictions
    for mine, theirs in zip(ours.probas, river.probas, strict=True):
        assert mine is not None and theirs is not None
        assert mine.keys() == theirs.keys()
        assert all(abs(mine[k] - theirs[k]) <= 1e-12 for k in mine)


def test_fast_path_handles_a_linear_regressor() -> None:
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    data = [({k: float(v) for k, v in x.items()}, y) for x, y in datasets.TrumpApproval()]
    for x, y in data[:500]:
        model.learn_one(x, y)
    rows = [x for x, _ in data]
    fast = linear_fast_path(model)
    assert fast is not None and not fast.is_classifier
    ours = fast.predict_many(rows).predictions
    river = [model.predict_one(x) for x in rows]
    assert all(abs(a - b) <= 1e-9 * max(1.0, abs(b)) for a, b in zip(ours, river, strict=True))


def test_rows_of_another_shape_go_through_river() -> None:
    model, rows = trained(linear_pipeline())
    fast = linear_fast_path(model)
    assert fast is not None
    odd = [dict(rows[0]), {**rows[1], "unseen": 3.0}, {k: v for k, v in list(rows[2].items())[:3]}]
    ours = fast.predict_many(odd)
    river = RiverScorer(model).predict_many(odd)
    assert ours.predictions == river.predictions


def test_non_linear_models_use_the_generic_scorer() -> None:
    model, _ = trained(tree.HoeffdingTreeClassifier())
    assert linear_fast_path(model) is None
    assert isinstance(build_scorer(model), RiverScorer)


@pytest.mark.parametrize(
    "factory",
    [linear_pipeline, lambda: tree.HoeffdingTreeClassifier(), lambda: naive_bayes.GaussianNB()],
    ids=["linear", "hoeffding-tree", "gaussian-nb"],
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "river-path"])
def test_scoring_leaves_the_served_snapshot_byte_identical(factory: Any, fast: bool) -> None:
    model, rows = trained(factory())
    unfrozen = pickle.loads(pickle.dumps(model))
    model = freeze_for_scoring(model)
    before = pickle.dumps(model)
    scorer = build_scorer(model, fast_path=fast)
    scorer.predict_many(rows[:200])
    unseen = [{**row, "never-seen": 1.0} for row in rows[:50]]
    answers = scorer.predict_many(unseen)
    assert pickle.dumps(model) == before
    # Freezing changes nothing River answers.
    assert answers.predictions == RiverScorer(unfrozen).predict_many(unseen).predictions


def test_river_itself_mutates_a_pipeline_on_unseen_features() -> None:
    """Why freezing exists: without it, scoring an unseen feature changes the snapshot."""
    model, rows = trained(linear_pipeline())
    before = pickle.dumps(model)
    model.predict_proba_one({**rows[0], "never-seen": 1.0})
    assert pickle.dumps(model) != before


class Exploding:
    """A classifier that fails on some inputs, the way a buggy custom model would."""

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        if x.get("boom"):
            raise ZeroDivisionError("boom")
        if x.get("nan"):
            return {True: float("nan"), False: float("nan")}
        return {True: 0.75, False: 0.25}


def test_a_row_that_raises_or_yields_nan_fails_alone() -> None:
    scored = RiverScorer(Exploding()).predict_many([{"a": 1.0}, {"boom": 1.0}, {"nan": 1.0}])
    assert scored.predictions[0] is True
    assert scored.failures[1].error_class == "ModelRaised"
    assert "ZeroDivisionError" in scored.failures[1].reason
    assert scored.failures[2].error_class == "ModelReturnedNonFinite"
    assert 0 not in scored.failures
