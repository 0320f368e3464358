"""The scorer's metrics, built on an injected registry so that tests read fresh ones.

Besides plain counters and histograms: end-to-end latency observed a batch at a time, consumer
lag per partition, and model staleness computed at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from riverrun.workers.runtime.metrics import BulkHistogram, ConsumerLag

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class PublishedSnapshot(Protocol):
    """What staleness needs of a served snapshot."""

    @property
    def name(self) -> str:
        """The model's name."""
        ...

    @property
    def version(self) -> int:
        """The version served."""
        ...

    @property
    def published_at(self) -> float | None:
        """Unix time the snapshot was published; None when unknown."""
        ...


class ModelStaleness(Collector):
    """Age of each served snapshot, computed at scrape time so it grows between batches too."""

    def __init__(
        self,
        name: str,
        documentation: str,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._clock = clock
        self._served: Callable[[], Iterable[PublishedSnapshot]] = tuple
        registry.register(self)

    def watch(self, served: Callable[[], Iterable[PublishedSnapshot]]) -> None:
        """Read the served snapshots from `served` at each scrape."""
        self._served = served

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Now minus the publication time, per served model and version."""
        now = self._clock()
        ages: dict[tuple[str, str], float] = {}
        for model in self._served():
            if model.published_at is None:
                continue
            key = (model.name, str(model.version))
            age = max(0.0, now - model.published_at)
            ages[key] = min(age, ages.get(key, age))
        family = GaugeMetricFamily(self._name, self._documentation, labels=["model", "version"])
        for (model_name, version), age in sorted(ages.items()):
            family.add_metric([model_name, version], age)
        yield family


KeyFigures = dict[str, float]


class KeyCacheFigures(Collector):
    """Per-key models' keys: held, cached, their bytes, cache hits and misses, restore time."""

    _GAUGES = (
        ("keys_held", "riverrun_scorer_keys_held", "Keys with a state of their own, read from "
         "the key-state changelog."),
        ("cache_keys", "riverrun_scorer_key_cache_keys", "Keys whose model is live in the cache."),
        ("cache_bytes", "riverrun_scorer_key_cache_bytes", "Bytes of the key states held live "
         "(their records' size), against RIVERRUN_SCORER__KEY_CACHE_BYTES."),
        ("restore_seconds", "riverrun_scorer_key_restore_seconds", "Time to read the key-state "
         "changelog to its end at start."),
    )
    _COUNTERS = (
        ("hits", "riverrun_scorer_key_cache_hits", "Keys answered by a model live in the cache."),
        ("misses", "riverrun_scorer_key_cache_misses", "Keys whose model was loaded from its "
         "state."),
        ("evictions", "riverrun_scorer_key_cache_evictions", "Key models dropped for room."),
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self._figures: Callable[[], KeyFigures | None] = lambda: None
        registry.register(self)

    def watch(self, figures: Callable[[], KeyFigures | None]) -> None:
        """Read the figures from `figures` at each scrape (None while no per-key model serves)."""
        self._figures = figures

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The figures now; families without samples while no per-key model serves."""
        figures = self._figures() or {}
        for field_name, name, documentation in self._GAUGES:
            gauge = GaugeMetricFamily(name, documentation)
            if figures.get(field_name) is not None:
                gauge.add_metric([], figures[field_name])
            yield gauge
        for field_name, name, documentation in self._COUNTERS:
            counter = CounterMetricFamily(name, documentation)
            if field_name in figures:
                counter.add_metric([], figures[field_name])
            yield counter


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
            "riverrun_scorer_ready", "1 when in the group and hearing from its brokers.", registry=r
        )
        self.consumer_lag = ConsumerLag(
            "riverrun_scorer_consumer_lag_records",
            "Records of an owned requests partition not yet committed, from librdkafka statistics.",
            r,
        )
        self.model_staleness = ModelStaleness(
            "riverrun_scorer_model_staleness_seconds",
            "Age of the snapshot served: now minus its publication time.",
            r,
        )
        self.keys = KeyCacheFigures(r)
