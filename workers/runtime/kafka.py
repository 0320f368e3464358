"""Kafka plumbing every worker shares, knowing no role.

Client configs rendered from settings (riverrun's safe defaults, then the role's own options,
then the user's, connection and security), produce with backpressure, transactions with their
three ways to fail, partitions and offsets, and librdkafka's error callback.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from riverrun.schemas import KafkaSettings
from riverrun.schemas.events import truncation_headers
from riverrun.workers.runtime.errors import ConfigurationError, FatalError, RetryableError

logger = logging.getLogger(__name__)
# librdkafka's own log lines (connection churn and the like) go through logging, not stderr.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class Outgoing(NamedTuple):
    """One record to produce (to `partition`, else where its key's hash puts it)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


# A record's framing inside its batch (offset delta, timestamps, lengths), with room to spare.
_RECORD_OVERHEAD = 256
# The most a producer takes in one record unless `message.max.bytes` says otherwise.
CLIENT_MAX_BYTES = 1_000_000


def record_bytes(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
) -> int:
    """What a record weighs against the producer's and the broker's size limits."""
    size = len(key or b"") + len(value or b"") + _RECORD_OVERHEAD
    for name, header in headers or ():
        size += len(name) + len(header or b"") + 8
    return size


def dead_letter_record(
    topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]],
    limit: int, partition: int | None = None,
) -> Outgoing:
    """A dead letter carrying the original bytes and its headers (`DeadLetter.to_headers` or
    `dead_letter_headers`), cut to fit `limit` if it must be.

    A cut one keeps the start of the key and value and says their original sizes; its headers
    still name where the original is (topic, partition, offset), so it can be fetched.
    """
    if record_bytes(key, value, headers) <= limit:
        return Outgoing(topic, key, value, headers, partition)
    headers = [*headers, *truncation_headers(len(key or b""), len(value or b""))]
    short_key = key[:256] if key is not None else None
    room = max(0, limit - record_bytes(short_key, b"", headers))
    return Outgoing(topic, short_key, value[:room] if value is not None else None, headers,
                    partition)  # fmt: skip


def output_limit(
    kafka: KafkaSettings,
    topics: Iterable[str],
    timeout: float = 10.0,
    stopping: threading.Event | None = None,
) -> int:
    """The largest record that both the producer and the broker take on `topics`.

    The producer's `message.max.bytes` (as configured, else librdkafka's default) and each
    topic's `max.message.bytes` as the broker reports it; a broker that does not answer the
    question (within `timeout`, or before `stopping` is set) leaves the producer's limit.
    """
    from confluent_kafka.admin import AdminClient, ConfigResource

    limit = int(kafka.extra.get("message.max.bytes", CLIENT_MAX_BYTES))
    admin = AdminClient(kafka.client_config({"logger": LIBRDKAFKA_LOG}))
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in set(topics)]
    try:
        deadline = time.monotonic() + timeout
        for future in admin.describe_configs(resources, request_timeout=timeout).values():
            # Waited for in slices, so that a stop request is heard while a broker is silent.
            while not future.done() and time.monotonic() < deadline:
                if stopping is not None and stopping.wait(0.2):
                    raise TimeoutError("stopping")
                if stopping is None:
                    time.sleep(0.05)
            entry = future.result(timeout=0).get("max.message.bytes")
            if entry is not None and entry.value is not None and entry.value.isdigit():
                limit = min(limit, int(entry.value))
    except Exception as exc:  # noqa: BLE001  # any failure to ask leaves the client's limit
        logger.info("topic size limits not read (%s): records are kept under %d bytes",
                    exc, limit)  # fmt: skip
    return limit


# -- client configs ----------------------------------------------------------------------------


def producer_config(
    kafka: KafkaSettings,
    *,
    client_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    on_error: Callable[[KafkaError], None] | None = None,
    transactional_id: str | None = None,
    transaction_timeout_s: float = 60.0,
) -> dict[str, Any]:
    """An idempotent producer's options: acknowledged by every in-sync replica, in order."""
    config: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}
    if client_id is not None:
        config["client.id"] = client_id
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = int(transaction_timeout_s * 1000)
    config.update(options or {})
    config["logger"] = LIBRDKAFKA_LOG  # through logging, repeats folded (see logfmt)
    if on_error is not None:
        config["error_cb"] = on_error
    return kafka.client_config(config)


def consumer_config(
    kafka: KafkaSettings,
    group_id: str,
    *,
    client_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    on_error: Callable[[KafkaError], None] | None = None,
    on_statistics: Callable[[str], None] | None = None,
    statistics_interval_ms: int = 0,
) -> dict[str, Any]:
    """A consumer's options: committed records only, offsets stored and committed by hand.

    A group-less reader (assigned, never subscribed) still needs a `group_id`; it is never
    joined. Statistics (consumer lag, broker contact) arrive every `statistics_interval_ms`.
    """
    config: dict[str, Any] = {
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        # Offsets are stored (or sent in a transaction) only once their outputs are delivered.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "fetch.wait.max.ms": 100,
    }
    if client_id is not None:
        config["client.id"] = client_id
    config.update(options or {})
    if on_statistics is not None and statistics_interval_ms > 0:
        config["statistics.interval.ms"] = statistics_interval_ms
        config["stats_cb"] = on_statistics
    config["logger"] = LIBRDKAFKA_LOG  # through logging, repeats folded (see logfmt)
    if on_error is not None:
        config["error_cb"] = on_error
    return kafka.client_config(config)


class ClientErrorLog:
    """A callable for the `error_cb` option of a consumer or producer.

    librdkafka retries an unreachable broker on its own and reports each failure; a worker logs
    the first and then at most one line every `every_s`, so an outage is visible but not a flood.
    """

    def __init__(
        self, log: logging.Logger, bootstrap_servers: str, every_s: float = 10.0
    ) -> None:
        self._log = log
        self._bootstrap_servers = bootstrap_servers
        self._every_s = every_s
        self._last = float("-inf")

    def __call__(self, err: KafkaError) -> None:
        """Log a fatal error every time, any other at most once per `every_s`."""
        if err.fatal():
            self._log.error("fatal Kafka client error: %s", err)
            return
        now = time.monotonic()
        if now - self._last > self._every_s:
            self._last = now
            self._log.warning(
                "Kafka not reachable or unhappy (%s); still trying %s", err, self._bootstrap_servers
            )


# -- producing ---------------------------------------------------------------------------------


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    *,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
    on_delivery: DeliveryCallback | None = None,
) -> None:
    """Hand one record to the producer; a full queue is drained by serving reports, then retried."""
    _hand_over(producer, (Outgoing(topic, key, value, headers, partition),), on_delivery)


def produce_all(
    producer: Producer, records: Iterable[Outgoing], on_delivery: DeliveryCallback | None = None
) -> None:
    """Hand records to the producer in order, then serve the delivery reports that are ready."""
    _hand_over(producer, records, on_delivery)
    producer.poll(0)


def _hand_over(
    producer: Producer, records: Iterable[Outgoing], on_delivery: DeliveryCallback | None
) -> None:
    send = producer.produce
    for topic, key, value, headers, partition in records:
        # -1 is librdkafka's "unassigned": the partitioner places the record.
        where = -1 if partition is None else partition
        while True:
            try:
                if headers is None and on_delivery is None:
                    send(topic, value, key, where)  # keywords cost as much as the rest of it
                else:
                    send(topic, value, key, where, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:  # the queue is full: serve reports, then hand it over again
                producer.poll(0.05)


def flush_or_raise(producer: Producer, timeout_s: float, what: str) -> None:
    """Wait for every record handed over to be acknowledged, or say how many were not."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise FatalError(f"{remaining} {what} not acknowledged within {timeout_s:.0f} s")


# -- consuming ---------------------------------------------------------------------------------


def take_arrived(consumer: Consumer, most: int, wait_s: float) -> list[Message]:
    """Adaptive batching: what has arrived (up to `most`), at once; wait only for nothing.

    `consume(n, timeout)` waits to fill `n` until the timeout, holding early records back; here
    a batch is whatever the client has fetched, so it is small under light load (low latency)
    and grows with the backlog (throughput).
    """
    records = consumer.consume(most, 0)
    if records:
        return records
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]


def drop_errors(records: list[Message], log: logging.Logger = logger) -> list[Message]:
    """The records of a batch that carry data; end-of-partition events are dropped silently.

    Raises:
        FatalError: the consumer reports a fatal error (it cannot go on).

    """
    good = []
    for record in records:
        err = record.error()
        if err is None:
            good.append(record)
        elif err.code() != KafkaError._PARTITION_EOF:
            if err.fatal():
                raise FatalError(f"consumer failed for good: {err}")
            log.warning("consume error: %s", err)
    return good


def watermarks(consumer: Consumer, partition: TopicPartition, deadline: float) -> tuple[int, int]:
    """A partition's (low, high) offsets, retrying while a new topic's leader is elected.

    Raises:
        RetryableError: no answer before `deadline` (monotonic), or a lasting error.

    """
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                partition, timeout=max(0.5, deadline - time.monotonic())
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if time.monotonic() >= deadline or not _transient(error):
                raise RetryableError(
                    f"cannot read the end of {partition.topic}[{partition.partition}]: {exc}"
                ) from exc
            time.sleep(0.1)  # back off before asking again; the leader is being elected


def _transient(error: KafkaError) -> bool:
    return bool(error.retriable()) or error.code() in {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }


# -- transactions ------------------------------------------------------------------------------


_FENCES = frozenset({
    KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
})  # fmt: skip


class Transactions:
    """A transactional producer: transactions of batches, with the consumed offsets inside.

    A failure is one of three kinds. Retriable on commit: commit again (twice at most).
    Abortable: abort, and the caller rewinds its batch. Fatal: the producer is poisoned for
    good (librdkafka #3928), so a new one is made. After a broken epoch the new one takes the
    same transactional id back, which fences whatever is left of the old one. After a fence it
    must not: another live producer holds the id (two workers given one worker id), and taking
    it back would fence that one, which would fence this one, for as long as both live. It steps
    aside to an id of its own; the consumer group's generation, sent with the offsets of every
    transaction, still fences whichever of the two lost its partitions (KIP-447).
    """

    def __init__(
        self, make_producer: Callable[[str], Producer], transactional_id: str, timeout_s: float
    ) -> None:
        self._make_producer = make_producer
        self.transactional_id = transactional_id
        self.timeout_s = timeout_s
        self.producer = make_producer(transactional_id)
        # Fences a previous producer of this transactional id and aborts its open transaction.
        self.producer.init_transactions(timeout_s)
        self._helper: ThreadPoolExecutor | None = None
        self._offsets_sent: Future[None] | None = None

    def begin(self) -> None:
        """Open a transaction."""
        self.producer.begin_transaction()

    def send_offsets_ahead(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Start sending the consumed offsets into the open transaction, on a helper thread.

        It is the group coordinator's round trips (AddOffsetsToTxn, TxnOffsetCommit), which the
        caller can spend on work of its own; `commit` waits for them and reports their error.
        Until then the caller must not use the producer.
        """
        self._offsets_sent = self._helper_thread().submit(
            self.producer.send_offsets_to_transaction, offsets, group_metadata, self.timeout_s
        )

    def commit_ahead(self, offsets: list[TopicPartition], group_metadata: Any) -> Future[None]:
        """`commit` on a helper thread, while the caller works on; the future carries its
        outcome (a `KafkaException` for `recover`). Until it is done the caller must not use
        the producer."""
        return self._helper_thread().submit(self.commit, offsets, group_metadata)

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Send the consumed offsets into the transaction (unless sent ahead) and commit it.

        Raises:
            KafkaException: the transaction failed; pass it to `recover`.

        """
        producer = self.producer
        sent, self._offsets_sent = self._offsets_sent, None
        if sent is not None:
            sent.result()  # the offsets sent ahead: their error, if any, is the commit's
        else:
            producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s)
        for attempt in range(3):
            try:
                producer.commit_transaction(self.timeout_s)
                return
            except KafkaException as exc:
                if exc.args[0].retriable() and attempt < 2:
                    continue
                raise

    def recover(self, exc: KafkaException) -> str:
        """Abort a failed transaction, or replace a poisoned producer; return which was done.

        "aborted" or "fatal": either way nothing of the transaction was committed, and the
        caller rewinds its batch.
        """
        self._settle_offsets_sent()
        error: KafkaError = exc.args[0]
        if error.code() in _FENCES:
            stepped_aside = f"{self.transactional_id.split('~')[0]}~{uuid.uuid4().hex[:8]}"
            logger.error(
                "fenced: another producer took transactional id %s (is a second worker running "
                "with the same worker id?); going on as %s, rewinding the batch",
                self.transactional_id, stepped_aside,
            )  # fmt: skip
            self.transactional_id = stepped_aside
            self._renew()
            return "fenced"
        if error.fatal():
            logger.error("transaction failed fatally (%s): new producer, rewinding", error)
            self._renew()
            return "fatal"
        logger.warning("transaction aborted (%s): rewinding the batch", error)
        return self.abort()

    def abort(self) -> str:
        """Abort the open transaction; a producer that cannot is replaced. Returns "aborted"."""
        self._settle_offsets_sent()
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as abort_exc:
            logger.error("abort failed (%s): new producer", abort_exc)
            self._renew()
        return "aborted"

    def close(self) -> None:
        """End the helper thread (after any offsets it is still sending)."""
        self._settle_offsets_sent()
        if self._helper is not None:
            self._helper.shutdown(wait=True)
            self._helper = None

    def _settle_offsets_sent(self) -> None:
        # No other transactional call may run beside a send still in flight: wait it out.
        sent, self._offsets_sent = self._offsets_sent, None
        if sent is not None:
            with contextlib.suppress(KafkaException):
                sent.result()

    def _helper_thread(self) -> ThreadPoolExecutor:
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="riverrun-txn")
        return self._helper

    def _renew(self) -> None:
        self.producer = self._make_producer(self.transactional_id)
        self.producer.init_transactions(self.timeout_s)


# -- partitions and offsets --------------------------------------------------------------------


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
    last = {(record.topic(), record.partition()): record for record in records}
    # Topic, partition and offset are always set on consumed records.
    return [TopicPartition(t, p, (r.offset() or 0) + 1) for (t, p), r in last.items()]


def first_offsets(records: list[Message]) -> list[TopicPartition]:
    """Per partition, the offset of the first record of the batch: where to rewind."""
    # Read backwards, each partition's first record is the last written into the dict.
    first = {(record.topic(), record.partition()): record for record in reversed(records)}
    return [TopicPartition(t, p, r.offset() or 0) for (t, p), r in first.items()]
