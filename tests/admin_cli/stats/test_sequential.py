"""mSPRT: closed forms against Johari et al. (2017) and numerical integration; A/A error
control under 14 daily looks; power; the planning formula; degenerate looks.

Simulations draw binary rewards (base rate 10 %) per day and arm with fixed seeds.
A rate estimated from R experiments has standard error √(r(1 − r)/R); bounds are
"target + 3 SE" (one-sided, ≈ 0.13 % chance of a false failure for a correct method).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from banditd.admin_cli.stats.sequential import (
    Look,
    always_valid_halfwidth,
    difference_look,
    look_p_value,
    mixture_log_likelihood_ratio,
    msprt,
    msprt_path,
    relative_look,
    required_variance,
    running_interval,
    running_p_value,
    tau2_from_mde,
)
from banditd.admin_cli.stats.sufficient import SampleStats

ALPHA = 0.05
MDE = 0.05
DAYS = 14


def _se(rate: float, reps: int) -> float:
    return math.sqrt(rate * (1 - rate) / reps)


# -- closed forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "sigma2", "n", "tau2", "theta0"),
    [(0.3, 1.0, 100, 0.04, 0.0), (-0.1, 4.0, 2500, 0.01, 0.05), (0.0, 0.09, 10, 1.0, 0.0)],
)
def test_matches_johari_one_stream_form(mean, sigma2, n, tau2, theta0) -> None:
    """Λₙ = √(σ²/(σ² + nτ²)) exp(n²τ²(X̄ₙ − θ₀)² / (2σ²(σ² + nτ²))) (Johari et al. 2017)."""
    published = math.sqrt(sigma2 / (sigma2 + n * tau2)) * math.exp(
        n**2 * tau2 * (mean - theta0) ** 2 / (2 * sigma2 * (sigma2 + n * tau2))
    )
    ours = mixture_log_likelihood_ratio(mean, sigma2 / n, tau2, theta0)
    assert float(ours) == pytest.approx(math.log(published), rel=1e-12, abs=1e-12)


def test_matches_johari_two_stream_form() -> None:
    """Two equal streams: √(2σ²/(2σ² + nτ²)) exp(n²τ²(Ȳ − X̄ − θ₀)² / (4σ²(2σ² + nτ²)))."""
    sigma2, n, tau2, diff = 0.09, 4000, 0.005**2, 0.004
    published = math.sqrt(2 * sigma2 / (2 * sigma2 + n * tau2)) * math.exp(
        n**2 * tau2 * diff**2 / (4 * sigma2 * (2 * sigma2 + n * tau2))
    )
    ours = mixture_log_likelihood_ratio(diff, 2 * sigma2 / n, tau2)
    assert float(ours) == pytest.approx(math.log(published), rel=1e-12)


@pytest.mark.parametrize(("estimate", "variance", "tau2"), [(0.01, 1e-5, 2.5e-5), (-2.0, 1.0, 4.0)])
def test_closed_form_equals_mixture_integral(estimate, variance, tau2) -> None:
    """Λ = ∫ N(θ̂; θ, V) / N(θ̂; 0, V) dN(θ; 0, τ²), integrated numerically."""
    sd = math.sqrt(tau2)

    def integrand(theta: float) -> float:
        ratio = sps.norm.pdf(estimate, theta, math.sqrt(variance)) / sps.norm.pdf(
            estimate, 0.0, math.sqrt(variance)
        )
        return ratio * sps.norm.pdf(theta, 0.0, sd)

    value, _ = integrate.quad(integrand, -12 * sd, 12 * sd, points=[estimate], limit=200)
    assert float(mixture_log_likelihood_ratio(estimate, variance, tau2)) == pytest.approx(
        math.log(value), rel=1e-7
    )


@pytest.mark.parametrize(("variance", "tau2"), [(1e-6, 2.5e-5), (3e-5, 2.5e-5), (1.0, 0.01)])
def test_halfwidth_inverts_the_test(variance: float, tau2: float) -> None:
    """At θ₀ = θ̂ ± h, Λ(θ₀) = 1/α exactly; p ≤ α ⇔ 0 ∉ CI at a single look."""
    estimate = 0.3
    h = float(always_valid_halfwidth(variance, tau2, ALPHA))
    for null in (estimate - h, estimate + h):
        log_lr = float(mixture_log_likelihood_ratio(estimate, variance, tau2, null))
        assert log_lr == pytest.approx(math.log(1 / ALPHA), rel=1e-10)
    for est in np.linspace(-3 * h, 3 * h, 25):
        p = float(look_p_value(est, variance, tau2))
        assert (p <= ALPHA) == (abs(est) >= h) or math.isclose(abs(est), h, rel_tol=1e-9)


def test_running_p_value_and_interval_are_monotone() -> None:
    rng = np.random.default_rng(3)
    p = running_p_value(rng.uniform(size=(5, 30)), axis=1)
    assert np.all(np.diff(p, axis=1) <= 0)
    lo, hi = running_interval(-rng.uniform(1, 2, (5, 30)), rng.uniform(1, 2, (5, 30)), axis=1)
    assert np.all(np.diff(lo, axis=1) >= 0) and np.all(np.diff(hi, axis=1) <= 0)


# -- simulation -----------------------------------------------------------------------


def simulate(rng, experiments: int, daily_n: int, p_t: float, p_c: float, days: int = DAYS):
    """Cumulative estimate, plug-in variance and τ² at each daily look, shape (E, days)."""
    n = daily_n * np.arange(1, days + 1)
    k_t = rng.binomial(daily_n, p_t, size=(experiments, days)).cumsum(axis=1)
    k_c = rng.binomial(daily_n, p_c, size=(experiments, days)).cumsum(axis=1)
    m_t, m_c = k_t / n, k_c / n
    # s²/n with the unbiased Bernoulli variance s² = p̂(1 − p̂)·n/(n − 1), as SampleStats.
    var = m_t * (1 - m_t) / (n - 1) + m_c * (1 - m_c) / (n - 1)
    return m_t - m_c, var, (MDE * m_c) ** 2


def test_aa_false_positive_rate_with_14_looks_and_naive_inflation() -> None:
    """H₀ true, 14 daily looks: mSPRT FPR ≤ α + 3 SE; the daily z-test inflates it.

    Armitage, McPherson & Rowe (1969) give ≈ 0.20–0.25 for a 5 % z-test repeated at 10–20
    looks; we only assert it is clearly above α (α + 10 SE ≈ 0.10).
    """
    experiments = 2000
    diff, var, tau2 = simulate(np.random.default_rng(2017), experiments, 2000, 0.1, 0.1)
    p = running_p_value(look_p_value(diff, var, tau2), axis=1)
    fpr = float(np.mean(p[:, -1] <= ALPHA))
    naive = float(np.mean(np.any(np.abs(diff) / np.sqrt(var) > sps.norm.ppf(0.975), axis=1)))
    assert fpr <= ALPHA + 3 * _se(ALPHA, experiments)
    assert naive > ALPHA + 10 * _se(ALPHA, experiments)


def test_always_valid_interval_covers_at_every_look() -> None:
    """P(Δ ∈ CIₙ for all 14 looks) ≥ 1 − α − 3 SE under a true 10 % lift."""
    experiments = 2000
    diff, var, tau2 = simulate(np.random.default_rng(99), experiments, 2000, 0.11, 0.10)
    h = always_valid_halfwidth(var, tau2, ALPHA)
    lo, hi = running_interval(diff - h, diff + h, axis=1)
    covered = float(np.mean((lo[:, -1] <= 0.01) & (hi[:, -1] >= 0.01)))
    assert covered >= 1 - ALPHA - 3 * _se(ALPHA, experiments)


def test_power_for_a_large_effect() -> None:
    """A 20 % relative lift on a 10 % base with 5000 users/arm/day is found by day 14.

    At day 14 Var(Δ̂) ≈ 2.8e−6 and the always-valid half-width ≈ 0.0051, a quarter of the
    true Δ = 0.02 (≈ 9 SD away), so power is ≈ 1; we assert > 0.99.
    """
    diff, var, tau2 = simulate(np.random.default_rng(5), 1000, 5000, 0.12, 0.10)
    p = running_p_value(look_p_value(diff, var, tau2), axis=1)
    assert float(np.mean((p[:, -1] <= ALPHA) & (diff[:, -1] > 0))) > 0.99


def test_required_variance_is_monotone_and_solves_the_equation() -> None:
    tau2 = tau2_from_mde(MDE, 0.1)
    z = sps.norm.ppf(0.8)
    grid = np.logspace(-12, -2, 400)
    g = always_valid_halfwidth(grid, tau2, ALPHA) + z * np.sqrt(grid)
    assert np.all(np.diff(g) > 0)
    v = required_variance(0.005, tau2, ALPHA, 0.8)
    assert float(always_valid_halfwidth(v, tau2, ALPHA)) + z * math.sqrt(v) == pytest.approx(
        0.005, rel=1e-6
    )
    assert required_variance(0.0, tau2, ALPHA) == 0.0


def test_planned_sample_size_reaches_the_stated_power() -> None:
    """Run an experiment for the N implied by V* (effect = MDE, 80 % power): the sequential
    test with 14 daily looks detects it in ≥ 80 % − 3 SE of simulated experiments."""
    p_c, p_t = 0.10, 0.105
    v_star = required_variance(p_t - p_c, tau2_from_mde(MDE, p_c), ALPHA, 0.8)
    per_arm = (p_t * (1 - p_t) + p_c * (1 - p_c)) / v_star
    experiments = 1000
    diff, var, tau2 = simulate(
        np.random.default_rng(8), experiments, math.ceil(per_arm / DAYS), p_t, p_c
    )
    p = running_p_value(look_p_value(diff, var, tau2), axis=1)
    power = float(np.mean(p[:, -1] <= ALPHA))
    assert power >= 0.8 - 3 * _se(0.8, experiments)


# -- per-look API and degenerate looks ------------------------------------------------


def test_difference_and_relative_looks() -> None:
    t, c = SampleStats.from_binary(110, 1000), SampleStats.from_binary(100, 1000)
    d = difference_look(t, c, MDE)
    assert d.estimate == pytest.approx(0.01)
    assert d.variance == pytest.approx(0.11 * 0.89 / 999 + 0.1 * 0.9 / 999)
    assert d.tau2 == pytest.approx((0.05 * 0.1) ** 2)
    r = relative_look(t, c, MDE)
    assert r.estimate == pytest.approx(0.1)
    assert r.tau2 == pytest.approx(0.0025)


@pytest.mark.parametrize(
    ("estimate", "variance", "tau2"),
    [(0.1, 0.0, 1.0), (0.1, math.inf, 1.0), (0.1, 1.0, 0.0), (math.nan, 1.0, 1.0)],
)
def test_looks_without_information_carry_no_evidence(estimate, variance, tau2) -> None:
    assert float(mixture_log_likelihood_ratio(estimate, variance, tau2)) == 0.0
    assert float(look_p_value(estimate, variance, tau2)) == 1.0
    result = msprt([Look(estimate, variance, tau2)])
    assert result.p_value == 1.0 and not result.significant
    assert "no look so far carried information" in result.message
    json.dumps(result.to_dict(), allow_nan=False)


def test_empty_arm_and_zero_baseline_looks() -> None:
    empty = SampleStats.empty()
    zero = SampleStats.from_binary(0, 500)
    assert msprt([difference_look(empty, zero, MDE)]).p_value == 1.0
    assert msprt([relative_look(zero, zero, MDE)]).p_value == 1.0
    assert msprt([]).looks == 0 and msprt([]).p_value == 1.0


def test_empty_running_intersection_is_reported() -> None:
    looks = [Look(1.0, 1e-4, 1.0), Look(-1.0, 1e-4, 1.0)]
    result = msprt_path(looks)[-1]
    assert "not stationary" in result.message
    assert math.isnan(result.lower) and result.significant
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: always_valid_halfwidth(1.0, 1.0, 1.5), "alpha"),
        (lambda: msprt_path([Look(0, 1, 1)], alpha=0.0), "alpha"),
        (lambda: tau2_from_mde(0.0), "minimum detectable effect"),
        (lambda: required_variance(0.1, 0.0, 0.05), "tau2"),
        (lambda: required_variance(0.1, 1.0, 0.05, power=1.0), "power"),
        (lambda: required_variance(0.1, 1.0, 0.05, power=0.3), "power"),
    ],
)
def test_invalid_arguments(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()
