"""Learner SIGKILLs at each of its crash points (and from outside): every snapshot still
reproduces byte for byte from the examples log, versions and snapshots strictly increase, and
each label is learned exactly once."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from riverrun.schemas import KafkaSettings, ModelVersionReleased, SnapshotPublished
from riverrun.workers.learner import verify_snapshot
from riverrun.workers.registry import Registry, RegistrySettings
from riverrun.workers.registry.records import decode_registry_record
from riverrun.workers.runtime.crashpoint import LEARNER_POINTS

from .conftest import Figures
from .harness import outputs
from .harness.checker import Fault, vacuous
from .harness.loadgen import LoadGenerator
from .harness.processes import RIVERRUN, SIGNING_KEY, Workers, learner_argv, wait_for
from .profile import PROFILE
from .scenario import release_untrained

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.requires("read_committed"),
    pytest.mark.skipif(not PROFILE.learner_kills, reason="learner SIGKILLs at every crash point "
                       "run in the long profile (make reliability); make test has its own in "
                       "tests/integration/test_learner.py::test_sigkilled_learner_learns_each_"
                       "example_once_byte_for_byte"),
]

HITS = 2


def settings() -> RegistrySettings:
    return RegistrySettings(signing_key=SIGNING_KEY)


def test_learner_sigkills_keep_every_snapshot_reproducible(
    kafka: KafkaSettings, make_topics: Any, workers: Workers,
    phishing: list[tuple[dict[str, float], bool]], figures: Figures,
) -> None:
    model = f"killed-{uuid.uuid4().hex[:6]}"
    topics = make_topics()
    # One feedback partition: a total order of labels, so "learned once" is exact.
    feedback = f"{topics.feedback}-1p"
    admin = AdminClient(kafka.client_config())  # kept alive until its futures resolve
    for future in admin.create_topics([NewTopic(feedback, num_partitions=1)]).values():
        future.result(timeout=30)
    topics = topics.model_copy(update={"feedback": feedback})
    release_untrained(kafka, topics, model)

    points = sorted(LEARNER_POINTS) * PROFILE.crash_repetitions
    chunk = PROFILE.learner_chunk
    total = (len(points) + 2) * chunk
    fed = 0

    def feed() -> None:
        nonlocal fed
        labels = [(f"r-{i}".encode(), orjson.dumps({
            "request_id": f"r-{i}", "model": model, "label": phishing[i % len(phishing)][1],
            "features": phishing[i % len(phishing)][0],
            "observed_at": "2026-01-01T00:00:00+00:00"})) for i in range(fed, fed + chunk)]
        LoadGenerator(kafka, feedback, lambda i: labels[i], total=chunk, rate=0).start().join(60)
        fed += chunk

    def learned() -> int:
        return sum(outputs.ends(kafka, [topics.examples]).values())

    # Count-based snapshots only, so a restarted learner snapshots at the same examples; two
    # or more per chunk, so every run reaches its crash point.
    extra = ["--snapshot-every", str(chunk * 2 // 5), "--snapshot-interval", "3600",
             "--batch-size", "40"]
    faults = []
    for i, point in enumerate(points, start=1):
        feed()
        before = learned()
        run = workers.start(f"learner-{i}", learner_argv(kafka.bootstrap_servers, topics, model,
                                                         extra), {
            "RIVERRUN_LEARNER__CRASH_AT": f"{point}:{HITS}"}, metrics=False)
        assert run.wait(120) == -signal.SIGKILL, run.output()[-3000:]
        assert f"crash point {point} reached" in run.output()
        # Mid-stream: the run wrote to the examples log, and labels were left for later runs.
        faults.append(Fault(f"{point} #{i}", learned() - before, total - before))

    # A SIGKILL from outside, at no chosen point, while labels flow.
    outside = workers.start("learner-outside", learner_argv(kafka.bootstrap_servers, topics,
                                                            model, extra), metrics=False)
    feed()
    with Registry(kafka, topics, settings()) as registry:
        mark = registry.refresh().latest_snapshot(model)
        assert mark is not None
        wait_for(lambda: (latest := registry.refresh().latest_snapshot(model)) is not None
                 and latest.snapshot > mark.snapshot, 120, "a snapshot before the outside kill")
    before = learned()
    assert outside.kill() == -signal.SIGKILL
    faults.append(Fault("SIGKILL from outside", before, total))
    feed()
    last = workers.start("learner-last", learner_argv(kafka.bootstrap_servers, topics, model,
                                                      [*extra, "--idle-timeout", "3"]),
                         metrics=False)
    assert last.wait(300) == 0, last.output()[-3000:]

    records = [decode_registry_record(m.value()) for m in outputs.read_topic(kafka, topics.models)]
    mine = [r for r in records if r.model == model]
    versions = [r.version for r in mine if isinstance(r, ModelVersionReleased)]
    snapshots = [r for r in mine if isinstance(r, SnapshotPublished)]
    order = [s.snapshot for s in snapshots]
    examples = Counter(orjson.loads(m.value())["request_id"]
                       for m in outputs.read_topic(kafka, topics.examples))
    with Registry(kafka, topics, settings()) as registry:
        verdicts = {s.snapshot: verify_snapshot(registry, kafka, topics,
                                                f"{model}@1#{s.snapshot}").matches
                    for s in snapshots}
    final = snapshots[-1]
    cli = subprocess.run(
        [RIVERRUN, "models", "verify", f"{model}@1#{final.snapshot}",
         "--bootstrap-servers", kafka.bootstrap_servers, "--topic-models", topics.models,
         "--topic-artifacts", topics.artifacts, "--topic-examples", topics.examples,
         "--signing-key", SIGNING_KEY],
        capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    figures.record("learner_sigkills", crash_points=sorted(LEARNER_POINTS),
                   kills=len(faults), labels=fed, snapshots=len(snapshots),
                   snapshots_reproduced=sum(verdicts.values()),
                   examples_learned=sum(examples.values()),
                   examples_learned_twice=sum(1 for c in examples.values() if c > 1),
                   final_examples_seen=final.examples_seen)
    assert vacuous(faults, len(points) + 1) == []
    assert versions == sorted(set(versions)), versions
    assert order == sorted(set(order)), f"snapshots out of order or repeated: {order}"
    assert all(verdicts.values()), {k: v for k, v in verdicts.items() if not v}
    assert cli.returncode == 0 and cli.stdout.startswith("OK"), cli.stdout + cli.stderr
    assert set(examples) == {f"r-{i}" for i in range(fed)} and set(examples.values()) == {1}
    assert final.examples_seen == fed
