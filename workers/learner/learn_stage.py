"""The learn stage: examples in log order, test-then-train, snapshots, the guardrail and drift.

A group-less consumer reads the committed examples log from the offset of the latest
snapshot's lineage and learns each example once, in log order; snapshots go to the registry
with the next offset as lineage, so a restart neither repeats nor skips an example. Once the
reader reaches the first example this learner committed itself, the rest are learned from
memory (`CommittedExample`s handed over by the join stage) without fetching them again.

The version learned is the one that answers: the policy's champion, else the latest release.
When it moves (a release, a promotion, a rollback), the new version learns the log from its
own latest snapshot's lineage.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from riverrun.schemas import DeadLetter, ModelVersionReleased, PolicyChanged, SnapshotPublished
from riverrun.workers.learner.drift import DriftReporter
from riverrun.workers.learner.guardrail import Guardrail
from riverrun.workers.learner.join_stage import CommittedExample
from riverrun.workers.learner.log import read_example, replay
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.prequential import (
    NotLearned,
    Prequential,
    SnapshotCadence,
    is_classifier,
    learn_example,
    task_of,
)
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.learner.summary import LearnSummary
from riverrun.workers.registry import RefusedArtifact, Registry
from riverrun.workers.registry.records import RegistryRecord, lineage_key
from riverrun.workers.routing.policy import champion_target
from riverrun.workers.runtime.crashpoint import CrashPoints
from riverrun.workers.runtime.errors import ConfigurationError, RiverrunError
from riverrun.workers.runtime.kafka import (
    CLIENT_MAX_BYTES,
    dead_letter_record,
    flush_or_raise,
    produce,
    producer_config,
)

logger = logging.getLogger(__name__)

_LEARN_BUDGET_FACTOR = 10
NOT_LEARNED = "NotLearned"  # the dead letters' class for examples the model raised on


class LearnStage:
    """One model's version being learned: its estimator, metrics, cadence and guardrail."""

    def __init__(
        self,
        settings: LearnerSettings,
        registry: Registry,
        metrics: LearnerMetrics,
        drift: DriftReporter,
        crash: CrashPoints,
    ) -> None:
        self._settings = settings
        self._options = settings.learner
        self._topics = settings.topics
        self._model = settings.learner.model
        self._registry = registry
        self._metrics = metrics
        self._drift = drift
        self._crash = crash
        self._lineage_key = lineage_key(self._topics.examples)
        # Committed by this learner and not learned yet, in log order.
        self._committed: deque[CommittedExample] = deque()
        self.reading_log = True
        self._examples: Consumer | None = None
        self._champion_moved = False  # set by the registry follower's thread
        self._guardrail = Guardrail(self._options.guardrail_loss_ratio,
                                    self._options.guardrail_min_examples)  # fmt: skip
        self._last_good: SnapshotPublished | None = None
        self._latest: SnapshotPublished | None = None  # what a failed example rebuilds from
        self._not_learned: set[int] = set()  # offsets since `_latest` the model raised on
        self._dead_letters: Producer | None = None
        self.label_type: str | None = None  # the version's, from its release's spec
        self.output_limit = CLIENT_MAX_BYTES  # set by the loop, as the join stage read it
        # Called while a long replay runs, so that the loop keeps its consumer group's place.
        self.keepalive: Callable[[], None] | None = None
        self._halted: str | None = None
        # Set by _start_version.
        self.estimator: Any = None
        self.version = 0
        self._snapshot = 0
        self._examples_seen = 0
        self.next_offset = 0
        self._prequential: Prequential | None = None
        self._cadence = SnapshotCadence(
            self._options.snapshot_every, self._options.snapshot_interval, time.monotonic()
        )

    @property
    def backlog(self) -> int:
        """Examples committed by this learner and not learned yet."""
        return len(self._committed)

    @property
    def ready_to_learn(self) -> bool:
        """Whether committed examples wait in memory (the join need not wait for more)."""
        return bool(self._committed) and not self.reading_log

    # -- start-up ------------------------------------------------------------------------

    def load(self) -> None:
        """Start learning the version that answers, from its latest snapshot.

        Raises:
            ConfigurationError: the model has no released version, or it no snapshot.

        """
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
        self._start_version(view.version(self._model, version), snapshots)

    def attach(self, examples: Consumer) -> None:
        """Read the examples log with `examples`, from the version's lineage on."""
        self._examples = examples
        examples.assign([TopicPartition(self._topics.examples, 0, self.next_offset)])

    def _start_version(
        self, released: ModelVersionReleased | None, snapshots: list[SnapshotPublished]
    ) -> None:
        """Learn the version from its newest snapshot that loads, with the metrics it had.

        A snapshot refused on load (a bad artifact) is passed over for the one before it. The
        metrics are not in the artifact: they are rebuilt by replaying the examples the
        version learned (from its first snapshot's lineage to this one's) through a copy of
        its first snapshot, which gives exactly the metrics the uninterrupted learner had.
        """
        first = snapshots[0]
        snapshot, estimator = self._newest_that_loads(snapshots)
        task = task_of(estimator, released.task if released else None)
        prequential = Prequential(task)
        start = first.lineage.get(self._lineage_key, 0)
        resume = snapshot.lineage.get(self._lineage_key, start)
        if resume > start:
            try:
                prequential = replay(
                    self._settings.kafka, self._topics.examples, self._model,
                    lambda: self._registry.load(first), start, resume, task,
                    keepalive=self.keepalive,
                ).prequential or prequential  # fmt: skip
            except RefusedArtifact as exc:
                logger.error("%s@%d#%d does not load (%s): prequential metrics start afresh",
                             self._model, first.version, first.snapshot, exc)  # fmt: skip
        self.estimator = estimator
        self._latest = snapshot
        self._not_learned.clear()
        spec = released.spec if released is not None else {}
        self.label_type = spec.get("label_type") if isinstance(spec, dict) else None
        self._prequential = prequential
        self.version = snapshot.version
        self._snapshot = snapshot.snapshot
        self._examples_seen = snapshot.examples_seen
        self.next_offset = resume
        self._cadence = SnapshotCadence(
            self._options.snapshot_every, self._options.snapshot_interval, time.monotonic()
        )
        self._guardrail = Guardrail(
            self._options.guardrail_loss_ratio, self._options.guardrail_min_examples
        )
        self._last_good = snapshot
        self._halted = None
        self._metrics.publishing.labels(self._model).set(1)
        logger.info(
            "learning %s@%d from snapshot %d, examples log %s from offset %d (%d examples "
            "already scored)", self._model, snapshot.version, snapshot.snapshot,
            self._topics.examples, resume, prequential.count,
        )  # fmt: skip

    def _newest_that_loads(
        self, snapshots: list[SnapshotPublished]
    ) -> tuple[SnapshotPublished, Any]:
        for snapshot in reversed(snapshots):
            try:
                return snapshot, self._registry.load(snapshot)
            except RiverrunError as exc:
                self._metrics.refused_versions.labels(self._model).inc()
                logger.error("%s@%d#%d does not load (%s): trying the snapshot before it",
                             self._model, snapshot.version, snapshot.snapshot, exc)  # fmt: skip
        last = snapshots[-1]
        raise ConfigurationError(
            f"no snapshot of {self._model}@{last.version} loads: release it again"
        )

    # -- the version that answers moves (a release, a promotion, a rollback) ---------------

    def on_registry_record(self, record: RegistryRecord) -> None:
        """Note that what answers for this model may have moved (on the follower's thread)."""
        if record.model == self._model and isinstance(record, ModelVersionReleased | PolicyChanged):
            self._champion_moved = True

    def follow_champion(self, summary: LearnSummary) -> None:
        """Teach the version that answers now, if it moved: the champion, else the latest.

        A version taken up learns the log from its latest snapshot's lineage (from its release,
        for a new one), whatever the previous version had learned; one rolled back to catches
        up on what it missed.
        """
        if not self._champion_moved:
            return
        self._champion_moved = False
        view = self._registry.refresh()
        target = champion_target(view, self._model)
        if target is None or target[0] == self.version:
            return
        version = target[0]
        snapshots = view.snapshots(self._model, version)
        if not snapshots:
            return
        if self._cadence.changed > 0:
            self._publish_snapshot(summary)  # what the old version learned last
        previous = self.version
        try:
            self._start_version(view.version(self._model, version), snapshots)
        except RiverrunError as exc:
            self._metrics.refused_versions.labels(self._model).inc()
            logger.error("not switching to %s@%d: %s; %s@%d keeps learning", self._model,
                         version, exc, self._model, previous)  # fmt: skip
            return
        # The new version learns the log from its release on, whatever the old one had learned.
        committed = self._committed
        while committed and committed[0].offset < self.next_offset:
            committed.popleft()
        self.reading_log = True
        if self._examples is not None:
            log = TopicPartition(self._topics.examples, 0, self.next_offset)
            self._examples.assign([log])
            self._examples.resume([log])  # paused while learning from memory
        summary.version = self.version
        self._metrics.version.labels(self._model).set(self.version)
        logger.info("switched from %s@%d to %s@%d", self._model, previous, self._model,
                    self.version)  # fmt: skip

    # -- learning ------------------------------------------------------------------------

    def add_committed(self, examples: list[CommittedExample]) -> None:
        """Take the examples the join stage just committed, to learn once their turn comes."""
        self._committed.extend(examples)

    def _budget(self, max_examples: int | None, summary: LearnSummary) -> int:
        budget = self._options.batch_size * _LEARN_BUDGET_FACTOR
        if max_examples is not None:
            budget = min(budget, max_examples - summary.examples_learned)
        return budget

    def learn_from_log(self, summary: LearnSummary, max_examples: int | None) -> int:
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
        first_own = self._committed[0].offset if self._committed else None
        batch: list[CommittedExample] = []
        read_to = self.next_offset
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
                batch.append(CommittedExample(offset, example[0], example[1], record.value()))
        learned = self._learn_examples(batch, summary)
        self.next_offset = max(self.next_offset, read_to)  # past other models' examples
        return learned

    def _caught_up_with_log(self, examples: Consumer) -> None:
        self.reading_log = False
        examples.pause([TopicPartition(self._topics.examples, 0)])
        logger.info("examples log read up to this learner's own examples: learning from memory")

    def learn_committed(self, summary: LearnSummary, max_examples: int | None) -> None:
        """Learn the examples committed by this learner, as many as the step's budget allows."""
        committed = self._committed
        budget = self._budget(max_examples, summary)
        if budget >= len(committed):
            batch = list(committed)
            committed.clear()
        else:
            batch = [committed.popleft() for _ in range(max(budget, 0))]
        self._learn_examples(batch, summary)

    def _learn_examples(self, batch: list[CommittedExample], summary: LearnSummary) -> int:
        """Test-then-train each example in log order; snapshot at exact multiples of N."""
        if not batch:
            self._report_offset(summary)
            return 0
        started = time.perf_counter()
        estimator, prequential, cadence = self.estimator, self._prequential, self._cadence
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
            for offset, features, label, value in batch[start:stop]:
                try:
                    loss = learn_example(estimator, features, label, prequential, classifier)
                except NotLearned as exc:
                    self._forget(offset, value, exc)
                    estimator = self.estimator
                    continue
                append(loss)
                observe(loss)
            self.next_offset = batch[stop - 1].offset + 1
            self._examples_seen += stop - start
            cadence.learned(stop - start)
            start = stop
            if cadence.count_due():
                self.snapshot_now(summary)
                estimator = self.estimator  # a guardrail may have restored another
        self._drift.observe_many(self.version, "learning", losses)
        snapshot_seconds = summary.snapshot_seconds - snapshot_seconds
        summary.learn_seconds += time.perf_counter() - started - snapshot_seconds
        learned = len(batch)
        summary.examples_learned += learned
        version = str(self.version)
        self._metrics.examples_learned.labels(self._model, version).inc(learned)
        assert prequential is not None  # noqa: S101  # set by load()
        for name, value in prequential.values().items():
            self._metrics.prequential.labels(self._model, version, name).set(value)
        self._report_offset(summary)
        return learned

    def _forget(self, offset: int, value: bytes | None, exc: NotLearned) -> None:
        """Dead-letter an example the model raised on, and rebuild the model without it.

        The model may be half-changed by the failed call, so it is rebuilt from the latest
        snapshot by replaying the log up to the example, skipping it: the very model of a
        learner that never saw it, and what `riverrun models verify` replays too.
        """
        self._metrics.examples_not_learned.labels(self._model, str(self.version)).inc()
        logger.warning("%s@%d cannot learn the example at %s:%d (%s): dead-lettered, the model "
                       "rebuilt without it", self._model, self.version, self._topics.examples,
                       offset, exc)  # fmt: skip
        self._dead_letter(offset, value, str(exc))
        latest = self._latest
        assert latest is not None  # noqa: S101  # set when a version starts
        self._not_learned.add(offset)
        rebuilt = replay(
            self._settings.kafka, self._topics.examples, self._model,
            lambda: self._registry.load(latest), latest.lineage.get(self._lineage_key, 0), offset,
            skip=self._not_learned, keepalive=self.keepalive,
        )  # fmt: skip
        self._not_learned |= rebuilt.skipped
        self.estimator = rebuilt.estimator

    def _dead_letter(self, offset: int, value: bytes | None, reason: str) -> None:
        if self._dead_letters is None:
            self._dead_letters = Producer(producer_config(
                self._settings.kafka, client_id=f"{self._settings.kafka.client_id}-learner",
            ))  # fmt: skip
        letter = DeadLetter(
            error_class=NOT_LEARNED, reason=reason, source_topic=self._topics.examples,
            source_partition=0, source_offset=offset, worker=self._options.worker_id,
            model=self._model, version=self.version,
        )  # fmt: skip
        out = dead_letter_record(self._topics.dead_letters, None, value, letter.to_headers(),
                                 self.output_limit)  # fmt: skip
        produce(self._dead_letters, out.topic, out.value, out.key, headers=out.headers)
        flush_or_raise(self._dead_letters, 30.0, "dead letters of unlearnable examples")

    def _report_offset(self, summary: LearnSummary) -> None:
        self._metrics.examples_offset.labels(self._model).set(self.next_offset)
        summary.next_offset = self.next_offset

    # -- snapshots -----------------------------------------------------------------------

    def snapshot_if_due(self, summary: LearnSummary) -> None:
        """Publish a snapshot if the cadence says so (examples learned, or time passed)."""
        if self._cadence.due(time.monotonic()):
            self.snapshot_now(summary)

    def snapshot_now(self, summary: LearnSummary) -> None:
        """Publish a snapshot of what the version has learned (unless the guardrail refuses)."""
        if self._crash.enabled:
            self._crash.hit("after-learn-before-snapshot")
        self._publish_snapshot(summary)
        if self._crash.enabled:
            self._crash.hit("after-snapshot-before-commit")

    def _publish_snapshot(self, summary: LearnSummary) -> None:
        assert self._prequential is not None  # noqa: S101  # set by load()
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
            self._model, self.version, snapshot, self.estimator,
            metrics=self._prequential.values(), examples_seen=self._examples_seen,
            lineage={self._lineage_key: self.next_offset},
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        summary.snapshot_seconds += elapsed
        self._metrics.snapshot_publish_seconds.labels(self._model).observe(elapsed)
        self._published(record, summary)
        if self._guardrail.judged:
            self._last_good = record
        logger.info(
            "published %s@%d#%d at examples offset %d (%d examples seen, sha256 %s)",
            self._model, self.version, snapshot, self.next_offset, self._examples_seen,
            record.artifact.sha256[:12],
        )  # fmt: skip

    def _published(self, record: SnapshotPublished, summary: LearnSummary) -> None:
        self._snapshot = record.snapshot
        self._latest = record
        self._not_learned.clear()  # the snapshot holds what skipping them made
        self._cadence.published(time.monotonic())
        summary.snapshots_published += 1
        summary.last_snapshot = record.snapshot
        self._metrics.snapshots_published.labels(self._model, str(self.version)).inc()

    def _restore_last_good(self, reason: str, summary: LearnSummary) -> None:
        """Republish the last snapshot the guardrail accepted, and publish nothing more."""
        assert self._prequential is not None  # noqa: S101  # set by load()
        good = self._last_good
        assert good is not None  # noqa: S101  # set when a version starts
        self._halted = reason
        self._metrics.guardrail_trips.labels(self._model, str(self.version)).inc()
        self._metrics.publishing.labels(self._model).set(0)
        estimator = self._registry.load(good)
        record = self._registry.publish_snapshot(
            self._model, self.version, self._snapshot + 1, self._registry.dump(estimator),
            metrics=self._prequential.values(), examples_seen=self._examples_seen,
            lineage={self._lineage_key: self.next_offset}, restored_from=good.snapshot,
            reason=f"guardrail: {reason}",
        )  # fmt: skip
        self.estimator = estimator
        self._published(record, summary)
        logger.error(
            "guardrail tripped on %s@%d: %s; restored snapshot #%d as #%d and stopped "
            "publishing (restart the learner once the feedback is clean)",
            self._model, self.version, reason, good.snapshot, record.snapshot,
        )  # fmt: skip

    def finish(self, clean: bool, summary: LearnSummary) -> None:
        """Publish what was learned since the last snapshot (after a clean stop only)."""
        try:
            if clean and self._cadence.changed > 0:
                self._publish_snapshot(summary)
        finally:
            summary.next_offset = self.next_offset
            summary.metrics = self._prequential.values() if self._prequential else None
            if self._examples is not None:
                self._examples.close()
                self._examples = None
            if self._dead_letters is not None:
                self._dead_letters.flush(self._options.shutdown_timeout_s)
                self._dead_letters = None
