"""Routing: sticky by key, shares as weighted, canaries only ever take keys, plans per strategy."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from riverrun.schemas import CanaryStep, PolicyAssignment, PolicyChanged
from riverrun.workers.routing import KeyHasher, PolicyError, plan_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = [f"user-{i}".encode() for i in range(100_000)]


def policy(strategy: str, *assignments: tuple[int, str, float], **extra: object) -> PolicyChanged:
    return PolicyChanged(
        model="fraud", sequence=3, strategy=strategy, decided_at=T0,
        assignments=[PolicyAssignment(version=v, role=r, weight=w) for v, r, w in assignments],
        **extra,
    )  # type: ignore[arg-type]


def test_positions_are_uniform_stable_and_salted_by_model() -> None:
    fraud = KeyHasher("fraud")
    points = fraud.position_many(KEYS)
    assert points.min() >= 0.0 and points.max() < 1.0
    # Uniform: each tenth of [0, 1) holds a tenth of the keys, within 1 %.
    counts = np.histogram(points, bins=10, range=(0.0, 1.0))[0]
    assert np.all(np.abs(counts / len(KEYS) - 0.1) < 0.01)
    assert np.array_equal(points, KeyHasher("fraud").position_many(KEYS))
    assert [fraud.position_one(k) for k in KEYS[:100]] == list(points[:100])
    other = KeyHasher("churn").position_many(KEYS)
    assert abs(np.corrcoef(points, other)[0, 1]) < 0.02


def test_no_policy_routes_everything_to_the_default_version_as_champion() -> None:
    plan = plan_for(None, "fraud", 4)
    assert plan is not None
    assert [(a.version, a.snapshot, a.route) for a in plan.arms] == [(4, None, "champion")]
    assert plan.assign_many(KEYS[:10], 0.0) is None  # one arm: nothing is hashed
    assert plan_for(None, "fraud", None) is None


def test_with_no_policy_a_new_release_takes_no_traffic() -> None:
    from riverrun.schemas import ArtifactRef, ModelVersionReleased, SnapshotPublished
    from riverrun.workers.registry import RegistryView
    from riverrun.workers.routing.policy import champion_target

    ref = ArtifactRef(location="kafka://a/0/0?chunks=1", size=1, sha256="0" * 64, signature="00")
    view = RegistryView()
    for version in (1, 2):
        view.apply(ModelVersionReleased(model="fraud", version=version, spec={}, task="binary"))
        view.apply(SnapshotPublished(model="fraud", version=version, snapshot=0, artifact=ref))
    plan = plan_for(view.policy("fraud"), "fraud", view.default_version("fraud"))
    assert plan is not None and [(a.version, a.route) for a in plan.arms] == [(1, "champion")]
    assert plan.targets() == [(1, None)]  # version 2 is not even loaded
    assert champion_target(view, "fraud") == (1, None)


def test_every_version_a_policy_names_learns_and_waiting_releases_too() -> None:
    from datetime import timedelta

    from riverrun.schemas import ArtifactRef, ModelVersionReleased, SnapshotPublished
    from riverrun.workers.registry import RegistryView
    from riverrun.workers.routing.policy import learning_versions

    ref = ArtifactRef(location="kafka://a/0/0?chunks=1", size=1, sha256="0" * 64, signature="00")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    view = RegistryView()

    def release(version: int, minutes: int) -> None:
        view.apply(ModelVersionReleased(model="fraud", version=version, spec={}, task="binary",
                                        released_at=t0 + timedelta(minutes=minutes)))
        view.apply(SnapshotPublished(model="fraud", version=version, snapshot=0, artifact=ref))

    for version in (1, 2, 3):
        release(version, version)
    assert learning_versions(view, "fraud") == [1, 2, 3], "no policy: every live version learns"
    view.apply(policy("race", (3, "champion", 1.0), (1, "candidate", 0.0)).model_copy(
        update={"model": "fraud", "decided_at": t0 + timedelta(minutes=10)}))
    assert learning_versions(view, "fraud") == [3, 1], "v2, left out of the race, stops"
    release(4, 20)
    assert learning_versions(view, "fraud") == [3, 1, 4], "a release since the policy waits"
    view.apply(policy("shadow", (4, "champion", 1.0), (1, "shadow", 0.0)).model_copy(
        update={"model": "fraud", "sequence": 4, "decided_at": t0 + timedelta(minutes=30),
                "assignments": [
            PolicyAssignment(version=4, role="champion"),
            PolicyAssignment(version=1, snapshot=0, role="shadow", weight=0.0)]}))
    assert learning_versions(view, "fraud") == [4], "a baseline pinned to a snapshot is frozen"


def test_ab_shares_follow_the_weights_and_each_key_sticks() -> None:
    plan = plan_for(policy("ab", (1, "arm", 0.2), (2, "arm", 0.3), (3, "arm", 0.5)), "fraud", 3)
    assert plan is not None
    assert [a.route for a in plan.arms] == ["arm-0", "arm-1", "arm-2"]
    arms = plan.assign_many(KEYS, T0.timestamp())
    assert arms is not None
    shares = np.bincount(arms, minlength=3) / len(KEYS)
    assert np.allclose(shares, [0.2, 0.3, 0.5], atol=0.01)
    # The same key lands on the same arm in a batch, across batches and in another process.
    again = plan_for(policy("ab", (1, "arm", 0.2), (2, "arm", 0.3), (3, "arm", 0.5)), "fraud", 3)
    assert again is not None
    later = again.assign_many(list(reversed(KEYS)), T0.timestamp() + 3600)
    assert later is not None
    assert np.array_equal(arms, later[::-1])
    # One key at a time lands where it landed in the batch.
    assert all(np.array_equal(plan.assign_many([k], 0.0), [arms[i]])  # type: ignore[arg-type]
               for i, k in enumerate(KEYS[:500]))


def test_a_canary_only_takes_keys_from_the_champion_as_its_schedule_steps_up() -> None:
    steps = [CanaryStep(weight=0.2, after_s=60), CanaryStep(weight=0.5, after_s=600)]
    plan = plan_for(policy("canary", (1, "champion", 1.0), (2, "canary", 0.05), schedule=steps),
                    "fraud", 2)
    assert plan is not None
    assert [(a.version, a.route) for a in plan.arms] == [(2, "canary"), (1, "champion")]
    start = T0.timestamp()
    on_canary = []
    for elapsed, share in ((0, 0.05), (59, 0.05), (60, 0.2), (599, 0.2), (600, 0.5), (10**6, 0.5)):
        arms = plan.assign_many(KEYS, start + elapsed)
        assert arms is not None
        canary = arms == 0
        assert abs(canary.mean() - share) < 0.01, (elapsed, canary.mean())
        on_canary.append(canary)
    for before, after in zip(on_canary, on_canary[1:], strict=False):
        assert np.all(after[before]), "a key on the canary went back to the champion"
    assert plan.weights_at(start + 120) == pytest.approx((0.2, 0.8))


def test_a_schedule_that_lowers_the_canary_is_refused() -> None:
    with pytest.raises(ValueError, match="lowers the weight"):
        plan_for(policy("canary", (1, "champion", 1.0), (2, "canary", 0.3),
                        schedule=[CanaryStep(weight=0.1, after_s=10)]), "fraud", 2)


def test_shadow_versions_score_beside_the_champion() -> None:
    plan = plan_for(policy("shadow", (1, "champion", 1.0), (2, "challenger", 0.0),
                           (3, "shadow", 0.0)), "fraud", 3)
    assert plan is not None
    assert [a.route for a in plan.arms] == ["champion"]
    assert sorted(a.version for a in plan.shadows) == [2, 3]
    assert {a.route for a in plan.shadows} == {"shadow"}
    assert plan.targets() == [(1, None), (3, None), (2, None)]


def test_blue_green_serves_the_colour_with_the_weight_and_keeps_the_other_loaded() -> None:
    warming = plan_for(policy("blue-green", (1, "blue", 1.0), (2, "green", 0.0)), "fraud", 2)
    switched = plan_for(policy("blue-green", (1, "blue", 0.0), (2, "green", 1.0)), "fraud", 2)
    assert warming is not None and switched is not None
    assert [(a.version, a.route) for a in warming.arms] == [(1, "blue")]
    assert [(a.version, a.route) for a in switched.arms] == [(2, "green")]
    assert set(warming.targets()) == set(switched.targets()) == {(1, None), (2, None)}


def test_pinned_snapshots_are_targets_of_their_own() -> None:
    pinned = PolicyChanged(model="fraud", sequence=9, strategy="single", assignments=[
        PolicyAssignment(version=1, snapshot=7, role="champion")])
    plan = plan_for(pinned, "fraud", 3)
    assert plan is not None
    assert plan.targets() == [(1, 7)]


@pytest.mark.parametrize("strategy, assignments, message", [
    ("canary", [(1, "champion", 1.0)], "exactly one canary"),
    ("canary", [(1, "arm", 1.0), (2, "canary", 0.1)], "needs a champion"),
    ("ab", [(1, "arm", 1.0)], "two or more"),
    ("bandit", [(1, "arm", 0.0), (2, "arm", 0.0)], "sum to zero"),
    ("blue-green", [(1, "blue", 1.0), (2, "arm", 0.0)], "one blue and one green"),
    ("shadow", [(1, "champion", 1.0)], "a version to shadow"),
])
def test_policies_missing_what_their_strategy_needs_are_refused(
    strategy: str, assignments: list[tuple[int, str, float]], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        plan_for(policy(strategy, *assignments), "fraud", 2)


def test_a_zero_weight_arm_gets_no_keys() -> None:
    plan = plan_for(policy("bandit", (1, "arm", 0.0), (2, "arm", 1.0)), "fraud", 2)
    assert plan is not None
    arms = plan.assign_many(KEYS[:10_000], 0.0)
    assert arms is not None and set(arms.tolist()) == {1}
