"""Soak (long profile only): scorers under steady load for half an hour keep their resident
memory within 10 %, open no more file descriptors, and never fall far behind."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from riverrun.schemas import KafkaSettings

from .conftest import Figures
from .harness import outputs
from .harness.checker import growth
from .harness.loadgen import LoadGenerator, request_payload
from .harness.processes import Workers
from .profile import PROFILE
from .scenario import ScorerGroup

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(PROFILE.soak_seconds <= 0, reason="the soak runs in the long profile "
                       "only (make reliability): it takes half an hour"),
]

SAMPLE_EVERY_S = 10.0
LAG_BOUND_S = 5.0  # at most this many seconds of offered load behind


def test_soak_keeps_memory_descriptors_and_lag_flat(
    kafka: KafkaSettings, make_topics: Any, workers: Workers, model_file: Path,
    rows: list[dict[str, float]], figures: Figures,
) -> None:
    topics = make_topics()
    group = ScorerGroup(workers, kafka, topics, f"soak-{uuid.uuid4().hex[:8]}", model_file)
    for worker_id in ("a", "b"):
        group.start(worker_id)
    group.wait_ready()
    total = int(PROFILE.soak_rate * PROFILE.soak_seconds)
    load = LoadGenerator(kafka, topics.requests, request_payload(rows), total=total,
                         rate=PROFILE.soak_rate).start()
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    while load.sent < total and time.monotonic() - started < PROFILE.soak_seconds + 120:
        members = group.running()
        samples.append({"at": time.monotonic() - started,
                        "rss": sum(w.rss_bytes() for w in members),
                        "fds": sum(w.open_fds() for w in members),
                        "lag": group.lag(), "alive": len(members)})
        time.sleep(SAMPLE_EVERY_S)  # the sampling period itself; nothing is awaited
    load.join(300)
    group.wait_caught_up()
    codes = group.stop()

    n = len(samples)
    warm = [s for s in samples[n // 10: n // 5]]  # after a warm-up tenth of the run
    last = samples[-max(1, n // 10):]
    rss_growth = growth(max(s["rss"] for s in warm), max(s["rss"] for s in last))
    early_fds = max(s["fds"] for s in samples[n // 10: n // 3])
    late_fds = max(s["fds"] for s in samples[-n // 3:])
    peak_lag = max(s["lag"] for s in samples[n // 10:])
    predicted = sum(outputs.ends(kafka, [topics.predictions]).values())
    figures.record("soak", seconds=round(samples[-1]["at"]), rate=PROFILE.soak_rate,
                   requests=len(load.acked), predictions=predicted, samples=n,
                   rss_start_mb=round(max(s["rss"] for s in warm) / 2**20, 1),
                   rss_end_mb=round(max(s["rss"] for s in last) / 2**20, 1),
                   rss_growth=round(rss_growth, 4), fds_early=early_fds, fds_late=late_fds,
                   lag_peak=peak_lag, lag_bound=PROFILE.soak_rate * LAG_BOUND_S)
    assert set(codes.values()) == {0}, codes
    assert all(s["alive"] == 2 for s in samples)
    assert predicted >= len(load.acked)
    assert rss_growth < 0.10
    assert late_fds <= early_fds
    assert peak_lag <= PROFILE.soak_rate * LAG_BOUND_S
