"""A release is not a deployment: a new version takes no traffic unless `--deploy` (or
`deploy=True`) publishes, with the release, a single policy naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from riverrun.schemas import (
    ArtifactRef,
    KafkaSettings,
    ModelVersionReleased,
    PolicyChanged,
    SnapshotPublished,
    TopicSettings,
)
from riverrun.workers.cli import parse_args
from riverrun.workers.registry import (
    FileArtifactStore,
    ModelSpec,
    Registry,
    RegistrySettings,
    RegistryView,
    build_estimator,
    decode_registry_record,
)
from riverrun.workers.registry.client import release_policy
from riverrun.workers.routing.policy import champion_target, checked, deploy

REF = ArtifactRef(location="kafka://a/0/0?chunks=1", size=1, sha256="0" * 64, signature="00")
KEY = "unit-test-signing-key-of-32-bytes!"
SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression", task="binary", label_type="bool")


def view_with(versions: int) -> RegistryView:
    view = RegistryView()
    for version in range(1, versions + 1):
        view.apply(ModelVersionReleased(model="fraud", version=version, spec={}, task="binary"))
        view.apply(SnapshotPublished(model="fraud", version=version, snapshot=0, artifact=REF))
    return view


def test_the_release_policy_makes_the_new_version_the_single_champion() -> None:
    view = view_with(3)
    assert champion_target(view, "fraud") == (1, None)  # released, not deployed
    policy = release_policy(view, "fraud", 3)
    assert (policy.strategy, policy.sequence, policy.action, policy.decided_by) == (
        "single", 1, "deploy", "operator")
    assert policy.reason == "released with --deploy"
    assert [(a.version, a.snapshot, a.role, a.weight) for a in policy.assignments] == [
        (3, None, "champion", 1.0)]  # unpinned: it serves its newest snapshot as it learns
    # What the operator's own single deployment would publish, bar the reason; and it routes.
    by_hand = deploy(view, "fraud", "single", version="3")
    assert policy.model_dump(exclude={"reason", "decided_at"}) == by_hand.model_dump(
        exclude={"reason", "decided_at"})
    assert checked(view, policy) is policy
    assert view.apply(policy) and champion_target(view, "fraud") == (3, None)
    # After another policy, the next one numbers on.
    assert release_policy(view, "fraud", 2).sequence == 2


class FakeProducer:
    """The release transaction, recorded."""

    def __init__(self) -> None:
        self.produced: list[bytes] = []
        self.committed = 0

    def begin_transaction(self) -> None:
        self.produced.clear()

    def produce(self, _topic: str, value: bytes, _key: bytes, headers: Any = None) -> None:
        self.produced.append(value)

    def commit_transaction(self, _timeout: float) -> None:
        self.committed += 1

    def flush(self, _timeout: float) -> int:
        return 0


def release_with(
    tmp_path: Path, view: RegistryView, **kwargs: Any
) -> tuple[ModelVersionReleased, list[Any]]:
    registry = Registry(KafkaSettings(), TopicSettings(),
                        RegistrySettings(signing_key=KEY))  # type: ignore[arg-type]
    producer = FakeProducer()
    registry._store = FileArtifactStore(tmp_path)
    registry._release_producer = lambda _name: producer  # type: ignore[method-assign]
    registry._examples_lineage = lambda: {}  # type: ignore[method-assign]
    registry.refresh = lambda *_a, **_k: view  # type: ignore[method-assign]
    released, _snapshot = registry.release("fraud", SPEC, build_estimator(SPEC), **kwargs)
    assert producer.committed == 1
    return released, [decode_registry_record(value) for value in producer.produced]


def test_a_release_writes_no_policy_unless_it_deploys(tmp_path: Path) -> None:
    released, records = release_with(tmp_path, view_with(1))
    assert released.version == 2
    assert [r.kind for r in records] == ["version", "snapshot"]


def test_release_deploy_writes_the_single_policy_in_the_release_transaction(
    tmp_path: Path,
) -> None:
    view = view_with(2)
    view.apply(PolicyChanged(model="fraud", sequence=4, strategy="single",
                             assignments=[{"version": 1, "role": "champion"}]))  # type: ignore[list-item]
    released, records = release_with(tmp_path, view, deploy=True)
    assert released.version == 3
    assert [r.kind for r in records] == ["version", "snapshot", "policy"]
    policy = records[2]
    assert isinstance(policy, PolicyChanged)
    assert (policy.model, policy.sequence, policy.strategy, policy.action, policy.decided_by,
            policy.reason) == ("fraud", 5, "single", "deploy", "operator",
                               "released with --deploy")
    assert [(a.version, a.snapshot, a.role) for a in policy.assignments] == [
        (3, None, "champion")]


def test_the_release_command_has_deploy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from riverrun.workers.registry import command

    spec = tmp_path / "spec.yaml"
    spec.write_text("pipeline: StandardScaler | LogisticRegression\ntask: binary\n"
                    "label_type: bool\n")
    assert parse_args(["models", "release", "fraud", "--spec", str(spec)]).deploy is False
    calls: list[dict[str, Any]] = []

    class FakeRegistry:
        def __init__(self, *_args: Any) -> None:
            self.view = view_with(1)

        def __enter__(self) -> FakeRegistry:
            return self

        def __exit__(self, *_exc: object) -> None:
            return None

        def release(self, name: str, spec: ModelSpec, _estimator: Any,
                    **kwargs: Any) -> tuple[ModelVersionReleased, SnapshotPublished]:
            calls.append(kwargs)
            released = ModelVersionReleased(model=name, version=2, spec={}, task="binary")
            snapshot = SnapshotPublished(model=name, version=2, snapshot=0, artifact=REF)
            policy = release_policy(self.view, name, 2)
            for record in (released, snapshot):
                self.view.apply(record)
            if kwargs["deploy"]:
                self.view.apply(policy)
            return released, snapshot

        def refresh(self, *_args: Any, **_kwargs: Any) -> RegistryView:
            return self.view

    monkeypatch.setattr(command, "Registry", FakeRegistry)
    monkeypatch.setenv("RIVERRUN_REGISTRY__SIGNING_KEY", KEY)
    args = parse_args(["models", "release", "fraud", "--spec", str(spec)])
    assert args.handler(args) == 0
    assert "fraud@2 takes no traffic yet: fraud@1 keeps answering" in capsys.readouterr().out
    args = parse_args(["models", "release", "fraud", "--spec", str(spec), "--deploy"])
    assert args.handler(args) == 0
    assert "fraud@2 answers every request (policy #1, single)" in capsys.readouterr().out
    assert [c["deploy"] for c in calls] == [False, True]


def test_a_deploy_after_the_model_was_retired_numbers_past_its_old_policy() -> None:
    from riverrun.schemas import ModelRetired

    view = view_with(1)
    view.apply(release_policy(view, "fraud", 1))
    view.apply(ModelRetired(model="fraud", last_version=1))
    view.apply(ModelVersionReleased(model="fraud", version=2, spec={}, task="binary"))
    view.apply(SnapshotPublished(model="fraud", version=2, snapshot=0, artifact=REF))
    policy = release_policy(view, "fraud", 2)
    assert policy.sequence == 2 and view.apply(policy), "a sequence the view takes"
