"""The scorer's own codec: requests read and checked in one pass, predictions rendered from structs.

The hot path's bytes go through msgspec, which parses a request and checks the contract's rules
on it in C, and renders a prediction several times faster than a dict through orjson (the
features' floats most of all). A request's features are kept as the bytes they came in as, so
the prediction echoes them without rendering them again. Anything unusual (a field only
pydantic judges, a bool feature, a refusal to explain) goes through `riverrun.schemas`' codec,
which accepts and refuses exactly as the contract does; property tests hold the two together.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from riverrun.schemas import SCHEMA_VERSION, RequestFields, decode_request_fields
from riverrun.schemas.codec import is_good_model_name, utc_datetime

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Value = float | Annotated[str, msgspec.Meta(max_length=1024)]
_Features = Annotated[dict[_Name, _Value], msgspec.Meta(min_length=1, max_length=4096)]


class _Request(msgspec.Struct, gc=False):
    """A request's usual shape, as riverrun's client writes it; anything else is pydantic's."""

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    model: str
    features: msgspec.Raw
    key: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    schema_version: Annotated[int, msgspec.Meta(ge=1)] = 1
    sent_at: Any = None  # checked by `utc_datetime`: other forms are pydantic's to judge
    context: dict[str, str] | None = None


class Request(msgspec.Struct, gc=False):
    """A request ready to score: its fields, and its features' bytes to echo (None: render)."""

    request_id: str
    model: str
    features: dict[str, float | str]
    key: str | None
    echo: msgspec.Raw | None


class Prediction(msgspec.Struct, omit_defaults=True, gc=False):
    """A `PredictionMade` as the scorer writes it (the contract's field order; None omitted)."""

    schema_version: int
    request_id: str
    model: str
    version: int
    snapshot: int
    route: str
    prediction: Any
    features: Any  # the request's bytes (msgspec.Raw) or a dict
    scored_at: str
    latency_ms: float
    proba: dict[str, float] | None = None
    key_examples: int | None = None
    key_weight: float | None = None


# The structs hold only strings, numbers and flat dicts, never themselves: no cycle for the
# collector to find, so they are kept out of its count (gc=False) and do not bring it on sooner.
_read_request = msgspec.json.Decoder(_Request).decode
_read_features = msgspec.json.Decoder(_Features).decode
render = msgspec.json.Encoder().encode
_REFUSED = (msgspec.DecodeError, msgspec.ValidationError)


def read_request(raw: bytes | None, max_bytes: int) -> Request:
    """A request from a record's value, or `DecodeError` naming what is wrong with it."""
    if raw and len(raw) <= max_bytes:
        try:
            shell = _read_request(raw)
            features = _read_features(shell.features)
        except _REFUSED:
            pass
        else:
            sent_at = shell.sent_at
            if is_good_model_name(shell.model) and (sent_at is None or utc_datetime(sent_at)):
                return Request(shell.request_id, shell.model, features, shell.key, shell.features)
    fields: RequestFields = decode_request_fields(raw, max_bytes)
    return Request(fields.request_id, fields.model, fields.features, fields.key, None)


def prediction_bytes(
    request: Request,
    name: str,
    version: int,
    snapshot: int,
    route: str,
    prediction: Any,
    proba: dict[str, float] | None,
    scored_at: str,
    latency_ms: float,
    key_examples: int | None = None,
    key_weight: float | None = None,
) -> bytes:
    """One prediction's JSON bytes."""
    echo = request.echo
    return render(Prediction(
        SCHEMA_VERSION, request.request_id, name, version, snapshot, route, prediction,
        request.features if echo is None else echo, scored_at, latency_ms, proba, key_examples,
        key_weight,
    ))  # fmt: skip
