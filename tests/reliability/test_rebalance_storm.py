"""A rebalance storm: under load, a scorer joins or leaves the group every few seconds for a
while; nothing is lost and the group keeps at least half of its steady throughput."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from riverrun.schemas import KafkaSettings

from .conftest import Figures
from .harness import outputs
from .harness.checker import Fault, rate_within, vacuous
from .harness.loadgen import LoadGenerator, request_payload
from .harness.processes import Workers, wait_for
from .profile import PROFILE
from .scenario import ScorerGroup, reckon

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(PROFILE.storm_seconds <= 0, reason="the rebalance storm runs in the long "
                       "profile only (make reliability); the short one keeps make test short"),
]


def test_rebalance_storm_loses_nothing_and_keeps_half_the_throughput(
    kafka: KafkaSettings, make_topics: Any, workers: Workers, model_file: Path,
    rows: list[dict[str, float]], figures: Figures,
) -> None:
    topics = make_topics()
    group = ScorerGroup(workers, kafka, topics, f"storm-{uuid.uuid4().hex[:8]}", model_file)
    for worker_id in ("s0", "s1", "s2"):
        group.start(worker_id)
    group.wait_ready()
    warm_s = 2.0
    span = warm_s + PROFILE.steady_seconds + PROFILE.storm_seconds + 1.0
    total = int(PROFILE.storm_rate * span)
    load = LoadGenerator(kafka, topics.requests, request_payload(rows), total=total,
                         rate=PROFILE.storm_rate).start()
    started = time.time()
    steady = (started + warm_s, started + warm_s + PROFILE.steady_seconds)
    wait_for(lambda: time.time() >= steady[1], span, "the steady window to pass")

    faults: list[Fault] = []
    storm_start = time.time()
    joined = 3
    while time.time() - storm_start < PROFILE.storm_seconds - PROFILE.storm_every_s / 2:
        tick = time.time()
        running = group.running()
        if len(faults) % 2 == 0 or len(running) <= 2:
            worker_id = f"s{joined}"
            joined += 1
            group.start(worker_id)
            faults.append(Fault(f"join {worker_id}", load.done, total))
        else:
            leaving = running[0]  # the longest-serving member leaves (SIGTERM: a clean leave)
            leaving.stop()
            faults.append(Fault(f"leave {leaving.name}", load.done, total))
        wait_for(lambda tick=tick: time.time() >= tick + PROFILE.storm_every_s,
                 PROFILE.storm_every_s + 1, "the next storm event")
    storm = (storm_start, time.time())
    load.join(span + 120)
    group.wait_caught_up()
    codes = group.stop()
    stopped = {w.name: w.proc.returncode for w in group.members.values()}

    stamps = outputs.scored_times(kafka, topics.predictions)
    steady_rate = rate_within(stamps, *steady)
    storm_rate = rate_within(stamps, *storm)
    rebalances = workers.logs("scorer-").count(" assigned ")
    result = reckon(kafka, topics, load.acked)
    figures.record("rebalance_storm", events=len(faults), every_s=PROFILE.storm_every_s,
                   storm_s=round(storm[1] - storm[0], 1), offered_rate=PROFILE.storm_rate,
                   steady_rate=round(steady_rate), storm_rate=round(storm_rate),
                   throughput_ratio=round(storm_rate / steady_rate, 3),
                   assignments_logged=rebalances, **result.figures())
    assert vacuous(faults, int(PROFILE.storm_seconds // PROFILE.storm_every_s)) == []
    assert rebalances > len(faults), "the storm caused no rebalances"
    assert set(codes.values()) == {0}, stopped
    assert result.delivery.missing == 0, result.delivery
    assert result.delivery.inconsistent == 0, result.delivery
    assert storm_rate >= 0.5 * steady_rate
