"""The learner as two processes (`--stage join`, `--stage learn`) through SIGKILLs of each: every
snapshot equals an uninterrupted one-process learner's, byte for byte."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

from riverrun.schemas import KafkaSettings, TopicSettings

from .conftest import ScorerProcess, one_partition_feedback, produce, wait_for
from .test_learner import (
    labels_of,
    latest,
    learned_as_one_uninterrupted_learner,
    release,
    start_learner,
)


def test_a_join_stage_and_a_learn_stage_each_sigkilled_learn_each_example_once(
    kafka_settings: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str],
    phishing: list[tuple[dict[str, float], bool]], tmp_path: Path,
) -> None:
    topics = one_partition_feedback(kafka_settings, topics, unique)
    release(kafka_settings, topics, "split")
    release(kafka_settings, topics, "calm")
    labels = labels_of(phishing, "split")
    chunks = [labels[i:i + 250] for i in range(0, len(labels), 250)]
    runs: list[ScorerProcess] = []

    def start(stage: str, crash_at: str | None, *extra: str) -> ScorerProcess:
        runs.append(start_learner(kafka_settings, topics, "split",
                                  tmp_path / f"{stage}-{len(runs)}.log", crash_at, "--stage",
                                  stage, *extra))  # fmt: skip
        return runs[-1]

    def killed_at(run: ScorerProcess, point: str) -> None:
        assert run.wait(120) == -signal.SIGKILL, run.output()
        assert f"crash point {point} reached" in run.output()

    try:
        produce(kafka_settings, topics.feedback, chunks[0])  # type: ignore[arg-type]
        killed_at(start("join", "after-join-before-commit:2"), "after-join-before-commit")
        join = start("join", None)
        killed_at(start("learn", "after-learn-before-snapshot:3"), "after-learn-before-snapshot")
        produce(kafka_settings, topics.feedback, chunks[1])  # type: ignore[arg-type]
        killed_at(start("learn", "after-snapshot-before-commit:2"), "after-snapshot-before-commit")
        # SIGKILLs from outside, at no chosen point, while feedback flows.
        learn = start("learn", None)
        produce(kafka_settings, topics.feedback, chunks[2])  # type: ignore[arg-type]
        before = latest(kafka_settings, topics, "split").snapshot
        wait_for(lambda: latest(kafka_settings, topics, "split").snapshot > before + 1, 120,
                 "two more snapshots before the SIGKILLs")
        learn.signal(signal.SIGKILL)
        join.signal(signal.SIGKILL)
        assert learn.wait(30) == join.wait(30) == -signal.SIGKILL
        for chunk in chunks[3:]:
            produce(kafka_settings, topics.feedback, chunk)  # type: ignore[arg-type]
        join, learn = start("join", None, "--idle-timeout", "5"), start("learn", None,
                                                                       "--idle-timeout", "10")
        assert join.wait(180) == 0, join.output()
        assert learn.wait(180) == 0, learn.output()
        # Each says what its own stage did.
        assert re.search(r"joined \d+ labels of split", join.output())
        assert not re.search(r"learned \d+ examples", join.output())
        assert re.search(r"learned \d+ examples of split@1 .* snapshots, last #", learn.output())
        assert not re.search(r"joined \d+ labels", learn.output())
    finally:
        for run in runs:
            run.close()

    # The same feedback, learned by one learner process nobody interrupted: the same snapshots.
    learned_as_one_uninterrupted_learner(kafka_settings, topics, phishing, "split")
