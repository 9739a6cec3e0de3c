"""Fixed-horizon confidence intervals: a rate, a mean, and the lift of one mean over another.

These are the intervals ``banditctl experiment summary`` prints for one look at the data
(the sequential, always-valid versions the verdict uses live in
:mod:`banditd.admin_cli.stats.sequential`). All take
:class:`~banditd.admin_cli.stats.sufficient.SampleStats` or plain counts and return
an :class:`Interval`.

References:
    [Wilson27] E. B. Wilson (1927), "Probable inference, the law of succession, and
        statistical inference", JASA 22(158):209–212.
    [Newcombe98] R. G. Newcombe (1998), "Two-sided confidence intervals for the single
        proportion: comparison of seven methods", Statistics in Medicine 17:857–872.
    [BCD01] L. D. Brown, T. T. Cai, A. DasGupta (2001), "Interval estimation for a
        binomial proportion", Statistical Science 16(2):101–133.
    [Deng18] A. Deng, U. Knoblich, J. Lu (2018), "Applying the delta method in metric
        analytics: a practical guide with novel ideas", KDD 2018 (arXiv:1803.06336).
    [Hinkley69] D. V. Hinkley (1969), "On the ratio of two correlated normal random
        variables", Biometrika 56(3):635–639.
    [CB02] G. Casella, R. L. Berger (2002), Statistical Inference, 2nd ed., Thm 5.5.24
        (delta method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scipy import stats as sps

from banditd.admin_cli.stats.serialise import json_float, json_interval
from banditd.admin_cli.stats.sufficient import SampleStats

MeanMethod = Literal["t", "normal"]


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with a confidence interval.

    Attributes:
        estimate: the point estimate (``nan`` when undefined; see ``message``).
        lower, upper: interval ends; ``±inf`` when unbounded, ``nan`` when undefined.
        level: confidence level, e.g. 0.95.
        method: how the interval was computed ("wilson", "t", "normal", "delta", ...).
        message: why the result is degenerate, empty when it is not.
    """

    estimate: float
    lower: float
    upper: float
    level: float
    method: str
    message: str = ""

    @property
    def is_defined(self) -> bool:
        return not (math.isnan(self.lower) or math.isnan(self.upper))

    def contains(self, value: float) -> bool:
        return self.is_defined and self.lower <= value <= self.upper

    @property
    def width(self) -> float:
        return self.upper - self.lower

    def to_dict(self) -> dict[str, object]:
        return {
            "estimate": json_float(self.estimate),
            "ci": json_interval(self.lower, self.upper),
            "level": self.level,
            "method": self.method,
            "message": self.message,
        }


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")


def z_quantile(level: float) -> float:
    """Two-sided normal critical value z_{1−(1−level)/2} (1.959964 for level 0.95)."""
    _check_level(level)
    return float(sps.norm.ppf(0.5 + level / 2))


def wilson_interval(successes: float, n: float, level: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion p [Wilson27].

    With p̂ = k/n and z = z_{1−α/2}, the interval is the set of p whose score test
    |p̂ − p| / √(p(1 − p)/n) ≤ z accepts, i.e. ([Newcombe98] method 3)

        (2np̂ + z² ± z·√(z² + 4np̂(1 − p̂))) / (2(n + z²)).

    Unlike the Wald interval it stays inside [0, 1] and keeps close to nominal coverage
    for small n and rates near 0 or 1 [BCD01], which is the regime of reward rates on a
    young experiment. ``n = 0`` gives the vacuous interval [0, 1].
    """
    _check_level(level)
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return Interval(math.nan, 0.0, 1.0, level, "wilson", "no observations")
    z = z_quantile(level)
    p_hat = successes / n
    # Newcombe (1998) eq. for method 3 (Wilson score, no continuity correction).
    centre = 2 * n * p_hat + z * z
    half = z * math.sqrt(z * z + 4 * n * p_hat * (1 - p_hat))
    denominator = 2 * (n + z * z)
    lower = max((centre - half) / denominator, 0.0)
    upper = min((centre + half) / denominator, 1.0)
    return Interval(p_hat, lower, upper, level, "wilson")


def proportion_interval(sample: SampleStats, level: float = 0.95) -> Interval:
    """Wilson interval for a sample of 0/1 rewards given as ``SampleStats`` (Σx = successes)."""
    return wilson_interval(sample.sum, sample.n, level)


def is_binary(sample: SampleStats) -> bool:
    """True when every observation is 0 or 1 (for rewards in [0, 1]).

    x² ≤ x on [0, 1] with equality only at 0 and 1, so Σx² = Σx ⇔ all 0/1.
    """
    return sample.sum == sample.sum_sq and 0 <= sample.mean <= 1


def reward_interval(sample: SampleStats, level: float = 0.95) -> Interval:
    """Interval for a reward rate: Wilson for 0/1 rewards, else the t interval."""
    if is_binary(sample):
        return proportion_interval(sample, level)
    return mean_interval(sample, level)


def mean_interval(sample: SampleStats, level: float = 0.95, method: MeanMethod = "t") -> Interval:
    """Interval for a population mean μ from x̄ and s².

        x̄ ± q · s/√n,   q = t_{n−1, 1−α/2} ("t") or z_{1−α/2} ("normal").

    The t form is exact for normal data and the normal form is the CLT large-sample
    interval; for n in the thousands they agree to three digits. Degenerate inputs:
    ``n = 0`` → (−inf, inf); ``n = 1`` with "t" → (−inf, inf) (no degrees of freedom);
    ``s² = 0`` → the point [x̄, x̄] with a message.
    """
    _check_level(level)
    if method not in ("t", "normal"):
        raise ValueError(f"method must be 't' or 'normal', got {method!r}")
    if sample.n == 0:
        return Interval(math.nan, -math.inf, math.inf, level, method, "no observations")
    mean = sample.mean
    if method == "t" and sample.n < 2:
        return Interval(mean, -math.inf, math.inf, level, method, "one observation: no variance")
    if sample.variance == 0:
        return Interval(mean, mean, mean, level, method, "zero variance")
    # Student t with n − 1 degrees of freedom, or the normal (CLT) quantile.
    q = float(sps.t.ppf(0.5 + level / 2, df=sample.n - 1)) if method == "t" else z_quantile(level)
    half = q * math.sqrt(sample.variance_of_mean)
    return Interval(mean, mean - half, mean + half, level, method)


def difference_variance(treatment: SampleStats, control: SampleStats) -> float:
    """Var(x̄_T − x̄_C) = s_T²/n_T + s_C²/n_C for independent samples (``inf`` if one is empty)."""
    return treatment.variance_of_mean + control.variance_of_mean


def absolute_lift(treatment: SampleStats, control: SampleStats, level: float = 0.95) -> Interval:
    """Difference of means Δ = μ_T − μ_C with the large-sample (Welch) normal interval.

        Δ̂ = x̄_T − x̄_C,   Δ̂ ± z_{1−α/2} · √(s_T²/n_T + s_C²/n_C).
    """
    _check_level(level)
    if treatment.is_empty or control.is_empty:
        return Interval(
            math.nan, -math.inf, math.inf, level, "normal", "an arm has no observations"
        )
    estimate = treatment.mean - control.mean
    variance = difference_variance(treatment, control)
    if variance == 0:
        return Interval(estimate, estimate, estimate, level, "normal", "zero variance in both arms")
    half = z_quantile(level) * math.sqrt(variance)
    return Interval(estimate, estimate - half, estimate + half, level, "normal")


def relative_lift_variance(treatment: SampleStats, control: SampleStats) -> float:
    """Delta-method variance of the relative lift r̂ = x̄_T / x̄_C − 1 [Deng18], [CB02].

    For independent arms, the first-order Taylor expansion of g(a, b) = a/b − 1 at
    (μ_T, μ_C) gives

        Var(r̂) ≈ s_T² / (n_T · x̄_C²) + x̄_T² · s_C² / (n_C · x̄_C⁴).

    ``nan`` when the control mean is 0 (the ratio is undefined) or so close to 0 that
    x̄_C⁴ underflows to 0 (|x̄_C| below about 1e-81: no double holds the variance),
    ``inf`` when an arm is empty.
    """
    if treatment.is_empty or control.is_empty:
        return math.inf
    mean_c = control.mean
    if mean_c**4 == 0:
        return math.nan
    # Deng, Knoblich & Lu (2018): ratio of independent means by the delta method.
    return treatment.variance_of_mean / mean_c**2 + (
        treatment.mean**2 * control.variance_of_mean / mean_c**4
    )


def relative_lift(treatment: SampleStats, control: SampleStats, level: float = 0.95) -> Interval:
    """Relative lift r = μ_T/μ_C − 1 with the delta-method normal interval.

        r̂ ± z_{1−α/2} · √Var(r̂),   Var(r̂) from :func:`relative_lift_variance`.

    The normal approximation of a ratio needs x̄_C well away from 0 relative to its
    standard error ([Hinkley69]; we take a coefficient of variation of x̄_C below ~0.1 as
    the working rule); for a 10 % reward rate that holds from about a thousand users per arm.
    """
    _check_level(level)
    if treatment.is_empty or control.is_empty:
        return Interval(math.nan, -math.inf, math.inf, level, "delta", "an arm has no observations")
    if control.mean == 0:
        return Interval(math.nan, math.nan, math.nan, level, "delta", "control mean is 0")
    estimate = treatment.mean / control.mean - 1
    variance = relative_lift_variance(treatment, control)
    if variance == 0:
        return Interval(estimate, estimate, estimate, level, "delta", "zero variance in both arms")
    half = z_quantile(level) * math.sqrt(variance)
    return Interval(estimate, estimate - half, estimate + half, level, "delta")
