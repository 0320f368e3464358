"""Kafka plumbing every worker shares, knowing no role: the error callback, librdkafka's log,
partitions and offsets.

librdkafka retries an unreachable broker on its own and reports each failure; a worker logs
the first and then at most one line every few seconds, so an outage is visible but not a flood.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from riverrun.workers.runtime.errors import ConfigurationError, RetryableError

_DIGITS = re.compile(r"\d+")


class ClientErrorLog:
    """A callable for the `error_cb` option of a consumer or producer."""

    def __init__(self, logger: logging.Logger, bootstrap_servers: str, every_s: float = 10.0) -> None:
        self._logger = logger
        self._bootstrap_servers = bootstrap_servers
        self._every_s = every_s
        self._last = float("-inf")

    def __call__(self, err: KafkaError) -> None:
        """Log a fatal error every time, any other at most once per `every_s`."""
        if err.fatal():
            self._logger.error("fatal Kafka client error: %s", err)
            return
        now = time.monotonic()
        if now - self._last > self._every_s:
            self._last = now
            self._logger.warning(
                "Kafka not reachable or unhappy (%s); still trying %s", err, self._bootstrap_servers
            )


class RepeatedLines(logging.Filter):
    """Drops a log line that repeats one let through less than `every_s` ago (digits aside).

    librdkafka logs every refused reconnect (several a second while a broker is away); the
    first of a kind passes, then one per interval saying how many were left out.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self._every_s = every_s
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the record through unless it repeats a recent one."""
        key = _DIGITS.sub("", record.getMessage())
        now = time.monotonic()
        last, dropped = self._seen.get(key, (float("-inf"), 0))
        if now - last < self._every_s:
            self._seen[key] = (last, dropped + 1)
            return False
        if len(self._seen) > 1000:  # bounded: forget everything rather than grow
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar lines left out)"
            record.args = ()
        return True


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
