"""The learner's metrics, built on an injected registry so that tests read fresh ones."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from riverrun.workers.runtime.metrics import ConsumerLag


class LearnerMetrics:
    """Every metric of a learner process, named `riverrun_learner_<what>_<unit>`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.labels_joined = Counter(
            "riverrun_learner_labels_joined",
            "Labels joined with their features and written to the examples log.",
            ["model", "source"],
            registry=r,
        )
        self.labels_unjoined = Counter(
            "riverrun_learner_labels_unjoined",
            "Labels dead-lettered because they could not be joined, by reason.",
            ["model", "reason"],
            registry=r,
        )
        self.examples_learned = Counter(
            "riverrun_learner_examples_learned",
            "Examples learned (test-then-train), in log order.",
            ["model", "version"],
            registry=r,
        )
        self.examples_not_learned = Counter(
            "riverrun_learner_examples_not_learned",
            "Examples the model raised on: dead-lettered, and learned by no version.",
            ["model", "version"],
            registry=r,
        )
        self.snapshots_published = Counter(
            "riverrun_learner_snapshots_published",
            "Snapshots published to the registry.",
            ["model", "version"],
            registry=r,
        )
        self.prequential = Gauge(
            "riverrun_learner_prequential",
            "Prequential (test-then-train) metric of a version since the learner started.",
            ["model", "version", "metric"],
            registry=r,
        )
        self.transactions = Counter(
            "riverrun_learner_transactions",
            "Join transactions by how they ended.",
            ["outcome"],
            registry=r,
        )
        self.window_predictions = Gauge(
            "riverrun_learner_window_predictions",
            "Predictions held in the join window.",
            registry=r,
        )
        self.examples_offset = Gauge(
            "riverrun_learner_examples_offset",
            "Next offset of the examples log to learn.",
            ["model"],
            registry=r,
        )
        self.ready = Gauge(
            "riverrun_learner_ready", "1 with a model, its partitions and its brokers answering.",
            registry=r,
        )  # fmt: skip
        self.version = Gauge(
            "riverrun_learner_version", "The version the learner is teaching.", ["model"],
            registry=r,
        )  # fmt: skip
        self.refused_versions = Counter(
            "riverrun_learner_refused_versions",
            "Versions released while running that the learner could not load, so kept the old.",
            ["model"], registry=r,
        )  # fmt: skip
        self.drift_detected = Counter(
            "riverrun_learner_drift_detected",
            "Drift detections on a version's loss stream (learning: the learner's own "
            "test-then-train loss; served: the outcomes of served predictions).",
            ["model", "version", "stream"], registry=r,
        )  # fmt: skip
        self.guardrail_trips = Counter(
            "riverrun_learner_guardrail_trips",
            "Snapshots refused by the guardrail (the last good one was restored).",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.publishing = Gauge(
            "riverrun_learner_publishing",
            "1 while the learner publishes snapshots; 0 after the guardrail stopped it.",
            ["model"], registry=r,
        )  # fmt: skip
        self.snapshot_publish_seconds = Histogram(
            "riverrun_learner_snapshot_publish_seconds",
            "Time to dump, sign, store and record one snapshot.", ["model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )  # fmt: skip
        self.consumer_lag = ConsumerLag(
            "riverrun_learner_consumer_lag_records",
            "Records behind the end, per feedback and predictions partition (librdkafka's "
            "statistics).", registry=r,
        )  # fmt: skip
