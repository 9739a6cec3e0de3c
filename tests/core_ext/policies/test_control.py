"""Control: uniform over the candidates (propensity 1/|C|, frequencies within 4
binomial SE, a chance failure probability of about 6e-5 per check with fixed seeds),
or the fixed default arm (1.0) with a uniform fallback; ``action_distribution`` is
that rule over the K arms."""

from __future__ import annotations

import numpy as np
import pytest

from banditd.core_ext.policies import ControlPolicy, Rng

from .conftest import binomial_se, select_frequencies


def test_uniform_over_candidates() -> None:
    policy = ControlPolicy(np.zeros(6), np.zeros(6), Rng(1))
    cand = np.array([5, 2, 0, 3], dtype=np.intp)
    n = 20_000
    picks = []
    for _ in range(n):
        arm, prop = policy.select(cand)
        assert prop == 0.25
        picks.append(arm)
    freq = np.bincount(picks, minlength=6)[cand] / n
    assert np.all(np.abs(freq - 0.25) <= 4 * binomial_se(0.25, n))
    assert policy.select()[1] == pytest.approx(1 / 6)


def test_default_arm_and_fallback() -> None:
    policy = ControlPolicy(np.zeros(4), np.zeros(4), Rng(2), default_arm=2)
    assert policy.select() == (2, 1.0)
    assert policy.select(np.array([3, 2], dtype=np.intp)) == (2, 1.0)
    arm, prop = policy.select(np.array([0, 1], dtype=np.intp))
    assert arm in (0, 1) and prop == 0.5


@pytest.mark.parametrize(("default_arm", "cand", "expected"), [
    (-1, None, [0.25] * 4),
    (-1, [3, 1], [0, 0.5, 0, 0.5]),
    (2, None, [0, 0, 1, 0]),
    (2, [3, 2], [0, 0, 1, 0]),
    (2, [0, 1, 3], [1 / 3, 1 / 3, 0, 1 / 3]),   # default not offered: uniform fallback
    (2, [1], [0, 1, 0, 0]),
])
def test_action_distribution_closed_form(default_arm: int, cand, expected) -> None:
    policy = ControlPolicy(np.zeros(4), np.zeros(4), Rng(3), default_arm=default_arm)
    arg = None if cand is None else np.array(cand, dtype=np.intp)
    pi = policy.action_distribution(arg)
    assert pi.dtype == np.float64
    np.testing.assert_allclose(pi, expected, rtol=0, atol=1e-15)
    assert pi.sum() == pytest.approx(1.0, abs=1e-15)
    for _ in range(50):
        arm, prop = policy.select(arg)
        assert prop == pi[arm]


@pytest.mark.parametrize(("default_arm", "cand"), [(-1, None), (-1, [5, 2, 0]), (1, [0, 3, 4])])
def test_action_distribution_matches_select_frequencies(default_arm: int, cand) -> None:
    policy = ControlPolicy(np.zeros(6), np.zeros(6), Rng(4), default_arm=default_arm)
    arg = None if cand is None else np.array(cand, dtype=np.intp)
    pi = policy.action_distribution(arg)
    n = 20_000
    freq = select_frequencies(policy, arg, n)
    assert np.all(np.abs(freq - pi) <= 4 * binomial_se(pi, n))


@pytest.mark.parametrize("default_arm", [-2, 4, 100])
def test_bad_default_arm_raises(default_arm: int) -> None:
    with pytest.raises(ValueError, match="default_arm"):
        ControlPolicy(np.zeros(4), np.zeros(4), Rng(1), default_arm=default_arm)
