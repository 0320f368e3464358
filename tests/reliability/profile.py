"""The two profiles of the reliability suite: short (in `make test`) and long (`make reliability`).

`RIVERRUN_RELIABILITY=long` selects the long one; the counts and rates of the long profile are
the figures the guarantees are stated with in RELIABILITY.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """How hard each scenario pushes."""

    name: str
    partitions: int
    kills: int  # scorer SIGKILLs per delivery mode
    kill_requests: int
    kill_rate: float
    crash_repetitions: int  # hits of each named crash point
    storm_seconds: float  # 0: the storm runs in the long profile only
    storm_every_s: float
    steady_seconds: float
    storm_rate: float
    black_hole_s: float
    network_faults: tuple[str, ...]
    outage_rate: float
    fuzz_examples: int  # malformed requests per fuzzed phase (about 0.5 % of it)
    fuzz_good: int
    judge_fuzz_throughput: bool  # only phases of whole CPU-seconds can judge a 10 % margin
    fuzz_pairs: int  # alternating clean and fuzzed phases
    learner_chunk: int  # labels fed before each learner run
    learner_kills: bool  # the short profile leaves them to tests/integration/test_learner.py
    soak_seconds: float
    soak_rate: float
    parallel_modes: bool  # at-least-once and exactly-once side by side (less wall time)


SHORT = Profile(
    name="short", partitions=4, kills=3, kill_requests=16_000, kill_rate=2_000.0,
    crash_repetitions=1, storm_seconds=0.0, storm_every_s=3.0, steady_seconds=4.0,
    storm_rate=1_500.0, black_hole_s=6.0, network_faults=("black-hole",), outage_rate=500.0,
    fuzz_examples=100, fuzz_good=20_000, judge_fuzz_throughput=False, fuzz_pairs=1,
    learner_chunk=150, learner_kills=False, soak_seconds=0.0,
    soak_rate=0.0, parallel_modes=True,
)  # fmt: skip

LONG = Profile(
    name="long", partitions=6, kills=10, kill_requests=300_000, kill_rate=2_500.0,
    crash_repetitions=3, storm_seconds=60.0, storm_every_s=4.0, steady_seconds=15.0,
    storm_rate=2_000.0, black_hole_s=10.0, network_faults=("black-hole", "latency", "reset"),
    outage_rate=1_000.0, fuzz_examples=400, fuzz_good=80_000, judge_fuzz_throughput=True,
    fuzz_pairs=5, learner_chunk=250, learner_kills=True,
    soak_seconds=1_800.0, soak_rate=1_000.0, parallel_modes=True,
)  # fmt: skip


def selected() -> Profile:
    """The profile named by RIVERRUN_RELIABILITY (short when unset)."""
    name = os.environ.get("RIVERRUN_RELIABILITY", "short").strip().lower() or "short"
    profiles = {p.name: p for p in (SHORT, LONG)}
    if name not in profiles:
        raise ValueError(f"RIVERRUN_RELIABILITY={name!r}: use short or long")
    return profiles[name]


PROFILE = selected()
