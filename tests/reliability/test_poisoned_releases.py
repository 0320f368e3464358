"""Poisoned releases: tampered and forged artifacts are refused before unpickling, no code of
theirs runs, and the previous snapshot keeps serving with no failed prediction."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from river import datasets, linear_model, optim, preprocessing

from riverrun.schemas import KafkaSettings, SnapshotPublished, encode
from riverrun.workers.registry import (
    RefusedArtifact,
    Registry,
    RegistrySettings,
    RegistryView,
    Signer,
    dump_model,
    loading,
    open_artifact,
    seal,
    snapshot_key,
    snapshot_subject,
)
from riverrun.workers.registry.client import record_headers

from .conftest import Figures
from .harness.checker import Fault, vacuous
from .harness.loadgen import LoadGenerator, request_payload
from .harness.processes import SIGNING_KEY, Workers, scorer_argv, wait_for
from .poison import variants
from .scenario import LINEAR_SPEC, reckon

pytestmark = pytest.mark.reliability

MODEL = "phishing"
LIMIT = 2 * 1024 * 1024  # the scorer's --max-artifact-bytes in this scenario


def trained(n: int) -> Any:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.05))
    for x, y in list(datasets.Phishing())[:n]:
        model.learn_one(x, y)
    return model


def test_every_poisoned_variant_is_refused_before_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures,
) -> None:
    signer = Signer(SIGNING_KEY.encode())
    older = dump_model(trained(100))
    older_ref = seal(older, signer, "", snapshot_subject(MODEL, 1, 0))
    good = dump_model(trained(300))
    canary = tmp_path / "canary"
    poisoned = variants(good, (older, older_ref), signer, snapshot_subject(MODEL, 1, 7), canary,
                        LIMIT)

    unpickled: list[bytes] = []

    class Counting(loading._RestrictedUnpickler):  # noqa: SLF001  # the one seam to observe
        def load(self) -> Any:
            unpickled.append(b"")
            return super().load()

    monkeypatch.setattr(loading, "_RestrictedUnpickler", Counting)
    refused: dict[str, str] = {}
    for variant in poisoned:
        with pytest.raises(RefusedArtifact) as caught:
            open_artifact(variant.data, variant.ref, signer, LIMIT, snapshot_subject(MODEL, 1, 7))
        refused[variant.name] = caught.value.error_class
        assert caught.value.error_class == variant.refused_as, (variant.name, caught.value)
    # The real snapshot still opens: the refusals are about the variants, not the loader.
    open_artifact(good, seal(good, signer, "", snapshot_subject(MODEL, 1, 7)), signer, LIMIT,
                  snapshot_subject(MODEL, 1, 7))
    assert len(unpickled) == 1, "a poisoned variant reached the unpickler"
    assert list(canary.iterdir()) == [], "a poisoned variant ran code"

    # A replayed record of an older snapshot changes nothing the view answers.
    record = SnapshotPublished(model=MODEL, version=1, snapshot=3, artifact=older_ref)
    view = RegistryView([record.model_copy(update={"published_at": record.published_at.replace(
        year=record.published_at.year + 1)})])
    assert view.apply(record) is False

    figures.record("poisoned_releases_in_process", variants=len(poisoned),
                   refused=len(refused), reached_unpickler=0, canary_files=0,
                   refused_as=dict(sorted(refused.items())))
    assert len(poisoned) >= 20


def test_a_scorer_refuses_poisoned_snapshots_and_keeps_serving(
    kafka: KafkaSettings, make_topics: Any, workers: Workers, rows: list[dict[str, float]],
    tmp_path: Path, figures: Figures,
) -> None:
    topics = make_topics()
    settings = RegistrySettings(signing_key=SIGNING_KEY)
    with Registry(kafka, topics, settings) as registry:
        _, first = registry.release(MODEL, LINEAR_SPEC, trained(200))
        older = registry.store.get(first.artifact.location, first.artifact.size, LIMIT)
        scorer = workers.start("scorer", scorer_argv(
            kafka.bootstrap_servers, topics, f"poison-{uuid.uuid4().hex[:8]}", "s",
            extra=["--max-artifact-bytes", str(LIMIT)]))
        wait_for(scorer.ready, 90, "the scorer to be ready")
        load = LoadGenerator(kafka, topics.requests, request_payload(rows), total=10**9,
                             rate=300).start()
        wait_for(lambda: load.done > 300, 60, "the first requests")

        signer = Signer(SIGNING_KEY.encode())
        canary = tmp_path / "canary"
        good = dump_model(trained(400))
        producer = Producer(kafka.client_config({"enable.idempotence": True}))
        faults = []
        poisoned: list[str] = []
        count = len(variants(good, (older, first.artifact), signer,
                             snapshot_subject(MODEL, 1, 1), canary, LIMIT))
        for snapshot in range(1, count + 1):
            # Each variant is made for the snapshot id its record claims.
            variant = variants(good, (older, first.artifact), signer,
                               snapshot_subject(MODEL, 1, snapshot), canary, LIMIT)[snapshot - 1]
            poisoned.append(variant.name)
            location = registry.store.put(MODEL, 1, snapshot, variant.data)
            ref = variant.ref.model_copy(update={"location": location})
            record = SnapshotPublished(model=MODEL, version=1, snapshot=snapshot, artifact=ref)
            key, value = snapshot_key(MODEL, 1, snapshot), encode(record)
            # Written as a key holder would: a record nobody signed is not even looked at.
            producer.produce(topics.models, value, key,
                             headers=record_headers(signer, key, value))
            assert producer.flush(10) == 0
            wait_for(lambda s=snapshot: f"refused snapshot {MODEL}@1#{s}" in scorer.output(), 30,
                     f"the {variant.name} snapshot to be refused")
            faults.append(Fault(variant.name, load.done, load.total))
        # A good snapshot after all of them is taken: the scorer still follows the registry.
        good_id = len(poisoned) + 1
        registry.publish_snapshot(MODEL, 1, good_id, trained(400))
        wait_for(lambda: f"now serving {MODEL}@1#{good_id}" in scorer.output(), 60,
                 "the good snapshot after the poisoned ones")
        seen = load.done
        wait_for(lambda: load.done > seen + 300, 60, "requests served by the good snapshot")
        load.stop()
        load.join(60)
    refused = scorer.metric_sum("riverrun_scorer_refused_snapshots_total")
    assert scorer.stop() == 0

    result = reckon(kafka, topics, load.acked)
    served = {a.snapshot for a in result.answers}
    figures.record("poisoned_releases_served", variants=len(poisoned), refused=int(refused),
                   requests=result.delivery.requests, failed_predictions=result.delivery.missing
                   + result.delivery.dead_lettered, snapshots_served=sorted(served),
                   canary_files=len(list(canary.iterdir())))
    assert vacuous(faults, 20) == []
    assert refused == len(poisoned)
    assert list(canary.iterdir()) == [], "a poisoned snapshot ran code"
    assert result.delivery.missing == 0 and result.delivery.dead_lettered == 0, result.delivery
    assert served == {0, good_id}
    before_good = [a for a in result.answers if a.snapshot != good_id]
    assert before_good and all(a.snapshot == 0 for a in before_good)
