"""The join of labels with features: a bounded window of predictions and the decision per label.

Pure: the loop feeds it decoded predictions and labels with their Kafka timestamps and acts on
the decisions. Time is event time (the records' timestamps), so the same records in the same
order give the same decisions, whatever the wall clock says.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from riverrun.schemas import (
    SCHEMA_VERSION,
    ExampleJoined,
    LabelFields,
    LabelObserved,
    OutcomeRecorded,
    PredictionFields,
    PredictionMade,
)
from riverrun.schemas.loss import outcome_loss

UNKNOWN_REQUEST = "UnknownRequest"
WINDOW_EXPIRED = "WindowExpired"
DUPLICATE_LABEL = "DuplicateLabel"
LABEL_TYPE_MISMATCH = "LabelTypeMismatch"
UNKNOWN_MODEL = "UnknownModel"
OUTPUT_TOO_LARGE = "OutputTooLarge"
UNJOINED_REASONS = (DUPLICATE_LABEL, LABEL_TYPE_MISMATCH, OUTPUT_TOO_LARGE, UNKNOWN_MODEL,
                    UNKNOWN_REQUEST, WINDOW_EXPIRED)  # fmt: skip


class JoinedExample(NamedTuple):
    """The fields of an `ExampleJoined`, built without validating them again (one per label)."""

    request_id: str
    model: str
    features: dict[str, float | str]
    label: Any
    observed_at: datetime
    version: int | None = None
    snapshot: int | None = None
    route: str | None = None
    prediction: Any = None
    proba: dict[str, float] | None = None
    schema_version: int = SCHEMA_VERSION
    key: str | None = None  # the feedback record's key, when it is not the request id
    key_partition: int | None = None  # the feedback partition it arrived on


class Outcome(NamedTuple):
    """The fields of an `OutcomeRecorded`, built without validating them again (one per label)."""

    request_id: str
    model: str
    version: int
    snapshot: int
    route: str
    prediction: Any
    label: Any
    loss: float
    proba: dict[str, float] | None
    observed_at: datetime
    scored_at: datetime | None = None  # the prediction's, so a judge counts it in its experiment
    schema_version: int = SCHEMA_VERSION


class Joined(NamedTuple):
    """A label that found its features: what to learn, and the outcome when one was predicted."""

    example: JoinedExample
    outcome: Outcome | None


@dataclass(frozen=True)
class Unjoined:
    """A label that cannot be learned; `reason` is one of `UNJOINED_REASONS`."""

    reason: str
    detail: str


_NONE_DROPPED: tuple[str, ...] = ()  # what `_Bounded.add` drops, usually


class _Bounded:
    """Request ids in arrival order, dropped oldest first beyond `max_count` or `max_age_ms`."""

    def __init__(self, max_count: int) -> None:
        self.max_count = max_count
        self.items: OrderedDict[str, tuple[int, object]] = OrderedDict()

    def __contains__(self, request_id: object) -> bool:
        return request_id in self.items

    def __len__(self) -> int:
        return len(self.items)

    def add(self, request_id: str, timestamp_ms: int, value: object = None) -> Sequence[str]:
        items = self.items
        items[request_id] = (timestamp_ms, value)
        if len(items) <= self.max_count:
            return _NONE_DROPPED  # the usual case, without a list per call
        dropped = []
        while len(items) > self.max_count:
            dropped.append(items.popitem(last=False)[0])
        return dropped

    def expire(self, before_ms: int) -> list[str]:
        dropped = []
        items = self.items
        while items:
            request_id, (timestamp_ms, _) = next(iter(items.items()))
            if timestamp_ms >= before_ms:
                break
            items.popitem(last=False)
            dropped.append(request_id)
        return dropped


class JoinWindow:
    """Predictions awaiting their label, and the ids already joined (to refuse duplicates).

    Bounded by count and by age: a prediction older than `max_age_ms` before the label being
    joined is dropped, and so is the oldest beyond `max_count`. Ids dropped are remembered (as
    many again) so that a late label is dead-lettered as expired rather than unknown.
    """

    def __init__(self, model: str, max_count: int = 100_000, max_age_ms: int = 3_600_000) -> None:
        if max_count < 1 or max_age_ms < 1:
            raise ValueError(
                f"join window bounds must be positive, got max_count={max_count}, "
                f"max_age_ms={max_age_ms}"
            )
        self.model = model
        self.max_age_ms = max_age_ms
        self._pending = _Bounded(max_count)
        self._expired = _Bounded(max_count)
        self._joined = _Bounded(max_count)

    def __len__(self) -> int:
        return len(self._pending)

    def add_prediction(
        self, prediction: PredictionMade | PredictionFields, timestamp_ms: int
    ) -> None:
        """Remember a prediction of this model; the first per request id wins, others repeat it."""
        if prediction.model != self.model:
            return
        request_id = prediction.request_id
        if request_id in self._pending or request_id in self._joined:
            return
        for dropped in self._pending.add(request_id, timestamp_ms, prediction):
            self._expired.add(dropped, timestamp_ms)

    def mark_joined(self, request_id: str, timestamp_ms: int) -> None:
        """Remember that a request's label was learned (rebuilding after a restart)."""
        self._pending.items.pop(request_id, None)
        self._joined.add(request_id, timestamp_ms)

    def join_one(self, label: LabelObserved | LabelFields, timestamp_ms: int) -> Joined | Unjoined:
        """Join one label of this model with its features, or say why it cannot be."""
        pending, joined, expired = self._pending, self._joined, self._expired
        for dropped in pending.expire(timestamp_ms - self.max_age_ms):
            expired.add(dropped, timestamp_ms)
        joined.expire(timestamp_ms - self.max_age_ms)
        expired.expire(timestamp_ms - 2 * self.max_age_ms)
        request_id = label.request_id
        if request_id in joined.items:
            return Unjoined(DUPLICATE_LABEL, f"request {request_id!r} already has a label learned")
        entry = pending.items.pop(request_id, None)
        prediction: Any = entry[1] if entry is not None else None  # as add_prediction took it
        features = label.features
        if features is None and prediction is not None:
            features = prediction.features
        if features is None:
            if request_id in expired.items:
                return Unjoined(
                    WINDOW_EXPIRED,
                    f"the prediction of request {request_id!r} left the join window "
                    f"({self.max_age_ms} ms / {self._pending.max_count} predictions) before its "
                    "label came: widen the window or send features with the label",
                )
            return Unjoined(
                UNKNOWN_REQUEST,
                f"no prediction of model {self.model!r} for request {request_id!r} in the join "
                "window, and the label carries no features",
            )
        joined.add(request_id, timestamp_ms)
        return _joined(label, features, prediction)


def example_value(example: JoinedExample | ExampleJoined) -> bytes:
    """Render an example as `encode` renders an `ExampleJoined` (one per label learned)."""
    payload: dict[str, object] = {
        "schema_version": example.schema_version, "request_id": example.request_id,
        "model": example.model, "features": example.features, "label": example.label,
    }  # fmt: skip
    if example.version is not None:
        payload["version"] = example.version
    if example.snapshot is not None:
        payload["snapshot"] = example.snapshot
    if example.route is not None:
        payload["route"] = example.route
    if example.prediction is not None:
        payload["prediction"] = example.prediction
    if example.proba is not None:
        payload["proba"] = example.proba
    if example.key is not None:
        payload["key"] = example.key
        payload["key_partition"] = example.key_partition
    payload["observed_at"] = example.observed_at
    return orjson.dumps(payload, option=orjson.OPT_UTC_Z)


def outcome_value(outcome: Outcome | OutcomeRecorded) -> bytes:
    """Render an outcome as `encode` renders an `OutcomeRecorded` (one per prediction judged)."""
    payload: dict[str, object] = {
        "schema_version": outcome.schema_version, "request_id": outcome.request_id,
        "model": outcome.model, "version": outcome.version, "snapshot": outcome.snapshot,
        "route": outcome.route, "prediction": outcome.prediction, "label": outcome.label,
        "loss": outcome.loss,
    }  # fmt: skip
    if outcome.proba is not None:
        payload["proba"] = outcome.proba
    payload["observed_at"] = outcome.observed_at
    if outcome.scored_at is not None:
        payload["scored_at"] = outcome.scored_at
    return orjson.dumps(payload, option=orjson.OPT_UTC_Z)


def _joined(
    label: LabelObserved | LabelFields,
    features: dict[str, float | str],
    prediction: PredictionMade | PredictionFields | None,
) -> Joined:
    request_id, model, value, observed_at = (
        label.request_id, label.model, label.label, label.observed_at
    )  # fmt: skip
    if prediction is None:
        return Joined(JoinedExample(request_id, model, features, value, observed_at), None)
    version, snapshot, route = prediction.version, prediction.snapshot, prediction.route
    predicted, proba = prediction.prediction, prediction.proba
    example = JoinedExample(request_id, model, features, value, observed_at, version, snapshot,
                            route, predicted, proba)  # fmt: skip
    loss = outcome_loss(predicted, proba, value)
    if not math.isfinite(loss):
        # The contract refuses a non-finite loss (a regressor's squared error can overflow):
        # let it say so, as it always has.
        OutcomeRecorded(
            request_id=request_id, model=model, version=version, snapshot=snapshot, route=route,
            prediction=predicted, label=value, proba=proba, observed_at=observed_at, loss=loss,
        )  # fmt: skip
    outcome = Outcome(request_id, model, version, snapshot, route, predicted, value, loss,
                      proba, observed_at, prediction.scored_at)  # fmt: skip
    return Joined(example, outcome)


def coerce_label(value: Any, label_type: str | None) -> Any:
    """The label as the version's label type, or ValueError saying why it cannot be.

    A bool label takes true/false and the numbers 0 and 1; an int label an integral number or
    such a string; a float label any finite number or numeric string; a str label a string or
    an integer. Anything else would be learned as garbage, or raise inside the model.
    """
    if label_type is None:
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if label_type == "bool":
        if isinstance(value, bool):
            return value
        if number and value in (0, 1):
            return bool(value)
    elif label_type == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
    elif label_type == "float":
        if number and math.isfinite(value):
            return value if isinstance(value, float) else float(value)
        if isinstance(value, str):
            try:
                parsed = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(parsed):
                    return parsed
    elif label_type == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    expected = {"bool": "true or false (or 0 or 1)", "int": "an integer",
                "float": "a finite number", "str": "a string"}[label_type]  # fmt: skip
    raise ValueError(f"label {value!r} is not {expected}, as the model's label type "
                     f"{label_type!r} needs")
