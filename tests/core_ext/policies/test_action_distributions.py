"""``action_distributions(offers)`` answers many candidate sets at once with exactly
what ``action_distribution`` answers for each: the Thompson kernel from the prefix tree
of its cached samples' orders (``SampleRanks.set_frequencies``), control by its rule
over every row, the others one set at a time. The comparisons are exact (counts over
the same M samples, the same closed forms), hence ``==`` up to float division."""

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


def _offers(rng: np.random.Generator, n_sets: int, k: int) -> np.ndarray:
    """Random sets of every density, each with at least one arm, some full."""
    offers = rng.random((n_sets, k)) < rng.uniform(0.02, 0.95, (n_sets, 1))
    offers[np.arange(n_sets), rng.integers(0, k, n_sets)] = True
    offers[:3] = True
    return offers


def _one_by_one(policy, offers: np.ndarray) -> np.ndarray:
    return np.array([policy.action_distribution(None if row.all() else np.flatnonzero(row))
                     for row in offers])


# posteriors from the prior (the widest tree) to separated arms (a narrow one), and
# rank caches of one byte (K <= 256) and of two
@pytest.mark.parametrize(("k", "pulls"), [(1, 0), (2, 0), (20, 0), (20, 300), (20, 10**6),
                                          (300, 40)])
def test_thompson_batches_count_the_same_cached_samples(k, pulls) -> None:
    rng = np.random.default_rng(k + pulls)
    n = np.full(k, float(pulls))
    policy = ThompsonPolicy(n, n * rng.uniform(0.1, 0.3, k), Rng(7))
    policy.refresh_propensities(subsets=True, wait=True)
    offers = _offers(rng, 400, k)
    batch = policy.action_distributions(offers)
    assert np.allclose(batch, _one_by_one(policy, offers), rtol=0, atol=1e-12)
    assert np.allclose(batch.sum(axis=1), 1.0) and not batch[~offers].any()


def test_thompson_ties_in_the_samples_are_counted_as_the_ranks_break_them() -> None:
    # priors far below 1 underflow many draws to exactly 0 or 1: tied draws, whose
    # ranks the cache orders at random once; the tree sees the same ranks
    k = 12
    policy = ThompsonPolicy(np.zeros(k), np.zeros(k), Rng(3), alpha0=1e-3, beta0=1e-3)
    policy.refresh_propensities(subsets=True, wait=True)
    offers = _offers(np.random.default_rng(3), 300, k)
    assert np.allclose(policy.action_distributions(offers), _one_by_one(policy, offers),
                       rtol=0, atol=1e-12)


def test_thompson_without_a_subset_cache_estimates_each_set() -> None:
    k = 6
    policy = ThompsonPolicy(np.full(k, 50.0), np.linspace(5, 40, k), Rng(2))
    offers = _offers(np.random.default_rng(1), 20, k)
    batch = policy.action_distributions(offers, draws=20_000)
    exact = _one_by_one(policy, offers)  # fresh draws too: both within Monte Carlo error
    assert np.abs(batch - exact).max() < 4 * 2 * np.sqrt(0.25 / 4096)
    assert np.allclose(batch.sum(axis=1), 1.0) and not batch[~offers].any()


@pytest.mark.parametrize("make", [
    lambda n, s: ControlPolicy(n, s, Rng(1)),
    lambda n, s: ControlPolicy(n, s, Rng(1), default_arm=3),
    lambda n, s: UCB1Policy(n, s, Rng(1)),
    lambda n, s: EpsilonGreedyPolicy(n, s, Rng(1), epsilon=0.2),
])
def test_the_other_kernels_batch_their_own_rule(make) -> None:
    rng = np.random.default_rng(5)
    k = 9
    n = rng.integers(0, 40, k).astype(float)
    n[1] = 0.0  # an untried arm: UCB plays untried offered arms first
    policy = make(n, n * rng.uniform(0, 1, k))
    offers = _offers(rng, 300, k)
    assert np.array_equal(policy.action_distributions(offers), _one_by_one(policy, offers))


@pytest.mark.parametrize("bad", [np.ones((2, 5), bool), np.ones(6, bool),
                                 np.array([[True] * 6, [False] * 6])])
def test_offers_of_the_wrong_shape_or_with_an_empty_set_are_refused(bad) -> None:
    for policy in (ThompsonPolicy(np.ones(6), np.ones(6) / 2, Rng(1)),
                   ControlPolicy(np.ones(6), np.ones(6) / 2, Rng(1)),
                   UCB1Policy(np.ones(6), np.ones(6) / 2, Rng(1))):
        with pytest.raises(ValueError, match="offers"):
            policy.action_distributions(bad)
