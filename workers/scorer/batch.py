"""Decode, validate, score and render one mini-batch: the scorer's pure core, no I/O.

Input is what the consumer returned; output is the records to produce (predictions and dead
letters), so that a test drives the whole hot path without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from schemas import SCHEMA_VERSION, DeadLetter, DecodeError, RequestFields, decode_request_fields
from schemas.codec import encode_dict
from workers.model import ModelSource, ServedModel


class Record(Protocol):
    """The parts of a consumed Kafka message the core reads (confluent_kafka.Message has them)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class Output(NamedTuple):
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class BatchResult:
    """Everything one batch yields, plus what the metrics need."""

    outputs: list[Output] = field(default_factory=list)
    scored: dict[tuple[str, int, str], int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    models_used: dict[str, ServedModel] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """The scorer settings the pure core needs."""

    predictions_topic: str
    dead_letter_topic: str
    worker: str
    max_request_bytes: int
    reject_missing_features: bool


def dead_letter(
    record: Record, error_class: str, reason: str, options: BatchOptions
) -> Output:
    """The original bytes, with headers naming the failure and where the record came from."""
    letter = DeadLetter(
        error_class=error_class,
        reason=reason,
        source_topic=record.topic() or "",
        source_partition=record.partition() or 0,
        source_offset=record.offset() or 0,
        worker=options.worker,
    )
    return Output(options.dead_letter_topic, record.key(), record.value(), letter.to_headers())


def score_batch(
    records: Sequence[Record], models: ModelSource, options: BatchOptions
) -> BatchResult:
    """Turn consumed records into predictions and dead letters, keeping the input's order."""
    result = BatchResult()
    outputs: list[Output | None] = [None] * len(records)
    # Per model: positions in the batch, and the decoded requests at those positions.
    groups: dict[str, tuple[list[int], list[RequestFields]]] = {}
    resolved: dict[str, ServedModel | None] = {}
    max_bytes = options.max_request_bytes

    for i, record in enumerate(records):
        try:
            request = decode_request_fields(record.value(), max_bytes)
        except DecodeError as exc:
            _reject(result, outputs, i, record, exc.error_class, exc.reason, options)
            continue
        name = request.model
        group = groups.get(name)
        if group is None:
            model = resolved[name] = models.get(name)
            if model is None:
                _reject(result, outputs, i, record, "UnknownModel",
                        models.unavailable_reason(name), options)
                continue
            group = groups[name] = ([], [])
        expected = resolved[name].expected_features  # type: ignore[union-attr]  # resolved above
        if options.reject_missing_features and expected is not None:
            if not expected.issubset(request.features):
                listed = ", ".join(sorted(expected.difference(request.features))[:10])
                _reject(result, outputs, i, record, "MissingFeatures",
                        f"features missing for {name}: {listed}", options)
                continue
        group[0].append(i)
        group[1].append(request)

    now = time.time()
    now_ms = now * 1000.0
    scored_at = datetime.fromtimestamp(now, UTC).isoformat()
    latencies = result.latencies_s
    topic = options.predictions_topic
    for name, (positions, requests) in groups.items():
        model = resolved[name]
        assert model is not None  # noqa: S101  # groups only hold resolved models
        result.models_used[name] = model
        scored = model.scorer.predict_many([request.features for request in requests])
        failures = scored.failures
        predictions = scored.predictions
        probas = scored.probas
        version = model.version
        snapshot = model.snapshot
        count = 0
        for j, i in enumerate(positions):
            record = records[i]
            if failures and j in failures:
                failure = failures[j]
                _reject(result, outputs, i, record, failure.error_class, failure.reason, options)
                continue
            request = requests[j]
            ts_type, ts = record.timestamp()
            latency_ms = now_ms - ts if ts_type and ts > 0 else 0.0
            if latency_ms < 0.0:
                latency_ms = 0.0
            latencies.append(latency_ms / 1000.0)
            payload: dict[str, Any] = {
                "schema_version": SCHEMA_VERSION,
                "request_id": request.request_id,
                "model": name,
                "version": version,
                "snapshot": snapshot,
                "route": "champion",
                "prediction": predictions[j],
                "features": request.features,
                "scored_at": scored_at,
                "latency_ms": latency_ms,
            }
            proba = probas[j]
            if proba is not None:
                payload["proba"] = proba
            key = record.key()
            if key is None:
                key = (request.key or request.request_id).encode()
            outputs[i] = Output(topic, key, encode_dict(payload))
            count += 1
        if count:
            label = (name, version, "champion")
            result.scored[label] = result.scored.get(label, 0) + count
    result.outputs = [out for out in outputs if out is not None]
    return result


def _reject(
    result: BatchResult,
    outputs: list[Output | None],
    i: int,
    record: Record,
    error_class: str,
    reason: str,
    options: BatchOptions,
) -> None:
    outputs[i] = dead_letter(record, error_class, reason, options)
    result.dead_letters[error_class] = result.dead_letters.get(error_class, 0) + 1
