"""The judge's statistics: tests suited to each metric, a sequential correction, and bandits.

Tests, fixed-horizon (what a report prints):

- accuracy-like rewards (0/1): the two-proportion z-test (pooled under H0 when the margin is 0,
  unpooled otherwise);
- losses and errors (continuous): Welch's t-test, whose variances need not be equal.

The judge looks at the evidence continually (every few seconds, as outcomes arrive), and a
fixed-horizon p-value checked at every look would promote an A/A challenger far more often than
its alpha. The decisions therefore use a **mixture sequential probability ratio test** (mSPRT,
Johari, Koomen, Pekelis and Walsh, "Always valid inference", 2017/2022) on the same statistic:
with the difference of means normally approximated, theta-hat ~ N(theta, V), and a normal
mixture N(theta0, tau^2) over the alternative, the likelihood ratio is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (theta-hat - theta0)^2 / (2 V (V + tau^2))),

a nonnegative martingale under H0, so by Ville's inequality P(sup_n Lambda_n >= 1/alpha) <= alpha:
looking after every outcome, forever, still rejects a true H0 at most alpha of the time, and
1/Lambda is an always-valid p-value. Why this and not alpha spending (O'Brien-Fleming /
Lan-DeMets): spending needs a planned maximum sample, and a canary has none (it runs until the
evidence is clear or an operator stops it); the mSPRT needs no horizon, allows any number and
timing of looks, and gives an always-valid p-value that `riverrun models status` can show at
any moment. The price is some power against a test sized for one known horizon. tau is set as a
standardised effect (`effect` x the pooled standard deviation), the size of difference the test
is tuned to find quickly; any tau keeps the error guarantee.

Directions: with theta = challenger - control in "score" (accuracy, or minus the loss: higher is
better), theta0 = -margin. Crossing 1/alpha with theta-hat above theta0 shows the challenger no
worse than the control by the margin (non-inferiority; superiority when the margin is 0);
crossing below shows it worse by more than the margin. Each wrong-direction claim has
probability at most alpha.

Races (paired losses): a race's candidates never answer, they learn beside the champion from
the same examples, so each example gives one paired difference d = champion's loss - the
candidate's loss, and the moments of d since the experiment began are the evidence. The judge
bounds the mean advantage with a **normal-mixture confidence sequence** on those differences,
the same mixture as the mSPRT above read as an interval (Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", 2021; with the variance
estimated, an asymptotic confidence sequence, Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas,
"Time-uniform central limit theory and asymptotic confidence sequences", 2024):

    mean(d) +/- sd(d) * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha)),

with rho = `effect`, the standardised advantage the sequence is tightest for (about
n = 2 log(1/alpha) / rho^2 pairs). It covers the true mean at every n at once with probability
1 - alpha, so a promotion (lower bound above the margin) and a retirement (upper bound below it)
are each wrong with probability at most alpha however often the judge looks; `|mean - theta0|`
beyond the radius is exactly the mSPRT's crossing of 1/alpha at theta0. Why this and not an
empirical-Bernstein sequence: that one needs a bound on the losses, and log losses and squared
errors have none; why the pairing: the per-example noise both versions share cancels in d, so
a race needs far fewer labels than two independent samples would. A spread of exactly zero is no
evidence of a small one: until the differences vary the interval is unbounded.

Bandits: Thompson sampling. Each version's share is the posterior probability that it is the
best (Beta-Bernoulli for 0/1 rewards, Normal for losses), estimated from Monte Carlo draws of a
seeded `numpy.random.Generator`, then mixed with a floor so every version keeps some traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special

Metric = Literal["accuracy", "log_loss", "loss"]
Verdict = Literal["better", "worse", "inconclusive", "too-few"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Moments:
    """Count, sum and sum of squares of a sample: all a test needs, and they add up."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @property
    def mean(self) -> float:
        """The sample mean (0 when empty)."""
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance (0 below two values)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))

    def add(self, value: float) -> Moments:
        """These moments with one more value."""
        return Moments(self.n + 1, self.total + value, self.total_sq + value * value)

    def merge(self, other: Moments) -> Moments:
        """The moments of both samples together."""
        return Moments(self.n + other.n, self.total + other.total,
                       self.total_sq + other.total_sq)


@dataclass(frozen=True, slots=True)
class TestResult:
    """A fixed-horizon, one-sided test of H0: challenger - control <= -margin (in score)."""

    difference: float
    standard_error: float
    statistic: float
    p_value: float
    df: float | None = None


def two_proportion_test(
    successes_a: float, n_a: int, successes_b: float, n_b: int, margin: float = 0.0
) -> TestResult:
    """Two-proportion z-test that B's rate beats A's minus `margin` (A: control, B: challenger)."""
    if n_a <= 0 or n_b <= 0:
        return TestResult(0.0, math.inf, 0.0, 1.0)
    p_a, p_b = successes_a / n_a, successes_b / n_b
    if margin == 0.0:
        pooled = (successes_a + successes_b) / (n_a + n_b)
        variance = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    else:
        variance = p_a * (1.0 - p_a) / n_a + p_b * (1.0 - p_b) / n_b
    se = math.sqrt(variance)
    diff = p_b - p_a
    if se == 0.0:
        return TestResult(diff, 0.0, 0.0, 1.0 if diff + margin <= 0.0 else 0.0)
    z = (diff + margin) / se
    return TestResult(diff, se, z, float(special.ndtr(-z)))


def welch_t_test(a: Moments, b: Moments, margin: float = 0.0) -> TestResult:
    """Welch's t-test that B's mean loss is below A's plus `margin` (score = minus the loss)."""
    if a.n < 2 or b.n < 2:
        return TestResult(0.0, math.inf, 0.0, 1.0)
    va, vb = a.variance / a.n, b.variance / b.n
    se = math.sqrt(va + vb)
    diff = a.mean - b.mean  # in score: the challenger's loss lower is better
    if se == 0.0:
        return TestResult(diff, 0.0, 0.0, 1.0 if diff + margin <= 0.0 else 0.0, math.inf)
    df = (va + vb) ** 2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    t = (diff + margin) / se
    return TestResult(diff, se, t, float(special.stdtr(df, -t)), df)


def msprt_log_lr(
    difference: npt.ArrayLike, standard_error: npt.ArrayLike, theta0: npt.ArrayLike,
    tau: npt.ArrayLike,
) -> FloatArray:
    """Log of the mixture likelihood ratio, element-wise (0 where the standard error is 0)."""
    diff = np.asarray(difference, dtype=np.float64)
    v = np.asarray(standard_error, dtype=np.float64) ** 2
    tau2 = np.asarray(tau, dtype=np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        r = tau2 / v
        z2 = (diff - np.asarray(theta0, dtype=np.float64)) ** 2 / v
        log_lr = -0.5 * np.log1p(r) + z2 * r / (2.0 * (1.0 + r))
    return np.where((v > 0.0) & np.isfinite(log_lr), log_lr, 0.0)


def sequential_verdicts(
    difference: npt.ArrayLike, standard_error: npt.ArrayLike, margin: float, alpha: float,
    tau: npt.ArrayLike,
) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """Per look: +1 (no worse than -margin), -1 (worse than -margin) or 0; and the log LR."""
    log_lr = msprt_log_lr(difference, standard_error, -margin, tau)
    crossed = log_lr >= math.log(1.0 / alpha)
    sign = np.sign(np.asarray(difference, dtype=np.float64) + margin).astype(np.int8)
    return np.where(crossed, sign, 0).astype(np.int8), log_lr


@dataclass(frozen=True, slots=True)
class Comparison:
    """A challenger against a control on one metric: the numbers and the sequential verdict."""

    metric: str
    n_control: int
    n_challenger: int
    mean_control: float
    mean_challenger: float
    test: TestResult
    log_lr: float
    always_valid_p: float
    alpha: float
    margin: float
    verdict: Verdict

    def numbers(self, prefix: str = "") -> dict[str, float]:
        """Flat numbers for a policy record's `numbers`."""
        out = {
            "n_control": float(self.n_control),
            "n_challenger": float(self.n_challenger),
            "mean_control": self.mean_control,
            "mean_challenger": self.mean_challenger,
            "difference": self.test.difference,
            "standard_error": self.test.standard_error,
            "statistic": self.test.statistic,
            "p_value_fixed": self.test.p_value,
            "always_valid_p": self.always_valid_p,
            "alpha": self.alpha,
            "margin": self.margin,
        }
        return {prefix + k: (v if math.isfinite(v) else -1.0) for k, v in out.items()}


def compare(
    control: Moments,
    challenger: Moments,
    *,
    metric: Metric,
    margin: float = 0.0,
    alpha: float = 0.05,
    min_samples: int = 200,
    effect: float = 0.1,
) -> Comparison:
    """Compare a challenger with a control (0/1 correctness for accuracy, else the loss)."""
    if metric == "accuracy":
        test = two_proportion_test(control.total, control.n, challenger.total, challenger.n, margin)
        se, pooled_sd = _proportion_se(control, challenger)
    else:
        test = welch_t_test(control, challenger, margin)
        se = test.standard_error
        pooled_sd = math.sqrt((control.variance + challenger.variance) / 2.0)
    if min(control.n, challenger.n) < min_samples:
        return _comparison(metric, control, challenger, test, 0.0, alpha, margin, "too-few")
    verdicts, log_lr = sequential_verdicts(test.difference, se, margin, alpha,
                                           effect * pooled_sd)
    verdict: Verdict = {1: "better", -1: "worse"}.get(int(verdicts), "inconclusive")  # type: ignore[assignment]  # the two literals
    return _comparison(metric, control, challenger, test, float(log_lr), alpha, margin, verdict)


def _proportion_se(control: Moments, challenger: Moments) -> tuple[float, float]:
    # Agresti-Caffo's +1/+2 keeps the variance above 0 when a rate is 0 or 1.
    p_a = (control.total + 1.0) / (control.n + 2.0)
    p_b = (challenger.total + 1.0) / (challenger.n + 2.0)
    va, vb = p_a * (1.0 - p_a), p_b * (1.0 - p_b)
    se = math.sqrt(va / max(control.n, 1) + vb / max(challenger.n, 1))
    return se, math.sqrt((va + vb) / 2.0)


def _comparison(
    metric: str, control: Moments, challenger: Moments, test: TestResult, log_lr: float,
    alpha: float, margin: float, verdict: Verdict,
) -> Comparison:
    return Comparison(
        metric=metric,
        n_control=control.n,
        n_challenger=challenger.n,
        mean_control=control.mean,
        mean_challenger=challenger.mean,
        test=test,
        log_lr=log_lr,
        always_valid_p=min(1.0, math.exp(-log_lr)),
        alpha=alpha,
        margin=margin,
        verdict=verdict,
    )


def rate_exceeds(
    events_control: int, total_control: int, events_challenger: int, total_challenger: int,
    *, bound: float, alpha: float, min_samples: int, effect: float = 0.1,
) -> tuple[bool, dict[str, float]]:
    """Whether the challenger's rate (errors, dead letters) exceeds the control's by > `bound`.

    The same mSPRT, one direction: rate_challenger - rate_control > bound, with error <= alpha.
    """
    control = Moments(total_control, float(events_control), float(events_control))
    challenger = Moments(total_challenger, float(events_challenger), float(events_challenger))
    se, pooled_sd = _proportion_se(control, challenger)
    diff = challenger.mean - control.mean
    numbers = {"error_rate_control": control.mean, "error_rate_challenger": challenger.mean,
               "error_rate_bound": bound}
    if total_challenger < min_samples:
        return False, numbers
    log_lr = float(msprt_log_lr(diff, se, bound, effect * pooled_sd))
    numbers["error_always_valid_p"] = min(1.0, math.exp(-log_lr))
    return bool(log_lr >= math.log(1.0 / alpha) and diff > bound), numbers


# -- races: paired differences ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairedTest:
    """A candidate's advantage over the champion on the same examples, bounded at any look.

    `mean` is the mean of champion's loss - candidate's loss (> 0: the candidate is better);
    `lower`/`upper` the confidence sequence at `alpha` (infinite while it is unbounded).
    """

    n: int
    mean: float
    sd: float
    lower: float
    upper: float
    alpha: float
    margin: float
    verdict: Verdict

    def numbers(self, prefix: str = "") -> dict[str, float]:
        """Flat, finite numbers for a policy record (an unbounded side is left out)."""
        out = {"n": float(self.n), "mean_advantage": self.mean, "sd_advantage": self.sd,
               "lower": self.lower, "upper": self.upper, "alpha": self.alpha,
               "margin": self.margin}  # fmt: skip
        return {prefix + k: v for k, v in out.items() if math.isfinite(v)}


def mixture_radius(sd: float, n: int, alpha: float, rho: float) -> float:
    """Half-width of the normal-mixture confidence sequence after n values (inf: unbounded).

    Raises:
        ValueError: alpha outside (0, 1) or rho not positive; pass the policy's alpha and the
            judge's `effect`.

    """
    if not 0.0 < alpha < 1.0 or rho <= 0.0:
        raise ValueError(f"alpha must be in (0, 1) and rho > 0, got alpha={alpha}, rho={rho}")
    if n < 2 or not sd > 0.0:
        return math.inf
    spread = n * rho * rho + 1.0
    return sd * math.sqrt(2.0 * spread / (n * n * rho * rho)
                          * math.log(math.sqrt(spread) / alpha))  # fmt: skip


def confidence_sequence(
    differences: Moments, alpha: float, effect: float = 0.1
) -> tuple[float, float]:
    """(lower, upper) bounds on the mean of the differences, valid at every n at once."""
    radius = mixture_radius(math.sqrt(differences.variance), differences.n, alpha, effect)
    return differences.mean - radius, differences.mean + radius


def paired_test(
    differences: Moments,
    *,
    margin: float = 0.0,
    alpha: float = 0.05,
    min_samples: int = 200,
    effect: float = 0.1,
) -> PairedTest:
    """Judge a candidate's advantage against `margin` with its confidence sequence.

    "better": established above the margin; "worse": below it (the candidate cannot beat the
    champion by the margin); "inconclusive": neither yet. Fewer than `min_samples` pairs
    decide nothing ("too-few"), in either direction.
    """
    lower, upper = confidence_sequence(differences, alpha, effect)
    verdict: Verdict = "inconclusive"
    if differences.n < min_samples:
        verdict = "too-few"
    elif lower > margin:
        verdict = "better"
    elif upper < margin:
        verdict = "worse"
    return PairedTest(differences.n, differences.mean, math.sqrt(differences.variance), lower,
                      upper, alpha, margin, verdict)  # fmt: skip


# -- bandits -----------------------------------------------------------------------------------


def thompson_bernoulli(
    successes: npt.ArrayLike, failures: npt.ArrayLike, rng: np.random.Generator,
    draws: int = 4000,
) -> FloatArray:
    """P(each arm has the highest rate) under Beta(1 + s, 1 + f) posteriors, by Monte Carlo."""
    s = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    samples = rng.beta(1.0 + s, 1.0 + f, size=(draws, s.size))
    return _share_of_best(samples)


def thompson_normal(
    means: npt.ArrayLike, variances: npt.ArrayLike, counts: npt.ArrayLike,
    rng: np.random.Generator, draws: int = 4000,
) -> FloatArray:
    """P(each arm has the highest mean) under Normal posteriors of the means (flat prior).

    An arm with fewer than two values takes the others' pooled mean and spread, so it is
    neither ignored nor favoured before it has evidence.
    """
    m = np.asarray(means, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    known = n >= 2
    pooled_mean = float(np.average(m[known], weights=n[known])) if known.any() else 0.0
    pooled_var = float(np.average(v[known], weights=n[known])) if known.any() else 1.0
    m = np.where(known, m, pooled_mean)
    sd = np.sqrt(np.where(known, v, max(pooled_var, 1e-12)) / np.maximum(n, 1.0))
    samples = rng.normal(m, np.maximum(sd, 1e-12), size=(draws, m.size))
    return _share_of_best(samples)


def with_floor(weights: npt.ArrayLike, floor: float) -> FloatArray:
    """Mix weights with a uniform floor so each arm keeps at least `floor` (at most 1/K)."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    w = w / total if total > 0 else np.full(w.size, 1.0 / w.size)
    floor = min(max(floor, 0.0), 1.0 / w.size)
    mixed: FloatArray = floor + (1.0 - floor * w.size) * w
    return mixed


def _share_of_best(samples: FloatArray) -> FloatArray:
    best = np.argmax(samples, axis=1)
    counts: FloatArray = np.bincount(best, minlength=samples.shape[1]).astype(np.float64)
    return counts / float(samples.shape[0])
