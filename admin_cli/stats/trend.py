"""Daily trend of a policy's reward rate: weighted least-squares slope with its SE.

A novelty effect or a bandit still learning shows up as a slope in the daily reward
rate; ``banditctl decide`` prints it next to the lift so the owner does not ship a
policy whose advantage is melting away.

Model. Day d (d = 0, 1, …; days without data are skipped) has nᵈ observations with
mean yᵈ. With per-observation variance σ², Var(yᵈ) = σ²/nᵈ, so the efficient fit of
yᵈ = a + b·d uses weights wᵈ = nᵈ/σ² ([Weisberg14] §7.1):

    x̄_w = Σ wᵈ d / Σ wᵈ,   S_xx = Σ wᵈ (d − x̄_w)²,
    b̂ = Σ wᵈ (d − x̄_w)(yᵈ − ȳ_w) / S_xx,   Var(b̂) = φ / S_xx.

σ² is the pooled sample variance of all observations. Day-to-day variation beyond
sampling noise (weekday effects, traffic mix) is common, so the dispersion φ is
estimated by Pearson's χ²/df, φ̂ = Σ wᵈ rᵈ² / (k − 2), and floored at 1 — never claim
less noise than sampling alone implies ([MN89] ch. 4, over-dispersion).
With exactly two days φ cannot be estimated and 1 is used.

References:
    [Weisberg14] S. Weisberg (2014), Applied Linear Regression, 4th ed., Wiley, §7.1.
    [MN89] P. McCullagh, J. A. Nelder (1989), Generalized Linear Models, 2nd ed.,
        Chapman & Hall, ch. 4 (over-dispersion, Pearson χ²/df).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from banditd.admin_cli.stats.serialise import json_float
from banditd.admin_cli.stats.sufficient import SampleStats, pool


@dataclass(frozen=True, slots=True)
class TrendResult:
    """Slope of the daily mean per day.

    Attributes:
        slope: b̂, change of the daily mean per day (``nan`` when undefined).
        se: its standard error √(φ/S_xx) (``nan`` when undefined, 0 with zero variance).
        relative_slope: b̂ / overall mean (fraction of the mean per day), ``nan`` if mean 0.
        days: number of days with data used in the fit.
        dispersion: φ used (≥ 1).
        message: why the result is degenerate, empty when it is not.
    """

    slope: float
    se: float
    relative_slope: float
    days: int
    dispersion: float
    message: str = ""

    @property
    def z(self) -> float:
        """b̂ / SE(b̂) (``nan`` when the SE is 0 or undefined)."""
        return self.slope / self.se if self.se > 0 else math.nan

    def to_dict(self) -> dict[str, object]:
        return {
            "slope_per_day": json_float(self.slope),
            "se": json_float(self.se),
            "z": json_float(self.z),
            "relative_slope_per_day": json_float(self.relative_slope),
            "days": self.days,
            "dispersion": json_float(self.dispersion),
            "method": "weighted least squares, weights n_d / s², Pearson dispersion floored at 1",
            "message": self.message,
        }


def daily_trend(daily: Sequence[SampleStats]) -> TrendResult:
    """WLS slope of the daily means; ``daily[d]`` is day d's sample (n = 0 for no data)."""
    days = np.array([d for d, s in enumerate(daily) if s.n > 0], float)
    k = int(days.size)
    if k < 2:
        return TrendResult(math.nan, math.nan, math.nan, k, 1.0, "fewer than two days with data")
    total = pool(daily)
    n = np.array([daily[int(d)].n for d in days], float)
    y = np.array([daily[int(d)].mean for d in days], float)

    def relative(slope: float) -> float:
        return slope / total.mean if total.mean != 0 else math.nan

    sigma2 = total.variance
    if sigma2 == 0:
        return TrendResult(0.0, 0.0, relative(0.0), k, 1.0, "zero variance: every reward is equal")
    w = n / sigma2  # Weisberg (2014) §7.1: weights are inverse variances of the daily means.
    x_bar = float(np.sum(w * days) / np.sum(w))
    y_bar = float(np.sum(w * y) / np.sum(w))
    sxx = float(np.sum(w * (days - x_bar) ** 2))
    slope = float(np.sum(w * (days - x_bar) * (y - y_bar)) / sxx)
    message = ""
    if k > 2:
        residuals = y - (y_bar + slope * (days - x_bar))
        # Pearson χ²/df dispersion, McCullagh & Nelder (1989) ch. 4; floored at 1.
        dispersion = max(float(np.sum(w * residuals**2) / (k - 2)), 1.0)
    else:
        dispersion = 1.0
        message = "two days: day-to-day dispersion not estimable, sampling noise only"
    se = math.sqrt(dispersion / sxx)
    return TrendResult(slope, se, relative(slope), k, dispersion, message)
