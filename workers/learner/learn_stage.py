"""The learn stage: examples in log order, every version that learns, snapshots together.

A group-less consumer reads the committed examples log from the lowest lineage among the
versions that learn, and hands every example to each of them (`VersionLearner`); each learns
it once, in log order, from its own latest snapshot's lineage on. So a restart neither
repeats nor skips an example for any version, and `riverrun models verify` replays each one
byte for byte. Once the reader reaches the first example this learner committed itself, the
rest are learned from memory (`CommittedExample`s handed over by the join stage) without
fetching them again.

The versions that learn are the champion (what answers) and every version its policy names,
plus versions released since that wait for a deployment (`learning_versions`). On the same
example, each version's test-then-train loss is paired with the champion's: the moments of
the differences, counted from the experiment's start, go out with the version's snapshots
(`PairedLoss`) for the judge. Snapshots of all versions are taken together, at the same
offsets, so a restart resumes every version from one place and pairs exactly as before.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from riverrun.schemas import ModelVersionReleased, PolicyChanged, SnapshotPublished
from riverrun.workers.learner.drift import DriftReporter
from riverrun.workers.learner.join_stage import CommittedExample
from riverrun.workers.learner.log import read_example
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.prequential import SnapshotCadence
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.learner.summary import LearnSummary
from riverrun.workers.learner.version_learner import PairedTally, VersionLearner
from riverrun.workers.registry import Registry
from riverrun.workers.registry.records import RegistryRecord, lineage_key
from riverrun.workers.registry.view import RegistryView
from riverrun.workers.routing.policy import learning_versions
from riverrun.workers.runtime.crashpoint import CrashPoints
from riverrun.workers.runtime.errors import ConfigurationError, RiverrunError
from riverrun.workers.runtime.kafka import CLIENT_MAX_BYTES, take_arrived

logger = logging.getLogger(__name__)

_LEARN_BUDGET_FACTOR = 10


def versions_that_learn(view: RegistryView, model: str) -> list[int]:
    """The versions of `model` that learn, the champion first.

    Raises:
        ConfigurationError: the model has no released version.

    """
    wanted = learning_versions(view, model)
    if not wanted:
        raise ConfigurationError(
            f"model {model!r} has no released version: release one "
            "(`riverrun models release`) before starting its learner"
        )
    return wanted


def committed_example(record: Message, model: str) -> CommittedExample | None:
    """An examples-log record of `model` as the learn stage learns it; None for another's."""
    example = read_example(record.value(), model)
    if example is None:
        return None
    features, label, key, key_partition = example
    return CommittedExample(record.offset() or 0, features, label, record.value(), key,
                            record.timestamp()[1], key_partition)  # fmt: skip


class LearnStage:
    """The versions of one model that learn, fed from one examples reader in log order."""

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
        self._policy_moved = False  # set by the registry follower's thread
        self._output_limit = CLIENT_MAX_BYTES  # set by the loop, as the join stage read it
        # Called while a long replay runs, so that the loop keeps its consumer group's place.
        self.keepalive: Callable[[], None] | None = None
        # The champion first; set by load().
        self._versions: list[VersionLearner] = []
        self._experiment = 0  # the policy's experiment the pairs count in (0: no policy)
        self._cadence = SnapshotCadence(
            self._options.snapshot_every, self._options.snapshot_interval, time.monotonic()
        )

    # -- what the loop reads -------------------------------------------------------------

    @property
    def champion(self) -> VersionLearner:
        """The version that answers (learned first, and the one the others pair with)."""
        return self._versions[0]

    @property
    def estimator(self) -> object:
        """The champion's estimator (None before `load`)."""
        return self._versions[0].estimator if self._versions else None

    @property
    def version(self) -> int:
        """The champion's version."""
        return self._versions[0].version if self._versions else 0

    @property
    def versions(self) -> list[int]:
        """Every version learning, the champion first."""
        return [v.version for v in self._versions]

    @property
    def label_type(self) -> str | None:
        """The champion's label type, from its release's spec."""
        return self._versions[0].label_type if self._versions else None

    @property
    def next_offset(self) -> int:
        """The examples-log offset the reader is at: the lowest among the versions."""
        return min((v.next_offset for v in self._versions), default=0)

    @property
    def backlog(self) -> int:
        """Examples committed by this learner and not learned yet."""
        return len(self._committed)

    @property
    def policy_moved(self) -> bool:
        """Whether what learns may have moved since `follow_policy` last looked."""
        return self._policy_moved

    @property
    def ready_to_learn(self) -> bool:
        """Whether committed examples wait in memory (the join need not wait for more)."""
        return bool(self._committed) and not self.reading_log

    @property
    def output_limit(self) -> int:
        """The largest record the brokers take, for dead letters (set as the join stage read it)."""
        return self._output_limit

    @output_limit.setter
    def output_limit(self, limit: int) -> None:
        self._output_limit = limit
        for learner in self._versions:
            learner.output_limit = limit

    def learner_of(self, version: int) -> VersionLearner | None:
        """The learner of one version, if it learns."""
        return next((v for v in self._versions if v.version == version), None)

    # -- start-up ------------------------------------------------------------------------

    def load(self) -> None:
        """Start learning every version that learns, each from its latest snapshot.

        Raises:
            ConfigurationError: the model has no released version, or its champion no
                snapshot that loads.

        """
        view = self._registry.refresh()
        wanted = versions_that_learn(view, self._model)
        champion = self._started(view, wanted[0])
        if champion is None:
            raise ConfigurationError(
                f"{self._model}@{wanted[0]} has no snapshot to start from: release it again"
            )
        self._versions = [champion]
        for version in wanted[1:]:
            learner = self._try_start(view, version)
            if learner is not None:
                self._versions.append(learner)
        self._pair(view.policy(self._model))
        self._metrics.publishing.labels(self._model).set(1)

    def attach(self, examples: Consumer) -> None:
        """Read the examples log with `examples`, from the lowest version's lineage on."""
        self._examples = examples
        examples.assign([TopicPartition(self._topics.examples, 0, self.next_offset)])

    def _started(self, view: RegistryView, version: int) -> VersionLearner | None:
        """A learner of `version` from its newest snapshot; None when it has none."""
        snapshots = view.snapshots(self._model, version)
        if not snapshots:
            return None
        learner = VersionLearner(self._settings, self._registry, self._metrics, self._drift,
                                 self._lineage_key)  # fmt: skip
        learner.keepalive = self.keepalive
        learner.output_limit = self.output_limit
        learner.crash = self._crash
        learner.start(view.version(self._model, version), snapshots)
        return learner

    def _try_start(self, view: RegistryView, version: int) -> VersionLearner | None:
        """As `_started`, but a version that cannot start is logged and left out."""
        try:
            learner = self._started(view, version)
        except RiverrunError as exc:
            self._metrics.refused_versions.labels(self._model).inc()
            logger.error("%s@%d does not start learning: %s", self._model, version, exc)
            return None
        if learner is None:
            logger.warning("%s@%d has no snapshot yet: it starts learning with its first",
                           self._model, version)  # fmt: skip
        return learner

    def _pair(self, policy: PolicyChanged | None) -> None:
        """Pair every other version with the champion in the policy's experiment.

        A version whose latest snapshot already counts pairs in this experiment against this
        champion carries on from it (a restart); any other starts counting at the policy's
        `examples_from`, else where the reader is now.
        """
        experiment = policy.experiment_id if policy is not None else 0
        self._experiment = experiment
        champion = self.champion.version
        since = policy.examples_from if policy is not None else None
        if since is None:
            since = self.next_offset
        for learner in self._versions:
            if learner is self.champion:
                learner.paired = None
            elif learner.paired is None or not learner.paired.matches(experiment, champion):
                learner.paired = PairedTally(experiment, champion, since)

    # -- what learns moves (a release, a deployment, a promotion, a rollback) --------------

    def on_registry_record(self, record: RegistryRecord) -> None:
        """Note that what learns may have moved (on the follower's thread)."""
        if record.model != self._model:
            return
        # A release's first snapshot too: a version read before it had nothing to start from.
        if isinstance(record, ModelVersionReleased | PolicyChanged) or (
            isinstance(record, SnapshotPublished) and record.snapshot == 0
        ):
            self._policy_moved = True

    def ignore_policy_moves(self) -> None:
        """Forget the moves seen so far (a join stage alone reads the registry itself)."""
        self._policy_moved = False

    def follow_policy(self, summary: LearnSummary) -> None:
        """Learn what the policy names now: versions it adds start, versions it drops stop.

        A version taken up learns the log from its latest snapshot's lineage (from its
        release, for a new one); one rolled back to catches up on what it missed. A version
        dropped publishes what it learned last. A new champion that cannot start leaves the
        previous one learning.
        """
        if not self._policy_moved:
            return
        self._policy_moved = False
        view = self._registry.refresh()
        wanted = learning_versions(view, self._model)
        policy = view.policy(self._model)
        experiment = policy.experiment_id if policy is not None else 0
        if not wanted or (wanted == self.versions and experiment == self._experiment):
            return
        previous = self.champion
        held = {v.version: v for v in self._versions}
        started: list[VersionLearner] = []
        for version in wanted:
            learner = held.get(version)
            if learner is None:
                learner = self._try_start(view, version)
            if learner is not None:
                started.append(learner)
        if not started or started[0].version != wanted[0]:
            logger.error("not switching to %s@%d: it does not start; %s@%d keeps learning",
                         self._model, wanted[0], self._model, previous.version)  # fmt: skip
            started = [previous, *(v for v in started if v is not previous)]
        kept = {v.version for v in started}
        for learner in self._versions:
            if learner.version not in kept:
                if learner.changed > 0:
                    learner.publish_snapshot(summary, champion=learner is previous)
                learner.close()
                logger.info("%s@%d stops learning: the policy no longer names it",
                            self._model, learner.version)  # fmt: skip
        reader_at = self.next_offset
        self._versions = started
        self._pair(policy)
        if self.next_offset < reader_at:
            self._reread_from(self.next_offset)
        if self.champion is not previous:
            summary.version = self.version
            self._metrics.version.labels(self._model).set(self.version)
            self._metrics.publishing.labels(self._model).set(0 if self.champion.halted else 1)
            logger.info("switched from %s@%d to %s@%d", self._model, previous.version,
                        self._model, self.version)  # fmt: skip
        logger.info("learning %s", ", ".join(f"{self._model}@{v}" for v in self.versions))

    def _reread_from(self, offset: int) -> None:
        """Read the log again from `offset`, for a version that starts behind the others."""
        committed = self._committed
        while committed and committed[0].offset < offset:
            committed.popleft()
        self.reading_log = True
        if self._examples is not None:
            log = TopicPartition(self._topics.examples, 0, offset)
            self._examples.assign([log])
            self._examples.resume([log])  # paused while learning from memory

    # -- learning ------------------------------------------------------------------------

    def add_committed(self, examples: list[CommittedExample]) -> None:
        """Take the examples the join stage just committed, to learn once their turn comes."""
        self._committed.extend(examples)

    def _budget(self, max_examples: int | None, summary: LearnSummary) -> int:
        budget = self._options.batch_size * _LEARN_BUDGET_FACTOR
        if max_examples is not None:
            budget = min(budget, max_examples - summary.examples_learned)
        return budget

    def learn_from_log(
        self, summary: LearnSummary, max_examples: int | None, wait_s: float = 0.0
    ) -> int:
        """Learn committed examples read back from the log, until it reaches this run's own.

        Only examples committed before this learner started (or before a version that starts
        behind the others joined) are read back; from the first example this learner committed
        itself, the rest are learned from memory, without waiting to fetch them again. A learn
        stage on its own (`--stage learn`) commits nothing itself: it reads the whole log, and
        waits up to `wait_s` when nothing has arrived.
        """
        budget = self._budget(max_examples, summary)
        examples = self._examples
        if budget <= 0 or examples is None:
            return 0
        records = take_arrived(examples, min(budget, 10_000), wait_s)
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
            example = committed_example(record, model)
            if example is not None:
                batch.append(example)
        learned = self._learn_examples(batch, summary)
        for learner in self._versions:  # past other models' examples
            learner.next_offset = max(learner.next_offset, read_to)
        self._report_offset(summary)
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
        """Each version learns the batch in log order; snapshots at exact multiples of N."""
        if not batch:
            self._report_offset(summary)
            return 0
        started = time.perf_counter()
        cadence = self._cadence
        champion, others = self._versions[0], self._versions[1:]
        snapshot_seconds = summary.snapshot_seconds
        start, end = 0, len(batch)
        while start < end:
            # Up to the next count-based snapshot, which falls on the very same example.
            stop = end
            if cadence.every is not None:
                stop = max(min(end, start + cadence.every - cadence.changed), start + 1)
            chunk = batch[start:stop]
            losses = champion.learn(chunk)
            for learner in others:
                mine = learner.learn(chunk)
                if learner.paired is not None:
                    learner.paired.add(chunk, losses, mine)
            cadence.learned(stop - start)
            start = stop
            if cadence.count_due():
                self.snapshot_now(summary)
        snapshot_seconds = summary.snapshot_seconds - snapshot_seconds
        summary.learn_seconds += time.perf_counter() - started - snapshot_seconds
        learned = len(batch)
        summary.examples_learned += learned
        for learner in self._versions:
            learner.report()
        self._report_offset(summary)
        return learned

    def _report_offset(self, summary: LearnSummary) -> None:
        offset = self.next_offset
        self._metrics.examples_offset.labels(self._model).set(offset)
        summary.next_offset = offset

    # -- snapshots -----------------------------------------------------------------------

    def snapshot_if_due(self, summary: LearnSummary) -> None:
        """Publish snapshots if the cadence says so (examples learned, or time passed)."""
        if self._cadence.due(time.monotonic()):
            self.snapshot_now(summary)

    def snapshot_now(self, summary: LearnSummary) -> None:
        """Publish a snapshot of every version that learned since its last one."""
        if self._crash.enabled:
            self._crash.hit("after-learn-before-snapshot")
        self._publish_all(summary)
        if self._crash.enabled:
            self._crash.hit("after-snapshot-before-commit")

    def _publish_all(self, summary: LearnSummary) -> None:
        champion = self.champion
        for learner in self._versions:
            if learner.changed > 0:
                learner.publish_snapshot(summary, champion=learner is champion)
        self._cadence.published(time.monotonic())

    def finish(self, clean: bool, summary: LearnSummary) -> None:
        """Publish what was learned since the last snapshots (after a clean stop only)."""
        try:
            if clean and self._cadence.changed > 0:
                self._publish_all(summary)
        finally:
            summary.next_offset = self.next_offset
            summary.metrics = self.champion.prequential.values() if (
                self._versions and self.champion.prequential) else None  # fmt: skip
            if self._examples is not None:
                self._examples.close()
                self._examples = None
            for learner in self._versions:
                learner.close()
