"""The join stage: feedback and predictions in, examples, outcomes and dead letters out.

A consumer in group `riverrun-learner-<model>` reads `feedback` and `predictions`. Predictions
fill a bounded window; each label of this model is joined with its features (its own, else its
prediction's) once the predictions read have caught up with it. A batch's examples, outcomes
and dead letters are produced in one transaction together with the feedback offsets, so the
join is exactly-once. Prediction offsets are never committed: after a restart the window is
rebuilt by reading predictions back over its age.

What the stage hands on is explicit: a `JoinBatch` while its transaction is open, then the
`CommittedExample`s (log offset, features, label) once it is committed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from riverrun.schemas import (
    DeadLetter,
    DecodeError,
    LabelFields,
    LabelObserved,
    decode_label_fields,
    decode_prediction_fields,
    parse_json,
)
from riverrun.workers.keys.model import request_key
from riverrun.workers.learner.drift import DriftReporter
from riverrun.workers.learner.join import (
    LABEL_TYPE_MISMATCH,
    OUTPUT_TOO_LARGE,
    UNKNOWN_MODEL,
    Joined,
    JoinWindow,
    coerce_label,
    example_value,
    outcome_value,
)
from riverrun.workers.learner.log import end_offset, read_range
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.learner.summary import LearnSummary
from riverrun.workers.runtime.crashpoint import CrashPoints
from riverrun.workers.runtime.errors import FatalError
from riverrun.workers.runtime.kafka import (
    CLIENT_MAX_BYTES,
    ClientErrorLog,
    Outgoing,
    Transactions,
    dead_letter_record,
    drop_errors,
    next_offsets,
    output_limit,
    produce,
    producer_config,
    record_bytes,
)

logger = logging.getLogger(__name__)

TXN_TIMEOUT_S = 60.0
# A label waits at most this long for the predictions read to catch up with its timestamp
# (a broker whose watermarks cannot be trusted must not stall the join for ever).
_CATCH_UP_WAIT_S = 10.0
_SETTLE_MS = 1000


class CommittedExample(NamedTuple):
    """An example the join committed to the log: what the learn stage learns, and where."""

    offset: int
    features: dict[str, Any]
    label: Any
    value: bytes | None  # the record's bytes, for a dead letter should the model raise on it
    key: str | None = None  # the entity it is a label of (per-key models learn it for that key)
    timestamp_ms: int = 0  # its time in the examples log
    key_partition: int | None = None  # the feedback partition of the key's labels


class _Pending(NamedTuple):
    """A consumed feedback record awaiting its turn (its label, or None to pass it by)."""

    record: Message
    label: LabelObserved | LabelFields | None
    arrived: float
    dead_letter: DecodeError | None = None


@dataclass
class JoinBatch:
    """The labels joined in one pass: the records they consumed and what they produce."""

    records: list[Message] = field(default_factory=list)
    outputs: list[Outgoing] = field(default_factory=list)  # outcomes and dead letters, in order
    joined: list[Joined] = field(default_factory=list)
    examples: list[bytes] = field(default_factory=list)  # each joined label's example, rendered
    keys: list[bytes] = field(default_factory=list)  # each example's key (its request id)
    unjoined: list[str] = field(default_factory=list)


class JoinStage:
    """The join window, the labels waiting on it, and the transaction that commits a batch."""

    def __init__(
        self,
        settings: LearnerSettings,
        metrics: LearnerMetrics,
        drift: DriftReporter,
        crash: CrashPoints,
        on_error: ClientErrorLog,
    ) -> None:
        self._settings = settings
        self._options = settings.learner
        self._topics = settings.topics
        self._model = settings.learner.model
        self._metrics = metrics
        self._drift = drift
        self._crash = crash
        self._on_error = on_error
        self._window = JoinWindow(
            self._model, self._options.window_max_count, int(self._options.window_max_age_s * 1000)
        )
        self._pending: deque[_Pending] = deque()
        self._paused = False
        self._predictions_read: dict[int, int] = {}  # partition -> last timestamp read (ms)
        self._predictions_start: dict[int, int] = {}  # partition -> offset assigned at
        self._watermarks: dict[int, tuple[float, int]] = {}  # partition -> (checked at, high)
        self._example_offsets: list[tuple[int, int]] = []  # (offset, timestamp) delivered
        self._transactions: Transactions | None = None
        # Set by the loop from the version learned: labels are coerced to it at the door.
        self.label_type: str | None = None
        # The largest record the producer and the broker take (read from them at start).
        self.output_limit = CLIENT_MAX_BYTES
        # Whether this learner answers for labels of a model that has no release at all.
        self.orphaned: Callable[[str], bool] = lambda _model: False

    @property
    def waiting(self) -> int:
        """Labels held until the predictions read catch up with them."""
        return len(self._pending)

    # -- start, rebalance, close -----------------------------------------------------------

    def start(self, client_id: str) -> None:
        """Make the transactional producer; this fences a previous learner of the model."""
        def make(transactional_id: str) -> Producer:
            return Producer(producer_config(
                self._settings.kafka, client_id=client_id,
                options={"partitioner": "murmur2_random"}, on_error=self._on_error,
                transactional_id=transactional_id, transaction_timeout_s=TXN_TIMEOUT_S,
            ))  # fmt: skip

        # The learner never recovers a failed transaction (it stops, and its restart resumes
        # from the last commit), so its id, one per model, always fences a previous learner.
        self._transactions = Transactions(make, self._options.transactional_id, TXN_TIMEOUT_S)
        topics = self._topics
        self.output_limit = output_limit(self._settings.kafka,
                                         [topics.examples, topics.outcomes, topics.dead_letters])

    def close(self, clean: bool) -> None:
        """Flush what the producer holds (after a clean stop only)."""
        if self._transactions is not None:
            self._transactions.close()
            if clean:
                self._transactions.producer.flush(self._options.shutdown_timeout_s)
        self._transactions = None

    def rebuild_joined(self, examples: Consumer) -> None:
        """Remember the requests whose labels the log already holds, to refuse duplicates."""
        topic = self._topics.examples
        low, high = end_offset(examples, topic)
        start = max(low, high - self._options.window_max_count)
        model = self._model
        window = self._window
        count = 0

        def remember(_offset: int, timestamp_ms: int, raw: bytes | None) -> None:
            nonlocal count
            data = orjson.loads(raw or b"{}")
            if data.get("model") == model and "request_id" in data:
                window.mark_joined(data["request_id"], timestamp_ms)
                count += 1

        read_range(examples, topic, start, high, remember)
        logger.info("join window: %d labels already learned, from offsets [%d, %d)",
                    count, start, high)  # fmt: skip

    def assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each predictions partition the window's age back (its offsets are never committed).

        Sets the partitions' offsets in place, before the caller assigns them.
        """
        since_ms = int((time.time() - self._options.window_max_age_s) * 1000)
        predictions = [p for p in partitions if p.topic == self._topics.predictions]
        if not predictions:
            return
        wanted = [TopicPartition(p.topic, p.partition, since_ms) for p in predictions]
        found = consumer.offsets_for_times(wanted, timeout=15)
        starts = {tp.partition: tp.offset for tp in found}
        for p in predictions:
            offset = starts.get(p.partition, OFFSET_END)
            if offset < 0:  # nothing that recent: start at the end, as a concrete offset
                offset = consumer.get_watermark_offsets(p, timeout=15)[1]
            p.offset = offset
            self._predictions_start[p.partition] = offset
            self._predictions_read[p.partition] = -1

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Forget what the partitions' next owner will read again (held labels included)."""
        self._pending.clear()
        self._paused = False
        for p in partitions:
            if p.topic == self._topics.predictions:
                self._predictions_read.pop(p.partition, None)
                self._predictions_start.pop(p.partition, None)

    # -- one pass --------------------------------------------------------------------------

    def take(self, records: list[Message]) -> None:
        """Predictions into the window, feedback records into the queue of labels."""
        predictions, pending = self._topics.predictions, self._pending
        arrived = time.monotonic()
        for record in drop_errors(records, logger):
            if record.topic() == predictions:
                self._add_prediction(record)
            else:
                pending.append(self._classify(record, arrived))

    def pause_if_full(self, consumer: Consumer, backlog: int) -> None:
        """Pause feedback while held labels and examples not yet learned reach the bound."""
        full = len(self._pending) + backlog >= self._options.max_pending_labels
        if full != self._paused:
            feedback = [tp for tp in consumer.assignment() if tp.topic == self._topics.feedback]
            (consumer.pause if full else consumer.resume)(feedback)
            self._paused = full

    def unpaused(self) -> None:
        """Forget the feedback pause: the loop resumed every partition (it pauses again if full)."""
        self._paused = False

    def join_ready(self, consumer: Consumer) -> JoinBatch:
        """Join the held labels, in order, as far as the predictions read allow."""
        batch = JoinBatch()
        done, outputs, joined, unjoined = batch.records, batch.outputs, batch.joined, batch.unjoined
        rendered, keys = batch.examples, batch.keys
        pending = self._pending
        now = time.monotonic()
        caught_up_to = -1
        window, examples, outcomes = self._window, self._topics.examples, self._topics.outcomes
        while pending:
            record, label, arrived, dead_letter = pending[0]
            if label is None:
                if dead_letter is not None:
                    outputs.append(self._dead_letter(record, dead_letter.error_class,
                                                     dead_letter.reason))  # fmt: skip
                    unjoined.append(dead_letter.error_class)
                done.append(pending.popleft().record)
                continue
            timestamp_ms = record.timestamp()[1]
            if timestamp_ms > caught_up_to:
                if not self._caught_up(consumer, timestamp_ms):
                    if now - arrived < _CATCH_UP_WAIT_S:
                        break
                    logger.warning(
                        "predictions read have not caught up with a label after %.0f s: "
                        "joining it with what the window holds", _CATCH_UP_WAIT_S,
                    )  # fmt: skip
                caught_up_to = timestamp_ms
            pending.popleft()
            try:
                value = coerce_label(label.label, self.label_type)
            except ValueError as exc:
                outputs.append(self._dead_letter(record, LABEL_TYPE_MISMATCH, str(exc)))
                unjoined.append(LABEL_TYPE_MISMATCH)
                done.append(record)
                continue
            if value is not label.label:
                label = (label._replace(label=value) if isinstance(label, LabelFields)
                         else label.model_copy(update={"label": value}))  # fmt: skip
            decision = window.join_one(label, timestamp_ms)
            if type(decision) is Joined:
                example, outcome = decision
                entity = request_key(record.key(), example.request_id)
                if entity is not None:
                    example = example._replace(key=entity, key_partition=record.partition())
                    decision = Joined(example, outcome)
                value = example_value(example)
                key = example.request_id.encode()
                judged = (Outgoing(outcomes, record.key(), outcome_value(outcome))
                          if outcome is not None else None)  # fmt: skip
                too_large = self._too_large(Outgoing(examples, key, value), judged)
                if too_large:
                    outputs.append(self._dead_letter(record, OUTPUT_TOO_LARGE, too_large))
                    unjoined.append(OUTPUT_TOO_LARGE)
                    done.append(record)
                    continue
                rendered.append(value)
                keys.append(key)
                if judged is not None:
                    outputs.append(judged)
                joined.append(decision)
            else:
                outputs.append(self._dead_letter(record, decision.reason, decision.detail))
                unjoined.append(decision.reason)
            done.append(record)
        self._metrics.window_predictions.set(len(self._window))
        return batch

    def produce(self, batch: JoinBatch) -> None:
        """Open the batch's transaction and hand it the batch's outputs."""
        transactions = self._transactions
        assert transactions is not None  # noqa: S101  # set by start()
        self._example_offsets.clear()
        examples, delivered = self._topics.examples, self._on_example_delivered
        try:
            transactions.begin()
            producer = transactions.producer
            # The examples first (each partition's order is the batch's): their reports give the
            # offsets to learn from; outcomes and dead letters need none.
            for key, value in zip(batch.keys, batch.examples, strict=True):
                produce(producer, examples, value, key, on_delivery=delivered)
            for topic, key, value, headers, _partition in batch.outputs:
                produce(producer, topic, value, key, headers=headers)
            producer.poll(0)
            if self._crash.enabled:
                producer.flush(TXN_TIMEOUT_S)  # outputs on the broker, uncommitted
                self._crash.hit("after-join-before-commit")
        except KafkaException as exc:
            self._give_up(exc)

    def send_offsets_ahead(self, batch: JoinBatch, consumer: Consumer) -> None:
        """Start the batch's feedback offsets into its transaction while the caller learns.

        The producer is not the caller's until `commit`.
        """
        transactions = self._transactions
        assert transactions is not None  # noqa: S101  # set by start()
        try:
            transactions.send_offsets_ahead(next_offsets(batch.records),
                                            consumer.consumer_group_metadata())  # fmt: skip
        except KafkaException as exc:
            self._give_up(exc)

    def commit(
        self, batch: JoinBatch, consumer: Consumer, summary: LearnSummary
    ) -> list[CommittedExample]:
        """Commit the batch's transaction with its feedback offsets; return its examples."""
        transactions = self._transactions
        assert transactions is not None  # noqa: S101  # set by start()
        try:
            transactions.commit(next_offsets(batch.records), consumer.consumer_group_metadata())
        except KafkaException as exc:
            self._give_up(exc)
        self._metrics.transactions.labels("committed").inc()
        self._count(batch, summary)
        committed = self._committed_examples(transactions.producer, batch)
        if self._crash.enabled:
            self._crash.hit("after-commit")
        return committed

    # -- inside a pass ---------------------------------------------------------------------

    def _committed_examples(self, producer: Producer, batch: JoinBatch) -> list[CommittedExample]:
        """Pair the batch's committed examples with their log offsets, for the learn stage."""
        joined = batch.joined
        offsets = self._example_offsets
        deadline = time.monotonic() + TXN_TIMEOUT_S
        while len(offsets) < len(joined) and time.monotonic() < deadline:
            producer.poll(0.01)  # commit flushed them: only their reports are left to serve
        if len(offsets) != len(joined):
            raise FatalError(
                f"{len(joined)} examples committed but {len(offsets)} delivery reports "
                "served: stopping; the restarted learner reads them from the log"
            )
        return [
            CommittedExample(offset, example.features, example.label, value, example.key,
                             timestamp_ms, example.key_partition)  # fmt: skip
            for (offset, timestamp_ms), (example, _), value in zip(offsets, joined,
                                                                     batch.examples, strict=True)
        ]

    def _on_example_delivered(self, err: KafkaError | None, msg: Message) -> None:
        # Inside a transaction a failed record fails the commit, which stops the learner.
        if err is None:
            self._example_offsets.append((msg.offset() or 0, msg.timestamp()[1]))

    def _give_up(self, exc: KafkaException) -> None:
        # The window already counts this batch's labels as joined: rather than unpick that,
        # stop; the restarted learner rebuilds the window from what was committed.
        self._metrics.transactions.labels("failed").inc()
        raise FatalError(
            f"join transaction failed ({exc.args[0]}): stopping without committing; the "
            "restarted learner resumes from the last committed batch"
        ) from exc

    def _count(self, batch: JoinBatch, summary: LearnSummary) -> None:
        model, metrics, joined = self._model, self._metrics, batch.joined
        from_predictions = sum(1 for decision in joined if decision.outcome is not None)
        for source, count in (("prediction", from_predictions),
                              ("feedback", len(joined) - from_predictions)):  # fmt: skip
            if count:
                metrics.labels_joined.labels(model, source).inc(count)
        served: dict[int, list[float]] = {}
        for decision in joined:
            outcome = decision.outcome
            if outcome is not None:
                served.setdefault(outcome.version, []).append(outcome.loss)
        for version, losses in served.items():
            self._drift.observe_many(version, "served", losses)
        for reason, count in Counter(batch.unjoined).items():
            metrics.labels_unjoined.labels(model, reason).inc(count)
        summary.labels_joined += len(joined)
        summary.labels_unjoined += len(batch.unjoined)

    def _too_large(self, *records: Outgoing | None) -> str:
        """Why a label's outputs cannot be written (one is over the size limit), or ""."""
        limit = self.output_limit
        for out in records:
            if out is not None and record_bytes(out.key, out.value, out.headers) > limit:
                size = record_bytes(out.key, out.value, out.headers)
                return (f"its record on {out.topic} would be {size} bytes, over the {limit} "
                        "the producer and the broker take: send a shorter key or fewer features")
        return ""

    def _dead_letter(self, record: Message, error_class: str, reason: str) -> Outgoing:
        letter = DeadLetter(
            error_class=error_class, reason=reason, source_topic=record.topic() or "",
            source_partition=record.partition() or 0, source_offset=record.offset() or 0,
            worker=self._options.worker_id,
        )  # fmt: skip
        return dead_letter_record(self._topics.dead_letters, record.key(), record.value(),
                                  letter.to_headers(), self.output_limit)  # fmt: skip

    def _add_prediction(self, record: Message) -> None:
        timestamp_ms = record.timestamp()[1]
        partition = record.partition() or 0  # always set on a consumed record
        if timestamp_ms > self._predictions_read.get(partition, -1):
            self._predictions_read[partition] = timestamp_ms
        raw = record.value()
        try:
            data = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return  # not ours to dead-letter: the scorer wrote it
        if not isinstance(data, dict) or data.get("model") != self._model:
            return
        try:
            prediction = decode_prediction_fields(data, raw)
        except DecodeError as exc:
            logger.debug("unreadable prediction at %s/%d: %s", record.topic(), record.offset(), exc)
            return
        self._window.add_prediction(prediction, timestamp_ms)  # the gauge is set per batch

    def _classify(self, record: Message, arrived: float) -> _Pending:
        raw = record.value()
        try:
            data = parse_json(raw)
        except DecodeError as exc:
            return _Pending(record, None, arrived, exc)
        if isinstance(data, dict) and data.get("model") not in (None, self._model):
            model = data.get("model")
            if isinstance(model, str) and self.orphaned(model):
                return _Pending(record, None, arrived, DecodeError(
                    UNKNOWN_MODEL, f"no model {model!r} is released: check the name, or "
                    "release it (`riverrun models release`)", raw))  # fmt: skip
            return _Pending(record, None, arrived)  # another model's learner takes it
        try:
            return _Pending(record, decode_label_fields(data, raw), arrived)
        except DecodeError as exc:
            return _Pending(record, None, arrived, exc)

    def _caught_up(self, consumer: Consumer, timestamp_ms: int) -> bool:
        """Whether every prediction up to `timestamp_ms` has been read (or all there is).

        A partition read up to its high watermark (as the last fetch reported it) counts as
        caught up for labels older than `_SETTLE_MS`: a prediction made before such a label
        has had time to reach the broker.
        """
        behind = [p for p, ts in self._predictions_read.items() if ts < timestamp_ms]
        if not behind:
            return True
        if timestamp_ms > time.time() * 1000 - _SETTLE_MS:
            return False
        topic = self._topics.predictions
        for tp in consumer.position([TopicPartition(topic, p) for p in behind]):
            # Nothing consumed yet since the assignment: the position is where it started.
            position = tp.offset
            if position < 0:
                position = self._predictions_start.get(tp.partition, -1)
            try:
                high = self._high_watermark(consumer, tp)
            except KafkaException:
                return False
            if position < high:
                return False
        return True

    def _high_watermark(self, consumer: Consumer, tp: TopicPartition) -> int:
        """Return the last fetch's high watermark, or ask the broker (at most every 0.5 s)."""
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0:
            return int(high)
        now = time.monotonic()
        checked = self._watermarks.get(tp.partition)
        if checked is None or now - checked[0] > 0.5:
            _low, high = consumer.get_watermark_offsets(tp, timeout=5)
            checked = self._watermarks[tp.partition] = (now, int(high))
        return checked[1]
