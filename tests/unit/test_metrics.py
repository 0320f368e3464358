"""The batch-observed histogram renders exactly like prometheus_client's own."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from workers.metrics import BulkHistogram

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
