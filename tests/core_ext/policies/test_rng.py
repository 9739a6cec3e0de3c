"""numpy's C Beta and Gamma samplers as the kernels call them, against scipy.stats.

Each parameter set gets n = 20 000 draws from a fixed seed. Kolmogorov–Smirnov: the
test must not reject at level 1e-3. Mean: within 4 standard errors sqrt(Var/n).
Variance: within 4 SE of the sample variance, sqrt((μ4 - σ⁴)/n) with
μ4 = (excess kurtosis + 3) σ⁴. The grid covers shapes < 1 (Johnk's algorithm in
numpy's random_beta), = 1, moderate, and ≥ 1e4 (Marsaglia–Tsang with a large shape).

Shapes far below 1 put visible probability within one ulp of 1.0 (for Beta(0.05,
0.05) about 8 % of the mass lies in (1 - 1e-16, 1)), which a double rounds to exactly
1.0; a KS test over [0, 1] then measures the float format, not the sampler. Those
shapes are checked on (0, 0.5), where doubles keep full relative precision: the mass
P(X < 1/2) within 4 binomial SE, and KS of the conditional law there.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from banditd.core_ext.policies import Rng

N = 20_000
BETA_GRID = [(0.2, 0.25), (0.3, 0.7), (0.5, 0.5), (1.0, 1.0), (0.5, 3.0), (2.0, 5.0),
             (50.0, 200.0), (1e4, 1e4), (3e4, 7e4), (1e4, 0.5), (0.8, 2e4)]
GAMMA_GRID = [0.05, 0.3, 0.9999, 1.0, 2.5, 30.0, 1e4, 5e4]


def _check_moments(x: np.ndarray, dist) -> None:
    mean, var, _, kurt = (float(v) for v in dist.stats(moments="mvsk"))
    assert abs(x.mean() - mean) <= 4 * np.sqrt(var / len(x))
    se_var = np.sqrt((kurt + 2.0) * var**2 / len(x))      # (μ4 - σ⁴)/n = (κ + 2)σ⁴/n
    assert abs(x.var(ddof=1) - var) <= 4 * se_var


@pytest.mark.parametrize(("a", "b"), BETA_GRID)
def test_beta_draws_match_scipy(a: float, b: float) -> None:
    x = Rng(seed=[int(a * 100), int(b * 100)]).beta(a, b, N)
    assert np.all((x >= 0) & (x <= 1))
    assert stats.kstest(x, stats.beta(a, b).cdf).pvalue > 1e-3
    _check_moments(x, stats.beta(a, b))


@pytest.mark.parametrize(("a", "b"), [(0.05, 0.05), (0.02, 0.1), (0.1, 0.02)])
def test_tiny_shape_beta_draws_match_scipy_below_one_half(a: float, b: float) -> None:
    dist = stats.beta(a, b)
    x = Rng(seed=[int(a * 1000), int(b * 1000), 1]).beta(a, b, N)
    low = x[x < 0.5]
    p_low = float(dist.cdf(0.5))
    assert abs(len(low) / N - p_low) <= 4 * np.sqrt(p_low * (1 - p_low) / N)
    assert stats.kstest(low, lambda v: dist.cdf(v) / p_low).pvalue > 1e-3


@pytest.mark.parametrize("shape", GAMMA_GRID)
def test_gamma_draws_match_scipy(shape: float) -> None:
    x = Rng(seed=int(shape * 1000)).standard_gamma(shape, N)
    assert np.all(x >= 0)
    assert stats.kstest(x, stats.gamma(shape).cdf).pvalue > 1e-3
    _check_moments(x, stats.gamma(shape))


def test_uniforms_match_scipy() -> None:
    x = Rng(seed=3).random(N)
    assert stats.kstest(x, "uniform").pvalue > 1e-3


def test_seeded_streams_replay_and_entropy_streams_differ() -> None:
    assert np.array_equal(Rng(7).beta(2.0, 3.0, 50), Rng(7).beta(2.0, 3.0, 50))
    assert not np.array_equal(Rng().random(8), Rng().random(8))


def test_spawned_children_are_reproducible_and_distinct() -> None:
    parent = Rng(11)
    c1, c2 = parent.spawn(), parent.spawn()
    x1, x2 = c1.random(1000), c2.random(1000)
    assert not np.array_equal(x1, x2)
    assert abs(np.corrcoef(x1, x2)[0, 1]) < 4 / np.sqrt(1000)
    again = Rng(11)
    assert np.array_equal(again.spawn().random(1000), x1)


@pytest.mark.parametrize(("call", "match"), [
    (lambda r: r.beta(0.0, 1.0, 3), "Beta parameters"),
    (lambda r: r.beta(1.0, float("nan"), 3), "Beta parameters"),
    (lambda r: r.standard_gamma(-1.0, 3), "Gamma shape"),
    (lambda r: r.random(-1), "size"),
])
def test_bad_distribution_parameters_raise(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(Rng(1))
