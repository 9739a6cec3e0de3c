"""Intervals against published values, exact binomial coverage and simulated coverage.

Monte Carlo tolerances: a coverage estimated from R independent replications has
standard error √(c(1 − c)/R); with R = 4000 and c = 0.95 that is 0.0034, and every
simulated coverage must be within 3 SE (0.0103) of its target.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from banditd.admin_cli.stats.intervals import (
    absolute_lift,
    mean_interval,
    relative_lift,
    relative_lift_variance,
    reward_interval,
    wilson_interval,
    z_quantile,
)
from banditd.admin_cli.stats.sufficient import SampleStats

REPS = 4000
MC_TOL = 3 * math.sqrt(0.95 * 0.05 / REPS)


@pytest.mark.parametrize(
    ("successes", "n", "lower", "upper"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857–872, Table II, method 3 (Wilson
        # score without continuity correction), examples (a)–(d).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_1998(successes: int, n: int, lower: float, upper: float) -> None:
    ci = wilson_interval(successes, n, 0.95)
    # The table is rounded to 4 decimals.
    assert ci.lower == pytest.approx(lower, abs=5e-5)
    assert ci.upper == pytest.approx(upper, abs=5e-5)
    assert ci.estimate == successes / n


def _wilson_exact_coverage(n: int, p: float, level: float = 0.95) -> float:
    ks = np.arange(n + 1)
    covered = np.array([wilson_interval(int(k), n, level).contains(p) for k in ks])
    return float(sps.binom.pmf(ks, n, p)[covered].sum())


@pytest.mark.parametrize(("n", "p"), [(200, 0.3), (500, 0.1), (1000, 0.05)])
def test_wilson_exact_coverage_is_near_nominal(n: int, p: float) -> None:
    """Coverage summed over the binomial pmf (no simulation error).

    Brown, Cai & DasGupta (2001, Fig. 5) show Wilson's coverage oscillating within about
    ±0.01 of nominal for n ≥ 100 away from p ≈ 0, 1; we assert that band.
    """
    assert abs(_wilson_exact_coverage(n, p) - 0.95) < 0.01


def test_wilson_simulated_coverage_matches_exact() -> None:
    n, p = 200, 0.3
    k = np.random.default_rng(11).binomial(n, p, size=REPS)
    simulated = np.mean([wilson_interval(int(x), n).contains(p) for x in k])
    assert abs(simulated - _wilson_exact_coverage(n, p)) < MC_TOL


def test_t_interval_matches_scipy_and_covers() -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(5.0, 2.0, size=15)
    ci = mean_interval(SampleStats.from_values(x), 0.95, "t")
    lo, hi = sps.t.interval(0.95, df=14, loc=x.mean(), scale=sps.sem(x))
    assert (ci.lower, ci.upper) == pytest.approx((lo, hi), rel=1e-9)
    # t is exact for normal data: coverage 0.95 up to Monte Carlo error.
    samples = rng.normal(5.0, 2.0, size=(REPS, 15))
    covered = [mean_interval(SampleStats.from_values(s), 0.95, "t").contains(5.0) for s in samples]
    assert abs(np.mean(covered) - 0.95) < MC_TOL


def _binary_arms(rng: np.random.Generator, n: int, p_t: float, p_c: float):
    k_t = rng.binomial(n, p_t, size=REPS)
    k_c = rng.binomial(n, p_c, size=REPS)
    return [(SampleStats.from_binary(int(a), n), SampleStats.from_binary(int(b), n))
            for a, b in zip(k_t, k_c, strict=True)]


def test_absolute_lift_coverage() -> None:
    """Welch normal interval for p_T − p_C with 2000 users per arm (np ≥ 200: CLT regime)."""
    arms = _binary_arms(np.random.default_rng(13), 2000, 0.12, 0.10)
    covered = [absolute_lift(t, c).contains(0.02) for t, c in arms]
    assert abs(np.mean(covered) - 0.95) < MC_TOL


def test_relative_lift_delta_method_coverage() -> None:
    """Delta-method interval for p_T/p_C − 1 (Deng et al. 2018), control CV ≈ 0.047."""
    arms = _binary_arms(np.random.default_rng(14), 2000, 0.12, 0.10)
    covered = [relative_lift(t, c).contains(0.2) for t, c in arms]
    assert abs(np.mean(covered) - 0.95) < MC_TOL


def test_lift_formulas_by_hand() -> None:
    t = SampleStats.from_binary(120, 1000)
    c = SampleStats.from_binary(100, 1000)
    z = 1.959963984540054
    v_t, v_c = 0.12 * 0.88 / 999, 0.10 * 0.90 / 999  # s²/n with s² = p(1 − p)·n/(n − 1)
    a = absolute_lift(t, c)
    assert a.estimate == pytest.approx(0.02)
    assert a.upper - a.estimate == pytest.approx(z * math.sqrt(v_t + v_c), rel=1e-9)
    # Delta method: Var(r̂) = V_T/x̄_C² + x̄_T²·V_C/x̄_C⁴.
    expected = v_t / 0.1**2 + 0.12**2 * v_c / 0.1**4
    assert relative_lift_variance(t, c) == pytest.approx(expected, rel=1e-9)
    r = relative_lift(t, c)
    assert r.estimate == pytest.approx(0.2)
    assert r.upper - r.estimate == pytest.approx(z * math.sqrt(expected), rel=1e-9)
    assert z_quantile(0.95) == pytest.approx(z, rel=1e-12)


def test_relative_lift_is_undefined_when_the_control_mean_is_too_small_to_square() -> None:
    """x̄_C = 1e-170 is a valid mean whose fourth power underflows to 0: the delta-method
    variance cannot be represented, so the relative lift carries no evidence (nan)
    rather than dividing by zero."""
    t = SampleStats.from_values([0.5, 0.25, 0.75])
    tiny = SampleStats.from_values([1e-170, 1e-170, 1e-170])
    assert math.isnan(relative_lift_variance(t, tiny))
    assert math.isnan(relative_lift_variance(t, SampleStats.from_values([0.0, 0.0])))
    assert math.isfinite(relative_lift_variance(t, SampleStats.from_values([1e-60, 2e-60])))


@pytest.mark.parametrize(
    ("interval", "finite", "message"),
    [
        (lambda: wilson_interval(0, 0), True, "no observations"),
        (lambda: mean_interval(SampleStats.empty()), False, "no observations"),
        (lambda: mean_interval(SampleStats.from_values([2.0])), False, "one observation"),
        (lambda: mean_interval(SampleStats.from_values([2.0, 2.0, 2.0])), True, "zero variance"),
        (lambda: absolute_lift(SampleStats.empty(), SampleStats.from_binary(1, 10)), False,
         "no observations"),
        (lambda: absolute_lift(SampleStats.from_binary(0, 10), SampleStats.from_binary(0, 10)),
         True, "zero variance"),
        (lambda: relative_lift(SampleStats.from_binary(3, 10), SampleStats.from_binary(0, 10)),
         False, "control mean is 0"),
    ],
)
def test_degenerate_inputs_give_defined_results(interval, finite: bool, message: str) -> None:
    ci = interval()
    assert message in ci.message
    assert math.isfinite(ci.width) == finite
    json.dumps(ci.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: wilson_interval(5, 4), "successes <= n"),
        (lambda: wilson_interval(1, 4, level=1.0), "level"),
        (lambda: mean_interval(SampleStats.from_values([1, 2]), method="bootstrap"), "method"),
        (lambda: absolute_lift(SampleStats.empty(), SampleStats.empty(), level=0), "level"),
    ],
)
def test_invalid_arguments(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()


def test_reward_interval_is_wilson_for_zero_one_rewards_and_t_otherwise():
    binary = SampleStats.from_values([0, 1, 1, 0, 1])
    assert reward_interval(binary).method == "wilson"
    graded = SampleStats.from_values([0, 0.5, 1, 0.25, 1])
    assert reward_interval(graded).method == "t"
    counts = SampleStats.from_values([0, 2, 1, 3])  # sums of several 0/1 rewards per user
    assert reward_interval(counts).method == "t"
