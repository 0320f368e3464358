"""The learner's poll loop: join labels into the examples log, then learn the log in order.

Join stage: a consumer in group `riverrun-learner-<model>` reads `feedback` and `predictions`.
Predictions fill a bounded window; each label of this model is joined with its features (its
own, else its prediction's) once the predictions read have caught up with it. Examples,
outcomes and dead letters of a batch are produced in one transaction together with the
feedback offsets, so the join is exactly-once. Prediction offsets are never committed: after a
restart the window is rebuilt by reading predictions back over its age.

Learn stage: a group-less consumer reads the committed examples log from the offset of the
latest snapshot's lineage and learns each example once, in log order; snapshots go to the
registry with the next offset as lineage, so a restart neither repeats nor skips an example.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
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
    DriftDetected,
    LabelFields,
    LabelObserved,
    ModelVersionReleased,
    PolicyChanged,
    SnapshotPublished,
    decode_label_fields,
    decode_prediction_fields,
    parse_json,
)
from riverrun.workers.runtime.contact import BrokerContact, StatisticsListener
from riverrun.workers.runtime.kafka import ClientErrorLog
from riverrun.workers.runtime.crashpoint import LEARNER_POINTS, CrashPoints
from riverrun.workers.runtime.errors import ConfigurationError, FatalError, RiverrunError
from riverrun.workers.learner.drift import DriftWatch, Stream
from riverrun.workers.learner.guardrail import Guardrail
from riverrun.workers.learner.join import Joined, JoinWindow, example_value, outcome_value
from riverrun.workers.learner.log import (
    check_single_partition,
    end_offset,
    examples_consumer,
    read_example,
    read_range,
    replay,
)
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.prequential import (
    Prequential,
    SnapshotCadence,
    is_classifier,
    learn_example,
    task_of,
)
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.runtime.kafka import next_offsets
from riverrun.workers.registry import Registry, RegistryFollower, dump_model
from riverrun.workers.registry.records import RegistryRecord, lineage_key
from riverrun.workers.routing.policy import champion_target

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("librdkafka")

_TXN_TIMEOUT_S = 60.0
_STATISTICS_INTERVAL_MS = 1000
# A label waits at most this long for the predictions read to catch up with its timestamp
# (a broker whose watermarks cannot be trusted must not stall the join for ever).
_CATCH_UP_WAIT_S = 10.0
_SETTLE_MS = 1000
_LEARN_BUDGET_FACTOR = 10

# topic, key, value, headers
_Output = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]


@dataclass
class LearnSummary:
    """What a bounded run did; `riverrun learn` logs it at exit."""

    version: int = 0
    labels_joined: int = 0
    labels_unjoined: int = 0
    examples_learned: int = 0
    snapshots_published: int = 0
    next_offset: int = 0
    last_snapshot: int = 0
    metrics: dict[str, float] | None = None
    learn_seconds: float = 0.0  # reading and learning examples, snapshots not included
    snapshot_seconds: float = 0.0  # publishing snapshots (dump, sign, store, record)


class _Pending(NamedTuple):
    """A consumed feedback record awaiting its turn (its label, or None to pass it by)."""

    record: Message
    label: LabelObserved | LabelFields | None
    arrived: float
    dead_letter: DecodeError | None = None


class Learner:
    """One model's learner: the join stage and the learn stage in one synchronous loop."""

    def __init__(
        self, settings: LearnerSettings, registry: Registry, metrics: LearnerMetrics | None = None
    ) -> None:
        if not settings.learner.model:
            raise ConfigurationError(
                "RIVERRUN_LEARNER__MODEL is not set: pass --model NAME of the model to learn"
            )
        self._settings = settings
        self._options = settings.learner
        self._topics = settings.topics
        self._model = settings.learner.model
        self._registry = registry
        self.metrics = metrics if metrics is not None else LearnerMetrics()
        self._stop = threading.Event()
        self._crash = CrashPoints(settings.learner.crash_at, LEARNER_POINTS)
        self._window = JoinWindow(
            self._model, settings.learner.window_max_count,
            int(settings.learner.window_max_age_s * 1000),
        )  # fmt: skip
        self._pending: deque[_Pending] = deque()
        # Examples committed by this learner and not learned yet: (log offset, features, label).
        # Learned from memory once the log reader has caught up with the first of them.
        self._committed: deque[tuple[int, dict[str, Any], Any]] = deque()
        self._reading_log = True
        self._example_offsets: list[int] = []
        self._paused = False
        self._assigned = False
        self._predictions_read: dict[int, int] = {}  # partition -> last timestamp read (ms)
        self._predictions_start: dict[int, int] = {}  # partition -> offset assigned at
        self._watermarks: dict[int, tuple[float, int]] = {}  # partition -> (checked at, high)
        self._consumer: Consumer | None = None
        self._examples: Consumer | None = None
        self._producer: Producer | None = None
        self._lineage_key = lineage_key(self._topics.examples)
        self._on_error = ClientErrorLog(logger, settings.kafka.bootstrap_servers)
        self._statistics = StatisticsListener(
            self.metrics.consumer_lag, BrokerContact.for_interval(_STATISTICS_INTERVAL_MS),
            settings.kafka.bootstrap_servers, logger,
        )  # fmt: skip
        self._champion_moved = False  # set by the registry follower's thread
        self._drift = DriftWatch(settings.learner.drift_detector, settings.learner.drift_warmup)
        self._guardrail = Guardrail(
            settings.learner.guardrail_loss_ratio, settings.learner.guardrail_min_examples
        )
        self._last_good: SnapshotPublished | None = None
        self._halted: str | None = None
        self._follower: RegistryFollower | None = None
        # Set by _start_version.
        self._estimator: Any = None
        self._version = 0
        self._snapshot = 0
        self._examples_seen = 0
        self._next_offset = 0
        self._prequential: Prequential | None = None
        self._cadence = SnapshotCadence(
            settings.learner.snapshot_every, settings.learner.snapshot_interval, time.monotonic()
        )

    # -- configuration -------------------------------------------------------------------

    @property
    def _client_id(self) -> str:
        return f"{self._settings.kafka.client_id}-learner-{self._model}"

    def _join_consumer_config(self) -> dict[str, Any]:
        return self._settings.kafka.client_config({
            "group.id": self._options.group_id,
            # Static membership: a restarted learner takes its partitions back at once instead
            # of waiting out the dead one's session (one learner per model).
            "group.instance.id": self._options.transactional_id,
            "client.id": self._client_id,
            "auto.offset.reset": "earliest",
            # Feedback offsets are committed only inside the join transaction.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "fetch.wait.max.ms": 100,
            # Lag per partition for /metrics and broker contact for /readyz, parsed on
            # librdkafka's interval, not per record.
            "statistics.interval.ms": _STATISTICS_INTERVAL_MS,
            "stats_cb": self._statistics,
            "error_cb": self._on_error,
            "logger": _librdkafka_logger,
        })  # fmt: skip

    def _producer_config(self) -> dict[str, Any]:
        return self._settings.kafka.client_config({
            "client.id": self._client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "transactional.id": self._options.transactional_id,
            "transaction.timeout.ms": int(_TXN_TIMEOUT_S * 1000),
            "error_cb": self._on_error,
            "logger": _librdkafka_logger,
        })  # fmt: skip

    # -- health --------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Has a model loaded, owns its feedback partitions and hears from its brokers."""
        return (self._assigned and self._estimator is not None and not self._stop.is_set()
                and self._statistics.contact.in_contact())

    def stop(self) -> None:
        """Finish the batch, commit, publish a last snapshot and leave (signal-handler safe)."""
        self._stop.set()

    # -- start-up ------------------------------------------------------------------------

    def _load_model(self) -> None:
        view = self._registry.refresh()
        target = champion_target(view, self._model)
        version = target[0] if target is not None else None
        if version is None:
            raise ConfigurationError(
                f"model {self._model!r} has no released version: release one "
                "(`riverrun models release`) before starting its learner"
            )
        snapshots = view.snapshots(self._model, version)
        if not snapshots:
            raise ConfigurationError(
                f"{self._model}@{version} has no snapshot to start from: release it again"
            )
        self._start_version(view.version(self._model, version), snapshots[0], snapshots[-1])

    def _start_version(
        self,
        released: ModelVersionReleased | None,
        first: SnapshotPublished,
        snapshot: SnapshotPublished,
    ) -> None:
        """Learn `snapshot`'s version from it on, with the prequential metrics it had.

        The metrics are not in the artifact: they are rebuilt by replaying the examples the
        version learned (from its first snapshot's lineage to this one's) through a copy of
        its first snapshot, which gives exactly the metrics the uninterrupted learner had.
        """
        estimator = self._registry.load(snapshot)
        prequential = Prequential(task_of(estimator, released.task if released else None))
        start = first.lineage.get(self._lineage_key, 0)
        resume = snapshot.lineage.get(self._lineage_key, start)
        if resume > start:
            replica = self._registry.load(first)
            replay(self._settings.kafka, self._topics.examples, self._model, replica, start,
                   resume, prequential)  # fmt: skip
        self._estimator = estimator
        self._prequential = prequential
        self._version = snapshot.version
        self._snapshot = snapshot.snapshot
        self._examples_seen = snapshot.examples_seen
        self._next_offset = resume
        self._cadence = SnapshotCadence(
            self._options.snapshot_every, self._options.snapshot_interval, time.monotonic()
        )
        self._guardrail = Guardrail(
            self._options.guardrail_loss_ratio, self._options.guardrail_min_examples
        )
        self._last_good = snapshot
        self._halted = None
        self.metrics.publishing.labels(self._model).set(1)
        logger.info(
            "learning %s@%d from snapshot %d, examples log %s from offset %d (%d examples "
            "already scored)", self._model, snapshot.version, snapshot.snapshot,
            self._topics.examples, resume, prequential.count,
        )  # fmt: skip

    # -- the version that answers moves (a release, a promotion, a rollback) ---------------

    def _on_registry_record(self, record: RegistryRecord) -> None:
        # On the follower's thread: only note that what answers for this model may have moved.
        if record.model == self._model and isinstance(record, ModelVersionReleased | PolicyChanged):
            self._champion_moved = True

    def _follow_champion(self, summary: LearnSummary) -> None:
        """Teach the version that answers now: the policy's champion, else the latest one.

        A version taken up learns the log from its latest snapshot's lineage (from its release,
        for a new one), whatever the previous version had learned; one rolled back to catches
        up on what it missed.
        """
        self._champion_moved = False
        view = self._registry.refresh()
        target = champion_target(view, self._model)
        if target is None or target[0] == self._version:
            return
        version = target[0]
        snapshots = view.snapshots(self._model, version)
        if not snapshots:
            return
        if self._cadence.changed > 0:
            self._publish_snapshot(summary)  # what the old version learned last
        previous = self._version
        try:
            self._start_version(view.version(self._model, version), snapshots[0], snapshots[-1])
        except RiverrunError as exc:
            self.metrics.refused_versions.labels(self._model).inc()
            logger.error("not switching to %s@%d: %s; %s@%d keeps learning", self._model,
                         version, exc, self._model, previous)  # fmt: skip
            return
        # The new version learns the log from its release on, whatever the old one had learned.
        committed = self._committed
        while committed and committed[0][0] < self._next_offset:
            committed.popleft()
        self._reading_log = True
        if self._examples is not None:
            log = TopicPartition(self._topics.examples, 0, self._next_offset)
            self._examples.assign([log])
            self._examples.resume([log])  # paused while learning from memory
        summary.version = self._version
        self.metrics.version.labels(self._model).set(self._version)
        logger.info("switched from %s@%d to %s@%d", self._model, previous, self._model,
                    self._version)  # fmt: skip

    def _rebuild_joined(self, examples: Consumer) -> None:
        """Remember the requests whose labels the log already holds, to refuse duplicates."""
        low, high = end_offset(examples, self._topics.examples)
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

        read_range(examples, self._topics.examples, start, high, remember)
        logger.info("join window: %d labels already learned, from offsets [%d, %d)",
                    count, start, high)

    # -- rebalance callbacks -------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Predictions are re-read over the window's age: their offsets are never committed.
        since_ms = int((time.time() - self._options.window_max_age_s) * 1000)
        predictions = [p for p in partitions if p.topic == self._topics.predictions]
        if predictions:
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
        consumer.assign(partitions)
        self._assigned = True
        logger.info("assigned %s", sorted((p.topic, p.partition) for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Held labels are not committed; the next owner reads them again.
        self._pending.clear()
        self._paused = False
        self._assigned = False
        for p in partitions:
            if p.topic == self._topics.predictions:
                self._predictions_read.pop(p.partition, None)
                self._predictions_start.pop(p.partition, None)
        consumer.unassign()
        logger.info("revoked %s", sorted((p.topic, p.partition) for p in partitions))

    # -- the loop ------------------------------------------------------------------------

    def run(
        self, max_examples: int | None = None, idle_timeout: float | None = None
    ) -> LearnSummary:
        """Learn until stopped, or `max_examples` learned, or `idle_timeout` s of quiet."""
        summary = LearnSummary()
        self._load_model()
        summary.version = self._version
        self.metrics.version.labels(self._model).set(self._version)
        self._follower = RegistryFollower(
            self._settings.kafka, self._topics, self._on_registry_record
        ).start()
        self._producer = Producer(self._producer_config())
        # Fences a previous learner of this model and aborts its open transaction.
        self._producer.init_transactions(_TXN_TIMEOUT_S)
        examples = examples_consumer(self._settings.kafka, f"{self._client_id}-examples")
        self._examples = examples
        consumer = Consumer(self._join_consumer_config())
        self._consumer = consumer
        clean = False
        try:
            check_single_partition(examples, self._topics.examples)
            self._rebuild_joined(examples)
            examples.assign([TopicPartition(self._topics.examples, 0, self._next_offset)])
            consumer.subscribe(
                [self._topics.feedback, self._topics.predictions],
                on_assign=self._on_assign, on_revoke=self._on_revoke,
            )  # fmt: skip
            self.metrics.ready.set(0)
            last_activity = time.monotonic()
            timeout = self._options.batch_timeout_ms / 1000.0
            while not self._stop.is_set():
                if max_examples is not None and summary.examples_learned >= max_examples:
                    break
                # Committed examples left to learn (the step's budget ran out, or feedback is
                # paused): take what has arrived, but do not wait for more.
                ready = self._committed and not self._reading_log
                records = consumer.consume(self._options.batch_size, 0 if ready else timeout)
                self.metrics.ready.set(1 if self.is_ready() else 0)
                active = self._step(records, summary, max_examples)
                now = time.monotonic()
                if active or self._pending or not self._assigned:
                    last_activity = now
                elif idle_timeout is not None and now - last_activity > idle_timeout:
                    break
            clean = True
        finally:
            self._shutdown(clean, summary)
        return summary

    def _step(
        self, records: list[Message], summary: LearnSummary, max_examples: int | None
    ) -> bool:
        """One iteration: join what is ready, learn what is committed, maybe snapshot, commit."""
        active = bool(records)
        if self._champion_moved:
            self._follow_champion(summary)
        if records:
            predictions, pending = self._topics.predictions, self._pending
            arrived = time.monotonic()
            for record in self._drop_errors(records):
                if record.topic() == predictions:
                    self._add_prediction(record)
                else:
                    pending.append(self._classify(record, arrived))
        self._pause_if_full()
        done, outputs, joined, unjoined = self._join_ready()
        producer = self._producer
        assert producer is not None  # noqa: S101  # set in run()
        if done:
            active = True
            self._example_offsets.clear()
            try:
                producer.begin_transaction()
                self._produce_all(producer, outputs)
                if self._crash.enabled:
                    producer.flush(_TXN_TIMEOUT_S)  # outputs on the broker, uncommitted
                    self._crash.hit("after-join-before-commit")
            except KafkaException as exc:
                self._give_up_transaction(exc)
        if self._reading_log and self._learn_from_log(summary, max_examples):
            active = True
        if self._cadence.due(time.monotonic()):
            self._snapshot_now(summary)
        if done:
            consumer = self._consumer
            assert consumer is not None  # noqa: S101  # set in run()
            try:
                producer.send_offsets_to_transaction(
                    next_offsets(done), consumer.consumer_group_metadata(), _TXN_TIMEOUT_S
                )
                _commit_transaction(producer)
            except KafkaException as exc:
                self._give_up_transaction(exc)
            self.metrics.transactions.labels("committed").inc()
            self._count_join(joined, unjoined, summary)
            self._remember_committed(producer, joined)
            if self._crash.enabled:
                self._crash.hit("after-commit")
        if not self._reading_log and self._committed:
            self._learn_examples(self._committed_examples(max_examples, summary), summary)
        return active

    def _remember_committed(self, producer: Producer, joined: list[Joined]) -> None:
        """Pair the batch's committed examples with their log offsets, for the learn stage."""
        offsets = self._example_offsets
        deadline = time.monotonic() + _TXN_TIMEOUT_S
        while len(offsets) < len(joined) and time.monotonic() < deadline:
            producer.poll(0.01)  # commit flushed them: only their reports are left to serve
        if len(offsets) != len(joined):
            raise FatalError(
                f"{len(joined)} examples committed but {len(offsets)} delivery reports "
                "served: stopping; the restarted learner reads them from the log"
            )
        committed = self._committed
        for offset, decision in zip(offsets, joined, strict=True):
            example = decision.example
            committed.append((offset, example.features, example.label))

    def _on_example_delivered(self, err: KafkaError | None, msg: Message) -> None:
        # Inside a transaction a failed record fails the commit, which stops the learner.
        if err is None:
            self._example_offsets.append(msg.offset() or 0)

    def _give_up_transaction(self, exc: KafkaException) -> None:
        # The window already counts this batch's labels as joined: rather than unpick that,
        # stop; the restarted learner rebuilds the window from what was committed.
        self.metrics.transactions.labels("failed").inc()
        raise FatalError(
            f"join transaction failed ({exc.args[0]}): stopping without committing; the "
            "restarted learner resumes from the last committed batch"
        ) from exc

    def _produce_all(self, producer: Producer, outputs: list[_Output]) -> None:
        """Produce a batch's outputs in order; delivery reports are served once, after it."""
        examples, delivered = self._topics.examples, self._on_example_delivered
        produce = producer.produce
        for topic, key, value, headers in outputs:
            on_delivery = delivered if topic == examples else None
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=on_delivery)  # type: ignore[arg-type]  # bytes values are fine
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)

    def _drop_errors(self, records: list[Message]) -> list[Message]:
        good = []
        for record in records:
            err = record.error()
            if err is None:
                good.append(record)
            elif err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise FatalError(f"consumer failed for good: {err}")
                logger.warning("consume error: %s", err)
        return good

    # -- join stage ----------------------------------------------------------------------

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
            return _Pending(record, None, arrived)  # another model's learner takes it
        try:
            return _Pending(record, decode_label_fields(data, raw), arrived)
        except DecodeError as exc:
            return _Pending(record, None, arrived, exc)

    def _pause_if_full(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        # Labels waiting to join, and examples waiting to be learned, are bounded together.
        full = len(self._pending) + len(self._committed) >= self._options.max_pending_labels
        if full != self._paused:
            feedback = [tp for tp in consumer.assignment() if tp.topic == self._topics.feedback]
            (consumer.pause if full else consumer.resume)(feedback)
            self._paused = full

    def _caught_up(self, timestamp_ms: int) -> bool:
        """Whether every prediction up to `timestamp_ms` has been read (or all there is).

        A partition read up to its high watermark (as the last fetch reported it) counts as
        caught up for labels older than `_SETTLE_MS`: a prediction made before such a label
        has had time to reach the broker.
        """
        consumer = self._consumer
        assert consumer is not None  # noqa: S101  # set in run()
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

    def _join_ready(self) -> tuple[list[Message], list[_Output], list[Joined], list[str]]:
        """Join the held labels, in order, as far as the predictions read allow."""
        done: list[Message] = []
        outputs: list[_Output] = []
        joined: list[Joined] = []
        unjoined: list[str] = []
        pending = self._pending
        now = time.monotonic()
        caught_up_to = -1
        window, examples, outcomes = self._window, self._topics.examples, self._topics.outcomes
        while pending:
            item = pending[0]
            record = item.record
            if item.label is None:
                if item.dead_letter is not None:
                    exc = item.dead_letter
                    outputs.append(self._dead_letter(record, exc.error_class, exc.reason))
                    unjoined.append(exc.error_class)
                done.append(pending.popleft().record)
                continue
            timestamp_ms = record.timestamp()[1]
            if timestamp_ms > caught_up_to:
                if not self._caught_up(timestamp_ms):
                    if now - item.arrived < _CATCH_UP_WAIT_S:
                        break
                    logger.warning(
                        "predictions read have not caught up with a label after %.0f s: "
                        "joining it with what the window holds", _CATCH_UP_WAIT_S,
                    )
                caught_up_to = timestamp_ms
            pending.popleft()
            decision = window.join_one(item.label, timestamp_ms)
            if isinstance(decision, Joined):
                example, outcome = decision
                outputs.append((examples, example.request_id.encode(), example_value(example),
                                None))  # fmt: skip
                if outcome is not None:
                    outputs.append((outcomes, record.key(), outcome_value(outcome), None))
                joined.append(decision)
            else:
                outputs.append(self._dead_letter(record, decision.reason, decision.detail))
                unjoined.append(decision.reason)
            done.append(record)
        self.metrics.window_predictions.set(len(self._window))
        return done, outputs, joined, unjoined

    def _dead_letter(
        self, record: Message, error_class: str, reason: str
    ) -> _Output:
        letter = DeadLetter(
            error_class=error_class, reason=reason, source_topic=record.topic() or "",
            source_partition=record.partition() or 0, source_offset=record.offset() or 0,
            worker=self._options.worker_id,
        )  # fmt: skip
        return (self._topics.dead_letters, record.key(), record.value(), letter.to_headers())

    def _count_join(self, joined: list[Joined], unjoined: list[str], summary: LearnSummary) -> None:
        model = self._model
        from_predictions = sum(1 for decision in joined if decision.outcome is not None)
        for source, count in (("prediction", from_predictions),
                              ("feedback", len(joined) - from_predictions)):
            if count:
                self.metrics.labels_joined.labels(model, source).inc(count)
        served: dict[int, list[float]] = {}
        for decision in joined:
            outcome = decision.outcome
            if outcome is not None:
                served.setdefault(outcome.version, []).append(outcome.loss)
        for version, losses in served.items():
            self._watch_drift(version, "served", losses)
        for reason, count in Counter(unjoined).items():
            self.metrics.labels_unjoined.labels(model, reason).inc(count)
        summary.labels_joined += len(joined)
        summary.labels_unjoined += len(unjoined)

    # -- learn stage ---------------------------------------------------------------------

    def _budget(self, max_examples: int | None, summary: LearnSummary) -> int:
        budget = self._options.batch_size * _LEARN_BUDGET_FACTOR
        if max_examples is not None:
            budget = min(budget, max_examples - summary.examples_learned)
        return budget

    def _learn_from_log(self, summary: LearnSummary, max_examples: int | None) -> int:
        """Learn committed examples read back from the log, until it reaches this run's own.

        Only examples committed before this learner started (or before its version switched)
        are read back; from the first example this learner committed itself, the rest are
        learned from memory, without waiting to fetch them again.
        """
        budget = self._budget(max_examples, summary)
        examples = self._examples
        if budget <= 0 or examples is None:
            return 0
        records = examples.consume(min(budget, 10_000), 0)
        if not records:
            return 0
        model = self._model
        first_own = self._committed[0][0] if self._committed else None
        batch: list[tuple[int, dict[str, Any], Any]] = []
        read_to = self._next_offset
        for record in records:
            err = record.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("examples read error: %s", err)
                continue
            offset = record.offset() or 0  # always set on a consumed record
            if first_own is not None and offset >= first_own:
                self._caught_up_with_log(examples)
                break
            read_to = offset + 1
            example = read_example(record.value(), model)
            if example is not None:
                batch.append((offset, example[0], example[1]))
        learned = self._learn_examples(batch, summary)
        self._next_offset = max(self._next_offset, read_to)  # past other models' examples
        return learned

    def _caught_up_with_log(self, examples: Consumer) -> None:
        self._reading_log = False
        examples.pause([TopicPartition(self._topics.examples, 0)])
        logger.info("examples log read up to this learner's own examples: learning from memory")

    def _committed_examples(
        self, max_examples: int | None, summary: LearnSummary
    ) -> list[tuple[int, dict[str, Any], Any]]:
        committed = self._committed
        budget = self._budget(max_examples, summary)
        if budget >= len(committed):
            batch = list(committed)
            committed.clear()
            return batch
        return [committed.popleft() for _ in range(max(budget, 0))]

    def _learn_examples(
        self, batch: list[tuple[int, dict[str, Any], Any]], summary: LearnSummary
    ) -> int:
        """Test-then-train each example in log order; snapshot at exact multiples of N."""
        if not batch:
            self._report_offset(summary)
            return 0
        started = time.perf_counter()
        estimator, prequential, cadence = self._estimator, self._prequential, self._cadence
        classifier = is_classifier(estimator)
        guardrail = self._guardrail
        losses: list[float] = []
        append, observe = losses.append, guardrail.observe
        snapshot_seconds = summary.snapshot_seconds
        start, end = 0, len(batch)
        while start < end:
            # Up to the next count-based snapshot, which falls on the very same example.
            stop = end
            if cadence.every is not None:
                stop = max(min(end, start + cadence.every - cadence.changed), start + 1)
            for _offset, features, label in batch[start:stop]:
                loss = learn_example(estimator, features, label, prequential, classifier)
                append(loss)
                observe(loss)
            self._next_offset = batch[stop - 1][0] + 1
            self._examples_seen += stop - start
            cadence.learned(stop - start)
            start = stop
            if cadence.count_due():
                self._snapshot_now(summary)
                estimator = self._estimator  # a guardrail may have restored another
        self._watch_drift(self._version, "learning", losses)
        snapshot_seconds = summary.snapshot_seconds - snapshot_seconds
        summary.learn_seconds += time.perf_counter() - started - snapshot_seconds
        learned = len(batch)
        summary.examples_learned += learned
        version = str(self._version)
        self.metrics.examples_learned.labels(self._model, version).inc(learned)
        assert prequential is not None  # noqa: S101  # set by _load_model
        for name, value in prequential.values().items():
            self.metrics.prequential.labels(self._model, version, name).set(value)
        self._report_offset(summary)
        return learned

    def _report_offset(self, summary: LearnSummary) -> None:
        self.metrics.examples_offset.labels(self._model).set(self._next_offset)
        summary.next_offset = self._next_offset

    def _snapshot_now(self, summary: LearnSummary) -> None:
        if self._crash.enabled:
            self._crash.hit("after-learn-before-snapshot")
        self._publish_snapshot(summary)
        if self._crash.enabled:
            self._crash.hit("after-snapshot-before-commit")

    def _publish_snapshot(self, summary: LearnSummary) -> None:
        assert self._prequential is not None  # noqa: S101  # set by _load_model
        if self._halted:
            self._cadence.published(time.monotonic())  # learning goes on; nothing goes out
            return
        refusal = self._guardrail.verdict()
        if refusal is not None:
            self._restore_last_good(refusal, summary)
            return
        snapshot = self._snapshot + 1
        started = time.perf_counter()
        record = self._registry.publish_snapshot(
            self._model, self._version, snapshot, self._estimator,
            metrics=self._prequential.values(), examples_seen=self._examples_seen,
            lineage={self._lineage_key: self._next_offset},
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        summary.snapshot_seconds += elapsed
        self.metrics.snapshot_publish_seconds.labels(self._model).observe(elapsed)
        self._published(record, summary)
        if self._guardrail.judged:
            self._last_good = record
        logger.info(
            "published %s@%d#%d at examples offset %d (%d examples seen, sha256 %s)",
            self._model, self._version, snapshot, self._next_offset, self._examples_seen,
            record.artifact.sha256[:12],
        )  # fmt: skip

    def _published(self, record: SnapshotPublished, summary: LearnSummary) -> None:
        self._snapshot = record.snapshot
        self._cadence.published(time.monotonic())
        summary.snapshots_published += 1
        summary.last_snapshot = record.snapshot
        self.metrics.snapshots_published.labels(self._model, str(self._version)).inc()

    def _restore_last_good(self, reason: str, summary: LearnSummary) -> None:
        """Republish the last snapshot the guardrail accepted, and publish nothing more."""
        assert self._prequential is not None  # noqa: S101  # set by _load_model
        good = self._last_good
        assert good is not None  # noqa: S101  # set when a version starts
        self._halted = reason
        self.metrics.guardrail_trips.labels(self._model, str(self._version)).inc()
        self.metrics.publishing.labels(self._model).set(0)
        estimator = self._registry.load(good)
        record = self._registry.publish_snapshot(
            self._model, self._version, self._snapshot + 1, dump_model(estimator),
            metrics=self._prequential.values(), examples_seen=self._examples_seen,
            lineage={self._lineage_key: self._next_offset}, restored_from=good.snapshot,
            reason=f"guardrail: {reason}",
        )  # fmt: skip
        self._estimator = estimator
        self._published(record, summary)
        logger.error(
            "guardrail tripped on %s@%d: %s; restored snapshot #%d as #%d and stopped "
            "publishing (restart the learner once the feedback is clean)",
            self._model, self._version, reason, good.snapshot, record.snapshot,
        )  # fmt: skip

    def _watch_drift(self, version: int, stream: Stream, losses: list[float]) -> None:
        for found in self._drift.observe_many(version, stream, losses):
            self.metrics.drift_detected.labels(self._model, str(version), stream).inc()
            logger.warning(
                "drift on %s@%d (%s loss): %s fired after %d losses, recent mean %.4f",
                self._model, version, stream, found.detector, found.position, found.mean_loss,
            )  # fmt: skip
            self._registry.publish_drift(DriftDetected(
                model=self._model, version=version, stream=stream, detector=found.detector,
                position=found.position, mean_loss=found.mean_loss,
            ))  # fmt: skip

    # -- shutdown ------------------------------------------------------------------------

    def _shutdown(self, clean: bool, summary: LearnSummary) -> None:
        consumer, examples, producer = self._consumer, self._examples, self._producer
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        try:
            if clean and self._cadence.changed > 0:
                self._publish_snapshot(summary)
        finally:
            summary.next_offset = self._next_offset
            summary.metrics = self._prequential.values() if self._prequential else None
            for client in (consumer, examples):
                if client is not None:
                    client.close()
            if producer is not None and clean:
                producer.flush(self._options.shutdown_timeout_s)
            self._consumer = self._examples = None
            self._producer = None
            self.metrics.ready.set(0)
            logger.info("learner stopped (%s)", "clean" if clean else "after a failure")


def _commit_transaction(producer: Producer) -> None:
    for attempt in range(3):
        try:
            producer.commit_transaction(_TXN_TIMEOUT_S)
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.retriable() and attempt < 2:
                continue
            raise
