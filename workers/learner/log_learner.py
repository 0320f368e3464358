"""The learn stage in a process of its own (`riverrun learn --stage learn`).

A `--stage join` process commits examples to the log; this one reads the log (committed
records only) and learns it as the one-process learner does: every version that learns, in log
order, from its own snapshots' lineage on, with the same snapshots, guardrail, drift records
and pairs. The two stages then run on two cores, and each restarts on its own: the join from
its committed feedback offsets, the learn stage from its snapshots' lineage.

It joins no consumer group (the log has one partition and its place is the lineage), so run
one learn stage per model: two would publish snapshots of the same versions.
"""

from __future__ import annotations

import logging
import threading
import time

from riverrun.workers.learner.learn_stage import LearnStage
from riverrun.workers.learner.log import check_single_partition, examples_consumer
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.learner.parts import STATISTICS_INTERVAL_MS, learner_parts
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.learner.summary import LearnSummary
from riverrun.workers.registry import Registry

logger = logging.getLogger(__name__)


class LogLearner:
    """One model's learn stage, fed by the committed examples log alone."""

    def __init__(
        self, settings: LearnerSettings, registry: Registry, metrics: LearnerMetrics | None = None
    ) -> None:
        parts = learner_parts(settings, registry, metrics, logger)
        self._settings = settings
        self._options = settings.learner
        self._model = parts.model
        self._registry = registry
        self.metrics = parts.metrics
        self._stop = threading.Event()
        self._attached = False
        # The examples reader's statistics: its lag is the learn stage's, its contact readiness.
        self._statistics = parts.statistics
        self._learn = LearnStage(settings, registry, self.metrics, parts.drift, parts.crash)

    def is_ready(self) -> bool:
        """Has a model loaded, reads the examples log and hears from its brokers."""
        return (self._attached and self._learn.estimator is not None and not self._stop.is_set()
                and self._statistics.contact.in_contact())  # fmt: skip

    def stop(self) -> None:
        """Finish the batch, publish a last snapshot and leave (signal-handler safe)."""
        self._stop.set()

    def run(
        self, max_examples: int | None = None, idle_timeout: float | None = None
    ) -> LearnSummary:
        """Learn until stopped, or `max_examples` learned, or `idle_timeout` s of quiet."""
        summary = LearnSummary()
        learn = self._learn
        learn.load()
        summary.version = learn.version
        self.metrics.version.labels(self._model).set(learn.version)
        follower = self._registry.follower(learn.on_registry_record).start()
        examples = examples_consumer(
            self._settings.kafka, f"{self._settings.kafka.client_id}-learn-{self._model}",
            on_statistics=self._statistics, statistics_interval_ms=STATISTICS_INTERVAL_MS,
        )  # fmt: skip
        clean = False
        try:
            check_single_partition(examples, self._settings.topics.examples)
            learn.attach(examples)
            self._attached = True
            wait = self._options.batch_timeout_ms / 1000.0
            last_activity = time.monotonic()
            while not self._stop.is_set():
                if max_examples is not None and summary.examples_learned >= max_examples:
                    break
                if learn.policy_moved:
                    learn.follow_policy(summary)
                learned = learn.learn_from_log(summary, max_examples, wait)
                learn.snapshot_if_due(summary)
                self.metrics.ready.set(1 if self.is_ready() else 0)
                now = time.monotonic()
                if learned:
                    last_activity = now
                elif idle_timeout is not None and now - last_activity > idle_timeout:
                    break
            clean = True
        finally:
            follower.stop()
            if not self._attached:
                examples.close()  # refused before the learn stage took it (it closes it)
            self._attached = False
            try:
                learn.finish(clean, summary)
            finally:
                self.metrics.ready.set(0)
                logger.info("learn stage stopped (%s)", "clean" if clean else "after a failure")
        return summary
