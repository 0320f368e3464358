"""The examples log: how a record of it is read, and its replay into a model.

The learner and `riverrun models verify` read the log through `read_example` and learn through
`learner.prequential.learn_example`, so both make the very same calls in the very same order,
skip the very same examples (those the model raises on), and a replay ends on the very same
bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from riverrun.schemas import KafkaSettings
from riverrun.schemas.loss import Task
from riverrun.workers.learner.prequential import NotLearned, Prequential, learn_example
from riverrun.workers.runtime.errors import ConfigurationError, FatalError, RetryableError
from riverrun.workers.runtime.kafka import consumer_config, topic_partitions

logger = logging.getLogger(__name__)


def read_example(
    raw: bytes | None, model: str
) -> tuple[dict[str, Any], Any, str | None, int | None] | None:
    """The features, label, key and key partition of an example of `model` (None: another's).

    Raises:
        FatalError: the record is not an example; the log is written only by learners, so
            this is corruption, and skipping it would make replays disagree.

    """
    try:
        data = orjson.loads(raw or b"")
        if data["model"] != model:
            return None
        return data["features"], data["label"], data.get("key"), data.get("key_partition")
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise FatalError(
            f"the examples log holds a record that is not an ExampleJoined ({exc}); "
            "it is written only by learners: find who else writes to it"
        ) from exc


def examples_consumer(
    kafka: KafkaSettings,
    client_id: str,
    on_statistics: Callable[[str], None] | None = None,
    statistics_interval_ms: int = 0,
) -> Consumer:
    """Build a group-less consumer of committed examples (assigned, never subscribed)."""
    # A group id is required by librdkafka; this one is never joined or committed.
    return Consumer(consumer_config(
        kafka, f"{client_id}-unused", client_id=client_id, options={"fetch.wait.max.ms": 50},
        on_statistics=on_statistics, statistics_interval_ms=statistics_interval_ms,
    ))


def check_single_partition(consumer: Consumer, topic: str, timeout: float = 15.0) -> None:
    """Refuse an examples topic that is missing or has more than one partition."""
    partitions = topic_partitions(consumer, topic, "examples", timeout)
    if len(partitions) != 1:
        raise ConfigurationError(
            f"examples topic {topic} has {len(partitions)} partitions; its order is what "
            "the model learns, so it must have exactly one: recreate it with one partition"
        )


def end_offset(consumer: Consumer, topic: str, timeout: float = 15.0) -> tuple[int, int]:
    """Return the low and high watermarks of the examples log."""
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
    except KafkaException as exc:
        raise RetryableError(f"cannot read the end of {topic}: {exc}") from exc
    return int(low), int(high)


def read_range(
    consumer: Consumer,
    topic: str,
    start: int,
    end: int,
    on_record: Callable[[int, int, bytes | None], None],
    timeout: float = 120.0,
    keepalive: Callable[[], None] | None = None,
) -> int:
    """Call `on_record(offset, timestamp_ms, value)` for committed records in [start, end).

    Returns the next offset reached (`end` unless the deadline passed first). Offsets taken by
    transaction markers and aborted records are skipped, as a read_committed reader must.
    """
    if end <= start:
        return start
    partition = TopicPartition(topic, 0, start)
    consumer.assign([partition])
    deadline = time.monotonic() + timeout
    position = start
    while position < end:
        if time.monotonic() > deadline:
            raise RetryableError(
                f"reading {topic} [{start}, {end}) stopped at {position} after {timeout}s: is "
                "a transaction still open on it, or the broker unreachable?"
            )
        batch = consumer.consume(1000, 0.2)
        if keepalive is not None:
            keepalive()
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("examples read error: %s", err)
                continue
            offset = msg.offset() or 0  # always set on a consumed record
            if offset >= end:
                return end
            on_record(offset, msg.timestamp()[1], msg.value())
            position = offset + 1
        if not batch:
            # Markers at the end are invisible: the position says how far the reader got.
            reached = consumer.position([TopicPartition(topic, 0)])[0].offset
            if reached >= 0:
                position = max(position, reached)
    return end


@dataclass
class Replayed:
    """What a replay of the log built: the model, its metrics, and the examples it skipped."""

    estimator: Any
    prequential: Prequential | None
    learned: int
    skipped: set[int] = field(default_factory=set)


class _Restart(Exception):
    """An example failed: the replay starts again without it."""


def replay(
    kafka: KafkaSettings,
    topic: str,
    model: str,
    fresh: Callable[[], Any],
    start: int,
    end: int,
    task: Task | None = None,
    skip: Iterable[int] = (),
    keepalive: Callable[[], None] | None = None,
) -> Replayed:
    """Learn the examples of `model` in [start, end) of the log into `fresh()`, in order.

    An example the model raises on is learned by no one: the replay starts again from a fresh
    model without it, as the learner does when one fails live, so the result is the model of a
    learner that never saw it (and `task` metrics that never counted it). `keepalive` is called
    as the log is read, so that a long replay in a group member does not cost it its place.
    """
    consumer = examples_consumer(kafka, "riverrun-replay")
    skipped = set(skip)
    try:
        check_single_partition(consumer, topic)
        while True:
            estimator = fresh()
            prequential = Prequential(task) if task is not None else None
            learned = 0

            def learn(offset: int, _timestamp_ms: int, raw: bytes | None) -> None:
                nonlocal learned
                if offset in skipped:
                    return
                example = read_example(raw, model)
                if example is None:
                    return
                try:
                    learn_example(estimator, example[0], example[1], prequential)
                except NotLearned:
                    skipped.add(offset)
                    raise _Restart from None
                learned += 1

            try:
                read_range(consumer, topic, start, end, learn, keepalive=keepalive)
            except _Restart:
                continue
            return Replayed(estimator, prequential, learned, skipped)
    finally:
        consumer.close()
