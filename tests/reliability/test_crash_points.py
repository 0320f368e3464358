"""Every named crash point of the scorer, hit on purpose mid-stream: the process SIGKILLs itself
at the n-th pass of the point (RIVERRUN_SCORER__CRASH_AT=point:n), is restarted, and the oracle
of the SIGKILL scenario holds."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from riverrun.schemas import KafkaSettings
from riverrun.workers.runtime.crashpoint import SCORER_POINTS
from tests.conftest import TestBroker

from .conftest import Figures
from .harness import outputs
from .harness.checker import Fault, vacuous
from .harness.loadgen import LoadGenerator, request_payload
from .harness.processes import Workers
from .profile import PROFILE
from .scenario import (
    Reckoning,
    ScorerGroup,
    assert_delivered,
    for_each_mode,
    judge_duplicates,
    reckon,
)

pytestmark = pytest.mark.reliability

BATCH = 200
HITS = 3  # batches each run gets through before its crash point fires


def test_every_scorer_crash_point_loses_nothing(
    kafka: KafkaSettings, conformance: TestBroker, make_topics: Any, workers: Workers,
    model_file: Path, rows: list[dict[str, float]], figures: Figures,
) -> None:
    points = sorted(SCORER_POINTS) * PROFILE.crash_repetitions
    total = len(points) * HITS * BATCH + 4 * BATCH

    def run(mode: str) -> tuple[list[Fault], Reckoning]:
        topics = make_topics()
        load = LoadGenerator(kafka, topics.requests, request_payload(rows), total=total, rate=0)
        load.start().join(120)
        # Static membership: the restarted worker takes its partitions back at once. One
        # transaction per batch, so that every point's n-th pass comes mid-stream (transactions
        # spanning batches, the default, are what the SIGKILL scenario runs).
        extra = ["--batch-size", str(BATCH)]
        if mode == "exactly-once":
            extra += ["--transaction-interval-ms", "0"]
        group = ScorerGroup(workers, kafka, topics, f"crash-{uuid.uuid4().hex[:8]}", model_file,
                            exactly_once=mode == "exactly-once", static=True, extra=extra)

        def delivered() -> int:
            return sum(outputs.ends(kafka, [topics.predictions]).values())

        faults, snapshots = [], []
        for i, point in enumerate(points, start=1):
            # Mid-stream: the run delivered outputs before its crash, and work was left after.
            before, remaining = delivered(), total - group.progress()
            worker = group.start(mode[0], env={"RIVERRUN_SCORER__CRASH_AT": f"{point}:{HITS}"})
            assert worker.wait(120) == -9, worker.output()
            assert f"crash point {point} reached" in worker.output()
            snapshots.append(group.snapshot(f"crash {i} at {point}"))
            faults.append(Fault(f"{mode} crash {i} at {point}", delivered() - before, remaining))
        last = group.start(mode[0])
        group.wait_caught_up()
        assert last.stop() == 0, last.output()
        return faults, reckon(kafka, topics, load.acked, snapshots)

    outcomes = for_each_mode(run, PROFILE.parallel_modes)
    for mode, (faults, result) in outcomes.items():
        why = judge_duplicates(mode, result.delivery.duplicated, conformance)
        figures.record(f"scorer_crash_points[{mode}]", points=sorted(SCORER_POINTS),
                       crashes=len(faults), duplicates_judged=why is None, **result.figures(),
                       **({"duplicates_reason": why} if why else {}))
    for mode, (faults, result) in outcomes.items():
        assert vacuous(faults, len(points)) == []
        assert_delivered(mode, result, conformance)
