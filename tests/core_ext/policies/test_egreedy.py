"""ε-greedy: the returned propensity is the exact
p_a = eps_t/|C| + (1 - eps_t)·[a ∈ G]/|G| (G: greedy set, untried arms count as +inf),
and the empirical choice frequencies over n selects match it within 4 binomial SE
(a chance failure has probability about 6e-5 per check; the seeds are fixed). The same
p_a over the K arms is ``action_distribution``."""

from __future__ import annotations

import numpy as np
import pytest

from banditd.core_ext.policies import EpsilonGreedyPolicy, Rng

from .conftest import binomial_se, select_frequencies


def exact_propensities(pulls, sums, cand, eps):
    means = np.where(pulls[cand] > 0, sums[cand] / np.maximum(pulls[cand], 1e-300), np.inf)
    greedy = means == means.max()
    return eps / len(cand) + (1 - eps) * greedy / greedy.sum()


@pytest.mark.parametrize(("eps", "cand"), [
    (0.3, None),
    (0.05, None),
    (1.0, None),
    (0.0, None),
    (0.4, [4, 1, 2]),
])
def test_propensity_formula_and_empirical_frequencies(eps: float, cand) -> None:
    pulls = np.array([10.0, 20.0, 40.0, 5.0, 8.0])
    sums = np.array([5.0, 10.0, 4.0, 1.0, 4.0])      # arms 0, 1, 4 tie for greedy at 0.5
    policy = EpsilonGreedyPolicy(pulls, sums, Rng(int(eps * 100)), epsilon=eps)
    c = np.arange(5) if cand is None else np.array(cand)
    p = exact_propensities(pulls, sums, c, eps)
    n = 40_000
    arg = None if cand is None else c.astype(np.intp)
    counts = dict.fromkeys(c.tolist(), 0)
    for _ in range(n):
        arm, prop = policy.select(arg)
        j = int(np.flatnonzero(c == arm)[0])
        assert prop == pytest.approx(p[j], rel=1e-12)
        counts[arm] += 1
    freq = np.array([counts[a] for a in c.tolist()]) / n
    assert np.all(np.abs(freq - p) <= 4 * binomial_se(p, n) + 1e-12)


def test_untried_arms_are_greedy() -> None:
    pulls = np.array([10.0, 0.0, 10.0])
    sums = np.array([9.0, 0.0, 1.0])
    policy = EpsilonGreedyPolicy(pulls, sums, Rng(1), epsilon=0.0)
    assert policy.select() == (1, 1.0)


def test_decaying_schedule() -> None:
    pulls = np.array([30.0, 70.0])
    sums = np.array([3.0, 35.0])
    policy = EpsilonGreedyPolicy(pulls, sums, Rng(1), epsilon=0.5, decay=0.01)
    eps_t = 0.5 / (1 + 0.01 * 100)
    assert policy.current_epsilon == pytest.approx(eps_t)
    props = {}
    for _ in range(2000):
        arm, prop = policy.select()
        props[arm] = prop
    assert props[0] == pytest.approx(eps_t / 2)
    assert props[1] == pytest.approx(eps_t / 2 + 1 - eps_t)


@pytest.mark.parametrize(("pulls", "sums", "kw", "cand", "expected"), [
    # arms 0, 1, 4 tie at mean 0.5: exploitation is shared by the three
    ([10, 20, 40, 5, 8], [5, 10, 4, 1, 4], {"epsilon": 0.3}, None,
     [0.06 + 0.7 / 3, 0.06 + 0.7 / 3, 0.06, 0.06, 0.06 + 0.7 / 3]),
    # the subset explores over its own 3 arms and exploits its own best (arm 1), which
    # a renormalised full-set distribution (1/3 each) would miss
    ([10, 10, 10, 10], [9, 5, 3, 1], {"epsilon": 0.3}, [3, 1, 2], [0, 0.1 + 0.7, 0.1, 0.1]),
    # an untried arm has mean +inf: it is the greedy one
    ([10, 0, 10], [9, 0, 1], {"epsilon": 0.2}, None, [0.2 / 3, 0.2 / 3 + 0.8, 0.2 / 3]),
    # decay: eps_t = 0.5 / (1 + 0.01 * 100) = 0.25
    ([30, 70], [3, 35], {"epsilon": 0.5, "decay": 0.01}, None, [0.125, 0.875]),
    # N counts every arm, offered or not: eps_t = 0.5 / (1 + 0.01 * 200) = 1/6
    ([30, 70, 100], [3, 35, 90], {"epsilon": 0.5, "decay": 0.01}, [0, 1],
     [1 / 12, 1 / 12 + 5 / 6, 0]),
    ([10, 10, 10], [1, 9, 5], {"epsilon": 1.0}, [0, 2], [0.5, 0, 0.5]),
    ([10, 10, 10], [1, 9, 5], {"epsilon": 0.0}, [0, 2], [0, 0, 1]),
])
def test_action_distribution_closed_form(pulls, sums, kw, cand, expected) -> None:
    policy = EpsilonGreedyPolicy(np.array(pulls, dtype=float), np.array(sums, dtype=float),
                                 Rng(3), **kw)
    arg = None if cand is None else np.array(cand, dtype=np.intp)
    pi = policy.action_distribution(arg)
    assert pi.dtype == np.float64 and pi.shape == (len(pulls),)
    np.testing.assert_allclose(pi, expected, rtol=1e-12, atol=1e-15)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12)
    for _ in range(200):
        arm, prop = policy.select(arg)
        assert prop == pi[arm]


@pytest.mark.parametrize(("kw", "cand"), [
    ({"epsilon": 0.3}, None),
    ({"epsilon": 0.4}, [4, 1, 2]),
    ({"epsilon": 0.6, "decay": 0.02}, [0, 2, 3]),
])
def test_action_distribution_matches_select_frequencies(kw, cand) -> None:
    pulls = np.array([10.0, 20.0, 40.0, 5.0, 8.0])
    sums = np.array([5.0, 10.0, 4.0, 1.0, 4.0])
    policy = EpsilonGreedyPolicy(pulls, sums, Rng(11), **kw)
    arg = None if cand is None else np.array(cand, dtype=np.intp)
    pi = policy.action_distribution(arg)
    n = 40_000
    freq = select_frequencies(policy, arg, n)
    assert np.all(np.abs(freq - pi) <= 4 * binomial_se(pi, n))   # SE 0 off the candidates


@pytest.mark.parametrize(("kw", "match"), [
    ({"epsilon": -0.01}, "epsilon"),
    ({"epsilon": 1.5}, "epsilon"),
    ({"epsilon": float("nan")}, "epsilon"),
    ({"decay": -1.0}, "decay"),
    ({"decay": float("inf")}, "decay"),
])
def test_bad_parameters_raise(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EpsilonGreedyPolicy(np.zeros(2), np.zeros(2), Rng(1), **kw)
