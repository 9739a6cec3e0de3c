"""SampleStats: moments against NumPy, pooling, degenerate and invalid input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditd.admin_cli.stats.sufficient import SampleStats, pool

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


def test_moments_match_numpy() -> None:
    x = np.random.default_rng(7).normal(3.0, 2.0, size=1001)
    s = SampleStats.from_values(x)
    assert s.n == 1001
    assert s.mean == pytest.approx(x.mean(), rel=1e-12)
    assert s.variance == pytest.approx(x.var(ddof=1), rel=1e-9)
    assert s.variance_of_mean == pytest.approx(x.var(ddof=1) / x.size, rel=1e-9)


def test_from_binary_is_bernoulli() -> None:
    s = SampleStats.from_binary(30, 100)
    assert s.mean == 0.3
    # Sample variance of 30 ones and 70 zeros: p(1 − p) n/(n − 1).
    assert s.variance == pytest.approx(0.3 * 0.7 * 100 / 99, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, max_size=40), st.lists(finite, max_size=40))
def test_pooling_equals_concatenation(a: list[float], b: list[float]) -> None:
    pooled = SampleStats.from_values(a) + SampleStats.from_values(b)
    direct = SampleStats.from_values(a + b)
    assert pooled.n == direct.n
    assert pooled.sum == pytest.approx(direct.sum, abs=1e-6)
    assert pooled.sum_sq == pytest.approx(direct.sum_sq, rel=1e-9, abs=1e-6)


def test_builtin_sum_and_pool() -> None:
    parts = [SampleStats.from_binary(k, 10) for k in (1, 2, 3)]
    assert sum(parts) == pool(parts) == SampleStats(30, 6.0, 6.0)
    assert pool([]) == SampleStats.empty()


def test_empty_sample_is_defined() -> None:
    s = SampleStats.empty()
    assert s.is_empty
    assert s.mean == 0.0
    assert s.variance == 0.0
    assert math.isinf(s.variance_of_mean)
    json.dumps(s.to_dict(), allow_nan=False)


def test_single_observation_has_zero_variance() -> None:
    s = SampleStats.from_values([4.0])
    assert (s.mean, s.variance, s.variance_of_mean) == (4.0, 0.0, 0.0)


def test_constant_sample_variance_is_exactly_zero() -> None:
    # 0.1 is not representable, so Σx² − (Σx)²/n may cancel to a tiny negative number.
    s = SampleStats.from_values([0.1] * 999)
    assert 0.0 <= s.variance < 1e-15


@pytest.mark.parametrize(
    ("args", "error", "pattern"),
    [
        ((-1, 0.0, 0.0), ValueError, "n must be >= 0"),
        ((2, 1.0, -1.0), ValueError, "sum_sq must be >= 0"),
        ((0, 1.0, 1.0), ValueError, "n = 0 must have"),
        ((2, 10.0, 1.0), ValueError, "Cauchy"),
        ((math.nan, 0.0, 0.0), ValueError, "finite"),
        ((3, math.inf, 1.0), ValueError, "finite"),
        ((True, 1.0, 1.0), TypeError, "must be a number"),
        (("3", 1.0, 1.0), TypeError, "must be a number"),
    ],
)
def test_invalid_statistics_are_rejected(args: tuple, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        SampleStats(*args)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: SampleStats.from_binary(11, 10), "successes <= n"),
        (lambda: SampleStats.from_binary(-1, 10), "successes <= n"),
        (lambda: SampleStats.from_values([1.0, math.nan]), "finite"),
        (lambda: SampleStats.from_values(np.ones((2, 2))), "1-D"),
    ],
)
def test_invalid_constructor_input(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()
