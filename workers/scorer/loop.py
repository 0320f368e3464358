"""The scoring worker's poll loop: consume a batch, score it, produce, then store or commit.

At-least-once (default): offsets are stored only once every output of their batch is
acknowledged (`enable.auto.offset.store=false`), and the background auto-commit commits only
stored offsets. Batches are pipelined: the producer reports failed deliveries only, and the
offsets of the batches produced so far are stored whenever it has nothing left unacknowledged
(it is waited for when that has not happened for `max_unacknowledged_ms`). Exactly-once: a
transaction takes batches while more keep arriving, for up to `transaction_interval_ms`, and
commits with their consumed offsets inside; it commits at once when nothing more has arrived,
and on a revoke.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from riverrun.workers.runtime.contact import BrokerContact, StatisticsListener
from riverrun.workers.runtime.crashpoint import CrashPoints
from riverrun.workers.runtime.errors import FatalError
from riverrun.workers.runtime.kafka import (
    ClientErrorLog,
    Transactions,
    consumer_config,
    drop_errors,
    first_offsets,
    next_offsets,
    output_limit,
    produce_all,
    producer_config,
    take_arrived,
)
from riverrun.workers.scorer.batch import BatchOptions, BatchResult, score_batch
from riverrun.workers.scorer.metrics import ScorerMetrics
from riverrun.workers.scorer.model import ModelSource, ServedModel
from riverrun.workers.scorer.settings import ScorerSettings

logger = logging.getLogger(__name__)

_TXN_TIMEOUT_S = 30.0
# A loop that has not come round for this long is stuck, not busy: batches take milliseconds.
_STALL_S = 15.0
_KEYS_WAIT_S = 60.0  # the longest a newly assigned partition waits for its keys' states


@dataclass
class RunSummary:
    """What a bounded run did; `riverrun score` logs it at exit."""

    consumed: int = 0
    produced: int = 0
    dead_lettered: int = 0
    batches: int = 0
    aborted_batches: int = 0
    first_record_at: float | None = None
    last_delivered_at: float | None = None

    @property
    def busy_seconds(self) -> float:
        """From the first record consumed to the last output acknowledged (monotonic clock)."""
        if self.first_record_at is None or self.last_delivered_at is None:
            return 0.0
        return self.last_delivered_at - self.first_record_at


class _NextOffsets(dict[tuple[str, int], int]):
    """Per partition, the offset after the last record of the batches added: what to commit."""

    def add(self, records: list[Message]) -> None:
        for tp in next_offsets(records):  # a later batch's offsets replace an earlier one's
            self[(tp.topic, tp.partition)] = tp.offset

    def to_commit(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.items()]


class _Unacknowledged:
    """The offsets of the batches produced since the producer last had nothing unacknowledged.

    The producer reports failed deliveries only (one Python call per record would cost as much
    as producing it); once it holds nothing unacknowledged and reported no failure, every
    output handed to it is on the broker, and so these offsets are safe to store.
    """

    __slots__ = ("next", "since", "failures")

    def __init__(self) -> None:
        self.next = _NextOffsets()
        self.since: float | None = None  # monotonic time of the oldest batch waiting
        self.failures: list[str] = []

    def add(self, records: list[Message]) -> None:
        self.next.add(records)
        if self.since is None:
            self.since = time.monotonic()

    def take(self) -> list[TopicPartition]:
        offsets = self.next.to_commit()
        self.next.clear()
        self.since = None
        return offsets

    def failed(self, err: KafkaError, _msg: Message) -> None:
        if len(self.failures) < 100:
            self.failures.append(str(err))


class _BatchFigures(NamedTuple):
    """What the metrics count of a batch: kept instead of the batch until its transaction
    commits, so that the records and outputs are freed as soon as they are produced."""

    records: int
    outputs: int
    scored: dict[tuple[str, int, str], int]
    dead_letters: dict[str, int]
    latencies_ms: np.ndarray
    models_used: list[ServedModel]
    elapsed: float

    @classmethod
    def of(cls, records: list[Message], result: BatchResult, elapsed: float) -> _BatchFigures:
        return cls(len(records), len(result.outputs), result.scored, result.dead_letters,
                   np.asarray(result.latencies_ms), list(result.models_used.values()), elapsed)


class _OpenTransaction:
    """The batches of one open transaction: where to rewind, what to commit, what to count."""

    __slots__ = ("opened_at", "first", "next", "batches", "records")

    def __init__(self, opened_at: float) -> None:
        self.opened_at = opened_at
        self.first: dict[tuple[str, int], int] = {}  # where to rewind
        self.next = _NextOffsets()
        self.batches: list[_BatchFigures] = []
        self.records = 0

    def add(self, records: list[Message], result: BatchResult, elapsed: float) -> None:
        for tp in first_offsets(records):
            self.first.setdefault((tp.topic, tp.partition), tp.offset)
        self.next.add(records)
        self.batches.append(_BatchFigures.of(records, result, elapsed))
        self.records += len(records)



class Scorer:
    """One consumer, one producer, one thread: the hot path of riverrun."""

    def __init__(
        self,
        settings: ScorerSettings,
        models: ModelSource,
        metrics: ScorerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._options = settings.scorer
        self._models = models
        self.metrics = metrics if metrics is not None else ScorerMetrics()
        self.metrics.model_staleness.watch(models.served)
        key_figures = getattr(models, "key_figures", None)  # a registry's models may be per key
        if key_figures is not None:
            self.metrics.keys.watch(key_figures)
        self._batch_options = BatchOptions(
            predictions_topic=settings.topics.predictions,
            dead_letter_topic=settings.topics.dead_letters,
            worker=settings.scorer.worker_id,
            max_request_bytes=settings.scorer.max_request_bytes,
            reject_missing_features=settings.scorer.missing_features == "reject",
            shadow_topic=settings.topics.shadow_predictions,
        )
        self._stop = threading.Event()
        self._looped_at = time.monotonic()
        self._assigned: set[tuple[str, int]] = set()
        self._held_for_keys: set[tuple[str, int]] = set()  # paused until their keys are read
        self._held_since = 0.0
        self._incremental = True
        self._joined = False
        self._unacknowledged = _Unacknowledged()
        self._max_unacknowledged_s = settings.scorer.max_unacknowledged_ms / 1000.0
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._transactions: Transactions | None = None
        # Exactly-once: the transaction batches are added to until it commits.
        self._open: _OpenTransaction | None = None
        # Exactly-once under load: the last transaction commits beside the next batch's scoring.
        self._committing: tuple[Future[None], _OpenTransaction] | None = None
        self._summary = RunSummary()
        self._on_error = ClientErrorLog(logger, settings.kafka.bootstrap_servers)
        self._crash = CrashPoints(settings.scorer.crash_at)
        self._contact = BrokerContact.for_interval(settings.scorer.statistics_interval_ms)
        self._watch_contact = settings.scorer.statistics_interval_ms > 0
        self._statistics = StatisticsListener(self.metrics.consumer_lag, self._contact,
                                              settings.kafka.bootstrap_servers, logger)

    # -- configuration -------------------------------------------------------------------

    @property
    def _client_id(self) -> str:
        return f"{self._settings.kafka.client_id}-scorer-{self._options.worker_id}"

    def _consumer_config(self) -> dict[str, Any]:
        return consumer_config(
            self._settings.kafka, self._options.group_id, client_id=self._client_id,
            options={
                "partition.assignment.strategy": "cooperative-sticky",
                # The background commit only ever commits offsets stored after delivery.
                "enable.auto.commit": not self._options.exactly_once,
                "auto.commit.interval.ms": 1000,
            },
            on_error=self._on_error, on_statistics=self._statistics,
            statistics_interval_ms=self._options.statistics_interval_ms,
        )  # fmt: skip

    def _producer_config(self, transactional_id: str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "compression.type": "lz4",
            "batch.num.messages": 10_000,
            # Kafka's own partitioner, so keys land where Java and Go producers put them.
            "partitioner": "murmur2_random",
            # Batches are already formed by the consumer: a prediction waits for no more.
            # Under load, records queue behind the requests in flight and batch anyway.
            "linger.ms": 0,
            # Failed deliveries only: a report per record costs the loop as much as producing
            # it. At-least-once counts the failures (see _Unacknowledged); in a transaction a
            # failed delivery fails the commit, which rewinds the transaction's batches.
            "delivery.report.only.error": True,
        }
        if transactional_id is None:
            options["on_delivery"] = self._unacknowledged.failed
        return producer_config(
            self._settings.kafka, client_id=self._client_id, options=options,
            on_error=self._on_error,
            transactional_id=transactional_id, transaction_timeout_s=_TXN_TIMEOUT_S,
        )  # fmt: skip

    # -- rebalance callbacks -------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._joined = True
        self._assigned.update((p.topic, p.partition) for p in partitions)
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        self._owned_changed()
        self._hold_for_keys(consumer, partitions)
        logger.info("assigned %s", sorted(p.partition for p in partitions))

    def _hold_for_keys(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Pause new partitions whose per-key states are still being read (see `_release`)."""
        pending = getattr(self._models, "keys_pending", None)
        waiting = pending({p.partition for p in partitions}) if pending is not None else set()
        if not waiting:
            return
        # Assigned here, so that they can be paused before anything of them is fetched.
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        held = [p for p in partitions if p.partition in waiting]
        consumer.pause(held)
        self._held_for_keys.update((p.topic, p.partition) for p in held)
        self._held_since = time.monotonic()
        logger.info("partitions %s wait for their keys' states to be read",
                    sorted(p.partition for p in held))  # fmt: skip

    def _release(self, consumer: Consumer) -> None:
        """Resume the partitions held for their keys once read (or after 60 s, with a warning)."""
        pending = getattr(self._models, "keys_pending", None)
        waiting = pending({p for _, p in self._held_for_keys}) if pending is not None else set()
        late = time.monotonic() - self._held_since > _KEYS_WAIT_S
        ready = [(t, p) for t, p in self._held_for_keys if p not in waiting or late]
        if not ready:
            return
        if late and waiting:
            logger.warning("the keys of partitions %s are still being read after %.0f s: their "
                           "requests go on, answered by the global model meanwhile",
                           sorted(waiting), _KEYS_WAIT_S)  # fmt: skip
        consumer.resume([TopicPartition(t, p) for t, p in ready])
        self._held_for_keys.difference_update(ready)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what is delivered before the partitions move, so the next owner starts
        # right after it (librdkafka #4059: commit deliberately on revoke).
        self._settle(block=True)
        if self._options.exactly_once:
            self._commit_open()
        else:
            self._commit_sync(consumer)
        self._assigned.difference_update((p.topic, p.partition) for p in partitions)
        self._held_for_keys.difference_update((p.topic, p.partition) for p in partitions)
        self.metrics.rebalances.labels("revoke").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        self._owned_changed()
        logger.info("revoked %s", sorted(p.partition for p in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._joined = False  # out of the group until the next assignment
        self._assigned.difference_update((p.topic, p.partition) for p in partitions)
        self._held_for_keys.difference_update((p.topic, p.partition) for p in partitions)
        self._finish_commit()  # a commit under way fails now (fenced), and is rewound
        if self._open is not None:
            # Its offsets are no longer this worker's to commit: the new owners start from the
            # last commit, and what is still owned is read again.
            self._abandon(None)
        self.metrics.rebalances.labels("lost").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        self._owned_changed()
        logger.warning("lost %s without a clean revoke", sorted(p.partition for p in partitions))

    def _owned_changed(self) -> None:
        # Per-key versions hold the keys of the requests partitions owned (same numbers).
        own = getattr(self._models, "own_partitions", None)
        if own is not None:
            own({partition for _topic, partition in self._assigned})

    # -- health --------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """In the group (assigned, even nothing), hearing from its brokers, and getting on.

        Contact is judged from librdkafka's statistics; with them off
        (`--statistics-interval-ms 0`) readiness means in the group only. A loop that has not
        come round for `_STALL_S` (a batch stuck in a model, a producer that does not drain)
        is not ready either, whatever the statistics say.
        """
        if not self._joined or self._stop.is_set():
            return False
        if time.monotonic() - self._looped_at > _STALL_S:
            return False
        # As of the last poll: statistics arrive only when the loop polls, and a batch waiting
        # for first model loads does not poll for seconds (the stall check above bounds that).
        return not self._watch_contact or self._contact.in_contact(as_of=self._looped_at)

    def stop(self) -> None:
        """Finish the current batch, flush, commit and leave (safe from a signal handler)."""
        self._stop.set()

    # -- the loop ------------------------------------------------------------------------

    def run(self, max_messages: int | None = None, idle_timeout: float | None = None) -> RunSummary:
        """Score until stopped, or until `max_messages` consumed or `idle_timeout` s of quiet."""
        summary = self._summary = RunSummary()
        options = self._options
        if options.exactly_once:
            self._transactions = Transactions(
                lambda tid: Producer(self._producer_config(tid)), options.transactional_id,
                _TXN_TIMEOUT_S,
            )
            self._producer = self._transactions.producer
        else:
            self._producer = Producer(self._producer_config())
        config = self._consumer_config()
        # Incremental assignment (cooperative, or the broker-side KIP-848 protocol) or eager.
        self._incremental = ("cooperative" in str(config.get("partition.assignment.strategy"))
                             or config.get("group.protocol") == "consumer")  # fmt: skip
        consumer = Consumer(config)
        self._consumer = consumer
        self._fit_outputs(consumer)
        consumer.subscribe(
            [self._settings.topics.requests],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.metrics.ready.set(0)
        logger.info(
            "scoring %s -> %s as group %s (%s)",
            self._settings.topics.requests,
            self._settings.topics.predictions,
            options.group_id,
            "exactly-once" if options.exactly_once else "at-least-once",
        )
        last_record = time.monotonic()
        batch_timeout = options.batch_timeout_ms / 1000.0
        transaction_interval = options.transaction_interval_ms / 1000.0
        clean = False
        try:
            while not self._stop.is_set():
                want = options.batch_size
                if max_messages is not None:
                    taken = summary.consumed + (self._open.records if self._open else 0) + (
                        self._committing[1].records if self._committing else 0)
                    want = min(want, max_messages - taken)
                    if want <= 0:
                        break
                # An open transaction waits for nothing: it commits when nothing more has come.
                records = take_arrived(consumer, want, 0 if self._open else batch_timeout)
                if self._held_for_keys:
                    self._release(consumer)
                self._looped_at = time.monotonic()
                self.metrics.ready.set(1 if self.is_ready() else 0)
                # New snapshots are swapped in here, between batches, never inside one.
                self._models.refresh()
                if records:
                    records = drop_errors(records, logger)
                if not records:
                    self._commit_open()
                    self._settle(block=False)
                    if not self._joined:
                        # Waiting for a first assignment is not quiet: the idle clock starts
                        # once this worker owns partitions.
                        last_record = time.monotonic()
                    elif idle_timeout is not None and time.monotonic() - last_record > idle_timeout:
                        break
                    continue
                last_record = time.monotonic()
                if self._crash.enabled:
                    self._crash.hit("after-consume")
                if summary.first_record_at is None:
                    summary.first_record_at = last_record
                self._process(records, summary)
                if self._open and time.monotonic() - self._open.opened_at >= transaction_interval:
                    self._commit_open(wait=False)
            clean = True
        finally:
            self._shutdown(clean)
        summary.last_delivered_at = time.monotonic()
        return summary

    def _fit_outputs(self, consumer: Consumer) -> None:
        """Learn what the outputs must fit: the size limit, and whether partitions line up.

        A prediction goes to its request's partition number when the output topics have as
        many partitions as `requests`: co-partitioned whatever partitioner the upstream used.
        """
        topics = self._settings.topics
        limit = output_limit(self._settings.kafka, [topics.predictions,
                                                    topics.shadow_predictions,
                                                    topics.dead_letters],
                             stopping=self._stop)  # fmt: skip
        counts: dict[str, int] = {}
        deadline = time.monotonic() + 10
        while True:  # in one-second asks, so that a stop request is heard
            try:
                metadata = consumer.list_topics(timeout=1)
            except KafkaException as exc:
                if self._stop.is_set() or time.monotonic() > deadline:
                    logger.warning("no topic metadata (%s): predictions placed by key", exc)
                    break
            else:
                counts = {name: len(info.partitions) for name, info in metadata.topics.items()
                          if info.error is None}  # fmt: skip
                break
        wanted = counts.get(topics.requests)
        same = wanted is not None and all(
            counts.get(t) in (None, wanted) for t in (topics.predictions, topics.shadow_predictions)
        ) and counts.get(topics.predictions) == wanted
        if not same:
            logger.warning(
                "%s has %s partitions and %s %s: predictions are placed by their key's hash, so "
                "they share a partition number with their request only if the upstream used "
                "the same (murmur2) partitioner", topics.requests, wanted, topics.predictions,
                counts.get(topics.predictions),
            )  # fmt: skip
        self._batch_options = replace(self._batch_options, max_output_bytes=limit,
                                      same_partition=same)  # fmt: skip
        logger.info("outputs under %d bytes, predictions to %s", limit,
                    "their request's partition" if same else "their key's partition")

    def _process(self, records: list[Message], summary: RunSummary) -> None:
        started = time.perf_counter()
        result = score_batch(records, self._models, self._batch_options)
        if self._options.exactly_once:
            # Counted when its transaction commits.
            self._produce_in_transaction(records, result, time.perf_counter() - started)
            return
        self._produce_pipelined(records, result)
        self._observe(_BatchFigures.of(records, result, time.perf_counter() - started), summary)

    def _observe(self, batch: _BatchFigures, summary: RunSummary) -> None:
        metrics = self.metrics
        n = batch.records
        metrics.consumed.inc(n)
        metrics.batch_size.observe(n)
        metrics.processing.observe(batch.elapsed)
        for (model, version, route), count in batch.scored.items():
            metrics.scored.labels(model, str(version), route).inc(count)
        for error_class, count in batch.dead_letters.items():
            metrics.dead_letters.labels(error_class).inc(count)
        metrics.end_to_end.observe_many(batch.latencies_ms, scale=0.001)
        for model in batch.models_used:
            metrics.model_info.labels(model.name, str(model.version), str(model.snapshot)).set(1)
        summary.consumed += n
        summary.batches += 1
        summary.produced += batch.outputs
        summary.dead_lettered += sum(batch.dead_letters.values())

    # -- at-least-once -------------------------------------------------------------------

    def _produce_pipelined(self, records: list[Message], result: BatchResult) -> None:
        producer = self._producer
        assert producer is not None  # noqa: S101  # set in run()
        self._settle(block=False)  # the previous batches are usually acknowledged by now
        produce_all(producer, result.outputs)
        self._unacknowledged.add(records)
        if self._crash.enabled:
            producer.flush(self._options.shutdown_timeout_s)  # outputs on the broker, uncommitted
            self._crash.hit("after-produce-before-commit")
        since = self._unacknowledged.since
        if since is not None and time.monotonic() - since > self._max_unacknowledged_s:
            # Outputs kept flowing: wait until they are all acknowledged, as long as that takes
            # (a delivery that fails for good ends it), then go on.
            while self._unacknowledged.next and not self._stop.is_set():
                producer.flush(0.1)
                self._settle(block=False)

    def _settle(self, block: bool) -> None:
        """Store the offsets of the batches produced so far once all their outputs are
        acknowledged: at once if so, else (`block`) after waiting for them."""
        producer, consumer = self._producer, self._consumer
        if producer is None or consumer is None:
            return
        pending = self._unacknowledged
        if not pending.next:  # nothing produced since the last store (always so exactly-once)
            return
        if block:
            remaining = producer.flush(self._options.shutdown_timeout_s)
            if remaining:
                raise FatalError(
                    f"{remaining} outputs still unacknowledged after "
                    f"{self._options.shutdown_timeout_s}s; offsets not committed"
                )
        else:
            producer.poll(0)  # serves the failure reports that are ready
        # Counted before the failures are looked at: a failure counts until it is served.
        idle = len(producer) == 0
        if pending.failures:
            self.metrics.delivery_failures.inc(len(pending.failures))
            raise FatalError(
                f"{len(pending.failures)} outputs were not delivered ({pending.failures[0]}); "
                "stopping without committing so that they are produced again on restart"
            )
        if idle and pending.next:
            self._store(consumer, pending.take())
            if self._crash.enabled:
                self._crash.hit("after-commit")

    def _store(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
        owned = [tp for tp in offsets if (tp.topic, tp.partition) in self._assigned]
        if not owned:
            return
        try:
            consumer.store_offsets(offsets=owned)
        except KafkaException as exc:
            # A partition revoked in between: its new owner re-reads from the last commit.
            logger.debug("offsets not stored: %s", exc)

    def _commit_sync(self, consumer: Consumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                logger.warning("commit failed: %s", exc)

    # -- exactly-once --------------------------------------------------------------------

    def _produce_in_transaction(
        self, records: list[Message], result: BatchResult, elapsed: float
    ) -> None:
        """Add a batch to the open transaction (opening one if none is)."""
        transactions = self._transactions
        assert transactions is not None  # noqa: S101  # set in run()
        if not self._finish_commit(records):
            return  # the transaction before failed: this batch is read again after its records
        open_ = self._open
        opening = open_ is None
        if open_ is None:
            open_ = self._open = _OpenTransaction(time.monotonic())
        open_.add(records, result, elapsed)
        try:
            if opening:
                transactions.begin()
            produce_all(transactions.producer, result.outputs)
            if self._crash.enabled:
                transactions.producer.flush(_TXN_TIMEOUT_S)  # outputs on the broker, uncommitted
                self._crash.hit("after-produce-before-commit")
        except KafkaException as exc:
            self._abandon(exc)

    def _commit_open(self, wait: bool = True) -> None:
        """Commit the open transaction, its batches' offsets inside; count its batches.

        With `wait` false the commit runs on a helper thread while the loop takes and scores
        the next batch, and `_finish_commit` takes its outcome before the producer is used again.
        """
        self._finish_commit()
        transactions, consumer, open_ = self._transactions, self._consumer, self._open
        if open_ is None or transactions is None or consumer is None:
            return
        offsets, group = open_.next.to_commit(), consumer.consumer_group_metadata()
        self._open = None
        if not wait:
            self._committing = (transactions.commit_ahead(offsets, group), open_)
            return
        try:
            transactions.commit(offsets, group)
        except KafkaException as exc:
            self._open = open_
            self._abandon(exc)
            return
        self._committed(open_)

    def _finish_commit(self, batch: list[Message] | None = None) -> bool:
        """Take the outcome of a commit running beside the loop; False if it failed, in which
        case its batches, and `batch` scored meanwhile, are read again."""
        if self._committing is None:
            return True
        committing, open_ = self._committing
        self._committing = None
        try:
            committing.result()
        except KafkaException as exc:
            self._open = open_
            self._abandon(exc, batch)
            return False
        self._committed(open_)
        return True

    def _committed(self, open_: _OpenTransaction) -> None:
        self.metrics.transactions.labels("committed").inc()
        for batch in open_.batches:
            self._observe(batch, self._summary)
        if self._crash.enabled:
            self._crash.hit("after-commit")

    def _abandon(self, exc: KafkaException | None, batch: list[Message] | None = None) -> None:
        """Abort the open transaction (or replace a poisoned producer) and read its batches
        again from where they began, on the partitions still owned; with them `batch`, a batch
        taken after them and not produced."""
        transactions, consumer, open_ = self._transactions, self._consumer, self._open
        self._open = None
        if transactions is None or consumer is None:
            return
        outcome = transactions.recover(exc) if exc is not None else transactions.abort()
        self.metrics.transactions.labels(outcome).inc()
        self._producer = transactions.producer
        rewind: dict[tuple[str, int], int] = {}
        if open_ is not None:
            self._summary.aborted_batches += len(open_.batches)
            rewind = dict(open_.first)
        for tp in first_offsets(batch or []):  # its partitions the transaction did not hold
            rewind.setdefault((tp.topic, tp.partition), tp.offset)
        for (topic, partition), offset in rewind.items():
            if (topic, partition) in self._assigned:
                try:
                    consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException as seek_exc:
                    logger.warning("could not rewind %s[%d]: %s", topic, partition,
                                   seek_exc)  # fmt: skip

    # -- shutdown ------------------------------------------------------------------------

    def _shutdown(self, clean: bool) -> None:
        consumer, producer = self._consumer, self._producer
        try:
            if clean and consumer is not None:
                self._settle(block=True)
                if self._options.exactly_once:
                    self._commit_open()
                else:
                    self._commit_sync(consumer)
        finally:
            self._unacknowledged = _Unacknowledged()
            self._open = None
            self._committing = None
            if consumer is not None:
                # close() leaves the group, so partitions move at once rather than after
                # session.timeout.ms; it commits only stored offsets, i.e. delivered work.
                consumer.close()
            if producer is not None and clean:
                producer.flush(self._options.shutdown_timeout_s)
            if self._transactions is not None:
                self._transactions.close()  # its helper thread, after any commit still running
            self._consumer = None
            self._producer = None
            self._transactions = None
            self.metrics.ready.set(0)
            logger.info("scorer stopped (%s)", "clean" if clean else "after a failure")
