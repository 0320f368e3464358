"""The scorer's metrics, built on an injected registry so that tests read fresh ones."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class BulkHistogram(Collector):
    """A histogram observed a batch at a time: one NumPy bucketing per batch, not a call per value.

    Rendered exactly like a prometheus_client Histogram (`_bucket`, `_count`, `_sum`).
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._upper = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Sequence[float]) -> None:
        """Count every value into its bucket (a bucket holds values up to its bound)."""
        if not values:
            return
        array = np.asarray(values, dtype=np.float64)
        counts = np.bincount(np.searchsorted(self._upper, array, side="left"),
                             minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(array.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histogram as Prometheus reads it."""
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [(repr(float(b)) if b != int(b) else f"{float(b)}", c)
                   for b, c in zip(self._upper.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=total
        )


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
        self.end_to_end = BulkHistogram(
            "riverrun_scorer_end_to_end_latency_seconds",
            "From the request's Kafka timestamp to its prediction being produced.",
            _LATENCY_BUCKETS,
            r,
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
