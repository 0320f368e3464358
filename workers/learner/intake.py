"""The learner's inputs, labels and predictions, read by their contracts' rules checked by hand.

Every label and every prediction of the model passes here, so pydantic's validation of each
would cost more than the join itself. `Intake` accepts exactly what `decode_label` and
`decode(PredictionMade, …)` accept and yields equal fields, but checks the common shape by
hand; anything unusual (a field of another type, a timestamp not in UTC, a model name the
contract refuses) goes through pydantic, which also explains a refusal. Property tests hold
the two together.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

from schemas import LabelObserved, PredictionMade, decode, decode_label, utc_now

_REQUEST_ID_MAX = 128
_KEY_MAX = 256
_FEATURES_MAX = 4096
_FEATURE_NAME_MAX = 256
_FEATURE_TEXT_MAX = 1024
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A datetime in UTC as riverrun's producers write it (pydantic's `Z`, isoformat's `+00:00`);
# other ISO 8601 spellings are left to pydantic.
_UTC_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|\+00:00)")
_LABEL_TYPES = (bool, int, float, str)


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


class Intake:
    """Read the labels and predictions of one model; its name is checked once, not per record.

    The records given are already parsed (the loop parses once, to route by model) and are
    this model's; the dicts they parsed to are consumed (features' ints become floats).
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._model_ok = _MODEL_NAME.fullmatch(model) is not None

    def read_label(self, data: Any, raw: bytes | None) -> LabelFields | LabelObserved:
        """Decode feedback parsed from `raw`, as `decode_label(data, raw)` would.

        Raises:
            DecodeError: the record breaks the contract (from pydantic, with the field path).

        """
        if type(data) is dict and self._model_ok and data.get("model") == self.model:
            fields = _label_fields(data)
            if fields is not None:
                return fields
        return decode_label(data, raw)

    def read_prediction(self, data: Any, raw: bytes | None) -> PredictionFields | PredictionMade:
        """Decode a prediction parsed from `raw`, as `decode(PredictionMade, raw)` would.

        Raises:
            DecodeError: the record breaks the contract (from pydantic, with the field path).

        """
        if type(data) is dict and self._model_ok and data.get("model") == self.model:
            fields = _prediction_fields(data)
            if fields is not None:
                return fields
        return decode(PredictionMade, raw)


def _label_fields(data: dict[str, Any]) -> LabelFields | None:
    """Check `LabelObserved`'s rules by hand; None means "ask pydantic"."""
    version = data.get("schema_version", 1)
    if type(version) is not int or version < 1:
        return None
    request_id = data.get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= _REQUEST_ID_MAX:
        return None
    label: Any = data.get("label")
    if type(label) not in _LABEL_TYPES:
        return None
    key = data.get("key")
    if key is not None and (type(key) is not str or len(key) > _KEY_MAX):
        return None
    features: Any = data.get("features")
    if features is not None and not _features(features):
        return None
    if "observed_at" in data:
        observed_at = _utc_datetime(data["observed_at"])
        if observed_at is None:
            return None
    else:
        observed_at = utc_now()  # the contract's default, as pydantic would stamp it
    return LabelFields(request_id, data["model"], label, observed_at, features)


def _prediction_fields(data: dict[str, Any]) -> PredictionFields | None:
    """Check `PredictionMade`'s rules by hand; None means "ask pydantic"."""
    version = data.get("schema_version", 1)
    if type(version) is not int or version < 1:
        return None
    request_id = data.get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= _REQUEST_ID_MAX:
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
    if not _features(features):
        return None
    latency_ms = data.get("latency_ms")
    if type(latency_ms) is not float or latency_ms < 0.0:
        return None
    if _utc_datetime(data.get("scored_at")) is None:
        return None
    return PredictionFields(request_id, data["model"], model_version, snapshot, route, prediction,
                            proba, features)  # fmt: skip


def _features(features: Any) -> bool:
    """Check the `Features` rules by hand, making ints (and booleans) floats as pydantic does.

    orjson never yields NaN or infinity, so a float from it is always finite.
    """
    if type(features) is not dict or not 0 < len(features) <= _FEATURES_MAX:
        return False
    for name, value in features.items():
        if not 0 < len(name) <= _FEATURE_NAME_MAX:
            return False
        kind = type(value)
        if kind is int or kind is bool:
            features[name] = float(value)
        elif kind is not float and (kind is not str or len(value) > _FEATURE_TEXT_MAX):
            return False
    return True


def _proba(proba: Any) -> bool:
    if type(proba) is not dict:
        return False
    return all(type(p) is float for p in proba.values())


def _utc_datetime(value: Any) -> datetime | None:
    if type(value) is not str or _UTC_TIMESTAMP.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # out of range (a 13th month, a leap second): pydantic says why
        return None
