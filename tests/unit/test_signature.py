"""A version's signature: inferred from the rows it learned, and held on both scoring paths."""

from __future__ import annotations

from typing import Any

import pytest
from river import datasets, linear_model, preprocessing, tree

from riverrun.schemas import FeatureSignature, Signature
from riverrun.workers.registry.signature import infer_signature
from riverrun.workers.scorer.model import LinearPipelineScorer, RiverScorer, build_scorer
from riverrun.workers.scorer.model.signature import SignatureScorer


def test_kinds_and_presence_are_inferred_from_the_rows() -> None:
    rows: list[dict[str, Any]] = [
        {"age": 31, "city": "Oslo", "income": 1.5, "mixed": 1},
        {"age": 40, "city": "Rome", "mixed": "x"},
        {"age": 22.5, "city": "Oslo", "income": None},
    ]
    assert infer_signature(rows, "bool") == Signature(label_type="bool", features=[
        FeatureSignature(name="age", kind="number", required=True),
        FeatureSignature(name="city", kind="category", required=True),
        FeatureSignature(name="income", kind="number", required=False),
    ])  # fmt: skip


def trained(model: Any) -> Any:
    for x, y in list(datasets.Phishing())[:300]:
        model.learn_one(x, y)
    return model


SIGNATURE = Signature(label_type="bool", features=[
    FeatureSignature(name="https", kind="number"),
    FeatureSignature(name="long_url", kind="number", required=False),
    FeatureSignature(name="country", kind="category", required=False),
])  # fmt: skip


@pytest.mark.parametrize("model", [
    preprocessing.StandardScaler() | linear_model.LogisticRegression(),  # the fast path
    tree.HoeffdingTreeClassifier(),  # River's own path
], ids=["fast-path", "river-path"])  # fmt: skip
def test_rows_that_break_the_signature_fail_named_the_same_way_on_both_paths(model: Any) -> None:
    model = trained(model)
    rows = [x for x, _ in list(datasets.Phishing())[300:306]]
    rows[1] = {**rows[1], "https": "yes"}
    rows[3] = {k: v for k, v in rows[3].items() if k != "https"}
    rows[4] = {**rows[4], "country": 47}
    scorer = build_scorer(model, signature=SIGNATURE)
    assert isinstance(scorer, SignatureScorer)
    inner = build_scorer(model)
    assert isinstance(inner, LinearPipelineScorer if "Logistic" in repr(model) else RiverScorer)
    batch = scorer.predict_many(rows)
    assert {i: (f.error_class, f.reason.split(" ")[1]) for i, f in batch.failures.items()} == {
        1: ("FeatureTypeMismatch", "'https'"), 3: ("FeatureTypeMismatch", "'https'"),
        4: ("FeatureTypeMismatch", "'country'")}  # fmt: skip
    alone = inner.predict_many([rows[i] for i in (0, 2, 5)])
    for j, i in enumerate((0, 2, 5)):
        assert batch.probas[i] == alone.probas[j] and batch.predictions[i] == alone.predictions[j]
    assert all(batch.predictions[i] is None for i in (1, 3, 4))


def test_a_signature_without_features_checks_nothing() -> None:
    model = trained(tree.HoeffdingTreeClassifier())
    assert isinstance(build_scorer(model, signature=Signature(label_type="bool")), RiverScorer)
