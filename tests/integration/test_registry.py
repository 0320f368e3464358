"""The registry on a real broker: releases, chunked artifacts, the CLI, and a follower."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from river import datasets, forest

from riverrun.schemas import KafkaSettings, SnapshotPublished, TopicSettings
from riverrun.workers.registry import (
    KafkaArtifactStore,
    ModelSpec,
    Registry,
    RegistryFollower,
    RegistryRecord,
    RegistrySettings,
    build_estimator,
    dump_model,
)
from tests.integration.conftest import wait_for

RIVERRUN = str(Path(sys.executable).parent / "riverrun")
ROOT = Path(__file__).resolve().parents[2]
KEY = "integration-test-key-of-32-bytes"
SPEC = ModelSpec(
    pipeline="StandardScaler | LogisticRegression(optimizer=SGD(0.05))",
    task="binary",
    label_type="bool",
)


@pytest.fixture
def registry(kafka_settings: KafkaSettings, topics: TopicSettings) -> Registry:
    settings = RegistrySettings(signing_key=KEY)  # type: ignore[arg-type]  # coerced to SecretStr
    return Registry(kafka_settings, topics, settings)


@pytest.fixture(scope="module")
def forest_model() -> Any:
    model = forest.ARFClassifier(n_models=10, seed=1)
    for x, y in datasets.Phishing():
        model.learn_one(x, y)
    for x, y in datasets.Phishing():
        model.learn_one(x, y)
    return model


@pytest.mark.smoke
def test_release_twice_gives_versions_one_and_two(registry: Registry) -> None:
    first, snap1 = registry.release("fraud", SPEC, build_estimator(SPEC))
    second, snap2 = registry.release("fraud", SPEC, build_estimator(SPEC), metrics={"auc": 0.5})
    registry.close()
    assert (first.version, second.version) == (1, 2)
    assert (snap1.snapshot, snap2.snapshot) == (0, 0)
    view = registry.refresh()
    assert view.latest_version("fraud") == 2
    latest = view.latest_snapshot("fraud")
    assert latest is not None and latest.metrics == {"auc": 0.5}
    loaded = registry.load(latest)
    assert dump_model(loaded) == dump_model(build_estimator(SPEC))


def test_multi_megabyte_artifact_round_trips_through_chunks(
    registry: Registry, kafka_settings: KafkaSettings, topics: TopicSettings, forest_model: Any
) -> None:
    data = dump_model(forest_model)
    assert len(data) > 2 * 1024 * 1024, "the forest should span several chunks"
    spec = ModelSpec(pipeline="ARFClassifier(n_models=10, seed=1)", task="binary",
                     label_type="bool")
    _, snapshot = registry.release("forest", spec, forest_model)
    assert "chunks=" in snapshot.artifact.location
    assert snapshot.artifact.size == len(data)
    loaded = registry.load(snapshot)
    assert dump_model(loaded) == data
    # The store reads exactly those chunks, even with other artifacts written around them.
    store = KafkaArtifactStore(kafka_settings, topics.artifacts)
    other = store.put("other", 1, 0, b"x" * 700_000)
    assert store.get(snapshot.artifact.location, len(data), 64 * 1024 * 1024) == data
    assert store.get(other, 700_000, 1_000_000) == b"x" * 700_000


def test_follower_sees_a_snapshot_published_after_it_started(
    registry: Registry, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    registry.release("churn", SPEC, build_estimator(SPEC))
    seen: list[RegistryRecord] = []
    lock = threading.Lock()

    def on_record(record: RegistryRecord) -> None:
        with lock:
            seen.append(record)

    def snapshots() -> list[int]:
        with lock:
            return [r.snapshot for r in seen if isinstance(r, SnapshotPublished)]

    follower = RegistryFollower(kafka_settings, topics, on_record).start()
    try:
        wait_for(lambda: snapshots() == [0], 30, "the follower to read the release")
        published = registry.publish_snapshot(
            "churn", 1, 1, build_estimator(SPEC), metrics={"accuracy": 0.9},
            examples_seen=100, lineage={f"{topics.feedback}:0": 100},
        )
        wait_for(lambda: snapshots() == [0, 1], 30, "the follower to see snapshot 1")
        with lock:
            assert seen[-1] == published
        assert follower.error is None
    finally:
        follower.stop()
        registry.close()
    assert not follower.is_alive()


def _cli(kafka_settings: KafkaSettings, topics: TopicSettings, *argv: str,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    flags = ["--bootstrap-servers", kafka_settings.bootstrap_servers,
             "--topic-models", topics.models, "--topic-artifacts", topics.artifacts]
    return subprocess.run(
        [RIVERRUN, "--log-format", "text", "models", *argv, *flags],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})}, check=False,
    )


def test_models_cli(kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path) -> None:
    spec = ROOT / "deploy" / "specs" / "phishing-logreg.yaml"
    keyed = {"RIVERRUN_REGISTRY__SIGNING_KEY": KEY}

    missing = _cli(kafka_settings, topics, "release", "phish", "--spec", str(spec))
    assert missing.returncode == 2, missing.stderr
    assert "RIVERRUN_REGISTRY__SIGNING_KEY" in missing.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: __import__('os')\ntask: binary\nlabel_type: bool\n")
    refused = _cli(kafka_settings, topics, "release", "phish", "--spec", str(bad), env=keyed)
    assert refused.returncode == 2 and "__import__" in refused.stderr

    first = _cli(kafka_settings, topics, "release", "phish", "--spec", str(spec), env=keyed)
    assert first.returncode == 0, first.stderr
    assert "released phish@1" in first.stdout and "500 records" in first.stdout
    second = _cli(kafka_settings, topics, "release", "phish", "--spec", str(spec),
                  "--limit", "50", "--json", "--signing-key", KEY)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["snapshot"]["examples_seen"] == 50

    listed = _cli(kafka_settings, topics, "list")
    assert listed.returncode == 0, listed.stderr
    assert "phish: latest version 2" in listed.stdout
    assert json.loads(_cli(kafka_settings, topics, "list", "--json").stdout)[0]["versions"] == 2

    shown = _cli(kafka_settings, topics, "show", "phish@1")
    assert shown.returncode == 0, shown.stderr
    assert "phish@1" in shown.stdout and "LogisticRegression" in shown.stdout
    assert "500 examples" in shown.stdout
    assert _cli(kafka_settings, topics, "show", "phish@9").returncode == 1

    history = _cli(kafka_settings, topics, "history", "phish", "--json")
    assert history.returncode == 0, history.stderr
    kinds = [r["kind"] for r in json.loads(history.stdout)]
    assert sorted(kinds) == ["snapshot", "snapshot", "version", "version"]
    text = _cli(kafka_settings, topics, "history", "phish").stdout
    assert "version  phish@2" in text and "snapshot phish@1#0" in text

    # Retired: a version, then the model; a release of the name after it numbers on.
    retired = _cli(kafka_settings, topics, "retire", "phish@1", "--reason", "superseded",
                   env=keyed)  # fmt: skip
    assert retired.returncode == 0, retired.stderr
    assert "phish@1" not in _cli(kafka_settings, topics, "show", "phish@1").stdout
    assert _cli(kafka_settings, topics, "retire", "phish", env=keyed).returncode == 0
    assert "no models released yet" in _cli(kafka_settings, topics, "list").stdout
    again = _cli(kafka_settings, topics, "release", "phish", "--spec", str(spec), "--limit", "10",
                 env=keyed)  # fmt: skip
    assert again.returncode == 0 and "released phish@3" in again.stdout, again.stdout
    assert "retired  phish@1: superseded" in _cli(kafka_settings, topics, "history",
                                                  "phish").stdout


def test_topics_create_makes_the_artifacts_topic_compacted_with_one_partition(
    kafka_settings: KafkaSettings, unique: Any
) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    from riverrun.workers.broker.topics import create_topics

    suffix = unique("reg")
    names = TopicSettings(
        **{role: f"{name}-{suffix}" for role, name in TopicSettings().all().items()}
    )
    assert create_topics(kafka_settings, names, partitions=2)[names.artifacts] == "created"
    admin = AdminClient(kafka_settings.client_config())
    metadata = admin.list_topics(names.artifacts, timeout=15)
    assert len(metadata.topics[names.artifacts].partitions) == 1
    resource = ConfigResource(ConfigResource.Type.TOPIC, names.artifacts)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    assert config["cleanup.policy"].value == "compact"
