"""The operator's policy changes, pure: deploy, promote and roll back, from what the registry says.

Each function reads a `RegistryView` and returns the next `PolicyChanged` (the current
sequence + 1), already checked: every version it names is released, and the policy compiles
into a route plan. `riverrun models deploy/promote/rollback` publish what these return
(`release --deploy` writes its single policy itself: `registry.client.release_policy`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from riverrun.schemas import CanaryStep, PolicyAssignment, PolicyChanged, utc_now
from riverrun.workers.registry.view import RegistryView
from riverrun.workers.routing.plan import PolicyError, plan_for

STRATEGIES = ("single", "shadow", "canary", "ab", "bandit", "blue-green", "race")
_TARGET = re.compile(r"^(\d+)(?:#(\d+))?$")
_STEP = re.compile(r"^([0-9.]+)@([0-9.]+)$")


def parse_target(text: str) -> tuple[int, int | None]:
    """`3` or `3#12` as (version, snapshot or None).

    Raises:
        PolicyError: not VERSION or VERSION#SNAPSHOT.

    """
    match = _TARGET.match(text.strip())
    if match is None:
        raise PolicyError(f"{text!r} is not VERSION or VERSION#SNAPSHOT, e.g. 3 or 3#12")
    version, snapshot = match.groups()
    return int(version), int(snapshot) if snapshot is not None else None


def parse_step(text: str) -> CanaryStep:
    """`0.2@600`: the canary takes 20 % from 600 s after the deployment.

    Raises:
        PolicyError: not WEIGHT@SECONDS.

    """
    match = _STEP.match(text.strip())
    if match is None:
        raise PolicyError(f"--step {text!r} is not WEIGHT@SECONDS, e.g. 0.2@600")
    try:
        return CanaryStep(weight=float(match.group(1)), after_s=float(match.group(2)))
    except ValueError as exc:
        raise PolicyError(f"--step {text!r}: {exc}") from exc


def champion_target(view: RegistryView, name: str) -> tuple[int, int | None] | None:
    """What answers as champion now: the policy's champion, else the first live version.

    A release takes no traffic until a policy names it (`models deploy`, or `models release
    --deploy`): with no policy the model's first live version (`default_version`) answers,
    however many versions were released after it.
    """
    policy = view.policy(name)
    default = view.default_version(name)
    if policy is not None:
        plan = plan_for(policy, name, default)
        if plan is not None:
            for arm in (*plan.arms, *plan.standby):
                if arm.route in ("champion", "blue"):
                    return arm.target
            return plan.arms[0].target
    return (default, None) if default is not None else None


def deploy(
    view: RegistryView,
    name: str,
    strategy: str,
    *,
    version: str | None = None,
    challengers: Sequence[str] = (),
    weight: float | None = None,
    steps: Sequence[str] = (),
    now: datetime | None = None,
    **experiment: Any,
) -> PolicyChanged:
    """A new policy for `name`; `experiment` holds metric, margin, alpha, min_samples, ...

    Raises:
        PolicyError: an unknown strategy or version, or a policy that cannot be routed.

    """
    if strategy not in STRATEGIES:
        raise PolicyError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    base = parse_target(version) if version else champion_target(view, name)
    if base is None:
        raise PolicyError(f"{name} has no release: `riverrun models release {name}` first")
    others = [parse_target(c) for c in challengers]
    needs = {"single": 0, "shadow": 1, "canary": 1, "ab": 1, "bandit": 1, "blue-green": 1,
             "race": 1}[strategy]
    if len(others) < needs:
        raise PolicyError(f"a {strategy} deployment needs --challenger VERSION")
    if strategy in ("canary", "blue-green") and len(others) != 1:
        raise PolicyError(f"a {strategy} deployment takes exactly one --challenger")
    if steps and strategy != "canary":
        raise PolicyError("--step applies to canary deployments only")
    if strategy == "race":
        pinned = [f"{v}#{s}" for v, s in others if s is not None]
        if pinned:
            raise PolicyError(f"race candidates learn, so they cannot be pinned to a snapshot: "
                              f"pass --challenger {pinned[0].split('#')[0]}, not {pinned[0]}")
        # A race compares test-then-train losses on the same labels, whatever the metric asked.
        experiment["metric"] = "loss"
    assignments = _assignments(strategy, base, others, weight)
    policy = PolicyChanged(
        model=name, sequence=_next_sequence(view, name), strategy=strategy,
        assignments=assignments, reason=f"deploy {strategy} by the operator",
        decided_at=now or utc_now(), action="deploy",
        schedule=[parse_step(s) for s in steps],
        **{k: v for k, v in experiment.items() if v is not None},
    )  # fmt: skip
    return checked(view, policy)


def promote(view: RegistryView, name: str, version: str | None = None) -> PolicyChanged:
    """Make the challenger (or `version`) the champion; blue-green switches to green first.

    Raises:
        PolicyError: nothing to promote.

    """
    policy = view.policy(name)
    if version is not None:
        return _single(view, name, parse_target(version), "promote", f"promote {version}")
    if policy is None or policy.strategy == "single":
        raise PolicyError(f"{name} runs a single champion: nothing to promote "
                          "(`riverrun models deploy` a challenger first, or pass --version)")
    if policy.strategy == "blue-green":
        blue = next(a for a in policy.assignments if a.role == "blue")
        green = next(a for a in policy.assignments if a.role == "green")
        if green.weight <= blue.weight:
            return _switch(view, policy, to_green=True)
        return _single(view, name, (green.version, green.snapshot), "promote",
                       "promote green: blue is released from standby")
    live = [a for a in policy.assignments if a.role != "champion"]
    if policy.strategy in ("ab", "bandit"):
        live = sorted((a for a in policy.assignments if a.role != "shadow"),
                      key=lambda a: a.weight, reverse=True)
    if not live:
        raise PolicyError(f"{name}: the {policy.strategy} policy has no challenger to promote")
    chosen = live[0]
    return _single(view, name, (chosen.version, chosen.snapshot), "promote",
                   f"promote {name}@{chosen.version} ({chosen.role}) by the operator")


def rollback(view: RegistryView, name: str, to: str | None = None) -> PolicyChanged:
    """Back to `to` (VERSION or VERSION#SNAPSHOT), else to the version before the current one.

    Blue-green switches back to blue at once; canary, A/B, bandit and shadow policies go back
    to their champion; a single champion goes back to the highest earlier version.

    Raises:
        PolicyError: no earlier version to go back to.

    """
    if to is not None:
        return _single(view, name, parse_target(to), "rollback",
                       f"rollback to {to} by the operator")
    policy = view.policy(name)
    if policy is not None and policy.strategy == "blue-green":
        return _switch(view, policy, to_green=False)
    if policy is not None and policy.strategy != "single":
        live = [a for a in policy.assignments if a.role != "shadow"] or policy.assignments
        champion = next((a for a in live if a.role == "champion"), live[0])
        return _single(view, name, (champion.version, champion.snapshot), "rollback",
                       f"rollback of the {policy.strategy} to its champion by the operator")
    current = champion_target(view, name)
    if current is None:
        raise PolicyError(f"{name} has no release")
    earlier = [v.version for v in view.versions(name) if v.version < current[0]]
    if not earlier:
        raise PolicyError(f"{name}@{current[0]} has no earlier version: pass --to VERSION#SNAPSHOT")
    return _single(view, name, (earlier[-1], None), "rollback",
                   f"rollback from {name}@{current[0]} to {name}@{earlier[-1]} by the operator")


def checked(view: RegistryView, policy: PolicyChanged) -> PolicyChanged:
    """The policy, once its versions and snapshots are released and it compiles.

    Raises:
        PolicyError: a version or snapshot the registry does not have, or a bad policy.

    """
    for assignment in policy.assignments:
        if view.version(policy.model, assignment.version) is None:
            raise PolicyError(f"{policy.model}@{assignment.version} is not released "
                              f"(`riverrun models list` shows what is)")
        if assignment.snapshot is not None and assignment.snapshot not in {
            s.snapshot for s in view.snapshots(policy.model, assignment.version)
        }:
            raise PolicyError(f"{policy.model}@{assignment.version}#{assignment.snapshot} is not "
                              f"a published snapshot (`riverrun models show "
                              f"{policy.model}@{assignment.version}`)")
    try:
        plan_for(policy, policy.model, view.default_version(policy.model))
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc
    return policy


# -- helpers -----------------------------------------------------------------------------------


def _next_sequence(view: RegistryView, name: str) -> int:
    # Past a retired policy's too: a view ignores a policy at or below it.
    return view.policy_sequence(name) + 1


def _assignment(target: tuple[int, int | None], role: str, weight: float) -> PolicyAssignment:
    return PolicyAssignment(version=target[0], snapshot=target[1], role=role,
                            weight=weight)


def _assignments(
    strategy: str,
    base: tuple[int, int | None],
    others: list[tuple[int, int | None]],
    weight: float | None,
) -> list[PolicyAssignment]:
    if strategy == "single":
        return [_assignment(base, "champion", 1.0)]
    if strategy == "shadow":
        shadows = [_assignment(o, "shadow", 0.0) for o in others]
        return [_assignment(base, "champion", 1.0), *shadows]
    if strategy == "canary":
        share = 0.05 if weight is None else weight
        return [_assignment(base, "champion", 1.0 - share), _assignment(others[0], "canary", share)]
    if strategy == "blue-green":
        return [_assignment(base, "blue", 1.0), _assignment(others[0], "green", 0.0)]
    if strategy == "race":
        candidates = [_assignment(o, "candidate", 0.0) for o in others]
        return [_assignment(base, "champion", 1.0), *candidates]
    arms = [base, *others]
    if weight is None:
        weights = [1.0 / len(arms)] * len(arms)
    else:
        rest = 1.0 - weight * len(others)
        if rest < 0.0:
            raise PolicyError(f"--weight {weight:g} for {len(others)} challengers leaves the first "
                              f"arm {rest:g}: lower it")
        weights = [rest] + [weight] * len(others)
    return [_assignment(a, "arm", round(w, 6)) for a, w in zip(arms, weights, strict=True)]


def _single(
    view: RegistryView, name: str, target: tuple[int, int | None], action: str, reason: str
) -> PolicyChanged:
    policy = PolicyChanged(model=name, sequence=_next_sequence(view, name), strategy="single",
                           assignments=[_assignment(target, "champion", 1.0)], reason=reason,
                           action=action)
    return checked(view, policy)


def _switch(view: RegistryView, policy: PolicyChanged, *, to_green: bool) -> PolicyChanged:
    assignments = [
        a.model_copy(update={"weight": 1.0 if (a.role == "green") == to_green else 0.0})
        if a.role in ("blue", "green") else a
        for a in policy.assignments
    ]
    colour = "green" if to_green else "blue"
    switched = policy.model_copy(update={
        "sequence": _next_sequence(view, policy.model), "assignments": assignments,
        "reason": f"switch to {colour} by the operator", "decided_by": "operator",
        "decided_at": utc_now(), "action": "switch" if to_green else "rollback",
        "experiment": policy.experiment_id,
    })  # fmt: skip
    return checked(view, switched)


def learning_versions(view: RegistryView, name: str) -> list[int]:
    """Every version that learns now, the champion first.

    The champion and every version the policy names (challengers, canaries, arms, shadows,
    race candidates, blue-green's standby) learn from the same labels, each from its own
    release on, so a version promoted later is as fresh as the one it replaces. A version
    released since the policy was decided (with no policy: any live version) learns too while
    it waits for a deployment; one a policy left out (a race's loser) does not, nor one it
    pins to a snapshot (a frozen baseline serves that snapshot; a pinned champion learns).
    """
    target = champion_target(view, name)
    if target is None:
        return []
    versions = [target[0]]
    policy = view.policy(name)
    named = {a.version for a in policy.assignments if a.snapshot is None} if policy else set()
    pinned = {a.version for a in policy.assignments} - named if policy else set()
    for release in view.versions(name):
        if release.version in versions or release.version in pinned:
            continue
        if policy is None or release.version in named or release.released_at > policy.decided_at:
            versions.append(release.version)
    return versions
