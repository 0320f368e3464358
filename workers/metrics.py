"""The scorer's metrics, built on an injected registry so that tests read fresh ones."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class ScorerMetrics:
    """Every metric of a scorer process, named `riverrun_scorer_<what>_<unit>`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "riverrun_scorer_consumed", "Records consumed from the requests topic.", registry=r
        )
        self.scored = Counter(
            "riverrun_scorer_scored",
            "Predictions produced.",
            ["model", "version", "route"],
            registry=r,
        )
        self.dead_letters = Counter(
            "riverrun_scorer_dead_letters",
            "Records written to the dead-letter topic, by error class.",
            ["error_class"],
            registry=r,
        )
        self.batch_size = Histogram(
            "riverrun_scorer_batch_size_records",
            "Records per consumed batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "riverrun_scorer_batch_processing_seconds",
            "Time to decode, score and produce one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "riverrun_scorer_end_to_end_latency_seconds",
            "From the request's Kafka timestamp to its prediction being produced.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_failures = Counter(
            "riverrun_scorer_delivery_failures",
            "Outputs the broker did not acknowledge.",
            registry=r,
        )
        self.transactions = Counter(
            "riverrun_scorer_transactions",
            "Transactions by how they ended.",
            ["outcome"],
            registry=r,
        )
        self.rebalances = Counter(
            "riverrun_scorer_rebalances",
            "Partition assignment changes, by kind.",
            ["kind"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "riverrun_scorer_assigned_partitions",
            "Partitions of the requests topic this worker owns.",
            registry=r,
        )
        self.model_info = Gauge(
            "riverrun_scorer_model_info",
            "The model snapshot in use (value 1).",
            ["model", "version", "snapshot"],
            registry=r,
        )
        self.refused_snapshots = Counter(
            "riverrun_scorer_refused_snapshots",
            "Snapshots refused at loading (bad size, signature, digest or class), by reason.",
            ["model", "error_class"],
            registry=r,
        )
        self.snapshot_load_seconds = Histogram(
            "riverrun_scorer_snapshot_load_seconds",
            "Time to fetch, verify and unpickle a snapshot.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.snapshot_swaps = Counter(
            "riverrun_scorer_snapshot_swaps",
            "Snapshots swapped in between batches.",
            ["model"],
            registry=r,
        )
        self.ready = Gauge(
            "riverrun_scorer_ready", "1 when assigned partitions and a model are loaded.", registry=r
        )
