"""Decode, validate, score and render one mini-batch: the scorer's pure core, no I/O.

Input is what the consumer returned; output is the records to produce (predictions and dead
letters), so that a test drives the whole hot path without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from riverrun.schemas import SCHEMA_VERSION, DecodeError
from riverrun.schemas.events import dead_letter_headers, utc_now
from riverrun.workers.keys.model import request_key
from riverrun.workers.runtime.kafka import CLIENT_MAX_BYTES, Outgoing, dead_letter_record
from riverrun.workers.scorer.model import ModelSource, ServedModel
from riverrun.workers.scorer.model.deployment import Deployment
from riverrun.workers.scorer.model.protocol import Features, RowFailure, ScoredBatch
from riverrun.workers.scorer.wire import Prediction, Request, read_request, render

# A prediction's framing beyond its key and value (no headers), with room to spare.
_PREDICTION_MARGIN = 512
_NO_KEY = (None, None)  # a prediction's key_examples and key_weight when no key's model answered
_new_tuple = tuple.__new__


class Record(Protocol):
    """The parts of a consumed Kafka message the core reads (confluent_kafka.Message has them)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(slots=True)
class BatchResult:
    """Everything one batch yields, plus what the metrics need."""

    outputs: list[Outgoing] = field(default_factory=list)
    scored: dict[tuple[str, int, str], int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    # By label (`name@version#snapshot`): every snapshot that answered or scored in shadow.
    models_used: dict[str, ServedModel] = field(default_factory=dict)
    shadow_failures: int = 0
    # When the batch was taken up (ISO 8601): the `failed_at` of its dead letters.
    failed_at: str = ""


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """The scorer settings the pure core needs."""

    predictions_topic: str
    dead_letter_topic: str
    worker: str
    max_request_bytes: int
    reject_missing_features: bool
    shadow_topic: str = "predictions.shadow"
    # The largest record both the producer and the broker take (`output_limit`).
    max_output_bytes: int = CLIENT_MAX_BYTES
    # Predictions go to their request's partition number (the topics have as many).
    same_partition: bool = False


def dead_letter(
    record: Record,
    error_class: str,
    reason: str,
    options: BatchOptions,
    model: ServedModel | None = None,
    route: str | None = None,
    failed_at: str | None = None,
) -> Outgoing:
    """The original bytes (cut to fit, if they must be), with headers naming the failure and
    where the record came from."""
    headers = dead_letter_headers(
        error_class, reason, record.topic() or "", record.partition() or 0, record.offset() or 0,
        failed_at or utc_now().isoformat(), options.worker,
        model=model.name if model is not None else None,
        version=model.version if model is not None else None, route=route,
    )  # fmt: skip
    return dead_letter_record(options.dead_letter_topic, record.key(), record.value(), headers,
                              options.max_output_bytes)  # fmt: skip


class _Group:
    """One model's requests in a batch: positions, decoded requests and routing keys."""

    __slots__ = ("positions", "requests", "keys")

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.requests: list[Request] = []
        self.keys: list[bytes] = []


def score_batch(
    records: Sequence[Record], models: ModelSource, options: BatchOptions
) -> BatchResult:
    """Turn consumed records into predictions and dead letters, keeping the input's order.

    Each model's requests are routed by its deployment (sticky by key), each version's share
    is scored in one call, and shadow versions score the answered requests on the side.
    """
    result = BatchResult(failed_at=utc_now().isoformat())
    outputs: list[Outgoing | None] = [None] * len(records)
    groups: dict[str, _Group] = {}
    resolved: dict[str, Deployment | None] = {}
    unavailable: dict[str, RowFailure] = {}
    max_bytes = options.max_request_bytes

    for i, record in enumerate(records):
        try:
            request = read_request(record.value(), max_bytes)
        except DecodeError as exc:
            _reject(result, outputs, i, record, exc.error_class, exc.reason, options)
            continue
        name = request.model
        group = groups.get(name)
        if group is None:
            if name not in resolved:
                resolved[name] = models.deployment(name)
            if resolved[name] is None:
                why = unavailable.get(name)
                if why is None:
                    why = unavailable[name] = models.unavailable(name)
                _reject(result, outputs, i, record, why.error_class, why.reason, options)
                continue
            group = groups[name] = _Group()
        key = record.key()
        if key is None:
            key = (request.key or request.request_id).encode()
        group.positions.append(i)
        group.requests.append(request)
        group.keys.append(key)

    now = time.time()
    scoring = _Scoring(records, outputs, result, options, now)
    for name, group in groups.items():
        deployment = resolved[name]
        assert deployment is not None  # noqa: S101  # groups only hold resolved models
        plan = deployment.plan
        arms = plan.assign_many(group.keys, now)
        answered: list[int] = []
        if arms is None:
            answered = scoring.score(deployment.arms[0], plan.arms[0].route, group,
                                     range(len(group.positions)))
        else:
            for index, (model, arm) in enumerate(zip(deployment.arms, plan.arms, strict=True)):
                members = np.flatnonzero(arms == index).tolist()
                if members:
                    answered += scoring.score(model, arm.route, group, members)
        if deployment.shadows and answered:
            answered.sort()
            for model in deployment.shadows:
                scoring.shadow(model, group, answered)
    result.outputs = [out for out in outputs if out is not None] + scoring.shadow_outputs
    return result


class _Scoring:
    """Scores sub-groups of a batch and renders their predictions (one batch's state)."""

    def __init__(
        self,
        records: Sequence[Record],
        outputs: list[Outgoing | None],
        result: BatchResult,
        options: BatchOptions,
        now: float,
    ) -> None:
        self.records = records
        self.outputs = outputs
        self.result = result
        self.options = options
        self.now_ms = now * 1000.0
        self.scored_at = datetime.fromtimestamp(now, UTC).isoformat()
        # Shadow predictions follow the batch's answers, in the order they were scored.
        self.shadow_outputs: list[Outgoing] = []

    def score(
        self, model: ServedModel, route: str, group: _Group, members: Sequence[int]
    ) -> list[int]:
        """Answer some of a group's requests with one model; return the members answered."""
        records, options, result, outputs = self.records, self.options, self.result, self.outputs
        requests, positions, keys = group.requests, group.positions, group.keys
        expected = model.expected_features
        rows = [requests[j].features for j in members]
        if options.reject_missing_features and expected is not None:
            issubset = expected.issubset
            if not all(map(issubset, rows)):
                kept = []
                for j in members:
                    features = requests[j].features
                    if issubset(features):
                        kept.append(j)
                        continue
                    listed = ", ".join(sorted(expected.difference(features))[:10])
                    i = positions[j]
                    _reject(result, outputs, i, records[i], "MissingFeatures",
                            f"features missing for {model.name}: {listed}", options, model, route)
                members = kept
                rows = [requests[j].features for j in members]
        if not members:
            return []
        scored = model.scorer.predict_many(rows)
        by_key = self._blend_keys(model, group, members, rows, scored)
        failures, predictions, probas = scored.failures, scored.predictions, scored.probas
        now_ms, scored_at, latencies = self.now_ms, self.scored_at, result.latencies_ms
        name, version, snapshot = model.name, model.version, model.snapshot
        topic = options.predictions_topic
        max_output, same_partition = options.max_output_bytes, options.same_partition
        answered = []
        for k, j in enumerate(members):
            i = positions[j]
            record = records[i]
            if failures and k in failures:
                failure = failures[k]
                _reject(result, outputs, i, record, failure.error_class, failure.reason,
                        options, model, route)
                continue
            request = requests[j]
            ts_type, ts = record.timestamp()
            latency_ms = now_ms - ts if ts_type and ts > 0 else 0.0
            if latency_ms < 0.0:
                latency_ms = 0.0
            latencies.append(latency_ms)
            echo = request.echo
            used = by_key[k] if by_key is not None else None
            examples, weight = _NO_KEY if used is None else used
            value = render(Prediction(
                SCHEMA_VERSION, request.request_id, name, version, snapshot, route,
                predictions[k], request.features if echo is None else echo, scored_at,
                latency_ms, probas[k], examples, weight,
            ))  # fmt: skip
            key = keys[j]
            if len(key) + len(value) + _PREDICTION_MARGIN > max_output:
                _reject(result, outputs, i, record, "OutputTooLarge",
                        f"its prediction would be {len(key) + len(value)} bytes with its key, "
                        f"over the {max_output} bytes the producer and the broker take: send "
                        "a shorter key", options, model, route)  # fmt: skip
                continue
            # tuple.__new__ skips the named tuple's Python-level constructor.
            outputs[i] = _new_tuple(Outgoing, (topic, key, value, None,
                                               record.partition() if same_partition else None))
            answered.append(j)
        if answered:
            label = (name, version, route)
            result.scored[label] = result.scored.get(label, 0) + len(answered)
            result.models_used[model.label] = model
        return answered

    def shadow(self, model: ServedModel, group: _Group, members: Sequence[int]) -> None:
        """Score answered requests with a shadow model; its predictions go to the shadow topic."""
        expected = model.expected_features
        if expected is not None:
            members = [j for j in members if expected.issubset(group.requests[j].features)]
        if not members:
            return
        requests = group.requests
        rows = [requests[j].features for j in members]
        scored = model.scorer.predict_many(rows)
        by_key = self._blend_keys(model, group, members, rows, scored)
        values = self._shadow_values(model, group, members, scored, by_key)
        topic, limit = self.options.shadow_topic, self.options.max_output_bytes
        same_partition = self.options.same_partition
        shadows = []
        for j, value in zip(members, values, strict=True):
            if value is None:
                continue
            if len(group.keys[j]) + len(value) + _PREDICTION_MARGIN <= limit:  # else not shadowed
                partition = self.records[group.positions[j]].partition() if same_partition else None
                shadows.append(Outgoing(topic, group.keys[j], value, None, partition))
        self.shadow_outputs += shadows
        self.result.shadow_failures += len(scored.failures)
        if shadows:
            label = (model.name, model.version, "shadow")
            self.result.scored[label] = self.result.scored.get(label, 0) + len(shadows)
            self.result.models_used[model.label] = model

    def _blend_keys(
        self,
        model: ServedModel,
        group: _Group,
        members: Sequence[int],
        rows: list[Features],
        scored: ScoredBatch,
    ) -> list[tuple[int, float] | None] | None:
        """A per-key version's keys' own answers, blended into `scored` (None for a global one)."""
        if model.keys is None:
            return None
        records, requests, positions = self.records, group.requests, group.positions
        keys = [request_key(records[positions[j]].key(), requests[j].request_id) for j in members]
        return model.keys.blend_into(scored, rows, keys)

    def _shadow_values(
        self,
        model: ServedModel,
        group: _Group,
        members: Sequence[int],
        scored: ScoredBatch,
        by_key: list[tuple[int, float] | None] | None,
    ) -> list[bytes | None]:
        """Shadow predictions of some members (None where the shadow failed)."""
        records, requests = self.records, group.requests
        failures = scored.failures
        out: list[bytes | None] = []
        for k, j in enumerate(members):
            if failures and k in failures:
                out.append(None)
                continue
            request = requests[j]
            ts_type, ts = records[group.positions[j]].timestamp()
            latency_ms = max(0.0, self.now_ms - ts) if ts_type and ts > 0 else 0.0
            used = by_key[k] if by_key is not None else None
            examples, weight = _NO_KEY if used is None else used
            echo = request.echo
            out.append(render(Prediction(
                SCHEMA_VERSION, request.request_id, model.name, model.version, model.snapshot,
                "shadow", scored.predictions[k], request.features if echo is None else echo,
                self.scored_at, latency_ms, scored.probas[k], examples, weight,
            )))  # fmt: skip
        return out


def _reject(
    result: BatchResult,
    outputs: list[Outgoing | None],
    i: int,
    record: Record,
    error_class: str,
    reason: str,
    options: BatchOptions,
    model: ServedModel | None = None,
    route: str | None = None,
) -> None:
    outputs[i] = dead_letter(record, error_class, reason, options, model, route,
                             result.failed_at)  # fmt: skip
    result.dead_letters[error_class] = result.dead_letters.get(error_class, 0) + 1
