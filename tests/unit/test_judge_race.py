"""Races judged on paired losses: an A/A race over many seeds, a winner, a loser, a probation.

The losses are simulated as the learner sees them: every version learns the same examples in
log order, each example gives each version a 0/1 loss, and the losses of one example are
correlated across versions (a hard example is hard for all of them): version v errs when
sqrt(c) * z + sqrt(1 - c) * e_v < Phi^-1(p_v), z shared by the example, e_v its own. The
learner's paired counts are cumulative from the experiment's start (`examples_from`), and every
`every` examples each candidate publishes a snapshot carrying them; the judge looks after each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from scipy import special

from riverrun.schemas import (
    ArtifactRef,
    DriftDetected,
    PairedLoss,
    PolicyAssignment,
    PolicyChanged,
    SnapshotPublished,
)
from riverrun.workers.judge.core import Judge
from riverrun.workers.judge.decision import (
    VERSION_PREVIOUS,
    assess,
    champion_of,
    probation_of,
    race_candidates,
)
from riverrun.workers.judge.statistics import (
    Moments,
    confidence_sequence,
    mixture_radius,
    msprt_log_lr,
    paired_test,
)
from riverrun.workers.routing.command import _print_status

T0 = datetime(2026, 3, 1, tzinfo=UTC)
LINEAGE = "examples:0"
FloatArray = npt.NDArray[np.float64]
Losses = Mapping[int, FloatArray]
ARTIFACT = ArtifactRef(location="file:///m", size=1, sha256="0" * 64, signature="00")


def race_policy(candidates: list[int], champion: int = 1, sequence: int = 5,
                **extra: object) -> PolicyChanged:
    return PolicyChanged(
        model="fraud", sequence=sequence, strategy="race", decided_at=T0,
        assignments=[PolicyAssignment(version=champion, role="champion"),
                     *(PolicyAssignment(version=v, role="candidate", weight=0.0)
                       for v in candidates)],
        **extra,
    )


def correlated_losses(rng: np.random.Generator, labels: int, error_rates: list[float],
                      correlation: float = 0.8) -> FloatArray:
    """0/1 losses, one row per version: marginally Bernoulli(p_v), correlated per example."""
    shared = rng.standard_normal(labels)
    own = rng.standard_normal((len(error_rates), labels))
    latent = math.sqrt(correlation) * shared + math.sqrt(1.0 - correlation) * own
    thresholds = np.asarray(special.ndtri(np.asarray(error_rates)), dtype=np.float64)[:, None]
    return (latent < thresholds).astype(np.float64)


def correlated_log_losses(rng: np.random.Generator, labels: int, versions: int,
                          noise: float = 0.7) -> FloatArray:
    """Log losses, one row per version, of versions as good as one another: each predicts the
    example's true log-odds plus noise of its own, so the losses share the example's label and
    difficulty (skewed and heavy-tailed, unlike 0/1 losses)."""
    log_odds = rng.normal(0.0, 1.5, labels)
    label = rng.random(labels) < special.expit(log_odds)
    predicted = np.asarray(special.expit(log_odds + noise * rng.standard_normal(
        (versions, labels))), dtype=np.float64)
    losses: FloatArray = -np.log(np.where(label, predicted, 1.0 - predicted))
    return losses


def snapshot(version: int, snapshot_id: int, paired: PairedLoss, offset: int,
             *, validated: bool = True) -> SnapshotPublished:
    """A candidate's snapshot as the learner publishes it (lineage: the next example offset).

    `validated=False` builds it unchecked, every field given, for the thousands of snapshots of
    the A/A simulation.
    """
    fields: dict[str, Any] = dict(
        model="fraud", version=version, snapshot=snapshot_id, artifact=ARTIFACT,
        lineage={LINEAGE: offset}, paired=paired)
    if validated:
        return SnapshotPublished(**fields)
    return SnapshotPublished.model_construct(
        **fields, kind="snapshot", schema_version=1, metrics={}, examples_seen=offset,
        restored_from=None, reason="", published_at=T0)


class Learner:
    """The learner's side of a race: cumulative paired counts, one snapshot per candidate."""

    def __init__(self, losses: Losses, *, validated: bool = True) -> None:
        self.losses = losses
        self.validated = validated
        self.snapshot_ids: dict[int, int] = {}
        self._running: dict[tuple[int, int], tuple[FloatArray, FloatArray]] = {}

    def running(self, champion: int, candidate: int) -> tuple[FloatArray, FloatArray]:
        """Running sums of the differences and their squares, from example 0 (0 first)."""
        pair = (champion, candidate)
        if pair not in self._running:
            d = self.losses[champion] - self.losses[candidate]
            self._running[pair] = (np.concatenate([[0.0], np.cumsum(d)]),
                                   np.concatenate([[0.0], np.cumsum(d * d)]))
        return self._running[pair]

    def publish(self, policy: PolicyChanged, start: int, offset: int) -> list[SnapshotPublished]:
        """Each candidate's snapshot after learning examples [start, offset)."""
        champion = champion_of(policy).version
        out = []
        for candidate in race_candidates(policy):
            total, total_sq = self.running(champion, candidate.version)
            counts: dict[str, Any] = dict(
                experiment=policy.experiment_id, against=champion, since_offset=start,
                n=offset - start, diff_sum=float(total[offset] - total[start]),
                diff_sum_sq=float(total_sq[offset] - total_sq[start]))
            paired = (PairedLoss(**counts) if self.validated
                      else PairedLoss.model_construct(**counts))
            snapshot_id = self.snapshot_ids[candidate.version] = (
                self.snapshot_ids.get(candidate.version, 0) + 1)
            out.append(snapshot(candidate.version, snapshot_id, paired, offset,
                                validated=self.validated))
        return out


def run_race(
    judge: Judge,
    policy: PolicyChanged,
    losses: Losses,
    *,
    every: int = 50,
    stop: tuple[str, ...] = ("promote", "rollback"),
    validated: bool = True,
) -> tuple[list[tuple[PolicyChanged, int]], PolicyChanged]:
    """Look every `every` examples; apply each decision; stop at one whose action is in `stop`.

    Returns the decisions with the example offset each was taken at, and the last policy.
    """
    learner = Learner(losses, validated=validated)
    labels = min(row.size for row in losses.values())
    judge.observe_policy(policy)
    start = policy.examples_from or 0
    decisions: list[tuple[PolicyChanged, int]] = []
    for offset in range(start + every, labels + 1, every):
        for record in learner.publish(policy, start, offset):
            judge.observe_snapshot(record)
        for decision in judge.decide(T0 + timedelta(seconds=offset)):
            decisions.append((decision, offset))
            judge.observe_policy(decision)
            if decision.action in stop or decision.strategy != "race":
                return decisions, decision
            if decision.experiment is None:  # a promotion: the new experiment counts afresh
                start = decision.examples_from or offset
            policy = decision
    return decisions, policy


# -- the statistics ----------------------------------------------------------------------------


def test_the_confidence_sequence_is_the_msprt_read_as_an_interval() -> None:
    for sd, n, alpha, rho in ((0.3, 1000, 0.0125, 0.1), (2.0, 250, 0.05, 0.3)):
        radius = mixture_radius(sd, n, alpha, rho)
        log_lr = float(msprt_log_lr(radius, sd / math.sqrt(n), 0.0, rho * sd))
        assert log_lr == pytest.approx(math.log(1.0 / alpha))
    assert mixture_radius(0.0, 500, 0.05, 0.1) == math.inf, "no spread: unbounded"
    assert confidence_sequence(Moments(1, 1.0, 1.0), 0.05) == (-math.inf, math.inf)
    with pytest.raises(ValueError, match="alpha must be in"):
        mixture_radius(1.0, 10, 0.0, 0.1)


def test_a_paired_test_waits_for_min_samples_in_both_directions() -> None:
    clear = Moments(199, 150.0, 160.0)  # a large advantage, but one pair short
    assert paired_test(clear, min_samples=200).verdict == "too-few"
    assert paired_test(Moments(200, 150.0, 160.0), min_samples=200).verdict == "better"
    assert paired_test(Moments(400, -300.0, 320.0), min_samples=200).verdict == "worse"
    tied = paired_test(Moments(400, 0.0, 40.0), min_samples=200)
    assert tied.verdict == "inconclusive" and tied.lower < 0.0 < tied.upper


# -- A/A ---------------------------------------------------------------------------------------


LABELS = 3000
EVERY = 75
CANDIDATES = [2, 3, 4, 5]


@pytest.mark.parametrize(("losses_of", "seeds"), [
    pytest.param(lambda rng: correlated_losses(rng, LABELS, [0.3] * 5), 1000, id="0/1 losses"),
    pytest.param(lambda rng: correlated_log_losses(rng, LABELS, 5), 500, id="log losses"),
])  # fmt: skip
def test_an_a_a_race_of_four_candidates_promotes_at_most_alpha_of_the_time(
    losses_of: Callable[[np.random.Generator], FloatArray], seeds: int
) -> None:
    """Four candidates as good as the champion, 40 looks over 3000 labels, many seeds: every
    promotion is a false one, and their rate stays at most alpha (0.05).

    The same losses judged by a fixed-horizon z test at alpha / 4 at every look (what a judge
    that ignored its own peeking would do) promote far more often: the simulation can tell a
    valid procedure from an invalid one.
    """
    alpha = 0.05
    promoted = retired = naive = 0
    z = float(special.ndtri(1.0 - alpha / len(CANDIDATES)))
    looks = np.arange(EVERY, LABELS + 1, EVERY)
    for seed in range(seeds):
        rows = losses_of(np.random.default_rng(seed))
        losses = dict(zip([1, *CANDIDATES], rows, strict=True))
        judge = Judge(seed=seed)
        policy = race_policy(CANDIDATES, alpha=alpha, min_samples=100)
        decisions, _ = run_race(judge, policy, losses, every=EVERY, validated=False)
        promoted += any(d.action == "promote" for d, _ in decisions)
        retired += sum(d.action == "retire" for d, _ in decisions)
        # The naive judge: the running z statistic of each candidate's mean advantage.
        d = np.cumsum(rows[0] - rows[1:], axis=1)[:, looks - 1]
        d2 = np.cumsum((rows[0] - rows[1:]) ** 2, axis=1)[:, looks - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = (d2 - d * d / looks) / (looks - 1)
            stat = (d / looks) / np.sqrt(variance / looks)
        naive += bool(np.any((stat > z) & (looks >= 100)))
    rate = promoted / seeds
    print(f"A/A: promoted {promoted}/{seeds} ({rate:.2%}), retirements {retired}, "
          f"naive fixed-horizon promotions {naive}/{seeds}")
    assert rate <= alpha, promoted
    assert naive / seeds > alpha, "the simulation should catch a judge that ignores its peeking"


# -- decisions ---------------------------------------------------------------------------------


def test_a_clearly_better_candidate_is_promoted_within_1000_labels() -> None:
    """Error rate 0.22 against the champion's 0.30 (three candidates as good as the champion):
    promoted, over 20 seeds, within 1000 labels."""
    seen = []
    for seed in range(20):
        rows = correlated_losses(np.random.default_rng(seed), 4000, [0.30, 0.30, 0.22, 0.30, 0.30])
        losses = dict(zip([1, 2, 3, 4, 5], rows, strict=True))
        judge = Judge(seed=seed)
        decisions, decision = run_race(judge, race_policy([2, 3, 4, 5], examples_from=0), losses)
        assert decision.action == "promote", [d.reason for d, _ in decisions]
        offset = decisions[-1][1]
        seen.append(offset)
        assert decision.strategy == "race" and decision.decided_by == "judge"
        assert decision.experiment is None
        assert decision.experiment_id == decision.sequence, "a new experiment"
        assert [(a.version, a.role, a.weight) for a in decision.assignments] == [
            (3, "champion", 1.0), (1, "candidate", 0.0)], "losers retired, champion on probation"
        assert decision.numbers[VERSION_PREVIOUS] == 1 and decision.numbers["version_winner"] == 3
        assert decision.numbers["lower"] > 0.0 and decision.numbers["n"] >= 200
        assert decision.examples_from == offset, "the new experiment counts from where it reached"
        assert decision.reason.startswith("promote: candidate fraud@3 beats champion fraud@1")
        assert probation_of(decision) == 1
    print(f"labels to promote: median {int(np.median(seen))}, max {max(seen)}")
    assert max(seen) <= 1000, seen


def test_a_worse_candidate_keeps_learning_and_is_reported_worse() -> None:
    """A candidate established worse is not retired (a drift can turn it): no decision, and
    the status says `worse`."""
    rows = correlated_losses(np.random.default_rng(11), 6000, [0.30, 0.42, 0.30])
    losses = {1: rows[0], 2: rows[1], 3: rows[2]}
    judge = Judge(seed=11)
    policy = race_policy([2, 3], examples_from=0)
    decisions, last = run_race(judge, policy, losses)
    assert decisions == [] and last is policy
    rows_by_candidate = {row["challenger"]: row for row in assess(
        policy, {}, paired=judge.paired(policy))}
    assert rows_by_candidate[2]["verdict"] == "worse" and rows_by_candidate[2]["upper"] < 0.0
    assert rows_by_candidate[3]["verdict"] != "better"


def test_a_margin_keeps_a_candidate_only_slightly_better_from_promotion() -> None:
    rows = correlated_losses(np.random.default_rng(13), 8000, [0.30, 0.29])
    judge = Judge(seed=13)
    decisions, _ = run_race(judge, race_policy([2], margin=0.05), {1: rows[0], 2: rows[1]})
    assert all(d.action != "promote" for d, _ in decisions), "it cannot beat 0.30 by 0.05"


def test_a_drift_of_the_champions_learning_loss_restarts_the_races_evidence() -> None:
    rows = correlated_losses(np.random.default_rng(14), 600, [0.30, 0.30])
    judge = Judge(seed=14, lineage_key=LINEAGE)
    policy = race_policy([2], examples_from=0)
    decisions, _ = run_race(judge, policy, {1: rows[0], 2: rows[1]})
    assert decisions == []

    def drift(version: int, at: datetime) -> DriftDetected:
        return DriftDetected(model="fraud", version=version, stream="learning", detector="ADWIN",
                             position=550, mean_loss=0.9, mean_loss_before=0.3,
                             detected_at=at)

    judge.observe_drift(drift(1, T0 - timedelta(seconds=1)))  # before the race began
    judge.observe_drift(drift(2, T0 + timedelta(seconds=5)))  # a candidate's
    assert judge.decide(T0 + timedelta(seconds=700)) == []
    fell = drift(1, T0 + timedelta(seconds=6)).model_copy(update={"mean_loss_before": 1.2})
    judge.observe_drift(fell)  # the champion learned: its loss fell
    assert judge.decide(T0 + timedelta(seconds=700)) == []
    judge.observe_drift(drift(1, T0 + timedelta(seconds=7)))
    [restart] = judge.decide(T0 + timedelta(seconds=701))
    assert restart.action == "restart" and restart.strategy == "race"
    assert restart.experiment is None and restart.experiment_id == restart.sequence
    assert restart.assignments == policy.assignments
    assert restart.examples_from == 600, "from the furthest offset the snapshots reached"
    assert "ADWIN detected a drift of champion fraud@1" in restart.reason
    judge.observe_policy(restart)
    assert judge.decide(T0 + timedelta(seconds=702)) == [], "a drift restarts a race once"
    assert judge.paired(restart) == {}, "no evidence carried into the new experiment"


def test_a_probation_where_the_old_champion_wins_back_is_a_rollback() -> None:
    """v2 beats v1 and is promoted; from the very next example v2 degrades (error rate 0.20 ->
    0.45) and v1, racing it on probation, wins back: a rollback to v1."""
    rng = np.random.default_rng(21)
    rows = correlated_losses(rng, 3000, [0.30, 0.20])
    judge = Judge(seed=21)
    [(promote, promoted_at)], _ = run_race(judge, race_policy([2], examples_from=0),
                                           {1: rows[0], 2: rows[1]}, stop=("promote",))
    assert promote.action == "promote" and promote.examples_from == promoted_at
    assert [(a.version, a.role) for a in promote.assignments] == [(2, "champion"), (1, "candidate")]
    after = correlated_losses(rng, 6000, [0.30, 0.45])
    losses = {1: np.concatenate([rows[0][:promoted_at], after[0]]),
              2: np.concatenate([rows[1][:promoted_at], after[1]])}
    decisions, rollback = run_race(judge, promote, losses)
    assert [d.action for d, _ in decisions] == ["rollback"]
    rolled_at = decisions[0][1]
    assert rollback.strategy == "single"
    assert [(a.version, a.role) for a in rollback.assignments] == [(1, "champion")]
    assert rollback.numbers[VERSION_PREVIOUS] == 2, "the regressed champion, for the record"
    assert rollback.reason.startswith("rollback: fraud@2 regressed on probation")
    assert rollback.numbers["n"] == rolled_at - promoted_at, "counted from the promotion only"


def test_a_probation_whose_old_champion_cannot_win_back_ends() -> None:
    rows = correlated_losses(np.random.default_rng(22), 12000, [0.35, 0.20])
    judge = Judge(seed=22)
    decisions, last = run_race(judge, race_policy([2], examples_from=0), {1: rows[0], 2: rows[1]},
                               stop=("retire",))
    assert [d.action for d, _ in decisions] == ["promote", "retire"]
    assert last.strategy == "single" and [a.version for a in last.assignments] == [2]
    assert "probation ended" in last.reason


def test_min_samples_holds_however_clear_the_evidence() -> None:
    rows = correlated_losses(np.random.default_rng(31), 2000, [0.9, 0.1], correlation=0.0)
    judge = Judge(seed=31)
    decisions, last = run_race(judge, race_policy([2], min_samples=500, examples_from=0),
                               {1: rows[0], 2: rows[1]})
    decision, offset = decisions[0]
    assert decision.action == "promote" and offset == 500 and decision.numbers["n"] == 500


# -- the judge's bookkeeping -------------------------------------------------------------------


def test_the_judge_keeps_the_newest_paired_evidence_of_the_race_it_judges() -> None:
    judge = Judge(lineage_key=LINEAGE)
    policy = race_policy([2, 3], sequence=7)
    judge.observe_policy(policy)
    newer = PairedLoss(experiment=7, against=1, since_offset=10, n=300, diff_sum=30.0,
                       diff_sum_sq=90.0)
    older = newer.model_copy(update={"n": 100})
    assert judge.observe_snapshot(snapshot(2, 9, newer, 310))
    assert not judge.observe_snapshot(snapshot(2, 8, older, 110)), "an older snapshot"
    other = newer.model_copy(update={"experiment": 6})
    assert judge.observe_snapshot(snapshot(3, 4, other, 310))
    assert not judge.observe_snapshot(
        SnapshotPublished(model="fraud", version=1, snapshot=3, artifact=ARTIFACT)), "no pairs"
    paired = judge.paired(policy)
    assert list(paired) == [2], "v3's evidence belongs to another experiment"
    assert paired[2].differences == Moments(300, 30.0, 90.0) and paired[2].reached == 310
    assert not judge.paired(race_policy([2, 3], champion=4, sequence=7)), "another champion"


def test_status_shows_each_candidates_paired_evidence_and_dashes_where_none_is_known(
    capsys: pytest.CaptureFixture[str],
) -> None:
    judge = Judge(lineage_key=LINEAGE)
    policy = race_policy([2, 3], sequence=7, min_samples=100)
    judge.observe_policy(policy)
    judge.observe_snapshot(snapshot(2, 9, PairedLoss(experiment=7, against=1, since_offset=0,
                                                     n=400, diff_sum=40.0, diff_sum_sq=120.0),
                                    400))
    state = judge.state(T0)
    orjson.dumps(state)
    rows = state["models"]["fraud"]["comparisons"]
    assert [(r["challenger"], r["kind"]) for r in rows] == [(2, "paired"), (3, "paired")]
    assert rows[0]["n"] == 400 and rows[0]["mean_advantage"] == pytest.approx(0.1)
    assert rows[0]["lower"] < 0.1 < rows[0]["upper"] and rows[0]["verdict"] is not None
    assert rows[0]["alpha"] == pytest.approx(0.025)
    assert rows[1]["n"] is None and rows[1]["verdict"] is None and rows[1]["lower"] is None
    assert state["models"]["fraud"]["policy"]["experiment_began"] == T0.isoformat()
    assert assess(policy, {}) == [
        {**row, "n": None, "verdict": None, "mean_advantage": None, "lower": None,
         "upper": None, "snapshot": None, "since_offset": None, "reached": None}
        for row in rows], "no evidence at all: every value unknown"
    _print_status("fraud", policy, [], state["models"]["fraud"], True)
    out = capsys.readouterr().out
    assert "race: experiment #7 since 2026-03-01 00:00:00, alpha 0.025 per candidate" in out
    line_2 = next(line for line in out.splitlines() if line.strip().startswith("2 "))
    line_3 = next(line for line in out.splitlines() if line.strip().startswith("3 "))
    assert "400" in line_2 and "+0.1000" in line_2 and "[" in line_2
    assert line_3.split() == ["3", "-", "-", "-", "-"]
