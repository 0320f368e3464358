"""The learner's poll loop: run, rebalance and shutdown; the work is in its two stages.

Join stage (`join_stage.py`): feedback and predictions are joined into examples, outcomes and
dead letters, committed in one transaction with the feedback offsets. Learn stage
(`learn_stage.py`): the committed examples log is learned in order, test-then-train, with
snapshots, the guardrail and drift detection. One pass of the loop joins what is ready, learns
what is committed, snapshots when due, then commits the join:

    records ──► JoinStage.take ──► join_ready ──► JoinBatch ──► produce (transaction open)
                                                      │
    LearnStage.learn_from_log / snapshot_if_due ◄─────┤ (while the transaction is open)
                                                      ▼
    LearnStage.learn_committed ◄── CommittedExample ◄── commit (feedback offsets inside)

With a backlog (a full batch taken), a batch's examples are held over and learned in the next
pass while that pass's transaction is open and its offsets travel to the group coordinator (on
a helper thread), so learning overlaps the broker's round trips.
Nothing else moves: every learn call sees the examples it saw before, in the same order, between
the same commits, so snapshots, drift records and pairs are exactly what they were.

With `--stage join` this loop runs the join stage alone, and a `--stage learn` process
(`log_learner.py`) learns the examples log it commits, on another core.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, Message, TopicPartition

from riverrun.schemas import ModelVersionReleased
from riverrun.workers.learner.join_stage import JoinStage
from riverrun.workers.learner.learn_stage import LearnStage, versions_that_learn
from riverrun.workers.learner.log import check_single_partition, examples_consumer
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.parts import STATISTICS_INTERVAL_MS, learner_parts
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.learner.summary import LearnSummary
from riverrun.workers.learner.version_learner import label_type_of
from riverrun.workers.registry import Registry, RegistryFollower, RegistryRecord
from riverrun.workers.runtime.kafka import ClientErrorLog, consumer_config

logger = logging.getLogger(__name__)


class Learner:
    """One model's learner: the join stage and the learn stage in one synchronous loop, or
    the join stage alone (`stage="join"`)."""

    def __init__(
        self, settings: LearnerSettings, registry: Registry, metrics: LearnerMetrics | None = None
    ) -> None:
        parts = learner_parts(settings, registry, metrics, logger)
        self._settings = settings
        self._options = settings.learner
        self._topics = settings.topics
        self._model = parts.model
        self._registry = registry
        self.metrics = parts.metrics
        self._stop = threading.Event()
        self._assigned = False
        self._consumer: Consumer | None = None
        self._follower: RegistryFollower | None = None
        self._on_error = ClientErrorLog(logger, settings.kafka.bootstrap_servers)
        self._statistics = parts.statistics
        crash, drift = parts.crash, parts.drift
        # Alone, the join stage commits examples for a `--stage learn` process to learn.
        self._learning = settings.learner.stage == "both"
        self._examples_joined = 0  # committed to the log by this run
        self._join = JoinStage(settings, self.metrics, drift, crash, self._on_error)
        self._join.orphaned = self._orphaned
        self._learn = LearnStage(settings, registry, self.metrics, drift, crash)
        self._released: set[str] = set()  # models with a release, as the follower reads them
        self._learn.keepalive = self._keep_membership
        self._kept_at = 0.0
        self._paused_for_keepalive = False
        # The last pass's committed examples wait for the next pass (see `_hold`).
        self._held = False

    @property
    def _client_id(self) -> str:
        return f"{self._settings.kafka.client_id}-learner-{self._model}"

    def _on_registry_record(self, record: RegistryRecord) -> None:
        # On the follower's thread: quick, and only sets state the loop reads.
        if isinstance(record, ModelVersionReleased):
            self._released.add(record.model)
        self._learn.on_registry_record(record)

    def _orphaned(self, model: str) -> bool:
        """Whether `model` has no release, and this learner answers for such labels.

        Every learner reads all feedback; the learner of the first released model (by name)
        dead-letters the labels of models nobody released, so each is dead-lettered once.
        """
        released = self._released
        return bool(released) and model not in released and self._model == min(released)

    def _keep_membership(self) -> None:
        """Serve the group while a long replay runs: everything paused, a poll each second.

        A poll is what tells the group coordinator this member is alive (`max.poll.interval.ms`);
        paused partitions give nothing back, and what was fetched is fetched again on resume.
        """
        consumer, now = self._consumer, time.monotonic()
        if consumer is None or now - self._kept_at < 1.0:
            return
        self._kept_at = now
        if not self._paused_for_keepalive:
            consumer.pause(consumer.assignment())
            self._paused_for_keepalive = True
        record = consumer.poll(0)
        if record is not None and record.error() is None:
            # A partition assigned during the poll is not paused yet: put its record back.
            where = TopicPartition(record.topic(), record.partition(), record.offset())
            consumer.seek(where)
            consumer.pause([where])

    def _resume_after_keepalive(self, consumer: Consumer) -> None:
        if self._paused_for_keepalive:
            self._paused_for_keepalive = False
            consumer.resume(consumer.assignment())
            self._join.unpaused()

    # -- health --------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Has a model loaded, owns its feedback partitions and hears from its brokers."""
        loaded = self._learn.estimator is not None or not self._learning
        return (self._assigned and loaded and not self._stop.is_set()
                and self._statistics.contact.in_contact())  # fmt: skip

    def stop(self) -> None:
        """Finish the batch, commit, publish a last snapshot and leave (signal-handler safe)."""
        self._stop.set()

    # -- rebalance callbacks -------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._join.assigned(consumer, partitions)
        consumer.assign(partitions)
        self._assigned = True
        logger.info("assigned %s", sorted((p.topic, p.partition) for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Held labels are not committed; the next owner reads them again.
        self._join.revoked(partitions)
        self._assigned = False
        consumer.unassign()
        logger.info("revoked %s", sorted((p.topic, p.partition) for p in partitions))

    # -- the loop ------------------------------------------------------------------------

    def run(
        self, max_examples: int | None = None, idle_timeout: float | None = None
    ) -> LearnSummary:
        """Learn until stopped, or `max_examples` learned, or `idle_timeout` s of quiet."""
        summary = LearnSummary()
        learn, join = self._learn, self._join
        if self._learning:
            learn.load()
            join.label_type = learn.label_type
            summary.version = learn.version
            self.metrics.version.labels(self._model).set(learn.version)
        else:
            join.label_type = self._champion_label_type(summary)
        self._follower = self._registry.follower(self._on_registry_record).start()
        join.start(self._client_id)
        learn.output_limit = join.output_limit
        examples = examples_consumer(self._settings.kafka, f"{self._client_id}-examples")
        consumer = Consumer(consumer_config(
            self._settings.kafka, self._options.group_id, client_id=self._client_id,
            # Static membership: a restarted learner takes its partitions back at once instead
            # of waiting out the dead one's session (one learner per model). The member is named
            # after its topics too: a member of the same name takes over the assignment it left,
            # so a learner given other topics would be handed the old ones.
            options={"group.instance.id":
                     f"{self._options.transactional_id}-{self._topics.feedback}"},
            on_error=self._on_error, on_statistics=self._statistics,
            statistics_interval_ms=STATISTICS_INTERVAL_MS,
        ))  # fmt: skip
        self._consumer = consumer
        clean = False
        try:
            check_single_partition(examples, self._topics.examples)
            join.rebuild_joined(examples)
            if self._learning:
                learn.attach(examples)
            else:
                examples.close()  # read once, for the labels joined already
            consumer.subscribe(
                [self._topics.feedback, self._topics.predictions],
                on_assign=self._on_assign, on_revoke=self._on_revoke,
            )  # fmt: skip
            self.metrics.ready.set(0)
            last_activity = time.monotonic()
            timeout = self._options.batch_timeout_ms / 1000.0
            while not self._stop.is_set():
                if max_examples is not None and self._done(summary) >= max_examples:
                    break
                # Committed examples left to learn (the step's budget ran out, or feedback is
                # paused): take what has arrived, but do not wait for more.
                wait = 0 if learn.ready_to_learn else timeout
                records = consumer.consume(self._options.batch_size, wait)
                self.metrics.ready.set(1 if self.is_ready() else 0)
                active = self._step(consumer, records, summary, max_examples)
                now = time.monotonic()
                if active or join.waiting or not self._assigned:
                    last_activity = now
                elif idle_timeout is not None and now - last_activity > idle_timeout:
                    break
            self._learn_held(summary, max_examples)  # stopped after a pass that held some
            clean = True
        finally:
            self._shutdown(clean, summary)
        return summary

    def _step(
        self,
        consumer: Consumer,
        records: list[Message],
        summary: LearnSummary,
        max_examples: int | None,
    ) -> bool:
        """One pass: join what is ready, learn what is committed, maybe snapshot, commit."""
        learn, join = self._learn, self._join
        active = bool(records)
        if not self._learning:
            return self._join_step(consumer, records, summary) or active
        if learn.policy_moved:
            # What learns moves with the versions as the previous pass would have left them.
            self._learn_held(summary, max_examples)
            learn.follow_policy(summary)
        self._resume_after_keepalive(consumer)
        join.label_type = learn.label_type
        if records:
            join.take(records)
        join.pause_if_full(consumer, learn.backlog)
        batch = join.join_ready(consumer)
        if batch.records:
            active = True
            join.produce(batch)
            join.send_offsets_ahead(batch, consumer)  # a coordinator round trip, while we learn
        if learn.reading_log and learn.learn_from_log(summary, max_examples):
            active = True
        if self._held:
            active = True
            self._learn_held(summary, max_examples)  # while this batch's transaction is open
        learn.snapshot_if_due(summary)
        if batch.records:
            learn.add_committed(join.commit(batch, consumer, summary))
        if learn.ready_to_learn:
            if self._hold(records, summary, max_examples):
                self._held = True
            else:
                learn.learn_committed(summary, max_examples)
        self._resume_after_keepalive(consumer)
        return active

    def _join_step(
        self, consumer: Consumer, records: list[Message], summary: LearnSummary
    ) -> bool:
        """One pass of the join stage alone: join what is ready and commit it."""
        if self._learn.policy_moved:
            self._join.label_type = self._champion_label_type(summary)
        self._resume_after_keepalive(consumer)
        join = self._join
        if records:
            join.take(records)
        join.pause_if_full(consumer, 0)
        batch = join.join_ready(consumer)
        if not batch.records:
            return False
        join.produce(batch)
        self._examples_joined += len(join.commit(batch, consumer, summary))
        return True

    def _champion_label_type(self, summary: LearnSummary) -> str | None:
        """The label type of the version that answers now (the join stage coerces labels to it)."""
        self._learn.ignore_policy_moves()
        view = self._registry.refresh()
        wanted = versions_that_learn(view, self._model)
        summary.version = wanted[0]
        self.metrics.version.labels(self._model).set(wanted[0])
        return label_type_of(view.version(self._model, wanted[0]))

    def _done(self, summary: LearnSummary) -> int:
        """What `max_examples` counts: examples learned, or committed by a join stage alone."""
        return summary.examples_learned if self._learning else self._examples_joined

    def _hold(
        self, records: list[Message], summary: LearnSummary, max_examples: int | None
    ) -> bool:
        """Whether to learn this pass's committed examples in the next pass instead.

        Only with a backlog (a full batch was taken, so the next is ready) and when the next
        pass will run: not when stopping, nor when they reach `max_examples`.
        """
        if len(records) < self._options.batch_size or self._stop.is_set():
            return False
        if max_examples is None:
            return True
        return summary.examples_learned + self._learn.backlog < max_examples

    def _learn_held(self, summary: LearnSummary, max_examples: int | None) -> None:
        """Learn what the last pass held, as that pass would have (the same budget)."""
        if self._held:
            self._held = False
            if self._learn.ready_to_learn:
                self._learn.learn_committed(summary, max_examples)

    # -- shutdown ------------------------------------------------------------------------

    def _shutdown(self, clean: bool, summary: LearnSummary) -> None:
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        try:
            self._learn.finish(clean, summary)
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            self._join.close(clean)
            self.metrics.ready.set(0)
            logger.info("learner stopped (%s)", "clean" if clean else "after a failure")
