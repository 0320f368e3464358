"""The scorer's codec: it accepts and refuses requests exactly as the contract does, and the
predictions it renders are `PredictionMade` events that echo the features the request sent."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riverrun.schemas import DecodeError, PredictionMade, decode, decode_request
from riverrun.schemas.codec import decode_prediction_fields
from riverrun.workers.scorer.wire import Prediction, read_request, render
from tests.unit.test_codec import requests

LIMIT = 65_536


def contract_or_refusal(value: bytes) -> tuple[str, str, dict[str, object], str | None] | str:
    """What the contract makes of a request: its fields, or the class of its refusal."""
    try:
        request = decode_request(value, LIMIT)
    except DecodeError as exc:
        return exc.error_class
    return request.request_id, request.model, dict(request.features), request.key


def read_or_refusal(value: bytes) -> tuple[str, str, dict[str, object], str | None] | str:
    try:
        request = read_request(value, LIMIT)
    except DecodeError as exc:
        return exc.error_class
    for name, number in request.features.items():
        if not isinstance(number, str):
            assert isinstance(number, float) and math.isfinite(number), name
    return request.request_id, request.model, request.features, request.key


@settings(max_examples=500, deadline=None)
@given(requests, st.booleans())
def test_the_scorer_reads_requests_as_the_contract_does(
    data: dict[str, object], spaced: bool
) -> None:
    # Compact (as most producers write) or spaced out (as people do): the same answer.
    value = json.dumps(data, indent=1).encode() if spaced else orjson.dumps(data)
    assert read_or_refusal(value) == contract_or_refusal(value)


@pytest.mark.parametrize(
    "value",
    [
        b'{"request_id":"a","model":"m","features":{"x":123456789012345678901234567890}}',
        b'{"request_id":"a","request_id":"b","model":"m","features":{"x":1}}',
        b'{"request_id":"a","model":"m","features":{"x":1,"x":"s"}}',
        b'{"request_id":"a","model":"m","features":{"x":true,"y":-0}}',
        b'{"request_id":"a","model":"m","features":{"x":1.5},"other":[1,{"deep":[2]}]}',
        b'{"request_id":"a","model":"m","features":{"\\u00e9t\\u00e9":1.5},"key":null}',
        b'{"request_id":"\\ud800","model":"m","features":{"x":1}}',
        b'{"request_id":"a","model":"m","features":{"x":1e999}}',
        b'{"request_id":"a","model":"m","features":{"x":NaN}}',
        b'{"request_id":"a","model":"m\\n","features":{"x":1}}',
        b'{"request_id":"a","model":"m","features":{"x":1},"schema_version":0}',
        b'{"request_id":"a","model":"m","features":{"x":1},"sent_at":"noon"}',
        b'{"request_id":"a","model":"m","features":{"x":1},"context":{"trace":"t"}}',
        b'\xef\xbb\xbf{"request_id":"a","model":"m","features":{"x":1}}',
        b'{"request_id":"a","model":"m","features":{"x":"\xff"}}',
        b'{"request_id":"a","model":"m","features":{"x":1}} trailing',
        b"",
        orjson.dumps({"request_id": "a", "model": "m", "features": {"": 1.0}}),
        orjson.dumps({"request_id": "a", "model": "m", "features": {"x" * 257: 1.0}}),
        orjson.dumps({"request_id": "a", "model": "m", "features": {"x" * 256: 1.0}}),
        orjson.dumps({"request_id": "a", "model": "m",
                      "features": {f"feature_{i}": float(i) for i in range(40)}}),
        orjson.dumps({"request_id": "a", "model": "m",
                      "features": {**{f"f{i}": 1.0 for i in range(40)}, "": 2.0}}),
    ],
)
def test_unusual_requests_are_read_as_the_contract_reads_them(value: bytes) -> None:
    assert read_or_refusal(value) == contract_or_refusal(value)


SENT_AT = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456+00:00", "2026-13-01T00:00:00Z",
           "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00+02:00", "2026-01-01T00:00:00",
           "yesterday", 1_700_000_000, None, True]
SCHEMA_VERSIONS = [1, 2, 0, -1, "1", 1.0, 1.5, True, None, 2**62]
CONTEXTS = [{"trace": "t"}, {}, {"n": 1}, {"nested": {"a": "b"}}, ["t"], "t", None]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SENT_AT), st.sampled_from(SCHEMA_VERSIONS), st.sampled_from(CONTEXTS),
       st.sets(st.sampled_from(["sent_at", "schema_version", "context"])))
def test_the_fields_the_scorer_does_not_use_are_judged_as_the_contract_does(
    sent_at: object, version: object, context: object, present: set[str]
) -> None:
    data: dict[str, object] = {"request_id": "r", "model": "m", "features": {"x": 1.0}}
    given_fields = {"sent_at": sent_at, "schema_version": version, "context": context}
    data.update({name: given_fields[name] for name in present})
    value = orjson.dumps(data)
    assert read_or_refusal(value) == contract_or_refusal(value)


def test_a_request_over_the_limit_is_refused_before_it_is_read() -> None:
    value = orjson.dumps({"request_id": "a", "model": "m", "features": {"x": 1.0}})
    with pytest.raises(DecodeError) as caught:
        read_request(value, len(value) - 1)
    assert caught.value.error_class == "Oversized"


def prediction(value: bytes, **changes: object) -> bytes:
    request = read_request(value, LIMIT)
    fields: dict[str, object] = {
        "schema_version": 1, "request_id": request.request_id, "model": request.model,
        "version": 2, "snapshot": 7, "route": "champion", "prediction": True,
        "features": request.features if request.echo is None else request.echo,
        "scored_at": "2026-12-05T19:34:28.123456+00:00", "latency_ms": 1.25,
        "proba": {"False": 0.25, "True": 0.75},
    }  # fmt: skip
    fields.update(changes)
    return render(Prediction(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        b'{"request_id":"r1","model":"fraud","features":{"amount":12,"country":"fr"}}',
        b'{ "request_id" : "r1", "model": "fraud",\n'
        b' "features": {"amount": 12.5,\n "flag": true} }',
    ],
)
def test_a_prediction_is_the_contract_event_and_echoes_the_features(value: bytes) -> None:
    rendered = prediction(value)
    made = decode(PredictionMade, rendered)
    assert made.request_id == "r1" and made.version == 2 and made.snapshot == 7
    assert made.proba == {"False": 0.25, "True": 0.75}
    assert made.features == decode_request(value).features
    assert made.key_examples is None and made.key_weight is None
    # The learner's own reading of it agrees (features' ints become floats there too).
    joined = decode_prediction_fields(orjson.loads(rendered), rendered)
    assert joined.features == decode_request(value).features


def test_absent_fields_are_left_out_of_a_prediction() -> None:
    value = b'{"request_id":"r1","model":"m","features":{"x":1.0}}'
    plain = orjson.loads(prediction(value, proba=None))
    assert "proba" not in plain and "key_examples" not in plain and "key_weight" not in plain
    keyed = orjson.loads(prediction(value, key_examples=3, key_weight=0.25))
    assert keyed["key_examples"] == 3 and keyed["key_weight"] == 0.25


@pytest.mark.parametrize("features", [{"x": 1.5, "country": "fr"},
                                      {f"feature_{i}": float(i) for i in range(40)}])
def test_usual_requests_keep_their_features_bytes_to_echo(features: dict[str, object]) -> None:
    value = orjson.dumps({"request_id": "r", "model": "m", "features": features,
                          "sent_at": "2026-12-05T19:34:28.123456Z"})
    request = read_request(value, LIMIT)
    assert request.echo is not None and orjson.loads(bytes(request.echo)) == features
