"""Control: uniform over the candidates (propensity 1/|C|, frequencies within 4
binomial SE), or the fixed default arm (1.0) with a uniform fallback."""

from __future__ import annotations

import numpy as np
import pytest
from banditd.core_ext.policies import ControlPolicy, Rng

from .conftest import binomial_se


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


@pytest.mark.parametrize("default_arm", [-2, 4, 100])
def test_bad_default_arm_raises(default_arm: int) -> None:
    with pytest.raises(ValueError, match="default_arm"):
        ControlPolicy(np.zeros(4), np.zeros(4), Rng(1), default_arm=default_arm)
