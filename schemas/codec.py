"""Bytes to events and back: the only place riverrun parses or renders a record.

A decode failure raises `DecodeError`, which keeps the raw bytes (a dead letter needs them) and
names what is wrong: an error class, the field path and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import orjson
from pydantic import ValidationError

from riverrun.schemas.events import (
    Event,
    LabelObserved,
    PredictionMade,
    PredictionRequested,
    utc_now,
)

E = TypeVar("E", bound=Event)
F = TypeVar("F")


class DecodeError(ValueError):
    """A record that cannot become an event. Disposition: dead-letter and continue."""

    def __init__(self, error_class: str, reason: str, raw: bytes | None) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason
        self.raw = raw


def _describe(exc: ValidationError) -> str:
    """One line per failed field: `features.x1: Input should be a finite number`."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:5]:
        path = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{path}: {error['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_json(raw: bytes | None, max_bytes: int | None = None) -> Any:
    """Parse a record's value as JSON, classifying the ways it can fail."""
    if not raw:
        raise DecodeError("EmptyValue", "the record has no value (null or empty)", raw)
    if max_bytes is not None and len(raw) > max_bytes:
        raise DecodeError(
            "Oversized", f"the value is {len(raw)} bytes, over the limit of {max_bytes}", raw
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf:
            raise DecodeError(
                "NotUtf8", f"the value is not UTF-8 (byte {utf.start}: {utf.reason})", raw
            ) from exc
        raise DecodeError("NotJson", f"the value is not JSON: {exc}", raw) from exc


def decode(event_type: type[E], raw: bytes | None, max_bytes: int | None = None) -> E:
    """Turn a record's value into an event of the given type."""
    return _validated(event_type, parse_json(raw, max_bytes), raw)


def _validated(event_type: type[E], data: Any, raw: bytes | None) -> E:
    if not isinstance(data, dict):
        raise DecodeError(
            "InvalidEvent", f"the value is JSON {type(data).__name__}, expected an object", raw
        )
    try:
        return event_type.model_validate(data)
    except ValidationError as exc:
        raise DecodeError("InvalidEvent", _describe(exc), raw) from exc


def decode_request(raw: bytes | None, max_bytes: int | None = None) -> PredictionRequested:
    """Decode a prediction request, the hot path's one validation step."""
    return decode(PredictionRequested, raw, max_bytes)


class RequestFields(NamedTuple):
    """The parts of a `PredictionRequested` the scorer uses, without building a model object."""

    request_id: str
    model: str
    features: dict[str, float | str]
    key: str | None


# The rare fields take the full pydantic path; the hot path checks the four it needs by hand.
_FAST_FIELDS = frozenset({"request_id", "model", "features", "key"})
_SLOW_FIELDS = frozenset(PredictionRequested.model_fields) - _FAST_FIELDS
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # whole name: fullmatch
_good_model_names: set[str] = set()
_REQUEST_ID_MAX = 128
_KEY_MAX = 256


def _fast_fields(data: dict[str, Any]) -> RequestFields | None:
    """The same acceptance rules as `PredictionRequested`, by hand; None means "ask pydantic"."""
    if not _SLOW_FIELDS.isdisjoint(data):
        return None
    request_id = data.get("request_id")
    model = data.get("model")
    features = data.get("features")
    key = data.get("key")
    if type(request_id) is not str or not 0 < len(request_id) <= _REQUEST_ID_MAX:
        return None
    if type(model) is not str or not is_good_model_name(model):
        return None
    if key is not None and (type(key) is not str or len(key) > _KEY_MAX):
        return None
    checked = _fast_features(features)
    if checked is None:
        return None
    return RequestFields(request_id, model, checked, key)


def is_good_model_name(model: str) -> bool:
    """Whether a model name is one the contract takes (names seen are remembered)."""
    if model in _good_model_names:
        return True
    if not _MODEL_NAME.fullmatch(model) or len(_good_model_names) > 10_000:
        return False
    _good_model_names.add(model)
    return True


def _fast_features(features: Any) -> dict[str, float | str] | None:
    """The `Features` rules by hand, ints made floats in place; None means "ask pydantic"."""
    if type(features) is not dict or not 0 < len(features) <= 4096:
        return None
    for name, value in features.items():
        if not 0 < len(name) <= 256:
            return None
        kind = type(value)
        # orjson never yields NaN or infinity, so a float from it is always finite.
        if kind is float:  # the usual value, asked first
            continue
        if kind is int or kind is bool:
            features[name] = float(value)
        elif kind is not str or len(value) > 1024:
            return None
    return features


def decode_request_fields(raw: bytes | None, max_bytes: int | None = None) -> RequestFields:
    """Decode a prediction request on the hot path: the model's rules, without the model.

    Accepts exactly what `decode_request` accepts (a property test holds the two together);
    anything unusual goes through pydantic, which also explains a refusal.
    """
    data = parse_json(raw, max_bytes)
    if type(data) is dict:
        fields = _fast_fields(data)
        if fields is not None:
            return fields
    request = decode(PredictionRequested, raw, max_bytes)
    return RequestFields(request.request_id, request.model, request.features, request.key)


# The learner reads every label and prediction of its model: their usual shape is checked by
# hand too, and anything unusual (a field of another type, a timestamp not in UTC) goes through
# pydantic, which also explains a refusal. Property tests hold the two together.
# A datetime in UTC as riverrun's producers write it (pydantic's `Z`, isoformat's `+00:00`).
_UTC_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|\+00:00)")
_LABEL_TYPES = (bool, int, float, str)
_ABSENT = object()  # a field not in the record (null is a value)


class LabelFields(NamedTuple):
    """The parts of a `LabelObserved` the join uses, without building a model object."""

    request_id: str
    model: str
    label: bool | int | float | str
    observed_at: datetime
    features: dict[str, float | str] | None


class PredictionFields(NamedTuple):
    """The parts of a `PredictionMade` the join uses, without building a model object."""

    request_id: str
    model: str
    version: int
    snapshot: int
    route: str
    prediction: bool | int | float | str
    proba: dict[str, float] | None
    features: dict[str, float | str]
    scored_at: datetime | None = None


def decode_label_fields(data: Any, raw: bytes | None) -> LabelFields | LabelObserved:
    """Decode feedback parsed from `raw` as `decode(LabelObserved, raw)` would.

    Usually by hand; the dict parsed is consumed (features' ints become floats).

    Raises:
        DecodeError: the record breaks the contract (from pydantic, with the field path).

    """
    return _by_hand_or_validated(LabelObserved, _label_fields, data, raw)


def decode_prediction_fields(data: Any, raw: bytes | None) -> PredictionFields | PredictionMade:
    """Decode a prediction parsed from `raw` as `decode(PredictionMade, raw)` would.

    Usually by hand; the dict parsed is consumed (features' ints become floats).

    Raises:
        DecodeError: the record breaks the contract (from pydantic, with the field path).

    """
    return _by_hand_or_validated(PredictionMade, _prediction_fields, data, raw)


def _by_hand_or_validated(
    event_type: type[E], by_hand: Callable[[dict[str, Any]], F | None], data: Any, raw: bytes | None
) -> F | E:
    # The usual shape is checked by hand; anything else (or a refusal) is pydantic's to judge,
    # from the dict already parsed.
    if type(data) is dict:
        fields = by_hand(data)
        if fields is not None:
            return fields
    return _validated(event_type, data, raw)


def _label_fields(data: dict[str, Any]) -> LabelFields | None:
    """Check `LabelObserved`'s rules by hand; None means "ask pydantic"."""
    get = data.get
    version = get("schema_version", 1)
    if type(version) is not int or version < 1:
        return None
    request_id = get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= _REQUEST_ID_MAX:
        return None
    model = get("model")
    if type(model) is not str or not is_good_model_name(model):
        return None
    label: Any = get("label")
    if type(label) not in _LABEL_TYPES:
        return None
    key = get("key")
    if key is not None and (type(key) is not str or len(key) > _KEY_MAX):
        return None
    features: Any = get("features")
    if features is not None and _fast_features(features) is None:
        return None
    observed = get("observed_at", _ABSENT)
    if observed is not _ABSENT:
        observed_at = utc_datetime(observed)
        if observed_at is None:
            return None
    else:
        observed_at = utc_now()  # the contract's default, as pydantic would stamp it
    return LabelFields(request_id, model, label, observed_at, features)


def _prediction_fields(data: dict[str, Any]) -> PredictionFields | None:
    """Check `PredictionMade`'s rules by hand; None means "ask pydantic"."""
    version = data.get("schema_version", 1)
    if type(version) is not int or version < 1:
        return None
    request_id = data.get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= _REQUEST_ID_MAX:
        return None
    model = data.get("model")
    if type(model) is not str or not is_good_model_name(model):
        return None
    model_version = data.get("version")
    snapshot = data.get("snapshot")
    if type(model_version) is not int or model_version < 0:
        return None
    if type(snapshot) is not int or snapshot < 0:
        return None
    route = data.get("route")
    prediction: Any = data.get("prediction")
    if type(route) is not str or type(prediction) not in _LABEL_TYPES:
        return None
    proba = data.get("proba")
    if proba is not None and not _proba(proba):
        return None
    features: Any = data.get("features")
    if _fast_features(features) is None:
        return None
    latency_ms = data.get("latency_ms")
    if type(latency_ms) is not float or latency_ms < 0.0:
        return None
    scored_at = utc_datetime(data.get("scored_at"))
    if scored_at is None:
        return None
    return PredictionFields(request_id, model, model_version, snapshot, route, prediction,
                            proba, features, scored_at)  # fmt: skip


def _proba(proba: Any) -> bool:
    if type(proba) is not dict:
        return False
    return all(type(p) is float for p in proba.values())


def utc_datetime(value: Any) -> datetime | None:
    """A timestamp in UTC as riverrun's producers write it, or None for pydantic to judge."""
    if type(value) is not str or _UTC_TIMESTAMP.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # out of range (a 13th month, a leap second): pydantic says why
        return None


def encode(event: Event) -> bytes:
    """Render an event as compact JSON bytes."""
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def encode_dict(payload: dict[str, Any]) -> bytes:
    """Render an already-shaped payload (the hot path builds dicts, not models)."""
    return orjson.dumps(payload)
