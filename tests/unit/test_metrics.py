"""The scorer's own collectors: the batch-observed histogram renders exactly like
prometheus_client's own, consumer lag comes from librdkafka's statistics, staleness is computed
at scrape time."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from riverrun.workers.runtime.metrics import BulkHistogram, consumer_lag_from_stats
from riverrun.workers.scorer.metrics import ModelStaleness, ScorerMetrics
from riverrun.workers.scorer.model import FileModelSource, load_model_file

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def test_bulk_histogram_matches_a_per_value_histogram() -> None:
    rng = random.Random(7)
    values = [rng.choice([0.001, 0.01, 1.0]) if i % 7 == 0 else rng.expovariate(5.0)
              for i in range(2000)]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("demo_latency_seconds", "Latency.", BUCKETS, ours)
    reference = Histogram("demo_latency_seconds", "Latency.", buckets=BUCKETS, registry=theirs)
    for start in range(0, len(values), 300):
        bulk.observe_many(values[start : start + 300])
    for value in values:
        reference.observe(value)
    mine = [line for line in generate_latest(ours).decode().splitlines()
            if not line.startswith(("#", "demo_latency_seconds_created"))]
    expected = [line for line in generate_latest(theirs).decode().splitlines()
                if not line.startswith(("#", "demo_latency_seconds_created"))]
    sums = [line for line in expected if "_sum" in line]
    assert [line for line in mine if "_sum" not in line] == [
        line for line in expected if "_sum" not in line]
    assert abs(float(mine[-1].split()[-1]) - float(sums[0].split()[-1])) < 1e-6


# librdkafka's statistics as a consumer reports them (trimmed to the fields read, plus a few).
STATS = {
    "name": "riverrun-scorer-w0#consumer-1",
    "type": "consumer",
    "topics": {
        "requests": {
            "topic": "requests",
            "partitions": {
                "0": {"partition": 0, "desired": True, "fetch_state": "active",
                      "committed_offset": 204, "hi_offset": 250, "ls_offset": 250,
                      "consumer_lag": 46, "consumer_lag_stored": 40},
                "1": {"partition": 1, "desired": True, "fetch_state": "active",
                      "committed_offset": 216, "hi_offset": 216, "ls_offset": 216,
                      "consumer_lag": 0, "consumer_lag_stored": 0},
                # assigned, but nothing committed yet: the lag is unknown
                "2": {"partition": 2, "desired": True, "fetch_state": "active",
                      "committed_offset": -1001, "consumer_lag": -1},
                # revoked: it lingers in the statistics with its last lag
                "3": {"partition": 3, "desired": False, "fetch_state": "none",
                      "committed_offset": 90, "consumer_lag": 7},
                # librdkafka's internal unassigned partition
                "-1": {"partition": -1, "desired": False, "fetch_state": "none",
                       "committed_offset": -1001, "consumer_lag": -1},
            },
        },
    },
}  # fmt: skip


def test_consumer_lag_is_read_per_owned_partition_with_a_known_lag() -> None:
    assert consumer_lag_from_stats(orjson.dumps(STATS)) == {("requests", 0): 46, ("requests", 1): 0}


def test_without_a_known_commit_the_lag_is_counted_from_the_read_position() -> None:
    # The learner's offsets are committed by its transactions, never by its consumer.
    stats = {"topics": {"feedback": {"partitions": {
        "0": {"desired": True, "consumer_lag": -1, "app_offset": 120, "ls_offset": 150,
              "hi_offset": 155},
        "1": {"desired": True, "consumer_lag": -1, "app_offset": -1001, "hi_offset": 9},
    }}}}  # fmt: skip
    assert consumer_lag_from_stats(orjson.dumps(stats)) == {("feedback", 0): 30}


def test_statistics_without_topics_give_no_lag() -> None:
    assert consumer_lag_from_stats(b'{"name": "c", "topics": {}}') == {}
    assert consumer_lag_from_stats(b'{"name": "c"}') == {}
    assert consumer_lag_from_stats(b'{"topics": {"t": {"partitions": null}}}') == {}


def test_consumer_lag_gauge_is_replaced_by_each_report() -> None:
    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    lag = metrics.consumer_lag
    lag.update_from_stats(orjson.dumps(STATS).decode())
    assert registry.get_sample_value(
        "riverrun_scorer_consumer_lag_records", {"topic": "requests", "partition": "0"}) == 46
    assert registry.get_sample_value(
        "riverrun_scorer_consumer_lag_records", {"topic": "requests", "partition": "3"}) is None
    # Partition 0 moved away: the next report no longer names it.
    later = orjson.loads(orjson.dumps(STATS))
    later["topics"]["requests"]["partitions"]["0"]["desired"] = False
    lag.update_from_stats(orjson.dumps(later).decode())
    assert registry.get_sample_value(
        "riverrun_scorer_consumer_lag_records", {"topic": "requests", "partition": "0"}) is None
    assert registry.get_sample_value(
        "riverrun_scorer_consumer_lag_records", {"topic": "requests", "partition": "1"}) == 0


def test_unreadable_statistics_keep_the_last_lag_and_do_not_raise() -> None:
    registry = CollectorRegistry()
    lag = ScorerMetrics(registry).consumer_lag
    lag.update_from_stats(orjson.dumps(STATS).decode())
    lag.update_from_stats("{not json")
    assert registry.get_sample_value(
        "riverrun_scorer_consumer_lag_records", {"topic": "requests", "partition": "0"}) == 46


@dataclass(frozen=True)
class Snapshot:
    name: str
    version: int
    published_at: float | None


def test_staleness_is_the_age_of_each_served_snapshot_at_scrape_time() -> None:
    now = [1000.0]
    registry = CollectorRegistry()
    staleness = ModelStaleness("demo_staleness_seconds", "Age.", registry, clock=lambda: now[0])
    served = [Snapshot("fraud", 3, 990.0), Snapshot("churn", 1, None), Snapshot("fraud", 2, 400.0)]
    staleness.watch(lambda: served)

    def age(model: str, version: int) -> float | None:
        labels = {"model": model, "version": str(version)}
        return registry.get_sample_value("demo_staleness_seconds", labels)

    assert (age("fraud", 3), age("fraud", 2), age("churn", 1)) == (10.0, 600.0, None)
    now[0] = 1030.0  # no batch in between: the age still grows
    assert age("fraud", 3) == 40.0
    served[:] = [Snapshot("fraud", 3, 1025.0)]  # a newer snapshot swapped in
    assert (age("fraud", 3), age("fraud", 2)) == (5.0, None)


def test_scorer_staleness_follows_its_model_source(tmp_path: Path) -> None:
    import pickle

    from river import linear_model

    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(linear_model.LogisticRegression()))
    os.utime(path, (time.time() - 120, time.time() - 120))
    source = FileModelSource(load_model_file(path, "m", version=4))
    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    metrics.model_staleness.watch(source.served)
    age = registry.get_sample_value(
        "riverrun_scorer_model_staleness_seconds", {"model": "m", "version": "4"})
    assert age is not None and 119 <= age < 180
