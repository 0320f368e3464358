"""The judge's decisions, pure: from a policy and its versions' evidence to the next policy.

- canary: roll back when the canary's error and dead-letter rate exceeds the champion's by more
  than `max_error_rate`, or when it is worse than the champion by more than `margin`; promote it
  when it is no worse than the champion by the margin. Both at `alpha`, sequentially (mSPRT).
- ab: promote the leader once it beats every other arm, at alpha shared among the pairs
  (Bonferroni), so an A/A test promotes at most alpha of the time.
- bandit: re-weight by Thompson sampling, the floor at `exploration`.
- race: the candidates only learn; each is judged on its losses paired with the champion's on
  the same examples since the experiment began (`PairedEvidence`), by a confidence sequence
  on the mean advantage at alpha / K (K: the candidates the experiment began with, so the
  chance that any of them is wrongly promoted or retired stays below alpha however often the
  judge looks). Once `min_samples` pairs are in: the candidate established better than the
  champion by more than `margin` with the largest mean advantage is promoted and the others
  retired. A candidate established worse keeps learning (status says so): a concept drift
  can turn it, and a drift of the champion's learning loss starts the race's evidence
  afresh (`restart_race`), since evidence from before it compares the versions on a concept
  that is gone.
  A promotion starts a probation: a new race (a new experiment) with the winner as champion
  and the previous champion as its only candidate. If the previous champion wins it back,
  the new champion regressed: that is a rollback to a single champion (no third race, so two
  close versions cannot swap back and forth); if it is retired, the probation ends with the
  new champion alone. Hysteresis: a new experiment (a promotion, a probation) counts from zero
  evidence and from the examples the previous one reached, and must show significance again;
  evidence is never carried from one experiment to the next. A retirement continues the
  experiment, its evidence and its alpha split.
- single, shadow, blue-green: nothing to decide; `assess` still reports the comparisons.

Every decision is a `PolicyChanged` with the next sequence, `decided_by="judge"`, a reason a
person can read and the numbers behind it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from riverrun.schemas import PolicyAssignment, PolicyChanged
from riverrun.workers.judge.evidence import PairedEvidence, VersionEvidence
from riverrun.workers.judge.statistics import (
    Comparison,
    PairedTest,
    compare,
    paired_test,
    rate_exceeds,
    thompson_bernoulli,
    thompson_normal,
    with_floor,
)

# A bandit's weights are republished only when one moves by at least this much.
REWEIGHT_TOLERANCE = 0.01
# Keys of a race decision's `numbers`: the champion a promotion or rollback replaced (a
# probation's candidate), and how many candidates the experiment began with (alpha's split).
VERSION_PREVIOUS = "version_previous"
RACE_SIZE = "race_candidates"


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


def race_candidates(policy: PolicyChanged) -> list[PolicyAssignment]:
    """A race's candidates: the versions learning beside the champion, never answering."""
    champion = champion_of(policy).version
    return [a for a in policy.assignments if a.role == "candidate" and a.version != champion]


def race_size(policy: PolicyChanged) -> int:
    """How many candidates the race's experiment began with: alpha stays split among them.

    A retirement continues the experiment with fewer candidates; splitting alpha among those
    left would let the error of the whole experiment grow past alpha, so the count the
    experiment began with travels in the decision's numbers.
    """
    current = len(race_candidates(policy))
    began_with = policy.numbers.get(RACE_SIZE) if policy.experiment is not None else None
    return max(int(began_with or 0), current, 1)


def probation_of(policy: PolicyChanged) -> int | None:
    """The previous champion a race holds on probation (the judge's promotion), else None."""
    previous = policy.numbers.get(VERSION_PREVIOUS)
    if policy.strategy != "race" or policy.action != "promote" or previous is None:
        return None
    return int(previous) if int(previous) in {a.version for a in race_candidates(policy)} else None


def race_tests(
    policy: PolicyChanged, paired: Mapping[int, PairedEvidence], *, effect: float = 0.1
) -> dict[int, PairedTest | None]:
    """Each candidate's paired test at alpha / K; None for a candidate with no evidence yet."""
    alpha = policy.alpha / race_size(policy)
    tests: dict[int, PairedTest | None] = {}
    for candidate in race_candidates(policy):
        found = paired.get(candidate.version)
        tests[candidate.version] = None if found is None else paired_test(
            found.differences, margin=policy.margin, alpha=alpha,
            min_samples=policy.min_samples, effect=effect,
        )  # fmt: skip
    return tests


def decide(
    policy: PolicyChanged,
    evidence: Mapping[int, VersionEvidence],
    *,
    now: datetime,
    rng: np.random.Generator,
    effect: float = 0.1,
    draws: int = 4000,
    paired: Mapping[int, PairedEvidence] | None = None,
) -> PolicyChanged | None:
    """The policy that should follow `policy` given the evidence, or None to keep it.

    `paired` is a race's evidence: per candidate, its losses paired with the champion's in
    the policy's experiment (the judge's `Judge.paired`).
    """
    if policy.strategy == "race":
        return _decide_race(policy, paired or {}, now, effect)
    if policy.strategy == "canary":
        return _decide_canary(policy, evidence, now, effect)
    if policy.strategy == "ab":
        return _decide_ab(policy, evidence, now, effect)
    if policy.strategy == "bandit":
        return _decide_bandit(policy, evidence, now, rng, draws)
    return None


def assess(
    policy: PolicyChanged,
    evidence: Mapping[int, VersionEvidence],
    *,
    effect: float = 0.1,
    paired: Mapping[int, PairedEvidence] | None = None,
) -> list[dict[str, Any]]:
    """Every comparison the judge makes for this policy, with its numbers and verdict."""
    if policy.strategy == "race":
        return assess_race(policy, paired or {}, effect=effect)
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


def assess_race(
    policy: PolicyChanged, paired: Mapping[int, PairedEvidence], *, effect: float = 0.1
) -> list[dict[str, Any]]:
    """Per candidate: its paired evidence since the experiment began, bounds and verdict.

    Rows have `kind: "paired"`; a value nothing is known of yet is None (JSON null), and a
    candidate with no paired snapshot yet has verdict None.
    """
    champion = champion_of(policy)
    alpha = policy.alpha / race_size(policy)
    rows = []
    for version, test in race_tests(policy, paired, effect=effect).items():
        found = paired.get(version)
        rows.append({
            "kind": "paired", "control": champion.version, "challenger": version,
            "role": "candidate", "verdict": test.verdict if test is not None else None,
            "alpha": alpha, "margin": policy.margin,
            "n": test.n if test is not None else None,
            "mean_advantage": test.mean if test is not None and test.n else None,
            "lower": _finite(test.lower) if test is not None else None,
            "upper": _finite(test.upper) if test is not None else None,
            "snapshot": found.snapshot if found is not None else None,
            "since_offset": found.since_offset if found is not None else None,
            "reached": found.reached if found is not None else None,
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
        "experiment": policy.experiment_id, "experiment_began": policy.experiment_began_at,
    })  # fmt: skip


def _decide_race(
    policy: PolicyChanged, paired: Mapping[int, PairedEvidence], now: datetime, effect: float
) -> PolicyChanged | None:
    candidates = race_candidates(policy)
    tests = race_tests(policy, paired, effect=effect)
    winners = [c for c in candidates if _verdict(tests[c.version]) == "better"]
    if winners:
        best = max(winners, key=lambda c: _tested(tests[c.version]).mean)
        return _crown(policy, best, _tested(tests[best.version]), paired, now)
    # Only a probation retires its candidate early: a race's candidate established worse
    # keeps learning, since a drift can turn it (the race's evidence restarts on a drift).
    previous = probation_of(policy)
    losers = [c for c in candidates
              if c.version == previous and _verdict(tests[c.version]) == "worse"]
    if losers:
        return _retire(policy, losers, tests, now)
    return None


def _crown(
    policy: PolicyChanged,
    winner: PolicyAssignment,
    test: PairedTest,
    paired: Mapping[int, PairedEvidence],
    now: datetime,
) -> PolicyChanged:
    """Promote a race's winner (probation for the champion it replaces), or roll back."""
    champion = champion_of(policy)
    model, size = policy.model, race_size(policy)
    numbers = {**test.numbers(), "version_control": float(champion.version),
               "version_winner": float(winner.version), VERSION_PREVIOUS: float(champion.version),
               "candidates": float(len(race_candidates(policy))), RACE_SIZE: float(size)}
    evidence = (f"by {test.mean:.4g} loss per label over {test.n} paired labels, confidence "
                f"sequence [{test.lower:.4g}, {test.upper:.4g}] above margin {policy.margin:g}, "
                f"alpha {policy.alpha:g} over {size} candidate(s)")
    if probation_of(policy) == winner.version:
        reason = (f"rollback: {model}@{champion.version} regressed on probation: "
                  f"{model}@{winner.version}, the champion it replaced, beats it {evidence}")
        return _single(policy, winner, now, "rollback", reason, numbers)
    retired = [c.version for c in race_candidates(policy) if c.version != winner.version]
    reason = (f"promote: candidate {model}@{winner.version} beats champion "
              f"{model}@{champion.version} {evidence}; {model}@{champion.version} races it on "
              f"probation from zero evidence"
              + (f"; retired {', '.join(f'{model}@{v}' for v in retired)}" if retired else ""))
    reached = [p.reached for p in paired.values() if p.reached is not None]
    assignments = [
        PolicyAssignment(version=winner.version, snapshot=winner.snapshot, role="champion"),
        PolicyAssignment(version=champion.version, snapshot=champion.snapshot,
                         role="candidate", weight=0.0),
        *(a for a in policy.assignments if a.role == "shadow"),
    ]  # fmt: skip
    return policy.model_copy(update={
        "sequence": policy.sequence + 1, "strategy": "race", "assignments": assignments,
        "reason": reason, "numbers": numbers, "decided_by": "judge", "decided_at": now,
        "action": "promote", "experiment": None, "experiment_began": None,
        "examples_from": max(reached) if reached else policy.examples_from,
    })  # fmt: skip


def _retire(
    policy: PolicyChanged,
    losers: list[PolicyAssignment],
    tests: Mapping[int, PairedTest | None],
    now: datetime,
) -> PolicyChanged:
    """Drop the candidates that cannot beat the champion by the margin; the race goes on."""
    champion = champion_of(policy)
    model, size = policy.model, race_size(policy)
    numbers: dict[str, float] = {"version_control": float(champion.version),
                                 RACE_SIZE: float(size)}
    said = []
    for i, loser in enumerate(losers):
        test = _tested(tests[loser.version])
        numbers.update({f"retired{i}_version": float(loser.version),
                        **test.numbers(prefix=f"retired{i}_")})
        said.append(f"{model}@{loser.version} (advantage {test.mean:.4g} over {test.n} paired "
                    f"labels, upper bound {test.upper:.4g})")
    gone = {loser.version for loser in losers}
    left = [a for a in policy.assignments if not (a.role == "candidate" and a.version in gone)]
    cannot = (f"cannot beat champion {model}@{champion.version} by margin {policy.margin:g} "
              f"at alpha {policy.alpha:g} over {size} candidate(s)")
    if not [a for a in left if a.role == "candidate"]:
        ended = "probation ended: " if probation_of(policy) in gone else ""
        reason = (f"retire: {ended}{'; '.join(said)} {cannot}; "
                  f"{model}@{champion.version} answers alone")
        return _single(policy, champion, now, "retire", reason, numbers)
    reason = f"retire: {'; '.join(said)} {cannot}; the race goes on"
    return policy.model_copy(update={
        "sequence": policy.sequence + 1, "assignments": left, "reason": reason,
        "numbers": numbers, "decided_by": "judge", "decided_at": now, "action": "retire",
        "experiment": policy.experiment_id, "experiment_began": policy.experiment_began_at,
        "examples_from": policy.examples_from,
    })  # fmt: skip


def restart_race(
    policy: PolicyChanged, now: datetime, reason: str, examples_from: int | None
) -> PolicyChanged:
    """The same race in a new experiment: its evidence counts again from `examples_from`."""
    return policy.model_copy(update={
        "sequence": policy.sequence + 1, "reason": f"restart: {reason}; the race's evidence "
        "counts again from here", "numbers": {}, "decided_by": "judge", "decided_at": now,
        "action": "restart", "experiment": None, "experiment_began": None,
        "examples_from": examples_from,
    })  # fmt: skip


# -- helpers -----------------------------------------------------------------------------------


def _verdict(test: PairedTest | None) -> str | None:
    return test.verdict if test is not None else None


def _tested(test: PairedTest | None) -> PairedTest:
    if test is None:
        raise ValueError("a candidate with no paired evidence has no verdict to act on")
    return test


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


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
