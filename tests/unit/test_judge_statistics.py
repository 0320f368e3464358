"""The judge's statistics, simulated: error rates under continual looks, power, bandit regret.

Every simulation is vectorised over seeds: cumulative sums at each look stand for the evidence
the judge sees when it looks (after every batch of outcomes, forever).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from riverrun.workers.judge.statistics import (
    Moments,
    compare,
    rate_exceeds,
    sequential_verdicts,
    thompson_bernoulli,
    thompson_normal,
    two_proportion_test,
    welch_t_test,
    with_floor,
)

ALPHA = 0.05
SEEDS = 400
LOOK_EVERY = 50
LOOKS = 200  # up to 10,000 outcomes per arm, looked at 200 times
MIN_SAMPLES = 200
EFFECT = 0.1


def upper_bound(events: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a binomial rate."""
    if events >= trials:
        return 1.0
    return float(stats.beta.ppf(confidence, events + 1, trials - events))


Looks = tuple[np.ndarray, np.ndarray, np.ndarray]


def proportion_looks(p_a: float, p_b: float, seed: int) -> Looks:
    """Successes of each arm at each look, per seed: arrays (SEEDS, LOOKS), and n per look."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(LOOK_EVERY, p_a, size=(SEEDS, LOOKS)).cumsum(axis=1)
    b = rng.binomial(LOOK_EVERY, p_b, size=(SEEDS, LOOKS)).cumsum(axis=1)
    n = LOOK_EVERY * np.arange(1, LOOKS + 1)
    return a, b, n


def proportion_verdicts(
    a: np.ndarray, b: np.ndarray, n: np.ndarray, margin: float = 0.0
) -> np.ndarray:
    """The judge's per-look verdicts for accuracy (as `compare` computes them), vectorised."""
    p_a, p_b = (a + 1.0) / (n + 2.0), (b + 1.0) / (n + 2.0)
    va, vb = p_a * (1 - p_a), p_b * (1 - p_b)
    se = np.sqrt(va / n + vb / n)
    tau = EFFECT * np.sqrt((va + vb) / 2)
    verdicts, _ = sequential_verdicts(b / n - a / n, se, margin, ALPHA, tau)
    verdicts[:, n < MIN_SAMPLES] = 0
    return verdicts


def first_decision(verdicts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: the first non-zero verdict (0 when none) and the look it came at (-1)."""
    decided = verdicts != 0
    any_decided = decided.any(axis=1)
    first = np.where(any_decided, decided.argmax(axis=1), -1)
    kind = np.where(any_decided, verdicts[np.arange(len(verdicts)), np.maximum(first, 0)], 0)
    return kind, first


def test_vectorised_verdicts_agree_with_compare() -> None:
    a, b, n = proportion_looks(0.7, 0.75, seed=3)
    verdicts = proportion_verdicts(a, b, n)
    for seed in range(5):
        for look in (3, 50, 199):
            result = compare(Moments(int(n[look]), float(a[seed, look])),
                             Moments(int(n[look]), float(b[seed, look])),
                             metric="accuracy", alpha=ALPHA, min_samples=MIN_SAMPLES, effect=EFFECT)
            expected = {1: "better", -1: "worse", 0: "inconclusive"}[int(verdicts[seed, look])]
            assert result.verdict == expected


def test_a_a_accuracy_false_promotions_stay_within_alpha_under_continual_looks() -> None:
    a, b, n = proportion_looks(0.7, 0.7, seed=11)
    kind, _ = first_decision(proportion_verdicts(a, b, n))
    promoted = int((kind == 1).sum())
    # The bound of the measured rate, not just the rate, is within alpha.
    assert upper_bound(promoted, SEEDS) <= ALPHA, (promoted, SEEDS)
    # What the correction is for: a fixed-horizon p-value read at every look promotes far more.
    naive = 0
    for seed in range(SEEDS):
        p = [two_proportion_test(a[seed, i], n[i], b[seed, i], n[i]).p_value
             for i in range(LOOKS) if n[i] >= MIN_SAMPLES]
        naive += min(p) < ALPHA
    assert naive / SEEDS > 2 * ALPHA


def test_a_a_loss_false_promotions_stay_within_alpha_under_continual_looks() -> None:
    rng = np.random.default_rng(5)
    # Skewed, log-loss-like values: a gamma with mean 0.5.
    values_a = rng.gamma(0.5, 1.0, size=(SEEDS, LOOKS * LOOK_EVERY))
    values_b = rng.gamma(0.5, 1.0, size=(SEEDS, LOOKS * LOOK_EVERY))
    idx = LOOK_EVERY * np.arange(1, LOOKS + 1) - 1
    n = idx + 1.0
    mean_a = values_a.cumsum(axis=1)[:, idx] / n
    mean_b = values_b.cumsum(axis=1)[:, idx] / n
    var_a = ((values_a**2).cumsum(axis=1)[:, idx] - n * mean_a**2) / (n - 1)
    var_b = ((values_b**2).cumsum(axis=1)[:, idx] - n * mean_b**2) / (n - 1)
    se = np.sqrt(var_a / n + var_b / n)
    verdicts, _ = sequential_verdicts(mean_a - mean_b, se, 0.0, ALPHA,
                                      EFFECT * np.sqrt((var_a + var_b) / 2))
    verdicts[:, n < MIN_SAMPLES] = 0
    kind, _ = first_decision(verdicts)
    assert upper_bound(int((kind == 1).sum()), SEEDS) <= ALPHA
    # The loss path of `compare` gives the same verdicts.
    for seed in range(3):
        look = 120
        k = int(n[look])
        xa, xb = values_a[seed, :k], values_b[seed, :k]
        control = Moments(k, float(xa.sum()), float((xa**2).sum()))
        challenger = Moments(k, float(xb.sum()), float((xb**2).sum()))
        result = compare(control, challenger, metric="log_loss", alpha=ALPHA,
                         min_samples=MIN_SAMPLES, effect=EFFECT)
        expected = {1: "better", -1: "worse", 0: "inconclusive"}[int(verdicts[seed, look])]
        assert result.verdict == expected


def test_non_inferiority_at_the_margin_promotes_within_alpha() -> None:
    # The challenger is worse by exactly the margin: H0 holds at its boundary.
    a, b, n = proportion_looks(0.72, 0.70, seed=17)
    kind, _ = first_decision(proportion_verdicts(a, b, n, margin=0.02))
    assert upper_bound(int((kind == 1).sum()), SEEDS) <= ALPHA


def test_a_true_improvement_is_promoted_within_a_bounded_number_of_outcomes() -> None:
    # The champion stuck on the old concept, the challenger trained on the new one.
    a, b, n = proportion_looks(0.65, 0.8, seed=23)
    kind, first = first_decision(proportion_verdicts(a, b, n))
    assert np.all(kind == 1), "every run promotes, none rolls back"
    assert n[first].max() <= 1500, n[first].max()


def test_a_true_regression_is_rolled_back_within_a_bounded_number_of_outcomes() -> None:
    a, b, n = proportion_looks(0.75, 0.62, seed=29)
    kind, first = first_decision(proportion_verdicts(a, b, n))
    assert np.all(kind == -1)
    assert n[first].max() <= 1500, n[first].max()


def test_fixed_horizon_tests_match_textbook_values() -> None:
    # Two-proportion: 60/100 against 45/100, pooled p 0.525: z = 0.15 / 0.070622 = 2.1240.
    result = two_proportion_test(45, 100, 60, 100)
    assert result.statistic == pytest.approx(2.1240, abs=1e-4)
    assert result.p_value == pytest.approx(stats.norm.sf(2.1240), abs=1e-4)
    # Welch: scipy's own, one-sided, on losses (lower is better for the challenger).
    rng = np.random.default_rng(1)
    x, y = rng.normal(1.0, 1.0, 40), rng.normal(0.6, 2.0, 55)
    a = Moments(len(x), float(x.sum()), float((x**2).sum()))
    b = Moments(len(y), float(y.sum()), float((y**2).sum()))
    ours = welch_t_test(a, b)
    theirs = stats.ttest_ind(x, y, equal_var=False, alternative="greater")
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-6)


def test_too_few_samples_never_decide() -> None:
    result = compare(Moments(50, 10.0), Moments(50, 50.0), metric="accuracy", min_samples=200)
    assert result.verdict == "too-few"


def test_an_error_rate_beyond_its_bound_is_detected_and_one_within_is_not() -> None:
    broken, numbers = rate_exceeds(5, 1000, 90, 1000, bound=0.02, alpha=ALPHA, min_samples=200)
    assert broken and numbers["error_rate_challenger"] == pytest.approx(0.09)
    fine, _ = rate_exceeds(5, 1000, 12, 1000, bound=0.02, alpha=ALPHA, min_samples=200)
    assert not fine


def bandit_run(
    rates: np.ndarray, seed: int, *, rounds: int = 100, per_round: int = 200, floor: float = 0.05,
    uniform: bool = False,
) -> tuple[float, np.ndarray]:
    """Expected regret of a run and the final weights."""
    rng = np.random.default_rng(seed)
    k = rates.size
    successes = np.zeros(k)
    pulls = np.zeros(k)
    weights = np.full(k, 1.0 / k)
    regret = 0.0
    for _ in range(rounds):
        counts = rng.multinomial(per_round, weights)
        rewards = rng.binomial(counts, rates)
        successes += rewards
        pulls += counts
        regret += float((counts * (rates.max() - rates)).sum())
        if not uniform:
            weights = with_floor(thompson_bernoulli(successes, pulls - successes, rng, 2000), floor)
    return regret, weights


def test_thompson_sampling_beats_a_uniform_split_and_converges_on_the_best() -> None:
    rates = np.array([0.45, 0.5, 0.6])
    runs = [bandit_run(rates, seed) for seed in range(10)]
    uniform = [bandit_run(rates, seed, uniform=True)[0] for seed in range(10)]
    regret = np.array([r for r, _ in runs])
    assert np.all(regret < 0.5 * np.array(uniform)), (regret, uniform)
    final_best = np.array([w[2] for _, w in runs])
    assert np.all(final_best >= 0.85), final_best  # 1 - 2 x floor at most, floor 0.05
    assert np.all(np.array([w.min() for _, w in runs]) >= 0.05 - 1e-12)


def test_thompson_normal_prefers_the_lowest_loss_through_scores() -> None:
    rng = np.random.default_rng(2)
    # Scores are minus the losses: the arm with loss 0.3 should win.
    weights = thompson_normal([-0.5, -0.3, -0.45], [0.2, 0.2, 0.2], [400, 400, 400], rng)
    assert weights.argmax() == 1 and weights[1] > 0.9
    fresh = thompson_normal([-0.5, 0.0], [0.2, 0.0], [400, 0], rng)
    assert 0.0 < fresh[1] < 1.0  # no evidence: neither ignored nor certain


def test_thompson_weights_are_reproducible_with_a_seed() -> None:
    one = thompson_bernoulli([30, 40], [70, 60], np.random.default_rng(7))
    two = thompson_bernoulli([30, 40], [70, 60], np.random.default_rng(7))
    assert np.array_equal(one, two)
    assert math.isclose(one.sum(), 1.0)
