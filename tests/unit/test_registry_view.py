"""RegistryView folds registry records; record keys sort; records decode by kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from riverrun.schemas import (
    ArtifactRef,
    DecodeError,
    ModelVersionReleased,
    PolicyAssignment,
    PolicyChanged,
    SnapshotPublished,
    encode,
)
from riverrun.workers.registry import (
    RegistryView,
    decode_registry_record,
    policy_key,
    snapshot_key,
    version_key,
)

REF = ArtifactRef(location="kafka://a/0/0?chunks=1", size=1, sha256="0" * 64, signature="00")


def release(model: str, version: int) -> ModelVersionReleased:
    return ModelVersionReleased(model=model, version=version, spec={"pipeline": "GaussianNB"},
                                task="binary")


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def snap(model: str, version: int, snapshot: int, seen: int = 0, at: int = 0) -> SnapshotPublished:
    return SnapshotPublished(model=model, version=version, snapshot=snapshot, artifact=REF,
                             examples_seen=seen, published_at=T0 + timedelta(seconds=at))


def policy(model: str, sequence: int, version: int) -> PolicyChanged:
    return PolicyChanged(model=model, sequence=sequence, strategy="single",
                         assignments=[PolicyAssignment(version=version, role="champion")])


def test_empty_view() -> None:
    view = RegistryView()
    assert view.models() == []
    assert view.latest_version("fraud") is None
    assert view.latest_snapshot("fraud") is None
    assert view.policy("fraud") is None
    assert view.history("fraud") == []


def test_versions_snapshots_and_policy() -> None:
    view = RegistryView([
        release("fraud", 1), snap("fraud", 1, 0), snap("fraud", 1, 1),
        release("fraud", 2), snap("fraud", 2, 0), release("churn", 1), policy("fraud", 1, 2),
    ], history=True)  # fmt: skip
    assert view.models() == ["churn", "fraud"]
    assert [v.version for v in view.versions("fraud")] == [1, 2]
    assert view.latest_version("fraud") == 2
    assert [s.snapshot for s in view.snapshots("fraud", 1)] == [0, 1]
    latest = view.latest_snapshot("fraud")
    assert latest is not None and (latest.version, latest.snapshot) == (2, 0)
    latest_v1 = view.latest_snapshot("fraud", 1)
    assert latest_v1 is not None and latest_v1.snapshot == 1
    assert view.latest_snapshot("churn") is None
    current = view.policy("fraud")
    assert current is not None and current.assignments[0].version == 2
    assert len(view.history("fraud")) == 6


def test_older_or_duplicate_snapshots_never_replace_newer() -> None:
    view = RegistryView()
    assert view.apply(snap("fraud", 1, 5, seen=500, at=50))
    assert not view.apply(snap("fraud", 1, 5, seen=500, at=50))  # a replayed duplicate
    assert not view.apply(snap("fraud", 1, 5, seen=1, at=10))  # an older copy of the same id
    assert view.apply(snap("fraud", 1, 3, seen=300, at=30))  # late: listed, not the latest
    latest = view.latest_snapshot("fraud", 1)
    assert latest is not None and latest.snapshot == 5 and latest.examples_seen == 500
    assert [s.snapshot for s in view.snapshots("fraud", 1)] == [3, 5]


def test_a_republished_snapshot_replaces_its_older_copy() -> None:
    view = RegistryView([snap("fraud", 1, 5, seen=500, at=50)])
    assert view.apply(snap("fraud", 1, 5, seen=501, at=60))
    latest = view.latest_snapshot("fraud", 1)
    assert latest is not None and latest.examples_seen == 501


def test_policies_only_move_forward() -> None:
    view = RegistryView([policy("fraud", 2, 2)])
    assert not view.apply(policy("fraud", 1, 1))
    assert not view.apply(policy("fraud", 2, 1))
    current = view.policy("fraud")
    assert current is not None and current.sequence == 2
    assert view.apply(policy("fraud", 3, 1))


def test_duplicate_release_keeps_the_first() -> None:
    view = RegistryView([release("fraud", 1)])
    assert not view.apply(release("fraud", 1))
    assert len(view.versions("fraud")) == 1


def test_keys_sort_in_order_of_the_facts() -> None:
    assert version_key("fraud", 2) < version_key("fraud", 10)
    assert snapshot_key("fraud", 1, 9) < snapshot_key("fraud", 1, 10) < snapshot_key("fraud", 2, 0)
    assert policy_key("fraud") == b"fraud/p"
    assert isinstance(version_key("fraud", 1), bytes)


@pytest.mark.parametrize(
    "record", [release("fraud", 1), snap("fraud", 1, 2), policy("fraud", 1, 1)]
)
def test_decode_by_kind(record: ModelVersionReleased | SnapshotPublished | PolicyChanged) -> None:
    assert decode_registry_record(encode(record)) == record


@pytest.mark.parametrize(
    ("raw", "error_class"),
    [(b'{"kind": "weather"}', "UnknownKind"), (b"[1]", "InvalidEvent"), (b"{", "NotJson"),
     (b'{"kind": "version", "model": "fraud"}', "InvalidEvent")],
)
def test_decode_refuses(raw: bytes, error_class: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_registry_record(raw)
    assert caught.value.error_class == error_class


def test_a_retired_model_is_gone_and_its_name_numbers_on() -> None:
    from riverrun.schemas import ModelRetired

    view = RegistryView()
    for version in (1, 2):
        view.apply(release("fraud", version))
        view.apply(snap("fraud", version, 0))
    view.apply(release("churn", 1))
    assert view.apply(ModelRetired(model="fraud", version=1, last_version=2))
    assert [v.version for v in view.versions("fraud")] == [2] and view.snapshots("fraud", 1) == []
    assert view.apply(ModelRetired(model="fraud", last_version=2))
    assert view.models() == ["churn"] and view.latest_version("fraud") is None
    assert view.next_version("fraud") == 3
    # A late copy of a retired release changes nothing; a new release is live again.
    assert not view.apply(release("fraud", 2))
    assert view.apply(release("fraud", 3)) and view.models() == ["churn", "fraud"]


def test_a_snapshot_is_proof_of_its_version_and_a_release_without_one_is_not_served() -> None:
    # The release record of version 1 was deleted (a tombstone, compacted away): its snapshot
    # still says version 1 exists. Version 3 was released and has no snapshot yet.
    view = RegistryView([snap("fraud", 1, 0), release("fraud", 3)])
    assert view.latest_version("fraud") == 1 and view.models() == ["fraud"]
    assert view.next_version("fraud") == 4


def test_workers_keep_no_history_and_a_bounded_number_of_drifts() -> None:
    from riverrun.schemas import DriftDetected
    from riverrun.workers.registry.view import MAX_DRIFTS

    view = RegistryView([release("fraud", 1), snap("fraud", 1, 0)])
    for i in range(MAX_DRIFTS * 3):
        view.apply(DriftDetected(model="fraud", version=1, stream="learning", detector="ADWIN",
                                 position=i, mean_loss=0.5))
    assert view.history("fraud") == [] and len(view.drifts("fraud")) == MAX_DRIFTS
    assert view.drifts("fraud")[-1].position == MAX_DRIFTS * 3 - 1


def test_the_default_version_is_the_first_live_one_not_the_latest() -> None:
    # With no policy the first version answers: releasing v2 and v3 moves no traffic.
    view = RegistryView([release("fraud", 1), snap("fraud", 1, 0)])
    assert view.default_version("fraud") == 1
    for version in (2, 3):
        view.apply(release("fraud", version))
        view.apply(snap("fraud", version, 0))
    assert view.default_version("fraud") == 1 and view.latest_version("fraud") == 3
    assert view.default_version("churn") is None
    # A release without a snapshot yet is not servable, so it is no default either.
    assert RegistryView([release("churn", 1)]).default_version("churn") is None


def test_a_retired_first_version_passes_the_default_to_the_next() -> None:
    from riverrun.schemas import ModelRetired

    view = RegistryView()
    for version in (1, 2, 3):
        view.apply(release("fraud", version))
        view.apply(snap("fraud", version, 0))
    view.apply(ModelRetired(model="fraud", version=1, last_version=3))
    assert view.default_version("fraud") == 2
    # A late snapshot of the retired version changes nothing.
    assert not view.apply(snap("fraud", 1, 1))
    assert view.default_version("fraud") == 2
    # The whole model retired, then released again: the new release is its first live version.
    view.apply(ModelRetired(model="fraud", last_version=3))
    assert view.default_version("fraud") is None
    view.apply(release("fraud", 4))
    view.apply(snap("fraud", 4, 0))
    view.apply(release("fraud", 5))
    view.apply(snap("fraud", 5, 0))
    assert view.default_version("fraud") == 4


def test_the_policy_sequence_counts_a_retired_policy() -> None:
    from riverrun.schemas import ModelRetired

    view = RegistryView([release("fraud", 1), snap("fraud", 1, 0), policy("fraud", 3, 1)])
    assert view.policy_sequence("fraud") == 3 and view.policy_sequence("churn") == 0
    view.apply(ModelRetired(model="fraud", last_version=1))
    assert view.policy("fraud") is None and view.policy_sequence("fraud") == 3
    assert not view.apply(policy("fraud", 3, 2))  # why a new policy must take 4
