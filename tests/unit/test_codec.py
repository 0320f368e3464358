"""The codec: every way a request can be malformed gets its own class and a readable reason."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riverrun.schemas import (
    EVENTS,
    DeadLetter,
    DecodeError,
    LabelObserved,
    PredictionRequested,
    decode,
    decode_request,
    decode_request_fields,
    encode,
)

GOOD = {"request_id": "r1", "model": "fraud", "features": {"amount": 12.5, "country": "fr"}}


def raw(**changes: object) -> bytes:
    return orjson.dumps({**GOOD, **changes})


@pytest.mark.parametrize(
    ("value", "error_class", "reason_part"),
    [
        (None, "EmptyValue", "no value"),
        (b"", "EmptyValue", "no value"),
        (b"\xff\xfe\x00garbage", "NotUtf8", "not UTF-8"),
        (b"{not json", "NotJson", "not JSON"),
        (b"[1, 2]", "InvalidEvent", "expected an object"),
        (b'{"request_id":"r","model":"m","features":{"x":NaN}}', "NotJson", "not JSON"),
        (b'{"request_id":"r","model":"m","features":{"x":1e999}}', "NotJson", "infinity"),
        (raw(features={"x": {"nested": 1}}), "InvalidEvent", "features.x"),
        (raw(features={"x": [1, 2]}), "InvalidEvent", "features.x"),
        (raw(features={}), "InvalidEvent", "features"),
        (raw(request_id=7), "InvalidEvent", "request_id"),
        (raw(model="no spaces allowed"), "InvalidEvent", "model"),
        (orjson.dumps({"model": "m", "features": {"x": 1.0}}), "InvalidEvent", "request_id: Field required"),
        (raw(features={"x": None}), "InvalidEvent", "features.x"),
    ],
)
def test_malformed_requests_are_classified(value: bytes | None, error_class: str, reason_part: str) -> None:
    for decoder in (decode_request, decode_request_fields):
        with pytest.raises(DecodeError) as caught:
            decoder(value)
        assert caught.value.error_class == error_class
        assert reason_part in caught.value.reason
        assert caught.value.raw == value


def test_oversized_request_is_refused_before_parsing() -> None:
    big = raw(features={f"f{i}": float(i) for i in range(200)})
    with pytest.raises(DecodeError) as caught:
        decode_request_fields(big, max_bytes=1024)
    assert caught.value.error_class == "Oversized"
    assert str(len(big)) in caught.value.reason


def test_unknown_fields_are_ignored_so_old_workers_survive_new_producers() -> None:
    request = decode_request(raw(brand_new_field={"anything": 1}))
    assert request.request_id == "r1"


def test_every_event_round_trips_through_the_codec() -> None:
    request = PredictionRequested(**GOOD)
    assert decode(PredictionRequested, encode(request)) == request
    label = LabelObserved(request_id="r1", model="fraud", label=True)
    assert decode(LabelObserved, encode(label)) == label
    assert set(EVENTS) >= {"PredictionRequested", "PredictionMade", "LabelObserved", "DeadLetter",
                           "ModelVersionReleased", "SnapshotPublished", "PolicyChanged",
                           "OutcomeRecorded"}


def test_events_are_frozen() -> None:
    request = PredictionRequested(**GOOD)
    with pytest.raises(Exception, match="frozen"):
        request.model = "other"  # type: ignore[misc]  # the point of the test


def test_dead_letter_headers_round_trip() -> None:
    letter = DeadLetter(error_class="NotJson", reason="bad", source_topic="requests",
                        source_partition=3, source_offset=42, worker="w1")
    assert DeadLetter.from_headers(letter.to_headers()) == letter


# The hot path's hand-written checks must accept exactly what the pydantic model accepts.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
feature_values = st.one_of(json_scalars, st.lists(st.integers(0, 9), max_size=2),
                           st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2))
requests = st.fixed_dictionaries(
    {},
    optional={
        "request_id": st.one_of(st.text(max_size=130), st.integers(-(2**53), 2**53)),
        "model": st.one_of(st.sampled_from(["fraud", "m-1", "a.b_c", "fraud\n"]),
                           st.text(max_size=70)),
        "features": st.one_of(
            st.dictionaries(st.text(max_size=5), feature_values, max_size=4), json_scalars
        ),
        "key": st.one_of(st.none(), st.text(max_size=5), st.integers(0, 9)),
        "sent_at": st.sampled_from(["2026-01-01T00:00:00Z", "yesterday", 1_700_000_000]),
        "extra": json_scalars,
    },
)


@settings(max_examples=400, deadline=None)
@given(requests)
def test_fast_decoder_agrees_with_the_contract(data: dict[str, object]) -> None:
    value = orjson.dumps(data)
    try:
        expected = decode_request(value)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as caught:
            decode_request_fields(value)
        assert caught.value.error_class == exc.error_class
        return
    fields = decode_request_fields(value)
    assert fields.request_id == expected.request_id
    assert fields.model == expected.model
    assert fields.key == expected.key
    assert fields.features == expected.features
    for name, number in fields.features.items():
        if not isinstance(number, str):
            assert isinstance(number, float) and math.isfinite(number), name


labels = st.fixed_dictionaries(
    {},
    optional={
        "schema_version": st.one_of(st.integers(-1, 3), st.just("1")),
        "request_id": st.one_of(st.text(max_size=130), st.integers(0, 9)),
        "model": st.one_of(st.sampled_from(["fraud", "m-1", "fraud\n"]), st.text(max_size=70)),
        "label": st.one_of(st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False,
                           allow_infinity=False), st.text(max_size=3), st.none(), st.lists(
                           st.integers(-9, 9), max_size=1)),
        "observed_at": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123+02:00",
                                        "2026-01-01T00:00:00", "2026-01-01", "noon",
                                        1_700_000_000]),
        "key": st.one_of(st.none(), st.text(max_size=5), st.integers(0, 9)),
        "features": st.one_of(
            st.none(), st.dictionaries(st.text(max_size=5), feature_values, max_size=4),
            json_scalars,
        ),
        "extra": json_scalars,
    },
)


@pytest.mark.parametrize("model", ["fraud\n", "\nfraud", "fraud\nx", "-fraud", "a" * 65])
def test_model_names_the_contract_refuses_are_refused_by_the_fast_decoder_too(model: str) -> None:
    value = orjson.dumps({"request_id": "r", "model": model, "features": {"x": 1.0}})
    with pytest.raises(DecodeError) as contract:
        decode_request(value)
    with pytest.raises(DecodeError) as fast:
        decode_request_fields(value)
    assert fast.value.error_class == contract.value.error_class == "InvalidEvent"
