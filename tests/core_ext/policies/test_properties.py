"""Property tests (hypothesis) over every kernel: the arm is always a candidate, the
propensity is in (0, 1], statistics never become NaN, bad input always raises and
leaves the statistics unchanged, and ``action_distribution`` is a distribution over
the candidates that agrees with select's propensity (exactly, but for Thompson's
floor and its on-the-spot subset estimate when it has no subset cache)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditd.core_ext.policies import (
    ControlPolicy,
    EpsilonGreedyPolicy,
    Rng,
    ThompsonPolicy,
    UCB1Policy,
)

FACTORIES = {
    "thompson": lambda p, s, r, d: ThompsonPolicy(
        p, s, r, alpha0=d(st.floats(1e-3, 50)), beta0=d(st.floats(1e-3, 50)),
        propensity_draws=64),
    "ucb": lambda p, s, r, d: UCB1Policy(p, s, r, c=d(st.floats(0, 5))),
    "egreedy": lambda p, s, r, d: EpsilonGreedyPolicy(
        p, s, r, epsilon=d(st.floats(0, 1)), decay=d(st.floats(0, 10))),
    "control": lambda p, s, r, d: ControlPolicy(
        p, s, r, default_arm=d(st.integers(-1, len(p) - 1))),
}


@st.composite
def policies(draw):
    k = draw(st.integers(1, 12))
    pulls = np.array(draw(st.lists(st.integers(0, 10_000).map(float), min_size=k, max_size=k)))
    frac = np.array(draw(st.lists(st.floats(0, 1), min_size=k, max_size=k)))
    sums = pulls * frac
    name = draw(st.sampled_from(sorted(FACTORIES)))
    return FACTORIES[name](pulls, sums, Rng(draw(st.integers(0, 2**32))), draw)


def _candidates(draw, k: int):
    if draw(st.booleans()):
        return None, list(range(k))
    cand = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    return np.array(cand, dtype=np.intp), cand


@settings(max_examples=150, deadline=None)
@given(policy=policies(), data=st.data())
def test_select_and_update_keep_the_invariants(policy, data) -> None:
    k = policy.n_arms
    for _ in range(data.draw(st.integers(1, 15))):
        arg, cand = _candidates(data.draw, k)
        arm, prop = policy.select(arg)
        assert arm in cand
        assert 0.0 < prop <= 1.0
        policy.update(arm, data.draw(st.floats(0, 1)))
    assert np.all(np.isfinite(policy.pulls_array))
    assert np.all(np.isfinite(policy.reward_sum_array))
    assert np.all(policy.reward_sum_array <= policy.pulls_array + 1e-9)


bad_rewards = st.one_of(
    st.just(math.nan), st.just(math.inf), st.just(-math.inf),
    st.floats(max_value=-1e-12, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1 + 1e-12, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=150, deadline=None)
@given(policy=policies(), data=st.data())
def test_bad_input_always_raises_and_changes_nothing(policy, data) -> None:
    k = policy.n_arms
    pulls, sums = policy.pulls_array.copy(), policy.reward_sum_array.copy()
    version = policy.version
    kind = data.draw(st.sampled_from(["reward", "arm", "dup", "range", "empty"]))
    try:
        if kind == "reward":
            policy.update(data.draw(st.integers(0, k - 1)), data.draw(bad_rewards))
        elif kind == "arm":
            policy.update(data.draw(st.one_of(st.integers(max_value=-1),
                                              st.integers(min_value=k))), 0.5)
        elif kind == "dup":
            a = data.draw(st.integers(0, k - 1))
            policy.select(np.array([a, a], dtype=np.intp))
        elif kind == "range":
            bad = data.draw(st.one_of(st.integers(-(2**40), -1), st.integers(k, 2**40)))
            policy.select(np.array([bad], dtype=np.intp))
        else:
            policy.select(np.array([], dtype=np.intp))
    except ValueError:
        pass
    else:
        raise AssertionError(f"bad input of kind {kind!r} was accepted")
    assert policy.version == version
    assert np.array_equal(policy.pulls_array, pulls)
    assert np.array_equal(policy.reward_sum_array, sums)


@settings(max_examples=150, deadline=None)
@given(policy=policies(), data=st.data())
def test_action_distribution_is_select_s_distribution(policy, data) -> None:
    k = policy.n_arms
    arg, cand = _candidates(data.draw, k)
    pulls = policy.pulls_array.copy()
    pi = policy.action_distribution(arg)
    assert pi.dtype == np.float64 and pi.shape == (k,)
    assert np.all(pi >= 0.0)
    assert np.all(np.delete(pi, cand) == 0.0)
    assert math.isclose(pi.sum(), 1.0, rel_tol=0, abs_tol=1e-12)
    assert np.array_equal(policy.pulls_array, pulls)
    arm, prop = policy.select(arg)
    if not isinstance(policy, ThompsonPolicy):
        assert prop == pi[arm]
    elif len(cand) == k:
        assert prop == max(pi[arm], 1 / (policy.propensity_draws + 1))
    else:   # with a subset cache, select logs the very distribution it samples from
        policy.refresh_propensities(subsets=True)
        pi = policy.action_distribution(arg)
        assert math.isclose(pi.sum(), 1.0, rel_tol=0, abs_tol=1e-12)
        assert np.all(np.delete(pi, cand) == 0.0)
        arm, prop = policy.select(arg)
        assert prop == pi[arm] > 0.0


BAD_CANDIDATES = [
    [1, 1], [2], [-1], [], [0.5], [[0, 1]], np.array([1, 1], dtype=np.intp), ["a"],
]


@pytest.mark.parametrize(
    "kernel", [ThompsonPolicy, UCB1Policy, EpsilonGreedyPolicy, ControlPolicy],
    ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("bad", BAD_CANDIDATES, ids=repr)
def test_action_distribution_rejects_what_select_rejects(kernel, bad) -> None:
    policy = kernel(np.ones(2), np.zeros(2), Rng(1))
    with pytest.raises(ValueError) as from_select:
        policy.select(bad)
    with pytest.raises(ValueError) as from_distribution:
        policy.action_distribution(bad)
    assert str(from_distribution.value) == str(from_select.value)
