"""The label join, pure: window bounds and expiry, duplicates, features sources and losses."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from riverrun.schemas import LabelObserved, PredictionMade
from riverrun.schemas.loss import outcome_loss
from riverrun.workers.learner.join import (
    DUPLICATE_LABEL,
    UNKNOWN_REQUEST,
    WINDOW_EXPIRED,
    Joined,
    JoinWindow,
    Unjoined,
    coerce_label,
)

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def prediction(i: int, model: str = "m", proba: dict[str, float] | None = None) -> PredictionMade:
    return PredictionMade(
        request_id=f"r{i}", model=model, version=2, snapshot=7, route="champion",
        prediction=True, proba=proba if proba is not None else {"True": 0.8, "False": 0.2},
        features={"x": float(i)}, scored_at=WHEN, latency_ms=1.0,
    )  # fmt: skip


def label(i: int, value: object = True, features: dict[str, float] | None = None,
          model: str = "m") -> LabelObserved:
    return LabelObserved(request_id=f"r{i}", model=model, label=value, features=features,
                         observed_at=WHEN)  # type: ignore[arg-type]


def test_a_label_takes_its_predictions_features_and_makes_an_outcome() -> None:
    window = JoinWindow("m")
    window.add_prediction(prediction(1), 1_000)
    decision = window.join_one(label(1), 2_000)
    assert isinstance(decision, Joined)
    assert decision.example.features == {"x": 1.0}
    assert (decision.example.version, decision.example.snapshot) == (2, 7)
    assert decision.outcome is not None
    assert decision.outcome.loss == pytest.approx(-math.log(0.8))
    assert len(window) == 0


def test_features_on_the_label_win_and_need_no_prediction() -> None:
    window = JoinWindow("m")
    decision = window.join_one(label(1, features={"y": 3.0}), 2_000)
    assert isinstance(decision, Joined)
    assert decision.example.features == {"y": 3.0}
    assert decision.outcome is None  # nothing was predicted, nothing to judge
    window.add_prediction(prediction(2), 1_000)
    decision = window.join_one(label(2, features={"y": 4.0}), 2_000)
    assert isinstance(decision, Joined) and decision.example.features == {"y": 4.0}
    assert decision.outcome is not None


def test_unknown_request_and_other_models_predictions() -> None:
    window = JoinWindow("m")
    window.add_prediction(prediction(1, model="other"), 1_000)
    decision = window.join_one(label(1), 2_000)
    assert isinstance(decision, Unjoined) and decision.reason == UNKNOWN_REQUEST


def test_a_second_label_for_a_request_is_a_duplicate() -> None:
    window = JoinWindow("m")
    window.add_prediction(prediction(1), 1_000)
    assert isinstance(window.join_one(label(1), 2_000), Joined)
    decision = window.join_one(label(1, value=False), 3_000)
    assert isinstance(decision, Unjoined) and decision.reason == DUPLICATE_LABEL
    # Even with features, and even if the scorer repeats its prediction.
    window.add_prediction(prediction(1), 3_500)
    decision = window.join_one(label(1, features={"x": 1.0}), 4_000)
    assert isinstance(decision, Unjoined) and decision.reason == DUPLICATE_LABEL


def test_duplicates_are_remembered_after_a_restart() -> None:
    window = JoinWindow("m")
    window.mark_joined("r1", 1_000)
    window.add_prediction(prediction(1), 1_500)  # re-read over the window: ignored
    assert len(window) == 0
    decision = window.join_one(label(1), 2_000)
    assert isinstance(decision, Unjoined) and decision.reason == DUPLICATE_LABEL


def test_predictions_expire_by_age_in_event_time() -> None:
    window = JoinWindow("m", max_count=100, max_age_ms=1_000)
    window.add_prediction(prediction(1), 1_000)
    window.add_prediction(prediction(2), 1_900)
    decision = window.join_one(label(1), 2_500)  # 1.5 s after its prediction
    assert isinstance(decision, Unjoined) and decision.reason == WINDOW_EXPIRED
    assert isinstance(window.join_one(label(2), 2_500), Joined)


def test_the_window_is_bounded_by_count() -> None:
    window = JoinWindow("m", max_count=3, max_age_ms=10_000_000)
    for i in range(5):
        window.add_prediction(prediction(i), 1_000 + i)
    assert len(window) == 3
    decision = window.join_one(label(0), 2_000)
    assert isinstance(decision, Unjoined) and decision.reason == WINDOW_EXPIRED
    assert isinstance(window.join_one(label(4), 2_000), Joined)


def test_the_first_prediction_of_a_request_wins() -> None:
    window = JoinWindow("m")
    window.add_prediction(prediction(1, proba={"True": 0.6, "False": 0.4}), 1_000)
    window.add_prediction(prediction(1, proba={"True": 0.9, "False": 0.1}), 1_100)
    decision = window.join_one(label(1), 2_000)
    assert isinstance(decision, Joined) and decision.outcome is not None
    assert decision.outcome.loss == pytest.approx(-math.log(0.6))


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        JoinWindow("m", max_count=0)


@pytest.mark.parametrize(
    ("prediction_", "proba", "label_", "task", "loss"),
    [
        (True, {"True": 0.25, "False": 0.75}, True, None, -math.log(0.25)),
        (True, {"True": 1.0, "False": 0.0}, False, None, -math.log(1e-15)),
        ("a", None, "a", None, 0.0),
        ("a", None, "b", None, 1.0),
        (True, None, False, "binary", 1.0),
        (2.5, None, 1.0, None, 2.25),
        (3, None, 1, "regression", 4.0),
    ],
)
def test_outcome_loss(prediction_: object, proba: dict[str, float] | None, label_: object,
                      task: str | None, loss: float) -> None:
    assert outcome_loss(prediction_, proba, label_, task) == pytest.approx(loss)  # type: ignore[arg-type]


def test_an_example_renders_as_its_contract_decodes_it() -> None:
    from riverrun.schemas import ExampleJoined, decode, encode
    from riverrun.workers.learner.join import example_value

    example = ExampleJoined(
        request_id="r1", model="fraud", features={"x": 1.5, "city": "Oslo"}, label=True,
        version=2, snapshot=7, route="canary", prediction=False, proba={"True": 0.25},
        observed_at=datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC),
    )  # fmt: skip
    assert decode(ExampleJoined, example_value(example)) == example
    assert example_value(example) == encode(example)


@pytest.mark.parametrize(
    ("label_type", "value", "expected"),
    [("bool", True, True), ("bool", 1, True), ("bool", 0.0, False), ("int", 3, 3),
     ("int", 3.0, 3), ("int", "-7", -7), ("float", 2, 2.0), ("float", "2.5", 2.5),
     ("str", "cat", "cat"), ("str", 4, "4"), (None, "anything", "anything")],
)
def test_labels_are_coerced_to_the_label_type(label_type: str | None, value: object,
                                              expected: object) -> None:
    coerced = coerce_label(value, label_type)
    assert coerced == expected and type(coerced) is type(expected)


@pytest.mark.parametrize(
    ("label_type", "value"),
    [("bool", 2), ("bool", 2.5), ("bool", -1), ("bool", 1e308), ("bool", "yes"), ("bool", "1"),
     ("int", 2.5), ("int", True), ("int", "x"), ("float", True), ("float", "nan"),
     ("float", "inf"), ("float", "high"), ("str", True), ("str", 1.5)],
)
def test_labels_the_type_cannot_take_are_refused_naming_the_type(label_type: str,
                                                                 value: object) -> None:
    with pytest.raises(ValueError, match=label_type):
        coerce_label(value, label_type)
