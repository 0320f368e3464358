"""Prometheus collectors every worker shares.

A histogram observed a batch at a time, and consumer lag per partition read from librdkafka's
statistics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


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

    def observe_many(self, values: Sequence[float], scale: float = 1.0) -> None:
        """Count every value, times `scale`, into its bucket (values up to its bound)."""
        if len(values) == 0:
            return
        array = np.asarray(values, dtype=np.float64)
        if scale != 1.0:
            array = array * scale
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
