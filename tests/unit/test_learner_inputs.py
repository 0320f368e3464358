"""The learner's hand-checked inputs and outputs agree with the contracts, byte for byte.

Labels and predictions are read by the codec's `decode_label_fields` and
`decode_prediction_fields` without pydantic when they look usual; examples
and outcomes are rendered without building their models. Each is held here to the contract
it stands in for: the same records accepted, the same refusals, equal fields of the same
types, and the same bytes written to the examples log and the outcomes topic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from riverrun.schemas import (
    DecodeError,
    ExampleJoined,
    LabelFields,
    LabelObserved,
    OutcomeRecorded,
    PredictionFields,
    PredictionMade,
    decode,
    decode_label_fields,
    decode_prediction_fields,
    encode,
)
from riverrun.workers.learner.join import Joined, JoinWindow, Outcome, example_value, outcome_value

MODEL = "fraud"
i64 = st.integers(-(2**63), 2**63 - 1)  # what JSON through orjson carries

timestamps = st.one_of(
    st.sampled_from([
        "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.123456Z",
        "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:00:00.120000+00:00", "2026-01-01T00:00:00.123+02:00",
        "2026-01-01T00:00:00", "2026-01-01", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
        "2026-01-01T24:00:00Z", "2026-01-01T23:59:60Z", "0000-01-01T00:00:00Z",
        "2026-01-01t00:00:00z", "2026-01-01T00:00:00Z\n", "noon", "",
    ]),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.isoformat() + "Z"
    ),
    st.integers(0, 2_000_000_000),
    st.none(),
)  # fmt: skip
feature_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53),
    st.booleans(), st.text(max_size=3), st.just("x" * 1025), st.none(), st.lists(i64, max_size=1),
)  # fmt: skip
feature_names = st.one_of(st.text(min_size=1, max_size=5), st.just(""), st.just("n" * 257))
features = st.one_of(
    st.none(),
    st.dictionaries(feature_names, feature_values, max_size=4),
    i64,
    st.text(max_size=2),
)
label_values = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False,
    allow_infinity=False), st.text(max_size=3), st.none(), st.lists(i64, max_size=1),
    st.dictionaries(st.text(max_size=2), i64, max_size=1),
)  # fmt: skip
models = st.one_of(st.just(MODEL), st.sampled_from(["other", "fraud\n", "", "bad name"]))
request_ids = st.one_of(st.text(min_size=1, max_size=6), st.just(""), st.just("r" * 129),
                        st.just("r" * 128), st.integers(0, 9))  # fmt: skip
schema_versions = st.one_of(st.integers(-1, 3), st.just("1"), st.just(1.0), st.just(True))

@st.composite
def records(draw: st.DrawFn, usual: dict[str, st.SearchStrategy[object]],
            unusual: dict[str, st.SearchStrategy[object]]) -> dict[str, object]:
    """A usual record (each field present or not), with up to three fields made unusual."""
    record = {"model": MODEL}
    for name, strategy in usual.items():
        if draw(st.integers(0, 5)):  # mostly present
            record[name] = draw(strategy)
    for name in draw(st.lists(st.sampled_from(sorted(unusual)), max_size=3, unique=True)):
        record[name] = draw(unusual[name])
    return record


usual_timestamps = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.isoformat() + "Z"),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30),
                 timezones=st.just(UTC)).map(lambda d: d.isoformat()),
)  # fmt: skip
usual_features = st.dictionaries(
    st.text(min_size=1, max_size=5),
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53),
              st.booleans(), st.text(max_size=3)), min_size=1, max_size=4,
)  # fmt: skip
usual_labels = st.one_of(st.booleans(), i64, st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=3))  # fmt: skip
labels = records(
    {
        "schema_version": st.integers(1, 3), "request_id": st.text(min_size=1, max_size=6),
        "label": usual_labels, "observed_at": usual_timestamps,
        "key": st.one_of(st.none(), st.text(max_size=5)), "features": usual_features,
    },
    {
        "model": models, "schema_version": schema_versions, "request_id": request_ids,
        "label": label_values, "observed_at": timestamps,
        "key": st.one_of(st.just("k" * 257), i64), "features": features, "extra": i64,
    },
)
probas = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["True", "False", "a"]), st.one_of(
        st.floats(0, 1), st.integers(0, 1), st.booleans(), st.text(max_size=1)), max_size=3),
    i64,
)  # fmt: skip
predictions = records(
    {
        "schema_version": st.integers(1, 3), "request_id": st.text(min_size=1, max_size=6),
        "version": st.integers(0, 5), "snapshot": st.integers(0, 5),
        "route": st.sampled_from(["champion", "canary"]), "prediction": usual_labels,
        "proba": st.one_of(st.none(), st.dictionaries(st.sampled_from(["True", "False"]),
                                                      st.floats(0, 1))),
        "features": usual_features, "scored_at": usual_timestamps,
        "latency_ms": st.floats(0, 1e6),
    },
    {
        "model": models, "schema_version": schema_versions, "request_id": request_ids,
        "version": st.one_of(st.integers(-1, 5), st.just(True), st.just(2.0), st.just("2")),
        "snapshot": st.one_of(st.integers(-1, 5), st.just(False), st.just(3.5)),
        "route": st.one_of(st.integers(0, 1), st.none()), "prediction": label_values,
        "proba": probas, "features": features, "scored_at": timestamps,
        "latency_ms": st.one_of(st.floats(-1, 1e6, allow_nan=False), st.integers(-1, 9),
                                st.just(True), st.text(max_size=2), st.none()),
        "extra": i64,
    },
)  # fmt: skip


def _types(values: dict[str, object] | None) -> list[type]:
    return [type(v) for v in (values or {}).values()]


def _observed_at_bytes(value: datetime) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


@settings(max_examples=1500, deadline=None)
@given(labels)
def test_labels_read_by_hand_agree_with_the_contract(data: dict[str, object]) -> None:
    value = orjson.dumps(data)
    try:
        expected = decode(LabelObserved, value)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as caught:
            decode_label_fields(orjson.loads(value), value)
        assert (caught.value.error_class, caught.value.reason) == (exc.error_class, exc.reason)
        assert caught.value.raw == value
        return
    got = decode_label_fields(orjson.loads(value), value)
    assert (got.request_id, got.model, got.label, got.features) == (
        expected.request_id, expected.model, expected.label, expected.features
    )  # fmt: skip
    assert type(got.label) is type(expected.label)
    assert _types(got.features) == _types(expected.features)
    if "observed_at" in data:  # without it, each decode stamps its own "now"
        assert got.observed_at == expected.observed_at
        assert _observed_at_bytes(got.observed_at) == _observed_at_bytes(expected.observed_at)
    if isinstance(got, LabelObserved):  # pydantic judged it, from the dict already parsed
        ignored = set() if "observed_at" in data else {"observed_at"}
        assert got.model_dump(exclude=ignored) == expected.model_dump(exclude=ignored)


@settings(max_examples=1500, deadline=None)
@given(predictions)
def test_predictions_read_by_hand_agree_with_the_contract(data: dict[str, object]) -> None:
    value = orjson.dumps(data)
    try:
        expected = decode(PredictionMade, value)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as caught:
            decode_prediction_fields(orjson.loads(value), value)
        assert (caught.value.error_class, caught.value.reason) == (exc.error_class, exc.reason)
        return
    got = decode_prediction_fields(orjson.loads(value), value)
    fields = ("request_id", "model", "version", "snapshot", "route", "prediction", "proba",
              "features")  # fmt: skip
    assert [getattr(got, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert type(got.prediction) is type(expected.prediction)
    assert _types(got.features) == _types(expected.features)
    assert _types(got.proba) == _types(expected.proba)


def test_usual_records_take_the_hand_path_and_unusual_ones_pydantic() -> None:
    label = encode(LabelObserved(request_id="r1", model=MODEL, label=True, features={"x": 1.0},
                                 observed_at=datetime(2026, 1, 1, 12, tzinfo=UTC)))  # fmt: skip
    assert isinstance(decode_label_fields(orjson.loads(label), label), LabelFields)
    made = PredictionMade(
        request_id="r1", model=MODEL, version=1, snapshot=2, route="champion", prediction=True,
        proba={"True": 0.75, "False": 0.25}, features={"x": 1.0},
        scored_at=datetime(2026, 1, 1, 12, tzinfo=UTC), latency_ms=1.5,
    )  # fmt: skip
    raw = encode(made)
    assert isinstance(decode_prediction_fields(orjson.loads(raw), raw), PredictionFields)
    # The scorer writes scored_at with isoformat's +00:00.
    data = {**orjson.loads(raw), "scored_at": "2026-01-01T12:00:00.123456+00:00"}
    assert isinstance(decode_prediction_fields(data, orjson.dumps(data)), PredictionFields)
    odd = {**orjson.loads(label), "observed_at": "2026-01-01T14:00:00+02:00"}
    assert isinstance(decode_label_fields(odd, orjson.dumps(odd)), LabelObserved)
    # A model name the contract refuses is refused however the record looks.
    bad = {**orjson.loads(label), "model": "bad name"}
    with pytest.raises(DecodeError, match="model"):
        decode_label_fields(bad, orjson.dumps(bad))


datetimes = st.one_of(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)),
                                            timezone(timedelta(hours=-5, minutes=-30))])),
    st.datetimes(),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.1+02:00",
                     "2026-01-01T00:00:00.120000+00:00", "2026-01-01T00:00:00"]).map(
        lambda s: LabelObserved(request_id="r", model=MODEL, label=1, observed_at=s).observed_at
    ),
)  # fmt: skip
outcome_labels = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1),
                           st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3))
finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=500, deadline=None)
@given(
    st.text(min_size=1, max_size=5), st.integers(0, 2**40), st.integers(0, 2**40),
    st.text(max_size=8), outcome_labels, outcome_labels, finite,
    st.one_of(st.none(), st.dictionaries(st.text(max_size=3), finite, max_size=3)), datetimes,
)
def test_outcomes_render_as_the_contract_encodes_them(
    request_id: str, version: int, snapshot: int, route: str, prediction: object, label: object,
    loss: float, proba: dict[str, float] | None, observed_at: datetime,
) -> None:  # fmt: skip
    fields = dict(request_id=request_id, model=MODEL, version=version, snapshot=snapshot,
                  route=route, prediction=prediction, label=label, loss=loss, proba=proba,
                  observed_at=observed_at)  # fmt: skip
    assert outcome_value(Outcome(**fields)) == encode(OutcomeRecorded(**fields))  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=3), st.one_of(finite, st.text(max_size=3)),
                    min_size=1, max_size=3),
    outcome_labels, datetimes, st.booleans(), outcome_labels,
    st.one_of(st.none(), st.dictionaries(st.text(max_size=3), finite, max_size=3)),
)  # fmt: skip
def test_a_join_writes_the_same_bytes_from_hand_read_and_validated_records(
    features: dict[str, float | str], label: object, observed_at: datetime, predicted: bool,
    prediction: object, proba: dict[str, float] | None,
) -> None:  # fmt: skip
    """From either reading of a label and its prediction: the same example and outcome bytes."""
    made = PredictionMade(request_id="r1", model=MODEL, version=2, snapshot=7, route="canary",
                          prediction=prediction, proba=proba, features=features,
                          scored_at=observed_at, latency_ms=1.0)  # type: ignore[arg-type]
    seen = LabelObserved(request_id="r1", model=MODEL, label=label, observed_at=observed_at)  # type: ignore[arg-type]
    hand_made = PredictionFields("r1", MODEL, 2, 7, "canary", made.prediction, made.proba,
                                 made.features, made.scored_at)  # fmt: skip
    hand_seen = LabelFields("r1", MODEL, seen.label, seen.observed_at, None)
    out = []
    for window_prediction, window_label in ((made, seen), (hand_made, hand_seen)):
        window = JoinWindow(MODEL)
        if predicted:
            window.add_prediction(window_prediction, 1_000)
        try:
            decision = window.join_one(window_label, 2_000)
        except ValidationError:
            out.append("refused")  # a regressor's squared error overflowed: refused alike
            continue
        if not isinstance(decision, Joined):
            out.append(decision)
            continue
        example, outcome = decision
        out.append((example_value(example),
                    outcome_value(outcome) if outcome is not None else None))  # fmt: skip
        if outcome is not None:  # the outcome is the contract's, byte for byte
            assert outcome_value(outcome) == encode(OutcomeRecorded(**outcome._asdict()))
        assert example_value(example) == encode(ExampleJoined(**example._asdict()))
    assert out[0] == out[1]


def test_a_non_finite_loss_is_refused_by_the_contract_as_before() -> None:
    window = JoinWindow(MODEL)
    window.add_prediction(PredictionFields("r1", MODEL, 1, 0, "champion", 1e200, None, {"x": 1.0}),
                          1_000)  # fmt: skip
    label = LabelFields("r1", MODEL, -1e200, datetime(2026, 1, 1, tzinfo=UTC), None)
    with pytest.raises(ValidationError, match="loss"):
        window.join_one(label, 2_000)
