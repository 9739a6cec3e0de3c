"""candidate_indices maps a request's candidate arm names to the indices a decision takes."""

import random

import numpy as np
import pytest

from banditd.core_ext.decider import candidate_indices

ARMS = tuple(f"movie-{i}" for i in range(300))
INDEX = {arm: i for i, arm in enumerate(ARMS)}


@pytest.mark.parametrize("size", [1, 2, 10, 16, 17, 40, 300])
def test_indices_follow_the_names_in_their_order(size):
    rnd = random.Random(size)
    for _ in range(50):
        names = rnd.sample(ARMS, size)
        out = candidate_indices(INDEX, names)
        assert out.dtype == np.intp and out.flags.c_contiguous
        assert out.tolist() == [INDEX[name] for name in names]


def test_any_sequence_of_names_is_accepted():
    names = ["movie-3", "movie-1"]
    for given in (names, tuple(names), iter(names), (n for n in names)):
        assert candidate_indices(INDEX, given).tolist() == [3, 1]


def test_the_first_unknown_name_is_reported():
    with pytest.raises(KeyError) as caught:
        candidate_indices(INDEX, ["movie-0", "nope", "also-nope"])
    assert caught.value.args == ("nope",)


@pytest.mark.parametrize("size", [2, 16, 17, 200])  # both sides of the pairwise bound
def test_the_first_repeated_arm_is_reported(size):
    names = [*ARMS[:size - 1], ARMS[(size - 1) // 2]]
    with pytest.raises(ValueError) as caught:
        candidate_indices(INDEX, names)
    assert caught.value.args == (ARMS[(size - 1) // 2],)


def test_each_call_returns_a_new_array():
    first = candidate_indices(INDEX, ["movie-1", "movie-2"])
    second = candidate_indices(INDEX, ["movie-4", "movie-5"])
    assert first.tolist() == [1, 2] and second.tolist() == [4, 5]


def test_a_map_with_an_index_outside_its_arms_is_refused():
    broken = {f"arm-{i}": i for i in range(20)} | {"arm-19": 99}  # 20 arms, one claims 99
    with pytest.raises(IndexError, match=r"outside 0\.\.19"):
        candidate_indices(broken, list(broken))
