"""The learner as two processes (`--stage join`, `--stage learn`) through SIGKILLs of each: every
snapshot equals an uninterrupted one-process learner's, byte for byte."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.learner import Learner
from riverrun.workers.registry import Registry

from .conftest import RIVERRUN, ScorerProcess, one_partition_feedback, produce, wait_for
from .test_learner import (
    SIGNING_KEY,
    labels_of,
    latest,
    learner_settings,
    registry_settings,
    release,
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
        argv = [
            RIVERRUN, "--log-format", "text", "learn", "--stage", stage,
            "--bootstrap-servers", kafka_settings.bootstrap_servers,
            "--topic-feedback", topics.feedback, "--topic-predictions", topics.predictions,
            "--topic-examples", topics.examples, "--topic-outcomes", topics.outcomes,
            "--topic-dead-letters", topics.dead_letters, "--topic-models", topics.models,
            "--topic-artifacts", topics.artifacts, "--signing-key", SIGNING_KEY,
            "--model", "split", "--snapshot-every", "60", "--snapshot-interval", "3600",
            "--batch-size", "40", *extra,
        ]  # fmt: skip
        env = dict(os.environ)
        if crash_at:
            env["RIVERRUN_LEARNER__CRASH_AT"] = crash_at
        runs.append(ScorerProcess(argv, env, tmp_path / f"{stage}-{len(runs)}.log"))
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

    # The same feedback, learned by one learner process nobody interrupted.
    produce(kafka_settings, topics.feedback, labels_of(phishing, "calm"))  # type: ignore[arg-type]
    settings = learner_settings(kafka_settings, topics, "calm", snapshot_every=60,
                                snapshot_interval=3600.0)
    with Registry(kafka_settings, topics, settings.registry) as registry:
        assert Learner(settings, registry).run(idle_timeout=5).examples_learned == len(phishing)

    split, calm = latest(kafka_settings, topics, "split"), latest(kafka_settings, topics, "calm")
    assert split.examples_seen == calm.examples_seen == len(phishing)
    assert split.artifact.sha256 == calm.artifact.sha256
    with Registry(kafka_settings, topics, registry_settings()) as registry:
        view = registry.refresh()
    by_count = {name: {s.examples_seen: s.artifact.sha256 for s in view.snapshots(name, 1)}
                for name in ("split", "calm")}
    assert set(range(0, len(phishing), 60)) <= set(by_count["split"]) & set(by_count["calm"])
    for count, digest in by_count["split"].items():
        assert by_count["calm"].get(count, digest) == digest, f"differs after {count} examples"
    assert split.metrics == calm.metrics  # prequential metrics carried through the restarts
