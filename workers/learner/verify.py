"""Reproduce a snapshot from the examples log and compare its bytes with the published artifact.

A version's snapshots all descend from its first one by `learn_example` over the examples log,
so replaying the log from the first snapshot's lineage up to a snapshot's lineage must give
that snapshot's artifact byte for byte.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.learner.log import replay
from riverrun.workers.registry import Registry
from riverrun.workers.registry.records import lineage_key
from riverrun.workers.runtime.errors import ConfigurationError

_REFERENCE = re.compile(
    r"^(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})@(?P<version>\d+)#(?P<snapshot>\d+)$"
)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification."""

    reference: str
    matches: bool
    expected_sha256: str
    replayed_sha256: str
    examples: int
    start: int
    end: int


def parse_reference(reference: str) -> tuple[str, int, int]:
    """`fraud@3#12` as (model, version, snapshot)."""
    found = _REFERENCE.match(reference)
    if found is None:
        raise ConfigurationError(
            f"{reference!r} is not a snapshot reference: write NAME@VERSION#SNAPSHOT, "
            "e.g. fraud@3#12"
        )
    return found["model"], int(found["version"]), int(found["snapshot"])


def verify_snapshot(
    registry: Registry, kafka: KafkaSettings, topics: TopicSettings, reference: str
) -> Verdict:
    """Replay the examples log from the version's first snapshot and compare with `reference`.

    After a guardrail restore the replay starts from the restored snapshot instead; a restored
    snapshot itself verifies as the snapshot it restores.
    """
    model, version, number = parse_reference(reference)
    view = registry.refresh()
    snapshots = view.snapshots(model, version)
    target = next((s for s in snapshots if s.snapshot == number), None)
    if target is None:
        known = ", ".join(f"#{s.snapshot}" for s in snapshots) or "none"
        raise ConfigurationError(
            f"{model}@{version} has no snapshot #{number} (it has {known}): check the reference"
        )
    # A guardrail restore republishes an earlier snapshot's bytes; what follows descends from it.
    restores = [s for s in snapshots if s.restored_from is not None and s.snapshot <= number]
    if target.restored_from is not None:
        source = next((s for s in snapshots if s.snapshot == target.restored_from), None)
        if source is None:
            raise ConfigurationError(
                f"{reference} restores #{target.restored_from}, which the registry no longer "
                "holds: it cannot be verified"
            )
        verdict = verify_snapshot(registry, kafka, topics, f"{model}@{version}#{source.snapshot}")
        same = verdict.matches and source.artifact.sha256 == target.artifact.sha256
        return Verdict(reference, same, target.artifact.sha256, verdict.replayed_sha256,
                       verdict.examples, verdict.start, verdict.end)  # fmt: skip
    first = restores[-1] if restores else snapshots[0]
    key = lineage_key(topics.examples)
    start = first.lineage.get(key, 0)
    end = target.lineage.get(key, start)
    done = replay(kafka, topics.examples, model, lambda: registry.load(first), start, end)
    replayed = hashlib.sha256(registry.dump(done.estimator)).hexdigest()
    expected = target.artifact.sha256
    return Verdict(reference, replayed == expected, expected, replayed, done.learned, start, end)
