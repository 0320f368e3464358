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

from riverrun.schemas import RequestFields, decode_request_fields
from riverrun.schemas.codec import is_good_model_name, utc_datetime

_NAME_MAX = 256
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=_NAME_MAX)]
_Value = float | Annotated[str, msgspec.Meta(max_length=1024)]
_Features = Annotated[dict[_Name, _Value], msgspec.Meta(min_length=1, max_length=4096)]
# In features of at most _NAME_MAX bytes no name can be longer (a character takes a byte at
# least): checking each name's length, a third of the decoding, is left out; "" is looked for.
_ShortFeatures = Annotated[dict[str, _Value], msgspec.Meta(min_length=1)]


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
_read_short_features = msgspec.json.Decoder(_ShortFeatures).decode
_known_models: set[str] = set()  # names already found good: a set lookup, not a call
render = msgspec.json.Encoder().encode
_REFUSED = (msgspec.DecodeError, msgspec.ValidationError)


def read_request(raw: bytes | None, max_bytes: int) -> Request:
    """A request from a record's value, or `DecodeError` naming what is wrong with it."""
    if raw and len(raw) <= max_bytes:
        try:
            shell = _read_request(raw)
            echo = shell.features
            if len(echo) <= _NAME_MAX:
                features = _read_short_features(echo)
                if "" in features:
                    raise msgspec.ValidationError
            else:
                features = _read_features(echo)
        except _REFUSED:
            pass
        else:
            model, sent_at = shell.model, shell.sent_at
            if (model in _known_models or _remember(model)) and (
                sent_at is None or utc_datetime(sent_at)
            ):
                return Request(shell.request_id, model, features, shell.key, echo)
    fields: RequestFields = decode_request_fields(raw, max_bytes)
    return Request(fields.request_id, fields.model, fields.features, fields.key, None)


def _remember(model: str) -> bool:
    if not is_good_model_name(model):
        return False
    if len(_known_models) < 10_000:
        _known_models.add(model)
    return True
