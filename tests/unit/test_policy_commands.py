"""Operator policy changes: deploy per strategy, promote, roll back; checked before publishing."""

from __future__ import annotations

import pytest

from riverrun.schemas import ArtifactRef, ModelVersionReleased, PolicyChanged, SnapshotPublished
from riverrun.workers.cli import parse_args
from riverrun.workers.registry import RegistryView
from riverrun.workers.routing import PolicyError, plan_for
from riverrun.workers.routing.policy import deploy, parse_step, parse_target, promote, rollback

REF = ArtifactRef(location="kafka://a/0/0?chunks=1", size=1, sha256="0" * 64, signature="00")


def view_with(versions: int = 3, snapshots: int = 3) -> RegistryView:
    view = RegistryView()
    for version in range(1, versions + 1):
        view.apply(ModelVersionReleased(model="fraud", version=version, spec={}, task="binary"))
        for snapshot in range(snapshots):
            view.apply(SnapshotPublished(model="fraud", version=version, snapshot=snapshot,
                                         artifact=REF))
    return view


def applied(view: RegistryView, policy: PolicyChanged) -> PolicyChanged:
    assert view.apply(policy), "each change carries the next sequence"
    return policy


def roles(policy: PolicyChanged) -> list[tuple[int, int | None, str, float]]:
    return [(a.version, a.snapshot, a.role, a.weight) for a in policy.assignments]


def test_targets_and_steps_parse() -> None:
    assert parse_target("3") == (3, None) and parse_target("3#12") == (3, 12)
    assert parse_step("0.2@600").weight == 0.2 and parse_step("0.2@600").after_s == 600
    for bad in ("v3", "3#", "#2", ""):
        with pytest.raises(PolicyError, match="VERSION"):
            parse_target(bad)
    with pytest.raises(PolicyError, match="WEIGHT@SECONDS"):
        parse_step("20%")


def test_a_canary_deployment_then_promotion() -> None:
    view = view_with()
    canary = applied(view, deploy(view, "fraud", "canary", version="1", challengers=["3"],
                                  weight=0.1, steps=["0.5@600"], min_samples=100, alpha=0.01))
    assert canary.sequence == 1 and canary.strategy == "canary"
    assert roles(canary) == [(1, None, "champion", 0.9), (3, None, "canary", 0.1)]
    assert canary.min_samples == 100 and canary.alpha == 0.01 and canary.metric == "accuracy"
    assert canary.schedule[0].weight == 0.5
    promoted = applied(view, promote(view, "fraud"))
    assert promoted.sequence == 2 and promoted.action == "promote"
    assert roles(promoted) == [(3, None, "champion", 1.0)]


def test_the_champion_defaults_to_the_current_one() -> None:
    view = view_with()
    applied(view, deploy(view, "fraud", "single", version="2#1"))
    shadow = deploy(view, "fraud", "shadow", challengers=["3"])
    assert roles(shadow) == [(2, 1, "champion", 1.0), (3, None, "shadow", 0.0)]


def test_ab_and_bandit_split_equally_unless_weighted() -> None:
    view = view_with()
    ab = deploy(view, "fraud", "ab", version="1", challengers=["2", "3"], hypothesis="v3 wins")
    assert [a.weight for a in ab.assignments] == pytest.approx([1 / 3] * 3, abs=1e-6)
    assert ab.hypothesis == "v3 wins"
    bandit = deploy(view, "fraud", "bandit", version="1", challengers=["2"], weight=0.3,
                    exploration=0.1)
    assert [a.weight for a in bandit.assignments] == pytest.approx([0.7, 0.3])
    assert bandit.exploration == 0.1


def test_blue_green_warms_then_switches_then_switches_back() -> None:
    view = view_with()
    warm = applied(view, deploy(view, "fraud", "blue-green", version="1", challengers=["2"]))
    plan = plan_for(warm, "fraud", 2)
    assert plan is not None and plan.arms[0].route == "blue" and plan.standby[0].version == 2
    switched = applied(view, promote(view, "fraud"))
    assert switched.action == "switch" and switched.experiment == warm.sequence
    plan = plan_for(switched, "fraud", 2)
    assert plan is not None and plan.arms[0].route == "green" and plan.standby[0].version == 1
    back = applied(view, rollback(view, "fraud"))
    plan = plan_for(back, "fraud", 2)
    assert plan is not None and plan.arms[0].route == "blue" and plan.arms[0].version == 1
    again = applied(view, promote(view, "fraud"))
    final = applied(view, promote(view, "fraud"))
    assert again.action == "switch" and final.strategy == "single"
    assert roles(final) == [(2, None, "champion", 1.0)]


def test_rollback_to_an_earlier_version_or_snapshot() -> None:
    view = view_with()
    pinned = applied(view, rollback(view, "fraud", "2#1"))
    assert roles(pinned) == [(2, 1, "champion", 1.0)] and pinned.action == "rollback"
    previous = applied(view, rollback(view, "fraud"))
    assert roles(previous) == [(1, None, "champion", 1.0)]
    with pytest.raises(PolicyError, match="no earlier version"):
        rollback(view, "fraud")


def test_rollback_of_a_canary_goes_back_to_its_champion() -> None:
    view = view_with()
    applied(view, deploy(view, "fraud", "canary", version="2", challengers=["3"]))
    assert roles(rollback(view, "fraud")) == [(2, None, "champion", 1.0)]


def test_a_race_names_candidates_that_only_learn_and_compares_losses() -> None:
    view = view_with()
    race = applied(view, deploy(view, "fraud", "race", version="1", challengers=["2", "3"],
                                metric="accuracy", min_samples=500))
    assert roles(race) == [(1, None, "champion", 1.0), (2, None, "candidate", 0.0),
                           (3, None, "candidate", 0.0)]
    assert race.metric == "loss" and race.min_samples == 500
    plan = plan_for(race, "fraud", 1)
    assert plan is not None and plan.targets() == [(1, None)], "candidates are not even loaded"
    promoted = applied(view, promote(view, "fraud"))
    assert roles(promoted) == [(2, None, "champion", 1.0)]


@pytest.mark.parametrize("strategy, kwargs, message", [
    ("canary", {"challengers": []}, "needs --challenger"),
    ("canary", {"challengers": ["2", "3"]}, "exactly one --challenger"),
    ("single", {"version": "9"}, "fraud@9 is not released"),
    ("single", {"version": "1#7"}, "not a published snapshot"),
    ("shadow", {"steps": ["0.5@10"], "challengers": ["2"]}, "canary deployments only"),
    ("canary", {"challengers": ["2"], "weight": 0.3, "steps": ["0.1@10"]}, "lowers the weight"),
    ("ab", {"challengers": ["2", "3"], "weight": 0.6}, "lower it"),
    ("rainbow", {}, "is not one of"),
    ("race", {"challengers": []}, "needs --challenger"),
    ("race", {"challengers": ["2", "3#1"]}, "cannot be pinned"),
])
def test_bad_deployments_are_refused_with_the_reason(
    strategy: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        deploy(view_with(), "fraud", strategy, **kwargs)  # type: ignore[arg-type]


def test_nothing_to_promote_on_a_single_champion() -> None:
    with pytest.raises(PolicyError, match="nothing to promote"):
        promote(view_with(), "fraud")


def test_the_command_line_has_the_policy_actions() -> None:
    args = parse_args(["models", "deploy", "fraud", "--strategy", "canary",
                              "--challenger", "2", "--weight", "0.1", "--step", "0.5@60"])
    assert args.strategy == "canary" and args.challenger == ["2"] and args.step == ["0.5@60"]
    for argv in (["models", "promote", "fraud"], ["models", "rollback", "fraud", "--to", "1#3"],
                 ["models", "status", "fraud", "--judge-url", "http://127.0.0.1:1"]):
        assert callable(parse_args(argv).handler)
