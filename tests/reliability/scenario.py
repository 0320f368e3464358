"""Steps several scenarios share: a release, a scorer group under load, and the final reckoning.

A scenario drives the steps; the checker judges what they produced.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings, build_estimator

from .harness import outputs
from .harness.checker import (
    Answer,
    DeliveryReport,
    Letter,
    OffsetSnapshot,
    OffsetViolation,
    Request,
    check_delivery,
    offsets_ahead,
    open_transactions,
)
from .harness.processes import SIGNING_KEY, Worker, Workers, scorer_argv, wait_for

MODES = ("at-least-once", "exactly-once")
LINEAR_SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression", task="binary",
                        label_type="bool")


def release_untrained(kafka: KafkaSettings, topics: TopicSettings, model: str) -> None:
    """Release version 1 of `model`: the linear spec, untrained, signed with the suite's key."""
    with Registry(kafka, topics, RegistrySettings(signing_key=SIGNING_KEY)) as registry:
        registry.release(model, LINEAR_SPEC, build_estimator(LINEAR_SPEC))


T = TypeVar("T")


def for_each_mode(run: Callable[[str], T], parallel: bool) -> dict[str, T]:
    """`run(mode)` for both delivery modes, side by side when `parallel`."""
    if not parallel:
        return {mode: run(mode) for mode in MODES}
    with ThreadPoolExecutor(len(MODES), thread_name_prefix="mode") as pool:
        futures = {mode: pool.submit(run, mode) for mode in MODES}
        return {mode: future.result() for mode, future in futures.items()}


def judge_duplicates(mode: str, duplicated: int, conformance: Any) -> str | None:
    """Whether exactly-once duplicates can be judged here; the reason when they cannot."""
    if mode != "exactly-once":
        return "at-least-once allows duplicates: measured"
    caps = conformance.capabilities
    if caps.has("read_committed"):
        return None
    # Aborted records reach read_committed readers on this broker: a duplicate here is the
    # broker's, so the figure is reported and not judged.
    return f"{conformance.engine}: {caps.detail('read_committed')}"


def assert_delivered(mode: str, result: Reckoning, conformance: Any) -> None:
    """The delivery oracle of a run in `mode`: nothing missing, inconsistent or unexpected,
    committed offsets never ahead of outputs, no transaction left open, and no duplicate
    where the broker lets duplicates be judged."""
    assert result.delivery.missing == 0, (mode, result.delivery)
    assert result.delivery.inconsistent == result.delivery.unexpected == 0, result.delivery
    assert result.violations == [], result.violations[:3]
    assert result.open_transactions == {}
    if judge_duplicates(mode, result.delivery.duplicated, conformance) is None:
        assert result.delivery.duplicated == 0, (mode, result.delivery)


@dataclass
class ScorerGroup:
    """Scorers of one consumer group on one set of topics, started and restarted by worker id."""

    workers: Workers
    kafka: KafkaSettings
    topics: TopicSettings
    group: str
    model_file: Path | None
    exactly_once: bool = False
    extra: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    static: bool = False  # static membership: a restarted worker takes its partitions back at once
    members: dict[str, Worker] = field(default_factory=dict)

    def start(self, worker_id: str, env: dict[str, str] | None = None) -> Worker:
        """Start (or restart) the scorer `worker_id`; the same id keeps its transactional id."""
        extra = list(self.extra)
        if self.static:
            extra += ["--kafka-option", f"group.instance.id={self.group}-{worker_id}"]
        argv = scorer_argv(self.kafka.bootstrap_servers, self.topics, self.group, worker_id,
                           model_file=self.model_file, exactly_once=self.exactly_once,
                           extra=extra)
        worker = self.workers.start(f"scorer-{worker_id}", argv, {**self.env, **(env or {})})
        self.members[worker_id] = worker
        return worker

    def running(self) -> list[Worker]:
        """Members whose process runs."""
        return [w for w in self.members.values() if w.alive()]

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Every running member answers /readyz (joined, partitions assigned)."""
        wait_for(lambda: all(w.ready() for w in self.running()), timeout,
                 f"scorers {sorted(self.members)} to be ready")

    def snapshot(self, label: str) -> OffsetSnapshot:
        """Committed offsets, then the outputs' ends."""
        return outputs.offset_snapshot(self.kafka, label, self.group, self.topics.requests,
                                       [self.topics.predictions, self.topics.dead_letters])

    def progress(self) -> int:
        """Requests committed by the group so far, over every partition."""
        return sum(outputs.committed_offsets(self.kafka, self.group, self.topics.requests).values())

    def lag(self) -> int:
        """Requests on the broker that the group has not committed yet."""
        ends = outputs.ends(self.kafka, [self.topics.requests])
        committed = outputs.committed_offsets(self.kafka, self.group, self.topics.requests)
        return sum(max(0, end - committed.get(p, 0)) for (_, p), end in ends.items())

    def wait_caught_up(self, timeout: float = 180.0) -> None:
        """The group committed every request: its offsets reached each partition's end."""
        def caught_up() -> bool:
            ends = outputs.ends(self.kafka, [self.topics.requests])
            committed = outputs.committed_offsets(self.kafka, self.group, self.topics.requests)
            return all(committed.get(p, 0) >= end for (_, p), end in ends.items())
        wait_for(caught_up, timeout, "the scorers to commit every request", every=0.5)

    def stop(self) -> dict[str, int]:
        """SIGTERM every running member; their exit codes (0: finished, flushed, committed)."""
        running = self.running()
        for worker in running:
            worker.signal(signal.SIGTERM)
        return {w.name: w.stop() for w in running}


@dataclass(frozen=True)
class Reckoning:
    """Everything the checker found after a run."""

    delivery: DeliveryReport
    violations: list[OffsetViolation]
    open_transactions: dict[tuple[str, int], int]
    answers: list[Answer]
    letters: list[Letter]

    def figures(self) -> dict[str, Any]:
        return {**self.delivery.figures(),
                "offset_violations": len(self.violations),
                "open_transactions": len(self.open_transactions)}


def reckon(kafka: KafkaSettings, topics: TopicSettings, acked: Sequence[Request],
           snapshots: Sequence[OffsetSnapshot] = ()) -> Reckoning:
    """Read every output back and judge the run."""
    answers = outputs.answers(kafka, topics.predictions)
    letters = outputs.letters(kafka, topics.dead_letters)
    out = [topics.predictions, topics.dead_letters]
    stable = outputs.ends(kafka, out, committed_only=True)
    high = outputs.ends(kafka, out)
    return Reckoning(
        delivery=check_delivery(acked, answers, letters, requests_topic=topics.requests),
        violations=offsets_ahead(snapshots, acked, answers, letters),
        open_transactions=open_transactions(stable, high),
        answers=answers,
        letters=letters,
    )
