"""Thompson sampling over a candidate subset, from the cache of M joint posterior
samples (module docstring of banditd.core_ext.policies._thompson, "Subset selection").

Given the cache, ``select(C)`` picks a sample uniformly and answers C's winner in it,
so its choice is categorical with probabilities N_a(C) / M, exactly what it logs and
what ``action_distribution(C)`` returns. Two kinds of tolerance follow:

- choice frequencies of n selects against those logged probabilities: the choices are
  independent given the cache, so each frequency is Binomial(n, p) / n with standard
  error sqrt(p (1 - p) / n); a check allows 4 of them (a two-sided normal tail of
  6e-5 per arm, were the seed not fixed);
- the logged probabilities against the exact Thompson probability P(theta_a = max_{j
  in C} theta_j) (scipy quadrature of ∫ f_a Π F_j): N_a(C) ~ Binomial(M, p) over the
  draw of the cache, standard error sqrt(p (1 - p) / M); 4 of them again.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from banditd.core_ext.policies import (
    Rng,
    ThompsonPolicy,
    set_subset_cache_budget,
    subset_cache_budget,
    subset_cache_bytes,
)

from .conftest import binomial_se, thompson_win_probabilities
from .test_properties import BAD_CANDIDATES

PULLS = [20.0, 35.0, 10.0, 50.0, 5.0, 40.0]
SUMS = [8.0, 16.0, 3.0, 19.5, 2.0, 12.0]       # includes a fractional reward total


def _cached(seed: int = 1, pulls=PULLS, sums=SUMS, **kw) -> ThompsonPolicy:
    """A kernel whose subset cache is built and current."""
    policy = ThompsonPolicy(np.array(pulls), np.array(sums), Rng(seed), **kw)
    assert policy.refresh_propensities(subsets=True)
    assert policy.subset_cache_version == policy.version
    return policy


def _intp(values) -> np.ndarray:
    return np.array(values, dtype=np.intp)


def _truth(policy: ThompsonPolicy, cand) -> np.ndarray:
    pulls, sums = policy.pulls_array, policy.reward_sum_array
    alpha = policy.alpha0 + sums[cand]
    beta = policy.beta0 + pulls[cand] - sums[cand]
    return thompson_win_probabilities(alpha, beta)


def _many_arms(seed: int, k: int = 300, **kw) -> ThompsonPolicy:
    """K > 256: ranks are int16 (and samples radix-sorted)."""
    g = np.random.default_rng(seed)
    pulls = g.integers(5, 60, size=k).astype(np.float64)
    return _cached(seed=seed, pulls=pulls, sums=np.floor(pulls * g.uniform(0.2, 0.5, size=k)),
                   **kw)


@pytest.mark.parametrize("many", [False, True], ids=["uint8-ranks", "int16-ranks"])
def test_logged_propensity_is_the_exact_frequency_of_the_mechanism(many: bool) -> None:
    policy = _many_arms(seed=2) if many else _cached(seed=2)
    cand = _intp([5, 0, 3, 2])
    pi = policy.action_distribution(cand)
    m = policy.propensity_draws
    assert policy.subset_cache_bytes == (2 if many else 1) * m * policy.n_arms
    assert np.all(pi[cand] * m == np.round(pi[cand] * m))  # counts out of M, exactly
    n = 40_000
    arms = np.empty(n, dtype=np.intp)
    for i in range(n):
        arms[i], p = policy.select(cand)
        assert p == pi[arms[i]]                     # the logged value is the mechanism's
    freq = np.bincount(arms, minlength=policy.n_arms) / n
    assert np.all(np.delete(freq, cand) == 0.0)
    assert np.all(np.abs(freq - pi) <= 4 * binomial_se(pi, n))


@pytest.mark.parametrize("cand", [[1], [4, 2], [0, 1, 2, 3, 4], [3, 5, 1]])
def test_subset_propensities_sum_to_one_and_are_what_select_logs(cand) -> None:
    policy = _cached(seed=3)
    cand = _intp(cand)
    pi = policy.action_distribution(cand)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.delete(pi, cand) == 0.0)
    for _ in range(300):
        arm, p = policy.select(cand)
        assert arm in cand and p == pi[arm] > 0.0
    if len(cand) == 1:
        assert policy.select(cand) == (cand[0], 1.0)


@pytest.mark.parametrize(("seed", "cand", "many"), [
    (4, [0, 1, 2], False), (5, [3, 1, 5, 4], False), (6, [2, 4], False),
    (24, [299, 7, 150, 42, 3], True)])
def test_subset_propensities_agree_with_quadrature_within_4_se(seed: int, cand,
                                                              many: bool) -> None:
    policy = _many_arms(seed=seed) if many else _cached(seed=seed)
    cand = _intp(cand)
    truth = _truth(policy, cand)
    pi = policy.action_distribution(cand)[cand]
    m = policy.propensity_draws
    assert np.all(np.abs(pi - truth) <= 4 * binomial_se(truth, m) + 1e-12)


def test_the_full_set_cache_comes_from_the_same_samples() -> None:
    """N_a(all arms) / M is the full-set estimate, which stays what it was: within 4 SE
    of the exact win probabilities."""
    policy = _cached(seed=7)
    pi = policy.action_distribution()
    every_but_none = policy.action_distribution(_intp(range(policy.n_arms)))
    np.testing.assert_array_equal(pi, every_but_none)
    truth = _truth(policy, np.arange(policy.n_arms))
    assert np.all(np.abs(pi - truth) <= 4 * binomial_se(truth, policy.propensity_draws))


def test_the_first_subset_select_asks_for_the_cache_and_a_refresh_builds_it() -> None:
    policy = ThompsonPolicy(np.array(PULLS), np.array(SUMS), Rng(8), propensity_draws=512)
    cand = _intp([1, 3])
    policy.refresh_propensities()                   # a full-set cache only
    assert policy.subset_cache_bytes == 0 and not policy.subset_cache_wanted
    assert not policy.refresh_due
    arm, p = policy.select(cand)                    # on the spot, and asks for a cache
    assert arm in cand and 0.0 < p <= 1.0
    assert policy.subset_cache_wanted and policy.refresh_due
    assert policy.refresh_propensities()
    assert policy.subset_cache_bytes == 512 * policy.n_arms     # one byte per rank: K <= 256
    assert policy.subset_cache_version == policy.version and not policy.refresh_due
    pi = policy.action_distribution(cand)
    arm, p = policy.select(cand)
    assert p == pi[arm]


def test_only_kernels_asked_for_subsets_hold_a_subset_cache() -> None:
    policy = ThompsonPolicy(np.array(PULLS), np.array(SUMS), Rng(9))
    for _ in range(50):
        policy.select()
        policy.update(0, 1.0)
        policy.refresh_propensities()
    assert policy.subset_cache_bytes == 0
    assert policy.subset_cache_version == -1


def test_a_stale_cache_describes_its_own_samples_until_refreshed() -> None:
    policy = _cached(seed=10)
    cand = _intp([2, 4, 0])
    before = policy.action_distribution(cand)
    built = policy.subset_cache_version
    assert before[2] < 0.5
    for _ in range(300):
        policy.update(2, 1.0)                       # arm 2 becomes the favourite
    assert policy.refresh_due
    np.testing.assert_array_equal(policy.action_distribution(cand), before)
    for _ in range(200):
        arm, p = policy.select(cand)
        assert p == before[arm]                     # stale on purpose (documented)
    assert policy.subset_cache_version == built
    assert policy.refresh_propensities()
    assert policy.subset_cache_version == policy.version
    after = policy.action_distribution(cand)
    assert after[2] > 0.99
    arm, p = policy.select(cand)
    assert p == after[arm]


@pytest.mark.parametrize("k", [4, 120, 300])  # insertion sort / radix / radix, int16 ranks
def test_exact_ties_in_the_cache_are_broken_uniformly(k: int) -> None:
    """Beta(1e-3, 1e-3) draws underflow to exactly 0 or 1, so identical untried arms
    tie in most samples; the cache orders tied arms uniformly at random, so each of 3
    candidates wins a third of the samples, and each of the K arms 1/K."""
    policy = _cached(seed=11, pulls=np.zeros(k), sums=np.zeros(k), alpha0=1e-3, beta0=1e-3)
    m = policy.propensity_draws
    cand = _intp([0, k // 2, k - 1])
    pi = policy.action_distribution(cand)[cand]
    assert np.all(np.abs(pi - 1 / 3) <= 4 * binomial_se(1 / 3, m))
    full = policy.action_distribution()
    assert np.all(np.abs(full - 1 / k) <= 4 * binomial_se(1 / k, m))


def test_a_replacing_kernel_adopts_the_subset_cache() -> None:
    old = _cached(seed=13)
    cand = _intp([0, 5, 2])
    new = ThompsonPolicy(old.pulls_array.copy(), old.reward_sum_array.copy(), Rng(14))
    assert new.adopt_propensities(old)
    assert new.subset_cache_wanted and not new.refresh_due
    assert new.subset_cache_bytes == old.subset_cache_bytes
    np.testing.assert_array_equal(new.action_distribution(cand), old.action_distribution(cand))


def test_a_stale_subset_cache_is_adopted_stale() -> None:
    old = _cached(seed=15)
    old.update(1, 1.0)
    new = ThompsonPolicy(old.pulls_array.copy(), old.reward_sum_array.copy(), Rng(16))
    assert new.adopt_propensities(old)
    assert new.subset_cache_version != new.version and new.refresh_due
    assert new.refresh_propensities()
    assert new.subset_cache_version == new.version


def test_refresh_in_a_thread_while_selecting_subsets() -> None:
    """The refresher swaps whole caches while the main thread selects. Right after each
    select the same thread reads action_distribution(C); unless a swap fell between the
    two calls, the logged propensity must be the exact frequency of the cache the select
    used. A select that saw a cache still being written would disagree with the
    finished one, so disagreements must number at most the swaps."""
    k = 400                                        # a build long enough to select through
    g = np.random.default_rng(17)
    pulls = g.integers(10, 200, size=k).astype(np.float64)
    sums = np.floor(pulls * g.uniform(0.1, 0.6, size=k))
    policy = ThompsonPolicy(pulls, sums, Rng(18), propensity_draws=2048)
    policy.refresh_propensities(subsets=True)
    cand = _intp(g.choice(k, size=12, replace=False))
    errors: list[BaseException] = []
    swaps = [0]
    done = threading.Event()

    def refresher() -> None:
        try:
            for i in range(6):
                policy.update(int(cand[i % len(cand)]), 1.0)
                swaps[0] += policy.refresh_propensities(wait=True)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=refresher)
    t.start()
    n = mismatches = 0
    m = policy.propensity_draws
    while not done.is_set() or n < 1000:
        arm, p = policy.select(cand)
        pi = policy.action_distribution(cand)
        n += 1
        assert arm in cand and 1 <= p * m <= m and p * m == round(p * m)
        mismatches += p != pi[arm]
    t.join()
    assert not errors
    assert swaps[0] == 6
    assert mismatches <= swaps[0]
    assert policy.subset_cache_version == policy.version


@pytest.fixture
def budget():
    """``budget(extra)`` sets the process-wide subset cache budget to the bytes in use
    (by every live cache, this test's and any other's) plus ``extra``; the budget is
    restored after the test."""
    gc.collect()
    previous = subset_cache_budget()
    try:
        yield lambda extra: set_subset_cache_budget(subset_cache_bytes() + extra)
    finally:
        set_subset_cache_budget(previous)


def test_the_memory_budget_is_respected(budget) -> None:
    m, k = 1024, len(PULLS)
    one = m * k                                     # one byte per rank: K <= 256
    budget(one)                                     # room for exactly one cache
    start = subset_cache_bytes()
    first = _cached(seed=19, propensity_draws=m)
    assert first.subset_cache_bytes == one and subset_cache_bytes() == start + one
    second = ThompsonPolicy(np.array(PULLS), np.array(SUMS), Rng(20), propensity_draws=m)
    assert second.refresh_propensities(subsets=True)    # the full-set cache still builds
    assert second.subset_cache_refused and second.subset_cache_bytes == 0
    assert not second.refresh_due                   # nothing to retry until room is made
    assert subset_cache_bytes() == start + one
    cand = _intp([0, 3])
    arm, p = second.select(cand)                    # on the spot
    assert arm in cand and 0.0 < p <= 1.0
    first.update(0, 1.0)                            # a stale cache may be replaced
    assert first.refresh_propensities()
    assert first.subset_cache_version == first.version
    assert subset_cache_bytes() == start + one
    del first
    gc.collect()
    assert subset_cache_bytes() == start
    assert second.refresh_due
    assert second.refresh_propensities()
    assert not second.subset_cache_refused and second.subset_cache_bytes == one


def test_a_stale_cache_that_no_longer_fits_is_dropped(budget) -> None:
    policy = _cached(seed=21, propensity_draws=256)
    budget(-1)                                      # less than what is held now
    policy.update(0, 1.0)
    assert policy.refresh_propensities()
    assert policy.subset_cache_refused and policy.subset_cache_bytes == 0
    assert policy.subset_cache_version == -1
    arm, p = policy.select(_intp([0, 1]))
    assert arm in (0, 1) and 0.0 < p <= 1.0


def test_more_arms_than_int16_ranks_hold_select_on_the_spot() -> None:
    k = 32_768
    policy = ThompsonPolicy(np.zeros(k), np.zeros(k), Rng(22), propensity_draws=4)
    assert policy.refresh_propensities(subsets=True)
    assert policy.subset_cache_refused and policy.subset_cache_bytes == 0
    arm, p = policy.select(_intp([5, k - 1]))
    assert arm in (5, k - 1) and 0.0 < p <= 1.0


def test_the_budget_must_be_a_byte_count() -> None:
    with pytest.raises(ValueError, match="budget"):
        set_subset_cache_budget(-1)


@pytest.mark.parametrize("bad", BAD_CANDIDATES, ids=repr)
def test_candidates_are_validated_as_before_with_a_cache(bad) -> None:
    cached = _cached(seed=23, pulls=[1.0, 1.0], sums=[0.0, 0.0])
    plain = ThompsonPolicy(np.ones(2), np.zeros(2), Rng(1))
    with pytest.raises(ValueError) as from_plain:
        plain.select(bad)
    for call in (cached.select, cached.action_distribution):
        with pytest.raises(ValueError) as from_cached:
            call(bad)
        assert str(from_cached.value) == str(from_plain.value)
