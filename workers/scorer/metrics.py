"""The scorer's metrics, built on an injected registry so that tests read fresh ones.

Besides plain counters and histograms: a histogram observed a batch at a time, consumer lag
per partition read from librdkafka's statistics, and model staleness computed at scrape time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

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


def consumer_lag_from_stats(
    stats_json: str | bytes | Mapping[str, Any],
) -> dict[tuple[str, int], int]:
    """Count the records behind the committed offset of each (topic, partition) owned.

    Reads librdkafka's statistics JSON (`topics -> partitions -> consumer_lag`). Left out: the
    internal `-1` partition, partitions no longer wanted (revoked ones linger in the statistics),
    and lags librdkafka cannot know yet (-1, e.g. before the group's first commit).

    Raises:
        ValueError: the text is not JSON.

    """
    stats = stats_json if isinstance(stats_json, Mapping) else orjson.loads(stats_json)
    lags: dict[tuple[str, int], int] = {}
    topics = stats.get("topics") if isinstance(stats, dict) else None
    if not isinstance(topics, dict):
        return lags
    for topic, entry in topics.items():
        partitions = entry.get("partitions") if isinstance(entry, dict) else None
        if not isinstance(partitions, dict):
            continue
        for key, partition in partitions.items():
            if key == "-1" or not isinstance(partition, dict) or not partition.get("desired"):
                continue
            lag = partition.get("consumer_lag")
            if not (isinstance(lag, int) and lag >= 0):
                lag = _position_lag(partition)
            if lag is not None:
                lags[(str(topic), int(key))] = lag
    return lags


def _position_lag(partition: dict[str, object]) -> int | None:
    """Records between the read position and the end, when no committed offset is known.

    A consumer whose offsets a transaction commits (the learner's) never sees them as its own
    commits, so librdkafka reports no `consumer_lag`; how far it has read is the next best.
    """
    position = partition.get("app_offset")
    end = partition.get("ls_offset")
    if not (isinstance(end, int) and end >= 0):
        end = partition.get("hi_offset")
    if isinstance(position, int) and position >= 0 and isinstance(end, int) and end >= 0:
        return max(0, end - position)
    return None


class ConsumerLag(Collector):
    """A gauge per owned partition, replaced whole by each librdkafka statistics report.

    `update_from_stats` is the consumer's `stats_cb`: librdkafka calls it from `consume()` on
    its own interval (`statistics.interval.ms`), so nothing runs per message.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._lags: dict[tuple[str, int], int] = {}
        registry.register(self)

    def update_from_stats(self, stats_json: str | bytes | Mapping[str, Any]) -> None:
        """Take in one statistics report, JSON or parsed; a malformed one is logged, not raised."""
        try:
            lags = consumer_lag_from_stats(stats_json)
        except ValueError as exc:
            logger.warning("unreadable librdkafka statistics, consumer lag not updated: %s", exc)
            return
        self._lags = lags  # one reference swap: a scrape sees a whole report, never half

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the last report's lags."""
        family = GaugeMetricFamily(self._name, self._documentation, labels=["topic", "partition"])
        for (topic, partition), lag in sorted(self._lags.items()):
            family.add_metric([topic, str(partition)], lag)
        yield family


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
