"""UCB1 (Auer, Cesa-Bianchi & Fischer 2002): the choice against a NumPy reference
index ``mean + c·sqrt(ln N / n)`` with N the pulls over the candidates; untried
candidates first and uniformly; ties uniform. Frequencies allow 4 binomial SE, so
each check fails by chance with probability about 6e-5 (and the seeds are fixed).
``action_distribution`` against closed forms and against select's frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditd.core_ext.policies import Rng, UCB1Policy

from .conftest import binomial_se, select_frequencies


def reference_index(pulls: np.ndarray, sums: np.ndarray, cand: np.ndarray, c: float):
    n = pulls[cand]
    return sums[cand] / n + c * np.sqrt(math.log(n.sum()) / n)


@pytest.mark.parametrize("seed", range(20))
def test_choice_is_the_argmax_of_the_reference_index(seed: int) -> None:
    g = np.random.default_rng(seed)
    k = int(g.integers(2, 40))
    pulls = g.integers(1, 500, size=k).astype(float)
    sums = np.floor(pulls * g.uniform(0, 1, size=k))
    c = float(g.choice([0.0, 0.5, math.sqrt(2), 3.0]))
    policy = UCB1Policy(pulls, sums, Rng(seed), c=c)
    cands = [np.arange(k), g.choice(k, size=max(1, k // 3), replace=False)]
    for cand in cands:
        idx = reference_index(pulls, sums, cand, c)
        arm, prop = policy.select(None if len(cand) == k else cand.astype(np.intp))
        best = np.flatnonzero(idx == idx.max())
        assert arm in cand[best]
        assert prop == pytest.approx(1.0 / len(best))


def test_untried_candidates_come_first_uniformly() -> None:
    pulls = np.array([10.0, 0.0, 30.0, 0.0, 5.0])
    sums = np.array([9.0, 0.0, 1.0, 0.0, 5.0])
    policy = UCB1Policy(pulls, sums, Rng(1))
    n = 10_000
    picks = []
    for _ in range(n):
        arm, prop = policy.select()
        assert prop == 0.5
        picks.append(arm)
    assert set(picks) == {1, 3}
    assert abs(picks.count(1) / n - 0.5) <= 4 * binomial_se(0.5, n)
    arm, prop = policy.select(np.array([0, 3, 4], dtype=np.intp))
    assert (arm, prop) == (3, 1.0)


def test_ties_are_broken_uniformly_with_exact_propensity() -> None:
    pulls = np.array([10.0, 10.0, 20.0, 10.0])
    sums = np.array([5.0, 5.0, 1.0, 5.0])       # arms 0, 1, 3 identical and best
    policy = UCB1Policy(pulls, sums, Rng(2))
    n = 9_000
    picks = []
    for _ in range(n):
        arm, prop = policy.select()
        assert prop == pytest.approx(1 / 3)
        picks.append(arm)
    freq = np.bincount(picks, minlength=4) / n
    assert freq[2] == 0
    assert np.all(np.abs(freq[[0, 1, 3]] - 1 / 3) <= 4 * binomial_se(1 / 3, n))


def test_total_pulls_are_counted_over_the_candidates_only() -> None:
    """With N over all arms, arm 1's bonus would win; over {0, 1} arm 0's mean does."""
    pulls = np.array([100.0, 4.0, 1e6])
    sums = np.array([60.0, 1.0, 0.0])
    policy = UCB1Policy(pulls, sums, Rng(3), c=1.0)
    cand = np.array([0, 1], dtype=np.intp)
    assert policy.select(cand)[0] == int(cand[np.argmax(reference_index(pulls, sums, cand, 1.0))])


def _intp(arms) -> np.ndarray:
    return np.array(arms, dtype=np.intp)


@pytest.mark.parametrize(("pulls", "sums", "cand", "expected"), [
    # three identical best arms tie: 1/3 each
    ([10, 10, 20, 10], [5, 5, 1, 5], None, [1 / 3, 1 / 3, 0, 1 / 3]),
    ([10, 10, 20, 10], [5, 5, 1, 5], [1, 2, 3], [0, 0.5, 0, 0.5]),
    # untried arms are forced first, uniformly, whatever the indices of the others
    ([10, 0, 30, 0, 5], [9, 0, 1, 0, 5], None, [0, 0.5, 0, 0.5, 0]),
    ([10, 0, 30, 0, 5], [9, 0, 1, 0, 5], [0, 3, 4], [0, 0, 0, 1, 0]),
    # N over all arms (ln N = 13.8) gives arm 1's bonus the win; N over {0, 1} (ln N =
    # 4.8) leaves arm 0 ahead, 1.009 against 0.992
    ([100, 20, 1e6], [70, 6, 0], None, [0, 1, 0]),
    ([100, 20, 1e6], [70, 6, 0], [0, 1], [1, 0, 0]),
    ([100, 20, 1e6], [70, 6, 0], [1, 0], [1, 0, 0]),
])
def test_action_distribution_closed_form(pulls, sums, cand, expected) -> None:
    pulls, sums = np.array(pulls, dtype=float), np.array(sums, dtype=float)
    policy = UCB1Policy(pulls, sums, Rng(4))
    arg = None if cand is None else _intp(cand)
    pi = policy.action_distribution(arg)
    assert pi.dtype == np.float64 and pi.shape == (len(pulls),)
    np.testing.assert_allclose(pi, expected, rtol=0, atol=1e-15)
    assert pi.sum() == pytest.approx(1.0, abs=1e-15)
    arm, prop = policy.select(arg)
    assert prop == pi[arm]
    assert pulls.tolist() == policy.pulls_array.tolist()


@pytest.mark.parametrize("seed", range(10))
def test_action_distribution_is_the_argmax_of_the_reference_index(seed: int) -> None:
    g = np.random.default_rng(100 + seed)
    k = int(g.integers(2, 30))
    pulls = g.integers(1, 50, size=k).astype(float)
    sums = np.floor(pulls * g.choice([0.25, 0.5, 0.75], size=k))   # coarse: ties happen
    policy = UCB1Policy(pulls, sums, Rng(seed))
    cand = g.choice(k, size=max(1, k // 2), replace=False)
    idx = reference_index(pulls, sums, cand, math.sqrt(2))
    best = cand[np.isclose(idx, idx.max(), rtol=0, atol=1e-12)]
    expected = np.zeros(k)
    expected[best] = 1 / len(best)
    np.testing.assert_allclose(policy.action_distribution(_intp(cand)), expected, atol=1e-15)


@pytest.mark.parametrize(("pulls", "sums", "cand"), [
    ([10, 10, 20, 10], [5, 5, 1, 5], None),
    ([10, 0, 30, 0, 5], [9, 0, 1, 0, 5], [4, 3, 1]),
    ([10, 10, 20, 10], [5, 5, 1, 5], [3, 0, 2]),
])
def test_action_distribution_matches_select_frequencies(pulls, sums, cand) -> None:
    policy = UCB1Policy(np.array(pulls, dtype=float), np.array(sums, dtype=float), Rng(5))
    arg = None if cand is None else _intp(cand)
    pi = policy.action_distribution(arg)
    n = 20_000
    freq = select_frequencies(policy, arg, n)
    assert np.all(np.abs(freq - pi) <= 4 * binomial_se(pi, n))   # SE 0 where pi is 0 or 1


@pytest.mark.parametrize("c", [-0.1, float("nan"), float("inf")])
def test_bad_exploration_constant_raises(c: float) -> None:
    with pytest.raises(ValueError, match="c "):
        UCB1Policy(np.zeros(2), np.zeros(2), Rng(1), c=c)
