"""The judge's decision core, driven by simulated outcomes: promote, roll back, re-weight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

from riverrun.schemas import OutcomeRecorded, PolicyAssignment, PolicyChanged, PredictionMade
from riverrun.workers.judge.core import Judge
from riverrun.workers.routing import plan_for

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def canary_policy(sequence: int = 5, weight: float = 0.2, **extra: object) -> PolicyChanged:
    return PolicyChanged(
        model="fraud", sequence=sequence, strategy="canary", decided_at=T0,
        assignments=[PolicyAssignment(version=1, role="champion"),
                     PolicyAssignment(version=2, role="canary", weight=weight)],
        **extra,
    )  # type: ignore[arg-type]


def outcome(
    version: int, route: str, correct: bool, i: int, loss: float | None = None,
    scored_at: datetime | None = None,
) -> OutcomeRecorded:
    return OutcomeRecorded.model_construct(
        request_id=f"r{i}", model="fraud", version=version, snapshot=0, route=route,
        prediction=True, label=correct, loss=(0.0 if correct else 1.0) if loss is None else loss,
        scored_at=scored_at,
    )


class Stream:
    """Requests routed by the policy's plan, each answered correctly with its version's rate."""

    def __init__(self, policy: PolicyChanged, rates: dict[int, float], seed: int,
                 scored_at: datetime | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.rates = rates
        self.i = 0
        self.plan = plan_for(policy, "fraud", None)
        self.scored_at = scored_at

    def batch(self, size: int) -> list[OutcomeRecorded]:
        assert self.plan is not None
        keys = [f"k{self.i + j}".encode() for j in range(size)]
        arms = self.plan.assign_many(keys, T0.timestamp())
        out = []
        for j in range(size):
            arm = self.plan.arms[0 if arms is None else int(arms[j])]
            correct = bool(self.rng.random() < self.rates[arm.version])
            out.append(outcome(arm.version, arm.route, correct, self.i, scored_at=self.scored_at))
            self.i += 1
        return out


def run_until_decision(judge: Judge, policy: PolicyChanged, rates: dict[int, float], seed: int,
                       limit: int = 40_000) -> tuple[PolicyChanged | None, int]:
    judge.observe_policy(policy)
    stream = Stream(policy, rates, seed)
    while stream.i < limit:
        judge.observe_outcomes(stream.batch(100))
        decisions = judge.decide(T0)
        if decisions:
            return decisions[0], stream.i
    return None, stream.i


def test_a_better_canary_is_promoted_within_a_bounded_number_of_outcomes() -> None:
    for seed in range(10):
        judge = Judge(seed=seed)
        decision, seen = run_until_decision(judge, canary_policy(), {1: 0.65, 2: 0.85}, seed)
        assert decision is not None and seen <= 6000, seen
        assert decision.action == "promote" and decision.decided_by == "judge"
        assert decision.strategy == "single" and decision.sequence == 6
        assert [(a.version, a.role) for a in decision.assignments] == [(2, "champion")]
        assert decision.numbers["always_valid_p"] < 0.05
        assert decision.numbers["n_challenger"] >= 200 and decision.numbers["n_control"] >= 200
        assert decision.numbers["mean_challenger"] > decision.numbers["mean_control"]
        assert decision.reason.startswith("promote: canary fraud@2 is no worse")


def test_a_worse_canary_is_rolled_back() -> None:
    for seed in range(10):
        judge = Judge(seed=seed)
        decision, seen = run_until_decision(judge, canary_policy(), {1: 0.8, 2: 0.6}, seed)
        assert decision is not None and seen <= 6000
        assert decision.action == "rollback"
        assert [(a.version, a.role) for a in decision.assignments] == [(1, "champion")]
        assert decision.reason.startswith("rollback: canary fraud@2 is worse")


def test_a_canary_that_fails_requests_is_rolled_back_on_its_error_rate() -> None:
    judge = Judge(seed=1)
    judge.observe_policy(canary_policy(min_samples=100))
    stream = Stream(canary_policy(), {1: 0.7, 2: 0.7}, seed=1)
    for _ in range(30):
        judge.observe_outcomes(stream.batch(100))
        judge.observe_errors([("fraud", 2)] * 30 + [("fraud", 1)] * 1)
        decisions = judge.decide(T0)
        if decisions:
            break
    assert decisions and decisions[0].action == "rollback"
    assert "fails on" in decisions[0].reason
    assert decisions[0].numbers["error_rate_challenger"] > 0.1


def test_a_a_tests_promote_at_most_alpha_of_the_time() -> None:
    promoted = 0
    seeds = 60
    for seed in range(seeds):
        judge = Judge(seed=seed)
        policy = PolicyChanged(model="fraud", sequence=2, strategy="ab", assignments=[
            PolicyAssignment(version=1, role="arm", weight=0.5),
            PolicyAssignment(version=2, role="arm", weight=0.5)])
        decision, _ = run_until_decision(judge, policy, {1: 0.7, 2: 0.7}, seed, limit=4000)
        promoted += decision is not None
    assert promoted / seeds <= 0.05, promoted


def test_an_ab_winner_is_promoted_with_its_numbers() -> None:
    judge = Judge(seed=4)
    policy = PolicyChanged(model="fraud", sequence=2, strategy="ab", hypothesis="v3 is better",
                           assignments=[PolicyAssignment(version=1, role="arm", weight=0.5),
                                        PolicyAssignment(version=3, role="arm", weight=0.5)])
    decision, _ = run_until_decision(judge, policy, {1: 0.6, 3: 0.8}, seed=4)
    assert decision is not None and decision.action == "promote"
    assert decision.assignments[0].version == 3 and decision.numbers["version_winner"] == 3
    assert "v3 is better" in decision.reason


def test_decisions_are_made_once_per_policy_sequence() -> None:
    judge = Judge(seed=2)
    decision, _ = run_until_decision(judge, canary_policy(), {1: 0.6, 2: 0.9}, seed=2)
    assert decision is not None
    assert judge.decide(T0) == [], "no second decision before the first comes back"
    assert judge.observe_policy(decision)
    assert not judge.observe_policy(decision), "a decision read twice applies once"
    assert judge.decide(T0) == [], "a single policy needs no decision"


def test_a_bandit_is_reweighted_on_a_cadence_and_keeps_its_experiment() -> None:
    judge = Judge(seed=3, bandit_interval_s=10.0)
    policy = PolicyChanged(model="fraud", sequence=7, strategy="bandit", exploration=0.1,
                           assignments=[PolicyAssignment(version=1, role="arm", weight=0.5),
                                        PolicyAssignment(version=2, role="arm", weight=0.5)])
    judge.observe_policy(policy)
    judge.observe_outcomes(Stream(policy, {1: 0.4, 2: 0.8}, seed=3).batch(2000))
    first = judge.decide(T0, monotonic=100.0)
    assert len(first) == 1
    reweighted = first[0]
    assert reweighted.strategy == "bandit" and reweighted.action == "reweight"
    assert reweighted.experiment == 7 and reweighted.experiment_id == 7
    assert reweighted.experiment_began == policy.decided_at, "the experiment began with #7"
    weights = [a.weight for a in reweighted.assignments]
    assert weights[1] > 0.85 and weights[0] >= 0.1 - 1e-9
    judge.observe_policy(reweighted)
    assert judge.experiment_of("fraud") == 7, "re-weighting keeps the evidence"
    assert judge.decide(T0, monotonic=105.0) == [], "not before the cadence"
    # Weights already where the evidence puts them: nothing to republish.
    assert judge.decide(T0, monotonic=111.0) == []


def test_a_new_deployment_starts_from_fresh_evidence() -> None:
    judge = Judge(seed=5)
    judge.observe_policy(canary_policy(sequence=3))
    judge.observe_outcomes([outcome(2, "canary", False, i) for i in range(500)])
    judge.observe_policy(canary_policy(sequence=4))
    evidence = judge.evidence(canary_policy(sequence=4))
    assert evidence[2].n == 0
    assert judge.evidence(canary_policy(sequence=3))[2].n == 500


def test_shadow_predictions_are_judged_against_their_requests_labels() -> None:
    judge = Judge(seed=6)
    policy = PolicyChanged(model="fraud", sequence=1, strategy="shadow", decided_at=T0,
                           assignments=[PolicyAssignment(version=1, role="champion"),
                                        PolicyAssignment(version=2, role="shadow", weight=0.0)])
    judge.observe_policy(policy)
    now = T0 + timedelta(seconds=1)
    judge.observe_shadow_predictions(
        PredictionMade(request_id=f"r{i}", model="fraud", version=2, snapshot=0, route="shadow",
                       prediction=True, proba={"True": 0.9, "False": 0.1}, features={"x": 1.0},
                       scored_at=now, latency_ms=1.0)
        for i in range(300)
    )
    judge.observe_outcomes(outcome(1, "champion", i % 2 == 0, i) for i in range(300))
    evidence = judge.evidence(policy)
    assert evidence[2].n == 300 and evidence[1].n == 300
    assert evidence[2].correct.total == 150  # label True on the even requests
    state = judge.state(now)
    orjson.dumps(state)
    comparison = state["models"]["fraud"]["comparisons"][0]
    assert comparison["control"] == 1 and comparison["challenger"] == 2
    assert state["models"]["fraud"]["versions"]["2"]["n"] == 300
    assert len(judge.shadows) == 0


def test_state_shows_routes_shares_and_the_last_decision() -> None:
    judge = Judge(seed=7)
    decision, _ = run_until_decision(judge, canary_policy(), {1: 0.6, 2: 0.9}, seed=7)
    state = judge.state(T0, recent={("fraud", 1): 80, ("fraud", 2): 20})
    model = state["models"]["fraud"]
    assert [r["route"] for r in model["routes"]] == ["canary", "champion"]
    assert model["versions"]["2"]["recent_share"] == 0.2
    assert model["last_decision"]["sequence"] == 6
    assert decision is not None and model["last_decision"]["reason"] == decision.reason
    orjson.dumps(state)


def test_a_canary_deployed_after_10000_champion_outcomes_is_judged_on_outcomes_since_it_began(
) -> None:
    """The champion was right 95% of the time on the 10,000 predictions labelled before the
    canary began; since then it is right 70% of the time and the canary 80%. Judged on outcomes
    since the canary began, the canary is promoted; had the backlog counted, it would have been
    rolled back as worse than a champion that no longer exists."""
    began = T0 + timedelta(hours=3)
    policy = PolicyChanged(
        model="fraud", sequence=5, strategy="canary", decided_at=began,
        assignments=[PolicyAssignment(version=1, role="champion"),
                     PolicyAssignment(version=2, role="canary", weight=0.2)])  # fmt: skip
    rng = np.random.default_rng(8)
    backlog = [outcome(1, "champion", bool(rng.random() < 0.95), i,
                       scored_at=T0 + timedelta(seconds=i)) for i in range(10_000)]

    def judged(backlog: list[OutcomeRecorded]) -> tuple[Judge, PolicyChanged | None]:
        judge = Judge(seed=8)
        judge.observe_policy(policy)
        judge.observe_outcomes(backlog)
        stream = Stream(policy, {1: 0.7, 2: 0.8}, seed=8, scored_at=began + timedelta(seconds=1))
        stream.i = len(backlog)
        for _ in range(200):
            judge.observe_outcomes(stream.batch(100))
            decisions = judge.decide(began)
            if decisions:
                return judge, decisions[0]
        return judge, None

    judge, decision = judged(backlog)
    assert decision is not None and decision.action == "promote", decision
    assert decision.numbers["n_control"] + decision.numbers["n_challenger"] < 10_000
    state = judge.state(began)
    assert state["models"]["fraud"]["outcomes_before_experiment"] == 10_000
    assert state["outcomes_before_experiment"] == 10_000 and state["outcomes_observed"] > 10_000
    assert state["models"]["fraud"]["versions"]["1"]["n"] == decision.numbers["n_control"]
    unknown = [o.model_copy(update={"scored_at": None}) for o in backlog]
    _, counted = judged(unknown)
    assert counted is not None and counted.action == "rollback", "the backlog would have decided"


def test_shadow_predictions_made_before_the_experiment_are_not_counted() -> None:
    judge = Judge(seed=9)
    policy = PolicyChanged(model="fraud", sequence=1, strategy="shadow", decided_at=T0,
                           assignments=[PolicyAssignment(version=1, role="champion"),
                                        PolicyAssignment(version=2, role="shadow", weight=0.0)])
    judge.observe_policy(policy)
    judge.observe_shadow_predictions(
        PredictionMade(request_id=f"r{i}", model="fraud", version=2, snapshot=0, route="shadow",
                       prediction=True, features={"x": 1.0}, latency_ms=1.0,
                       scored_at=T0 + timedelta(seconds=-1 if i < 10 else 1))
        for i in range(30)
    )
    judge.observe_outcomes(outcome(1, "champion", True, i, scored_at=T0 + timedelta(seconds=1))
                           for i in range(30))
    evidence = judge.evidence(policy)
    assert (evidence[1].n, evidence[2].n) == (30, 20)
    assert judge.state(T0)["models"]["fraud"]["outcomes_before_experiment"] == 10
    assert len(judge.shadows) == 0
