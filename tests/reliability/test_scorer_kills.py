"""Scorer SIGKILLs under sustained load: one of three scorers is killed and restarted, again and
again; no request is lost, in at-least-once and in exactly-once mode, and committed offsets
never run ahead of delivered outputs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from riverrun.schemas import KafkaSettings
from tests.conftest import TestBroker

from .conftest import Figures
from .harness.checker import Fault, vacuous
from .harness.loadgen import LoadGenerator, request_payload
from .harness.processes import Workers, wait_for
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

SCORERS = ("a", "b", "c")


def test_scorer_sigkills_lose_nothing(
    kafka: KafkaSettings, conformance: TestBroker, make_topics: Any, workers: Workers,
    model_file: Path, rows: list[dict[str, float]], figures: Figures,
) -> None:
    def run(mode: str) -> tuple[list[Fault], Reckoning, LoadGenerator, dict[str, int]]:
        topics = make_topics()
        group = ScorerGroup(workers, kafka, topics, f"kills-{uuid.uuid4().hex[:8]}", model_file,
                            exactly_once=mode == "exactly-once")
        for worker_id in SCORERS:
            group.start(f"{mode[0]}{worker_id}")
        group.wait_ready()
        total = PROFILE.kill_requests
        load = LoadGenerator(kafka, topics.requests, request_payload(rows), total=total,
                             rate=PROFILE.kill_rate).start()
        faults, snapshots = [], []
        for k in range(1, PROFILE.kills + 1):
            wait_for(lambda k=k: load.done >= total * k // (PROFILE.kills + 1), 600,
                     f"load to reach kill {k}")
            victim_id = f"{mode[0]}{SCORERS[k % len(SCORERS)]}"
            victim = group.members[victim_id]
            # A kill proves something only if the victim was a working member of the group.
            wait_for(victim.ready, 60, f"{victim.name} to be ready before kill {k}")
            assert victim.kill() == -9
            faults.append(Fault(f"{mode} kill {k} of {victim_id}", load.done, total))
            snapshots.append(group.snapshot(f"after kill {k}"))
            group.start(victim_id)  # restarted at once, as an orchestrator would
        load.join(600)
        group.wait_caught_up()
        codes = group.stop()
        return faults, reckon(kafka, topics, load.acked, snapshots), load, codes

    outcomes = for_each_mode(run, PROFILE.parallel_modes)
    for mode, (faults, result, load, _codes) in outcomes.items():
        scenario = f"scorer_sigkills[{mode}]"
        why = judge_duplicates(mode, result.delivery.duplicated, conformance)
        figures.record(scenario, kills=len(faults), partitions=PROFILE.partitions,
                       offered_rate=round(load.offered_rate()), failed_sends=len(load.failures),
                       duplicates_judged=why is None, **result.figures(),
                       **({"duplicates_reason": why} if why else {}))
    for mode, (faults, result, load, codes) in outcomes.items():
        assert vacuous(faults, PROFILE.kills) == []
        assert set(codes.values()) == {0}, codes
        assert len(load.acked) == PROFILE.kill_requests, load.failures[:3]
        assert_delivered(mode, result, conformance)
