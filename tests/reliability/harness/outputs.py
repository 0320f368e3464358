"""Reading a run back from the broker: outputs, committed offsets, topic ends, stable offsets.

The checker is pure; this module turns topics into its inputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import Consumer, IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from riverrun.schemas import DeadLetter, KafkaSettings

from .checker import Answer, Letter, OffsetSnapshot

_quiet = logging.getLogger("reliability.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def _consumer(kafka: KafkaSettings, isolation: str = "read_committed") -> Consumer:
    return Consumer(kafka.client_config({
        "group.id": "reliability-reader", "enable.auto.commit": False,
        "isolation.level": isolation, "enable.partition.eof": True,
        "fetch.wait.max.ms": 50, "logger": _quiet,
    }))  # fmt: skip


def partitions_of(kafka: KafkaSettings, topic: str) -> list[int]:
    """The partition ids of a topic."""
    admin = AdminClient(kafka.client_config({"logger": _quiet}))
    return sorted(admin.list_topics(topic, timeout=15).topics[topic].partitions)


def read_topic(
    kafka: KafkaSettings, topic: str, *, isolation: str = "read_committed", timeout: float = 120.0
) -> list[Any]:
    """Every record of a topic from the start to its end now (each partition's EOF)."""
    consumer = _consumer(kafka, isolation)
    try:
        partitions = partitions_of(kafka, topic)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_end: set[int] = set()
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(set(partitions) - at_end)} "
                                   f"did not reach their end within {timeout}s")
            for msg in consumer.consume(5000, 0.5):
                error = msg.error()
                if error is None:
                    records.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
        return records
    finally:
        consumer.close()


def answers(kafka: KafkaSettings, topic: str, **read: Any) -> list[Answer]:
    """The predictions of a topic, as the checker counts them."""
    out = []
    for msg in read_topic(kafka, topic, **read):
        event = orjson.loads(msg.value())
        out.append(Answer(event["request_id"], topic, msg.partition(), msg.offset(),
                          event.get("prediction"), event.get("version", 0),
                          event.get("snapshot", 0)))
    return out


def scored_times(kafka: KafkaSettings, topic: str, **read: Any) -> list[float]:
    """When each prediction was made (its `scored_at`), as POSIX seconds."""
    from datetime import datetime

    return [datetime.fromisoformat(orjson.loads(msg.value())["scored_at"]).timestamp()
            for msg in read_topic(kafka, topic, **read)]


def letters(kafka: KafkaSettings, topic: str, **read: Any) -> list[Letter]:
    """The dead letters of a topic, with their source coordinates."""
    out = []
    for msg in read_topic(kafka, topic, **read):
        letter = DeadLetter.from_headers(list(msg.headers() or []))
        out.append(Letter(letter.source_topic, letter.source_partition, letter.source_offset,
                          letter.error_class, letter.reason, topic, msg.partition(),
                          msg.offset()))
    return out


def committed_offsets(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (partitions never committed: 0)."""
    # read_uncommitted: no wait for the offsets of a transaction still open (a killed scorer's),
    # which are not committed until that transaction ends.
    consumer = Consumer(kafka.client_config({"group.id": group, "enable.auto.commit": False,
                                             "isolation.level": "read_uncommitted",
                                             "logger": _quiet}))
    try:
        wanted = [TopicPartition(topic, p) for p in partitions_of(kafka, topic)]
        return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(wanted, timeout=15)}
    finally:
        consumer.close()


def ends(kafka: KafkaSettings, topics: Iterable[str], *, committed_only: bool = False
         ) -> dict[tuple[str, int], int]:
    """Each partition's end: the high watermark, or the last stable offset when asked."""
    admin = AdminClient(kafka.client_config({"logger": _quiet}))
    wanted = {TopicPartition(t, p): OffsetSpec.latest()
              for t in topics for p in partitions_of(kafka, t)}
    level = IsolationLevel.READ_COMMITTED if committed_only else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets(wanted, isolation_level=level, request_timeout=15)
    return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


def offset_snapshot(
    kafka: KafkaSettings, label: str, group: str, requests_topic: str, outputs: Iterable[str]
) -> OffsetSnapshot:
    """The group's committed offsets, then the outputs' ends: in that order, see the checker."""
    committed = committed_offsets(kafka, group, requests_topic)
    return OffsetSnapshot(label, committed, ends(kafka, outputs))
