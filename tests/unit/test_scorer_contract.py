"""One contract, every batch scorer and every way a model is served: answer exactly as River.

River proves its estimators by running one list of checks over all of them (`river/checks`);
this does the same for riverrun's scorers. For every row the request contract admits (numbers,
booleans, numeric strings, "nan", categories, unknown extra features, missing ones), in any
batch, a scorer gives River's own answer (the same prediction, probabilities to 1e-12) or
refuses where River raises or answers nothing finite, and it answers a row the same whatever
its neighbours. Scoring never changes the model, and a pickled model scores the same.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import datasets, linear_model, naive_bayes, optim, preprocessing, tree

from riverrun.workers.scorer.model import (
    BatchScorer,
    FileModelSource,
    RiverScorer,
    linear_fast_path,
    load_model_file,
    serve,
)
from riverrun.workers.scorer.model.protocol import Features

TOLERANCE = 1e-12


@cache
def phishing() -> list[tuple[dict[str, float], bool]]:
    return [(dict(x), y) for x, y in datasets.Phishing()]


@cache
def trump() -> list[tuple[dict[str, float], float]]:
    return [({k: float(v) for k, v in x.items()}, y) for x, y in datasets.TrumpApproval()]


def trained(model: Any, data: list[tuple[dict[str, float], Any]], n: int = 400) -> Any:
    for x, y in data[:n]:
        model.learn_one(x, y)
    return model


# Each model a fresh, trained River estimator; with the data its rows come from.
MODELS: dict[str, tuple[Callable[[], Any], Callable[[], list[Any]]]] = {
    "scaled-logistic": (lambda: preprocessing.StandardScaler()
                        | linear_model.LogisticRegression(optimizer=optim.SGD(0.05)), phishing),
    "bare-logistic": (linear_model.LogisticRegression, phishing),
    "scaled-linear-regression": (lambda: preprocessing.StandardScaler()
                                 | linear_model.LinearRegression(), trump),
    "hoeffding-tree": (tree.HoeffdingTreeClassifier, phishing),
    "gaussian-nb": (naive_bayes.GaussianNB, phishing),
}  # fmt: skip


def river_scorer(model: Any) -> BatchScorer:
    return RiverScorer(model)


def fast_path(model: Any) -> BatchScorer:
    scorer = linear_fast_path(model)
    if scorer is None:
        pytest.skip("no fast path for this model (River's own path serves it)")
    return scorer


def served(model: Any) -> BatchScorer:
    # What every source serves: read-only, wrapped in its fastest scorer.
    return serve(model, "m", 1, 0, None).scorer


def from_a_file(model: Any, tmp: Path) -> BatchScorer:
    path = tmp / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    deployment = FileModelSource(load_model_file(path, "m")).deployment("m")
    assert deployment is not None
    return deployment.arms[0].scorer


SCORERS: dict[str, Callable[[Any, Path], BatchScorer]] = {
    "river": lambda model, _tmp: river_scorer(model),
    "fast-path": lambda model, _tmp: fast_path(model),
    "served": lambda model, _tmp: served(model),
    "model-file": from_a_file,
}


def river_answer(model: Any, row: Features) -> tuple[str, Any, dict[str, float] | None]:
    """River's own answer on an untouched copy: ("ok", prediction, proba) or ("refused", ...)."""
    from river import base

    copy = pickle.loads(pickle.dumps(model))
    try:
        if isinstance(copy, base.Classifier):
            proba = copy.predict_proba_one(dict(row))
            if not proba or not all(math.isfinite(p) for p in proba.values()):
                return ("refused", None, None)
            return ("ok", max(proba, key=proba.get), {str(k): v for k, v in proba.items()})
        value = copy.predict_one(dict(row))
        if value is None or not math.isfinite(float(value)):
            return ("refused", None, None)
        return ("ok", float(value), None)
    except Exception:  # noqa: BLE001  # whatever River raises is a refusal
        return ("refused", None, None)


def assert_same(scorer: BatchScorer, model: Any, rows: list[Features]) -> None:
    batch = scorer.predict_many(rows)
    for i, row in enumerate(rows):
        verdict, prediction, proba = river_answer(model, row)
        if verdict == "refused":
            assert i in batch.failures, f"River refuses {row!r}; the scorer answered"
            continue
        assert i not in batch.failures, f"River answers {row!r}: {batch.failures.get(i)}"
        if proba is None:
            got = batch.predictions[i]
            assert isinstance(got, float)
            assert abs(got - prediction) <= TOLERANCE * max(1.0, abs(prediction))
        else:
            assert batch.predictions[i] == prediction
            got_proba = batch.probas[i]
            assert got_proba is not None and got_proba.keys() == proba.keys()
            assert all(abs(got_proba[k] - proba[k]) <= TOLERANCE for k in proba)


# -- rows the request contract admits, built from a real row ------------------------------------


def mutate(base: dict[str, float], how: str, name: str) -> dict[str, Any]:
    row: dict[str, Any] = dict(base)
    if how == "as-is":
        return row
    if how == "numeric-string":
        row[name] = str(row[name])
    elif how == "nan-string":
        row[name] = "nan"
    elif how == "category":
        row[name] = "fr"
    elif how == "boolean":
        row[name] = True
    elif how == "integer":
        row[name] = round(row[name])
    elif how == "missing":
        del row[name]
    elif how == "extra-number":
        row["never-seen"] = 3.5
    elif how == "extra-category":
        row["country"] = "de"
    elif how == "huge-integer":
        row[name] = 10**400
    return row


MUTATIONS = ("as-is", "as-is", "numeric-string", "nan-string", "category", "boolean", "integer",
             "missing", "extra-number", "extra-category", "huge-integer")  # fmt: skip


@st.composite
def batches(draw: st.DrawFn, data: Callable[[], list[Any]]) -> list[dict[str, Any]]:
    rows = data()
    size = draw(st.integers(min_value=1, max_value=12))
    out = []
    for _ in range(size):
        base = rows[draw(st.integers(min_value=0, max_value=len(rows) - 1))][0]
        how = draw(st.sampled_from(MUTATIONS))
        name = draw(st.sampled_from(sorted(base)))
        out.append(mutate(base, how, name))
    return out


@cache
def model_named(name: str) -> Any:
    factory, data = MODELS[name]
    return trained(factory(), data())


@pytest.mark.parametrize("scorer_name", sorted(SCORERS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_row_is_answered_as_river_answers_it_whatever_its_neighbours(
    model_name: str, scorer_name: str, tmp_path: Path
) -> None:
    model = model_named(model_name)
    scorer = SCORERS[scorer_name](pickle.loads(pickle.dumps(model)), tmp_path)
    _, data = MODELS[model_name]

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(batches(data))
    def check(rows: list[dict[str, Any]]) -> None:
        assert_same(scorer, model, rows)
        # Alone, each row gets what it got among its neighbours.
        together = scorer.predict_many(rows)
        for i, row in enumerate(rows):
            alone = scorer.predict_many([row])
            assert (0 in alone.failures) == (i in together.failures)
            if i not in together.failures:
                assert alone.predictions[0] == together.predictions[i]
                assert alone.probas[0] == together.probas[i]

    check()


@pytest.mark.parametrize("scorer_name", sorted(SCORERS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_scoring_never_changes_the_model_and_a_pickled_model_scores_the_same(
    model_name: str, scorer_name: str, tmp_path: Path
) -> None:
    _, data = MODELS[model_name]
    rows = [mutate(x, how, sorted(x)[0]) for (x, _), how in
            zip(data()[:60], MUTATIONS * 6, strict=False)]  # fmt: skip
    model = serve(pickle.loads(pickle.dumps(model_named(model_name))), "m", 1, 0, None).estimator
    scorer = SCORERS[scorer_name](model, tmp_path)
    before = pickle.dumps(model)
    first = scorer.predict_many(rows)
    assert pickle.dumps(model) == before
    again = SCORERS[scorer_name](pickle.loads(before), tmp_path).predict_many(rows)
    assert again.predictions == first.predictions
    assert again.probas == first.probas
    assert again.failures.keys() == first.failures.keys()


def test_a_numeric_string_is_refused_by_the_fast_path_as_by_river_in_any_batch() -> None:
    model = model_named("scaled-logistic")
    fast = linear_fast_path(model)
    assert fast is not None
    x = dict(phishing()[0][0])
    odd = {**x, sorted(x)[0]: "1.5"}
    for rows in ([odd], [x, odd, x], [odd, {**x, "country": "fr"}]):
        scored = fast.predict_many(rows)
        assert rows.index(odd) in scored.failures
        assert scored.failures[rows.index(odd)].error_class == "ModelRaised"
