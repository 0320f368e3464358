"""The judge's decisions, pure: from a policy and its versions' evidence to the next policy.

- canary: roll back when the canary's error and dead-letter rate exceeds the champion's by more
  than `max_error_rate`, or when it is worse than the champion by more than `margin`; promote it
  when it is no worse than the champion by the margin. Both at `alpha`, sequentially (mSPRT).
- ab: promote the leader once it beats every other arm, at alpha shared among the pairs
  (Bonferroni), so an A/A test promotes at most alpha of the time.
- bandit: re-weight by Thompson sampling, the floor at `exploration`.
- single, shadow, blue-green: nothing to decide; `assess` still reports the comparisons.

Every decision is a `PolicyChanged` with the next sequence, `decided_by="judge"`, a reason a
person can read and the numbers behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from riverrun.schemas import PolicyAssignment, PolicyChanged
from riverrun.workers.judge.evidence import VersionEvidence
from riverrun.workers.judge.statistics import (
    Comparison,
    compare,
    rate_exceeds,
    thompson_bernoulli,
    thompson_normal,
    with_floor,
)

# A bandit's weights are republished only when one moves by at least this much.
REWEIGHT_TOLERANCE = 0.01


def live_assignments(policy: PolicyChanged) -> list[PolicyAssignment]:
    """The assignments that answer requests (not shadows), in the policy's order."""
    return [a for a in policy.assignments if a.role != "shadow"]


def champion_of(policy: PolicyChanged) -> PolicyAssignment:
    """The champion assignment (the first live one when none is named)."""
    live = live_assignments(policy)
    for assignment in live:
        if assignment.role == "champion":
            return assignment
    return live[0] if live else policy.assignments[0]


def decide(
    policy: PolicyChanged,
    evidence: Mapping[int, VersionEvidence],
    *,
    now: datetime,
    rng: np.random.Generator,
    effect: float = 0.1,
    draws: int = 4000,
) -> PolicyChanged | None:
    """The policy that should follow `policy` given the evidence, or None to keep it."""
    if policy.strategy == "canary":
        return _decide_canary(policy, evidence, now, effect)
    if policy.strategy == "ab":
        return _decide_ab(policy, evidence, now, effect)
    if policy.strategy == "bandit":
        return _decide_bandit(policy, evidence, now, rng, draws)
    return None


def assess(
    policy: PolicyChanged, evidence: Mapping[int, VersionEvidence], *, effect: float = 0.1
) -> list[dict[str, Any]]:
    """Every comparison the judge makes for this policy, with its numbers and verdict."""
    control = champion_of(policy)
    if policy.strategy in ("ab", "bandit"):
        control = live_assignments(policy)[0]
    rows = []
    for other in policy.assignments:
        if other is control or other.version == control.version:
            continue
        result = _compare(policy, evidence, control, other, effect, policy.alpha)
        rows.append({
            "control": control.version, "challenger": other.version, "role": other.role,
            "verdict": result.verdict, "numbers": result.numbers(),
        })  # fmt: skip
    return rows


# -- strategies --------------------------------------------------------------------------------


def _decide_canary(
    policy: PolicyChanged, evidence: Mapping[int, VersionEvidence], now: datetime, effect: float
) -> PolicyChanged | None:
    champion = champion_of(policy)
    canaries = [a for a in live_assignments(policy) if a.role in ("canary", "challenger")]
    if not canaries:
        return None
    canary = canaries[0]
    old, new = _of(evidence, champion.version), _of(evidence, canary.version)
    broken, error_numbers = rate_exceeds(
        old.errors, old.n + old.errors, new.errors, new.n + new.errors,
        bound=policy.max_error_rate, alpha=policy.alpha, min_samples=policy.min_samples,
        effect=effect,
    )  # fmt: skip
    if broken:
        reason = (
            f"rollback: canary {policy.model}@{canary.version} fails on "
            f"{error_numbers['error_rate_challenger']:.2%} of its requests against the "
            f"champion's {error_numbers['error_rate_control']:.2%}, beyond the bound "
            f"{policy.max_error_rate:.2%} (always-valid p "
            f"{error_numbers.get('error_always_valid_p', 1.0):.3g} < alpha {policy.alpha:g})"
        )
        return _single(policy, champion, now, "rollback", reason,
                       {**error_numbers, **_versions(champion, canary)})
    result = _compare(policy, evidence, champion, canary, effect, policy.alpha)
    numbers = {**result.numbers(), **_versions(champion, canary)}
    if result.verdict == "better":
        reason = (f"promote: canary {policy.model}@{canary.version} is no worse than champion "
                  f"{policy.model}@{champion.version} at margin {policy.margin:g} "
                  f"({_summary(result)})")
        return _single(policy, canary, now, "promote", reason, numbers)
    if result.verdict == "worse":
        reason = (f"rollback: canary {policy.model}@{canary.version} is worse than champion "
                  f"{policy.model}@{champion.version} by more than margin {policy.margin:g} "
                  f"({_summary(result)})")
        return _single(policy, champion, now, "rollback", reason, numbers)
    return None


def _decide_ab(
    policy: PolicyChanged, evidence: Mapping[int, VersionEvidence], now: datetime, effect: float
) -> PolicyChanged | None:
    arms = live_assignments(policy)
    if len(arms) < 2:
        return None
    higher_better = policy.metric == "accuracy"
    means = [_of(evidence, a.version).score(policy.metric).mean for a in arms]
    leader_index = int(np.argmax(means) if higher_better else np.argmin(means))
    leader = arms[leader_index]
    pairs = len(arms) * (len(arms) - 1) // 2
    alpha = policy.alpha / pairs
    results = []
    for other in arms:
        if other is leader:
            continue
        result = _compare(policy, evidence, other, leader, effect, alpha, margin=0.0)
        if result.verdict != "better":
            return None
        results.append(result)
    weakest = max(results, key=lambda r: r.always_valid_p)
    numbers = {**weakest.numbers(), "version_winner": float(leader.version),
               "arms": float(len(arms)), "alpha_per_pair": alpha}
    reason = (f"promote: {policy.model}@{leader.version} ({_route_of(arms, leader)}) beats every "
              f"other arm on {policy.metric}"
              + (f" for '{policy.hypothesis}'" if policy.hypothesis else "")
              + f"; weakest comparison: {_summary(weakest)}, alpha {policy.alpha:g} over "
              f"{pairs} pair(s)")
    return _single(policy, leader, now, "promote", reason, numbers)


def _decide_bandit(
    policy: PolicyChanged,
    evidence: Mapping[int, VersionEvidence],
    now: datetime,
    rng: np.random.Generator,
    draws: int,
) -> PolicyChanged | None:
    arms = live_assignments(policy)
    if len(arms) < 2:
        return None
    evs = [_of(evidence, a.version) for a in arms]
    if policy.metric == "accuracy":
        successes = [e.correct.total for e in evs]
        failures = [e.correct.n - e.correct.total for e in evs]
        share = thompson_bernoulli(successes, failures, rng, draws)
    else:
        # Scores are minus the losses, so the highest score is the lowest loss.
        share = thompson_normal([-e.loss.mean for e in evs], [e.loss.variance for e in evs],
                                [e.n for e in evs], rng, draws)
    weights = with_floor(share, policy.exploration)
    current = np.array([a.weight for a in arms], dtype=np.float64)
    current = current / current.sum() if current.sum() > 0 else current
    if float(np.max(np.abs(weights - current))) < REWEIGHT_TOLERANCE:
        return None
    new_weights = iter(weights.tolist())
    assignments = [
        a.model_copy(update={"weight": round(next(new_weights), 6)}) if a.role != "shadow" else a
        for a in policy.assignments
    ]
    numbers: dict[str, float] = {}
    for i, (arm, ev, w) in enumerate(zip(arms, evs, weights, strict=True)):
        numbers[f"arm{i}_version"] = float(arm.version)
        numbers[f"arm{i}_n"] = float(ev.n)
        numbers[f"arm{i}_mean"] = ev.score(policy.metric).mean
        numbers[f"arm{i}_weight"] = float(w)
    shares = ", ".join(f"@{a.version} {w:.1%}" for a, w in zip(arms, weights, strict=True))
    reason = (f"reweight: Thompson sampling on {policy.metric} over "
              f"{sum(e.n for e in evs)} outcomes, floor {policy.exploration:g}: {shares}")
    return policy.model_copy(update={
        "sequence": policy.sequence + 1, "assignments": assignments, "reason": reason,
        "numbers": numbers, "decided_by": "judge", "decided_at": now, "action": "reweight",
        "experiment": policy.experiment_id,
    })  # fmt: skip


# -- helpers -----------------------------------------------------------------------------------


def _of(evidence: Mapping[int, VersionEvidence], version: int) -> VersionEvidence:
    return evidence.get(version) or VersionEvidence()


def _compare(
    policy: PolicyChanged,
    evidence: Mapping[int, VersionEvidence],
    control: PolicyAssignment,
    challenger: PolicyAssignment,
    effect: float,
    alpha: float,
    *,
    margin: float | None = None,
) -> Comparison:
    metric = policy.metric
    return compare(
        _of(evidence, control.version).score(metric),
        _of(evidence, challenger.version).score(metric),
        metric=metric, margin=policy.margin if margin is None else margin, alpha=alpha,
        min_samples=policy.min_samples, effect=effect,
    )  # fmt: skip


def _summary(result: Comparison) -> str:
    return (f"{result.metric} {result.mean_challenger:.4g} vs {result.mean_control:.4g} over "
            f"{result.n_challenger}/{result.n_control} outcomes, statistic "
            f"{result.test.statistic:.3g}, always-valid p {result.always_valid_p:.3g} < alpha "
            f"{result.alpha:.3g}")


def _versions(control: PolicyAssignment, challenger: PolicyAssignment) -> dict[str, float]:
    return {"version_control": float(control.version),
            "version_challenger": float(challenger.version)}


def _route_of(arms: list[PolicyAssignment], arm: PolicyAssignment) -> str:
    return f"arm-{arms.index(arm)}"


def _single(
    policy: PolicyChanged,
    winner: PolicyAssignment,
    now: datetime,
    action: str,
    reason: str,
    numbers: dict[str, float],
) -> PolicyChanged:
    return PolicyChanged(
        model=policy.model,
        sequence=policy.sequence + 1,
        strategy="single",
        assignments=[PolicyAssignment(version=winner.version, snapshot=winner.snapshot,
                                      role="champion", weight=1.0)],
        reason=reason,
        numbers=numbers,
        decided_by="judge",
        decided_at=now,
        action=action,
        hypothesis=policy.hypothesis,
        metric=policy.metric,
        margin=policy.margin,
        alpha=policy.alpha,
        min_samples=policy.min_samples,
    )
