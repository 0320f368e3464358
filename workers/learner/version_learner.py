"""One version being learned: its estimator, prequential metrics, guardrail and snapshots.

The learn stage (`learn_stage.py`) keeps one `VersionLearner` per version that learns (the
champion, and every version its policy names) and hands each the same examples in log order.
A version learns an example once: only those at or past its own `next_offset`, the lineage of
its latest snapshot, so versions started at different offsets (a release, a restart) each
pick up where their own snapshots left off.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from riverrun.schemas import DeadLetter, ModelVersionReleased, PairedLoss, SnapshotPublished
from riverrun.workers.keys.learning import KeyLearning
from riverrun.workers.learner.drift import DriftReporter
from riverrun.workers.learner.guardrail import Guardrail
from riverrun.workers.learner.join_stage import CommittedExample
from riverrun.workers.learner.log import replay
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.prequential import (
    NotLearned,
    Prequential,
    is_classifier,
    learn_example,
    task_of,
)
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.learner.summary import LearnSummary
from riverrun.workers.registry import RefusedArtifact, Registry
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

NOT_LEARNED = "NotLearned"  # the dead letters' class for examples the model raised on
NOT_SEEN = math.nan  # the loss of an example a version did not learn (before its offset)


def label_type_of(released: ModelVersionReleased | None) -> str | None:
    """The label type a release's spec declares (labels are coerced to it), if any."""
    spec = released.spec if released is not None else None
    label_type = spec.get("label_type") if isinstance(spec, dict) else None
    return label_type if isinstance(label_type, str) else None


class PairedTally:
    """A version's loss against the champion's on the examples both learned, from an offset."""

    __slots__ = ("experiment", "against", "since_offset", "n", "diff_sum", "diff_sum_sq")

    def __init__(
        self,
        experiment: int,
        against: int,
        since_offset: int,
        n: int = 0,
        diff_sum: float = 0.0,
        diff_sum_sq: float = 0.0,
    ) -> None:
        self.experiment = experiment
        self.against = against
        self.since_offset = since_offset
        self.n = n
        self.diff_sum = diff_sum
        self.diff_sum_sq = diff_sum_sq

    @classmethod
    def resumed(cls, record: PairedLoss) -> PairedTally:
        """Carry on from what a snapshot recorded."""
        return cls(record.experiment, record.against, record.since_offset, record.n,
                   record.diff_sum, record.diff_sum_sq)  # fmt: skip

    def matches(self, experiment: int, against: int) -> bool:
        """Whether this tally belongs to that experiment against that champion."""
        return self.experiment == experiment and self.against == against

    def add(
        self, chunk: list[CommittedExample], champion: list[float], mine: list[float]
    ) -> None:
        """Count the examples of `chunk` both versions learned, from `since_offset` on."""
        since = self.since_offset
        n, total, total_sq = self.n, self.diff_sum, self.diff_sum_sq
        for example, theirs, own in zip(chunk, champion, mine, strict=True):
            # NaN (not learned) compares unequal to itself.
            if example.offset >= since and theirs == theirs and own == own:  # noqa: PLR0124
                difference = theirs - own
                n += 1
                total += difference
                total_sq += difference * difference
        self.n, self.diff_sum, self.diff_sum_sq = n, total, total_sq

    def record(self) -> PairedLoss:
        """What a snapshot carries."""
        return PairedLoss(experiment=self.experiment, against=self.against,
                          since_offset=self.since_offset, n=self.n, diff_sum=self.diff_sum,
                          diff_sum_sq=self.diff_sum_sq)  # fmt: skip


class VersionLearner:
    """One version's estimator, metrics and guardrail, learned from its snapshots' lineage on."""

    def __init__(
        self,
        settings: LearnerSettings,
        registry: Registry,
        metrics: LearnerMetrics,
        drift: DriftReporter,
        lineage_key: str,
    ) -> None:
        self._settings = settings
        self._options = settings.learner
        self._topics = settings.topics
        self.model = settings.learner.model
        self._registry = registry
        self._metrics = metrics
        self._drift = drift
        self._lineage_key = lineage_key
        self.estimator: Any = None
        self.version = 0
        self.snapshot = 0
        self.examples_seen = 0
        self.next_offset = 0
        self.changed = 0  # examples learned since the last snapshot
        self.label_type: str | None = None  # from the release's spec
        self.prequential: Prequential | None = None
        self.paired: PairedTally | None = None  # set beside a champion
        self.latest: SnapshotPublished | None = None  # what a failed example rebuilds from
        self.output_limit = CLIENT_MAX_BYTES
        self.keepalive: Callable[[], None] | None = None
        self._classifier = False
        self._guardrail = Guardrail(self._options.guardrail_loss_ratio,
                                    self._options.guardrail_min_examples)  # fmt: skip
        self._last_good: SnapshotPublished | None = None
        self._not_learned: set[int] = set()  # offsets since `latest` the model raised on
        self._dead_letters: Producer | None = None
        self.halted: str | None = None
        self.keys: KeyLearning | None = None  # a per-key version's keys
        self.crash: CrashPoints | None = None

    # -- start-up ------------------------------------------------------------------------

    def start(
        self, released: ModelVersionReleased | None, snapshots: list[SnapshotPublished]
    ) -> None:
        """Learn the version from its newest snapshot that loads, with the metrics it had.

        A snapshot refused on load (a bad artifact) is passed over for the one before it. The
        metrics are not in the artifact: they are rebuilt by replaying the examples the
        version learned (from its first snapshot's lineage to this one's) through a copy of
        its first snapshot, which gives exactly the metrics the uninterrupted learner had.

        Raises:
            ConfigurationError: no snapshot of the version loads.

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
                    self._settings.kafka, self._topics.examples, self.model,
                    lambda: self._registry.load(first), start, resume, task,
                    keepalive=self.keepalive,
                ).prequential or prequential  # fmt: skip
            except RefusedArtifact as exc:
                logger.error("%s@%d#%d does not load (%s): prequential metrics start afresh",
                             self.model, first.version, first.snapshot, exc)  # fmt: skip
        self.estimator = estimator
        self._classifier = is_classifier(estimator)
        self.latest = snapshot
        self._not_learned.clear()
        self.label_type = label_type_of(released)
        self.prequential = prequential
        self.version = snapshot.version
        self.snapshot = snapshot.snapshot
        self.examples_seen = snapshot.examples_seen
        self.next_offset = resume
        self.changed = 0
        self.paired = PairedTally.resumed(snapshot.paired) if snapshot.paired else None
        self._guardrail = Guardrail(
            self._options.guardrail_loss_ratio, self._options.guardrail_min_examples
        )
        self._last_good = snapshot
        self.halted = None
        if self.keys is not None:
            self.keys.close()
        self.keys = None if self._options.keys == "apart" else KeyLearning.of(
            self._settings.kafka, self._topics.key_states, self._registry, released, estimator,
            classifier=self._classifier, keepalive=self.keepalive,
            client_id=f"{self._settings.kafka.client_id}-learner-keys",
        )  # fmt: skip
        logger.info(
            "learning %s@%d from snapshot %d, examples log %s from offset %d (%d examples "
            "already scored)", self.model, snapshot.version, snapshot.snapshot,
            self._topics.examples, resume, prequential.count,
        )  # fmt: skip

    def _newest_that_loads(
        self, snapshots: list[SnapshotPublished]
    ) -> tuple[SnapshotPublished, Any]:
        for snapshot in reversed(snapshots):
            try:
                return snapshot, self._registry.load(snapshot)
            except RiverrunError as exc:
                self._metrics.refused_versions.labels(self.model).inc()
                logger.error("%s@%d#%d does not load (%s): trying the snapshot before it",
                             self.model, snapshot.version, snapshot.snapshot, exc)  # fmt: skip
        last = snapshots[-1]
        raise ConfigurationError(
            f"no snapshot of {self.model}@{last.version} loads: release it again"
        )

    # -- learning ------------------------------------------------------------------------

    def learn(self, chunk: list[CommittedExample]) -> list[float]:
        """Test-then-train the examples of `chunk` from `next_offset` on; each one's loss.

        An example before `next_offset` (learned already) or one the model raised on has the
        loss `NOT_SEEN`. `next_offset` moves past the chunk.
        """
        losses: list[float] = []
        append = losses.append
        observed: list[float] = []  # the losses of the examples learned, for the guardrail
        observe = observed.append
        estimator, prequential, classifier = self.estimator, self.prequential, self._classifier
        keys = self.keys
        start = self.next_offset
        learned = 0
        for offset, features, label, value, key, timestamp_ms, key_partition in chunk:
            if offset < start:
                append(NOT_SEEN)
                continue
            learned += 1
            # A key's model learns its own copy: the global pipeline may change the row.
            row = dict(features) if keys is not None and key is not None else None
            try:
                loss = learn_example(estimator, features, label, prequential, classifier)
            except NotLearned as exc:
                self._forget(offset, value, exc)
                estimator = self.estimator
                append(NOT_SEEN)
                continue
            if row is not None:
                keys.learn(key, offset, row, label, loss, timestamp_ms,  # type: ignore[union-attr]
                           key_partition)
            append(loss)
            observe(loss)
        self._guardrail.observe_many(observed)
        if chunk:
            self.next_offset = max(start, chunk[-1].offset + 1)
        if learned:
            self.examples_seen += learned
            self.changed += learned
            self._drift.observe_many(self.version, "learning",
                                     [x for x in observed if x == x])  # noqa: PLR0124  # fmt: skip
            self._metrics.examples_learned.labels(self.model, str(self.version)).inc(learned)
        return losses

    def report(self) -> None:
        """Set the version's prequential gauges."""
        if self.prequential is None:
            return
        version = str(self.version)
        for name, value in self.prequential.values().items():
            self._metrics.prequential.labels(self.model, version, name).set(value)

    def _forget(self, offset: int, value: bytes | None, exc: NotLearned) -> None:
        """Dead-letter an example the model raised on, and rebuild the model without it.

        The model may be half-changed by the failed call, so it is rebuilt from the latest
        snapshot by replaying the log up to the example, skipping it: the very model of a
        learner that never saw it, and what `riverrun models verify` replays too.
        """
        self._metrics.examples_not_learned.labels(self.model, str(self.version)).inc()
        logger.warning("%s@%d cannot learn the example at %s:%d (%s): dead-lettered, the model "
                       "rebuilt without it", self.model, self.version, self._topics.examples,
                       offset, exc)  # fmt: skip
        self._dead_letter(offset, value, str(exc))
        latest = self.latest
        assert latest is not None  # noqa: S101  # set when a version starts
        self._not_learned.add(offset)
        rebuilt = replay(
            self._settings.kafka, self._topics.examples, self.model,
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
            model=self.model, version=self.version,
        )  # fmt: skip
        out = dead_letter_record(self._topics.dead_letters, None, value, letter.to_headers(),
                                 self.output_limit)  # fmt: skip
        produce(self._dead_letters, out.topic, out.value, out.key, headers=out.headers)
        flush_or_raise(self._dead_letters, 30.0, "dead letters of unlearnable examples")

    # -- snapshots -----------------------------------------------------------------------

    def publish_snapshot(self, summary: LearnSummary, *, champion: bool) -> None:
        """Publish what the version learned (unless halted, or the guardrail refuses it)."""
        assert self.prequential is not None  # noqa: S101  # set by start()
        if self.halted:
            self.changed = 0  # learning goes on; nothing goes out
            return
        refusal = self._guardrail.verdict()
        if refusal is not None:
            self._restore_last_good(refusal, summary, champion=champion)
            return
        snapshot = self.snapshot + 1
        started = time.perf_counter()
        metrics = self.prequential.values()
        if self.keys is not None:
            # Before the snapshot: a snapshot's lineage never runs ahead of its keys' states.
            by_key = self.keys.write(self.model, self.version)
            for name, value in by_key.items():  # `keys`, and the keys' losses beside the global's
                self._metrics.prequential.labels(self.model, str(self.version), name).set(value)
            metrics.update(by_key)
            if self.crash is not None and self.crash.enabled:
                self.crash.hit("after-keys-before-snapshot")
        record = self._registry.publish_snapshot(
            self.model, self.version, snapshot, self.estimator,
            metrics=metrics, examples_seen=self.examples_seen,
            lineage={self._lineage_key: self.next_offset},
            paired=self.paired.record() if self.paired is not None else None,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        summary.snapshot_seconds += elapsed
        self._metrics.snapshot_publish_seconds.labels(self.model).observe(elapsed)
        self._published(record, summary)
        if self._guardrail.judged:
            self._last_good = record
        logger.info(
            "published %s@%d#%d at examples offset %d (%d examples seen, sha256 %s)",
            self.model, self.version, snapshot, self.next_offset, self.examples_seen,
            record.artifact.sha256[:12],
        )  # fmt: skip

    def _published(self, record: SnapshotPublished, summary: LearnSummary) -> None:
        self.snapshot = record.snapshot
        self.latest = record
        self._not_learned.clear()  # the snapshot holds what skipping them made
        self.changed = 0
        summary.snapshots_published += 1
        summary.last_snapshot = record.snapshot
        self._metrics.snapshots_published.labels(self.model, str(self.version)).inc()

    def _restore_last_good(self, reason: str, summary: LearnSummary, *, champion: bool) -> None:
        """Republish the last snapshot the guardrail accepted, and publish nothing more."""
        assert self.prequential is not None  # noqa: S101  # set by start()
        good = self._last_good
        assert good is not None  # noqa: S101  # set when a version starts
        self.halted = reason
        self._metrics.guardrail_trips.labels(self.model, str(self.version)).inc()
        if champion:
            self._metrics.publishing.labels(self.model).set(0)
        estimator = self._registry.load(good)
        record = self._registry.publish_snapshot(
            self.model, self.version, self.snapshot + 1, self._registry.dump(estimator),
            metrics=self.prequential.values(), examples_seen=self.examples_seen,
            lineage={self._lineage_key: self.next_offset}, restored_from=good.snapshot,
            reason=f"guardrail: {reason}",
            paired=self.paired.record() if self.paired is not None else None,
        )  # fmt: skip
        self.estimator = estimator
        self._published(record, summary)
        logger.error(
            "guardrail tripped on %s@%d: %s; restored snapshot #%d as #%d and stopped "
            "publishing (restart the learner once the feedback is clean)",
            self.model, self.version, reason, good.snapshot, record.snapshot,
        )  # fmt: skip

    def close(self) -> None:
        """Deliver the dead letters still queued."""
        if self.keys is not None:
            self.keys.close()
            self.keys = None
        if self._dead_letters is not None:
            self._dead_letters.flush(self._options.shutdown_timeout_s)
            self._dead_letters = None
