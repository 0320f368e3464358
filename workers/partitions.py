"""A topic's partitions as the workers need them, and the offsets a consumed batch covers."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition

from workers.errors import ConfigurationError, RetryableError


def topic_partitions(consumer: Any, topic: str, role: str, timeout: float = 15.0) -> list[int]:
    """The partition ids of a topic that must exist, sorted.

    `role` names the topic in messages ("registry", "examples") and `RIVERRUN_TOPICS__<ROLE>`
    comes from the settings field, so an operator knows which setting to fix.

    Raises:
        RetryableError: the broker did not answer the metadata request.
        ConfigurationError: the topic does not exist.

    """
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise RetryableError(f"cannot read metadata of the {role} topic {topic}: {exc}") from exc
    return partitions_in(metadata, topic, role)


def partitions_in(metadata: Any, topic: str, role: str) -> list[int]:
    """The partition ids of a topic in a metadata answer, sorted.

    Raises:
        ConfigurationError: the topic does not exist (named by its `RIVERRUN_TOPICS__` setting).

    """
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        setting = "MODELS" if role == "registry" else role.upper()
        raise ConfigurationError(
            f"{role} topic {topic} does not exist: run `riverrun topics create` or set "
            f"RIVERRUN_TOPICS__{setting}"
        )
    return sorted(info.partitions)


def next_offsets(records: list[Message]) -> list[TopicPartition]:
    """Per partition, the offset after the last record of the batch: what to commit."""
    highest: dict[tuple[str, int], int] = {}
    for record in records:  # topic, partition and offset are always set on consumed records
        highest[(record.topic() or "", record.partition() or 0)] = record.offset() or 0
    return [TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]


def first_offsets(records: list[Message]) -> list[TopicPartition]:
    """Per partition, the offset of the first record of the batch: where to rewind."""
    first: dict[tuple[str, int], int] = {}
    for record in records:
        first.setdefault((record.topic() or "", record.partition() or 0), record.offset() or 0)
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]
