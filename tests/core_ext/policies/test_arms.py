"""Shared kernel behaviour: statistics validation, candidate validation, update and
adoption. Every bad input raises ValueError with an actionable message and leaves the
statistics, the version and the random stream untouched."""

from __future__ import annotations

import numpy as np
import pytest

from banditd.core_ext.policies import (
    ControlPolicy,
    EpsilonGreedyPolicy,
    Rng,
    ThompsonPolicy,
    UCB1Policy,
)

KERNELS = [ThompsonPolicy, UCB1Policy, EpsilonGreedyPolicy, ControlPolicy]


def _arrays(k: int = 4):
    return np.array([3.0, 0.0, 5.0, 2.0])[:k].copy(), np.array([1.0, 0.0, 2.5, 2.0])[:k].copy()


@pytest.mark.parametrize("cls", KERNELS)
@pytest.mark.parametrize(("pulls", "sums", "match"), [
    (np.zeros(3), np.zeros(4), "same length"),
    (np.zeros(0), np.zeros(0), "at least one arm"),
    (np.zeros(3, dtype=np.float32), np.zeros(3), "float64"),
    (np.zeros(3, dtype=np.int64), np.zeros(3), "float64"),
    (np.zeros((3, 2)), np.zeros(3), "1-D"),
    (np.zeros(6)[::2], np.zeros(3), "C-contiguous"),
    ([0.0, 0.0], np.zeros(2), "numpy float64 array"),
    (np.array([1.0, np.nan]), np.zeros(2), "NaN or inf"),
    (np.array([1.0, np.inf]), np.zeros(2), "NaN or inf"),
    (np.array([-1.0, 1.0]), np.zeros(2), "pulls must be >= 0"),
    (np.array([1.0, 1.0]), np.array([2.0, 0.0]), "reward_sum must be in"),
    (np.array([1.0, 1.0]), np.array([-0.5, 0.0]), "reward_sum must be in"),
])
def test_bad_statistics_raise(cls, pulls, sums, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(pulls, sums, Rng(1))


def test_read_only_and_aliased_arrays_raise() -> None:
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        ThompsonPolicy(ro, np.zeros(3), Rng(1))
    both = np.zeros(3)
    with pytest.raises(ValueError, match="separate"):
        ThompsonPolicy(both, both, Rng(1))


@pytest.mark.parametrize("cls", KERNELS)
@pytest.mark.parametrize(("candidates", "match"), [
    (np.array([], dtype=np.intp), "empty"),
    ([], "empty"),
    (np.array([4], dtype=np.intp), "out of range"),
    (np.array([-1], dtype=np.intp), "out of range"),
    (np.array([0, 2, 0], dtype=np.intp), "more than once"),
    (np.array([0.0, 1.0]), "integer arm indices"),
    (np.array([True, False]), "integer arm indices"),
    (np.array([[0, 1]]), "1-D"),
])
def test_bad_candidates_raise_and_change_nothing(cls, candidates, match: str) -> None:
    pulls, sums = _arrays()
    policy = cls(pulls, sums, Rng(5))
    reference = cls(*_arrays(), Rng(5))
    with pytest.raises(ValueError, match=match):
        policy.select(candidates)
    assert policy.version == 0
    assert np.array_equal(pulls, _arrays()[0]) and np.array_equal(sums, _arrays()[1])
    # the random stream did not move: the next decisions equal a fresh twin's
    assert [policy.select() for _ in range(5)] == [reference.select() for _ in range(5)]


@pytest.mark.parametrize("cls", KERNELS)
def test_candidates_accept_lists_and_other_integer_dtypes(cls) -> None:
    policy = cls(*_arrays(), Rng(1))
    assert policy.select([2])[0] == 2
    assert policy.select(np.array([3], dtype=np.int32))[0] == 3
    assert policy.select(np.array([0, 1, 2, 3], dtype=np.intp)[::-2])[0] in (3, 1)


@pytest.mark.parametrize("cls", KERNELS)
@pytest.mark.parametrize(("arm", "reward", "match"), [
    (4, 1.0, "out of range"),
    (-1, 1.0, "out of range"),
    (0, float("nan"), "reward"),
    (0, float("inf"), "reward"),
    (0, -0.01, "reward"),
    (0, 1.01, "reward"),
])
def test_bad_updates_raise_and_change_nothing(cls, arm: int, reward: float, match: str) -> None:
    pulls, sums = _arrays()
    policy = cls(pulls, sums, Rng(1))
    with pytest.raises(ValueError, match=match):
        policy.update(arm, reward)
    assert policy.version == 0
    assert np.array_equal(pulls, _arrays()[0]) and np.array_equal(sums, _arrays()[1])


@pytest.mark.parametrize("cls", KERNELS)
def test_update_is_visible_in_the_callers_arrays(cls) -> None:
    pulls, sums = _arrays()
    policy = cls(pulls, sums, Rng(1))
    policy.update(1, 0.75)
    policy.update(np.int64(1), 1)
    assert pulls[1] == 2.0 and sums[1] == 1.75
    assert policy.version == 2
    assert policy.n_arms == 4
    assert policy.pulls_array is pulls


def test_adopt_keeps_the_snapshot_with_more_pulls_in_any_order() -> None:
    pulls, sums = _arrays()  # arm 1 starts at pulls 0
    policy = ThompsonPolicy(pulls, sums, Rng(1))
    snapshots = [(3.0, 1.5), (5.0, 2.0), (4.0, 4.0)]
    taken = [policy.adopt(1, n, s) for n, s in snapshots]
    # 4 pulls arrive after 5: behind memory, ignored; repeating 5 changes nothing.
    assert taken == [True, True, False]
    assert policy.adopt(1, 5.0, 2.0) is False
    assert (pulls[1], sums[1], policy.version) == (5.0, 2.0, 2)
    for arm, n, s, match in [
        (4, 9.0, 1.0, "out of range"),
        (-1, 9.0, 1.0, "out of range"),
        (1, float("nan"), 1.0, "finite"),
        (1, 9.0, float("inf"), "finite"),
        (1, 9.0, 9.5, "reward_sum <= pulls"),
        (1, 9.0, -0.5, "reward_sum <= pulls"),
    ]:
        with pytest.raises(ValueError, match=match):
            policy.adopt(arm, n, s)
    assert (pulls[1], sums[1], policy.version) == (5.0, 2.0, 2)
