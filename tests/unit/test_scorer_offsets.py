"""At-least-once bookkeeping, as pure logic: offsets are stored only once the producer holds
nothing unacknowledged and reported no failure, and outputs that keep flowing are waited for.

The producer and consumer here stand in for librdkafka's with the few calls the loop makes
(`len`, `poll`, `flush`, `produce`, `store_offsets`); the integration and reliability tests run
the same loop against a real broker.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition
from river import linear_model

from riverrun.schemas import TopicSettings
from riverrun.workers.runtime.errors import FatalError
from riverrun.workers.runtime.kafka import Outgoing
from riverrun.workers.scorer.batch import BatchResult
from riverrun.workers.scorer.loop import Scorer
from riverrun.workers.scorer.model import FileModelSource
from riverrun.workers.scorer.model.protocol import ServedModel
from riverrun.workers.scorer.settings import ScorerOptions, ScorerSettings


class Producer:
    """Outputs handed over stay unacknowledged until the test (or a flush) acknowledges them."""

    def __init__(self) -> None:
        self.unacknowledged = 0
        self.flushes = 0

    def __len__(self) -> int:
        return self.unacknowledged

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        self.unacknowledged += 1

    def poll(self, _timeout: float = 0.0) -> int:
        return 0

    def flush(self, _timeout: float | None = None) -> int:
        self.flushes += 1
        self.unacknowledged = 0
        return 0


class Consumer:
    def __init__(self) -> None:
        self.stored: list[list[tuple[str, int, int]]] = []

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])


def scorer(max_unacknowledged_ms: int = 60_000) -> tuple[Scorer, Producer, Consumer]:
    model = ServedModel("m", 1, 0, scorer=None, estimator=linear_model.LogisticRegression())  # type: ignore[arg-type]
    settings = ScorerSettings(topics=TopicSettings(), scorer=ScorerOptions(
        model_name="m", max_unacknowledged_ms=max_unacknowledged_ms))  # fmt: skip
    worker = Scorer(settings, FileModelSource(model))
    producer, consumer = Producer(), Consumer()
    worker._producer, worker._consumer = producer, consumer  # type: ignore[assignment]
    worker._assigned = {("requests", 0), ("requests", 1)}
    return worker, producer, consumer


def batch(partition: int, offsets: range) -> tuple[list[Message], BatchResult]:
    records = [Message(topic="requests", partition=partition, offset=o, value=b"{}")
               for o in offsets]  # fmt: skip
    outputs = [Outgoing("predictions", b"k", b"{}", None, partition) for _ in offsets]
    return records, BatchResult(outputs=outputs)


def test_offsets_wait_until_every_output_handed_over_is_acknowledged() -> None:
    worker, producer, consumer = scorer()
    worker._produce_pipelined(*batch(0, range(10, 13)))
    worker._produce_pipelined(*batch(1, range(5, 7)))
    assert consumer.stored == []  # five outputs unacknowledged
    producer.unacknowledged = 1
    worker._settle(block=False)
    assert consumer.stored == []
    producer.unacknowledged = 0
    worker._settle(block=False)
    assert consumer.stored == [[("requests", 0, 13), ("requests", 1, 7)]]
    worker._settle(block=False)
    assert len(consumer.stored) == 1  # nothing new to store


def test_a_failed_delivery_stops_the_worker_with_nothing_stored() -> None:
    worker, producer, consumer = scorer()
    worker._produce_pipelined(*batch(0, range(3)))
    producer.unacknowledged = 0
    worker._unacknowledged.failed(KafkaError(KafkaError._MSG_TIMED_OUT), None)  # type: ignore[arg-type]
    with pytest.raises(FatalError, match="1 outputs were not delivered"):
        worker._settle(block=False)
    assert consumer.stored == []


def test_outputs_that_keep_flowing_are_waited_for_once_the_limit_has_passed() -> None:
    worker, producer, consumer = scorer(max_unacknowledged_ms=1)
    worker._produce_pipelined(*batch(0, range(3)))
    assert producer.flushes == 0 and consumer.stored == []
    time.sleep(0.01)
    worker._produce_pipelined(*batch(0, range(3, 6)))  # the first is still unacknowledged
    assert producer.flushes >= 1
    assert consumer.stored == [[("requests", 0, 6)]]


def test_only_owned_partitions_offsets_are_stored() -> None:
    worker, producer, consumer = scorer()
    worker._produce_pipelined(*batch(0, range(3)))
    worker._assigned = {("requests", 1)}  # partition 0 was revoked meanwhile
    producer.unacknowledged = 0
    worker._settle(block=False)
    assert consumer.stored == []
