"""Daily WLS trend: exact recovery, agreement with NumPy's weighted fit, SE calibration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from banditd.admin_cli.stats.sufficient import SampleStats
from banditd.admin_cli.stats.trend import daily_trend


def _day(n: int, mean: float, var: float) -> SampleStats:
    """A day's statistics with the given mean and sample variance."""
    total = n * mean
    return SampleStats(n, total, var * (n - 1) + total * total / n)


def test_recovers_an_exact_line() -> None:
    daily = [_day(1000 + 100 * d, 0.10 + 0.002 * d, 0.09) for d in range(10)]
    trend = daily_trend(daily)
    assert trend.slope == pytest.approx(0.002, rel=1e-9)
    assert trend.days == 10 and trend.dispersion == 1.0  # no residuals: floored at 1


def test_slope_matches_numpy_weighted_polyfit() -> None:
    rng = np.random.default_rng(4)
    n = rng.integers(500, 5000, size=12)
    k = rng.binomial(n, 0.1)
    daily = [SampleStats.from_binary(int(a), int(b)) for a, b in zip(k, n, strict=True)]
    trend = daily_trend(daily)
    # np.polyfit weights multiply residuals, so w = √nᵈ gives weights nᵈ on squares.
    slope, _ = np.polyfit(np.arange(12), k / n, 1, w=np.sqrt(n))
    assert trend.slope == pytest.approx(slope, rel=1e-9)
    json.dumps(trend.to_dict(), allow_nan=False)


def test_days_without_data_are_skipped() -> None:
    daily = [_day(1000, 0.1, 0.09), SampleStats.empty(), _day(1000, 0.14, 0.09)]
    trend = daily_trend(daily)
    assert trend.days == 2
    assert trend.slope == pytest.approx(0.02)  # (0.14 − 0.10) over 2 days
    assert "two days" in trend.message


def test_se_is_calibrated_under_no_trend() -> None:
    """Flat 10 % rate, 14 days of varying traffic, 2000 series: |b̂/SE| ≤ 1.96 in at least
    95 % − 3 SE of them (the dispersion floor at 1 can only make the SE larger)."""
    rng = np.random.default_rng(21)
    reps = 2000
    n = rng.integers(1000, 4000, size=14)
    k = rng.binomial(n, 0.1, size=(reps, 14))
    inside = [
        abs(daily_trend([SampleStats.from_binary(int(a), int(b)) for a, b in zip(row, n,
                                                                              strict=True)]).z)
        <= 1.96
        for row in k
    ]
    assert np.mean(inside) >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / reps)


def test_overdispersion_widens_the_se() -> None:
    """Day-level noise far above sampling noise (means alternate 0.08 / 0.12 on 10⁴ users)
    makes the Pearson dispersion ≫ 1 and the SE grows by √φ."""
    daily = [_day(10_000, 0.08 if d % 2 else 0.12, 0.09) for d in range(10)]
    trend = daily_trend(daily)
    assert trend.dispersion > 10
    w = 10_000 / (sum(daily, SampleStats.empty()).variance)
    sxx = w * np.sum((np.arange(10) - 4.5) ** 2)
    assert trend.se == pytest.approx(math.sqrt(trend.dispersion / sxx), rel=1e-9)


@pytest.mark.parametrize(
    ("daily", "message"),
    [
        ([], "fewer than two days"),
        ([SampleStats.from_binary(10, 100)], "fewer than two days"),
        ([SampleStats.empty(), SampleStats.empty()], "fewer than two days"),
        ([SampleStats.from_binary(0, 100), SampleStats.from_binary(0, 80)], "zero variance"),
    ],
)
def test_degenerate_series(daily: list[SampleStats], message: str) -> None:
    trend = daily_trend(daily)
    assert message in trend.message
    json.dumps(trend.to_dict(), allow_nan=False)
