"""Thompson sampling: the choice distribution and the propensity estimate against the
exact win probabilities P(a wins) = ∫ f_a(x) Π_{j≠a} F_j(x) dx (scipy quadrature).

Tolerances: a frequency from n independent selects has standard error
sqrt(p(1-p)/n); a propensity estimate from M draws has sqrt(p(1-p)/M) (module
docstring of banditd.core_ext.policies._thompson). Every check allows 4 standard errors, plus the
1/(M+1) floor where it applies.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from banditd.core_ext.policies import Rng, ThompsonPolicy

from .conftest import binomial_se, thompson_win_probabilities

PULLS = [20.0, 35.0, 10.0, 50.0, 5.0]
SUMS = [8.0, 16.0, 3.0, 19.5, 2.0]           # includes a fractional reward total


def _policy(seed: int = 1, **kw) -> ThompsonPolicy:
    return ThompsonPolicy(np.array(PULLS), np.array(SUMS), Rng(seed), **kw)


def _truth(policy: ThompsonPolicy, arms=None) -> np.ndarray:
    pulls, sums = policy.pulls_array, policy.reward_sum_array
    arms = np.arange(policy.n_arms) if arms is None else np.asarray(arms)
    alpha = policy.alpha0 + sums[arms]
    beta = policy.beta0 + pulls[arms] - sums[arms]
    return thompson_win_probabilities(alpha, beta)


def test_choice_frequencies_match_exact_win_probabilities() -> None:
    policy = _policy(seed=2)
    truth = _truth(policy)
    n = 40_000
    counts = np.bincount([policy.select()[0] for _ in range(n)], minlength=policy.n_arms)
    assert np.all(np.abs(counts / n - truth) <= 4 * binomial_se(truth, n) + 1e-12)


def test_subset_choice_frequencies_without_a_cache_match_exact_win_probabilities() -> None:
    """Without a subset cache the choice is a live draw over C, whatever M is (a small
    M keeps the on-the-spot estimates that come with each choice cheap)."""
    policy = _policy(seed=3, propensity_draws=16)
    cand = np.array([4, 0, 2], dtype=np.intp)
    truth = _truth(policy, cand)
    n = 30_000
    arms = [policy.select(cand)[0] for _ in range(n)]
    freq = np.array([arms.count(a) for a in cand]) / n
    assert set(arms) <= set(cand.tolist())
    assert np.all(np.abs(freq - truth) <= 4 * binomial_se(truth, n))
    assert policy.subset_cache_wanted and policy.subset_cache_bytes == 0


def test_cached_propensity_is_within_4_se_of_truth() -> None:
    policy = _policy(seed=4)
    truth = _truth(policy)
    assert policy.refresh_propensities()
    est = policy.cached_propensities()
    m = policy.propensity_draws
    floor = 1.0 / (m + 1)
    assert np.all(np.abs(est - np.maximum(truth, floor)) <= 4 * binomial_se(truth, m) + floor)
    arm, prop = policy.select()
    assert prop == est[arm]


def test_subset_propensity_without_a_cache_is_unbiased_within_4_se() -> None:
    """Mean of n on-the-spot estimates, each from M fresh samples over C, for arm a:
    SE sqrt(p(1-p) / (M · n_a))."""
    m = 200
    policy = _policy(seed=5, propensity_draws=m)
    cand = np.array([1, 3, 0], dtype=np.intp)
    truth = dict(zip(cand.tolist(), _truth(policy, cand), strict=True))
    props: dict[int, list[float]] = {}
    for _ in range(3000):
        arm, p = policy.select(cand)
        props.setdefault(arm, []).append(p)
    assert policy.subset_cache_bytes == 0           # never refreshed: all on the spot
    for arm, ps in props.items():
        if len(ps) < 30:
            continue
        p = truth[arm]
        assert abs(np.mean(ps) - p) <= 4 * np.sqrt(p * (1 - p) / (m * len(ps))) + 1 / (m + 1)


def test_win_probabilities_estimate_and_its_standard_error() -> None:
    policy = _policy(seed=6)
    draws = 50_000
    est = policy.win_probabilities(draws=draws)
    truth = _truth(policy)
    assert np.all(np.abs(est - truth) <= 4 * binomial_se(truth, draws) + 1e-12)
    assert est.sum() == pytest.approx(1.0)
    sub = policy.win_probabilities(np.array([2, 4], dtype=np.intp), draws=draws)
    sub_truth = _truth(policy, [2, 4])
    assert np.all(np.abs(sub - sub_truth) <= 4 * binomial_se(sub_truth, draws))


def test_propensity_is_never_zero_for_a_hopeless_arm() -> None:
    pulls = np.array([10_000.0, 10_000.0])
    sums = np.array([9_000.0, 100.0])           # arm 1 essentially never wins
    policy = ThompsonPolicy(pulls, sums, Rng(1), propensity_draws=1000)
    policy.refresh_propensities()
    assert policy.cached_propensities()[1] == pytest.approx(1 / 1001)
    _, p = policy.select(np.array([1, 0], dtype=np.intp))
    assert p > 0


def test_refresh_only_when_the_version_moved_and_stale_cache_is_used_until_then() -> None:
    policy = _policy(seed=7)
    assert policy.propensity_version == -1
    policy.select()                                 # first select computes the cache
    assert policy.propensity_version == 0
    assert not policy.refresh_propensities()
    before = policy.cached_propensities()
    for _ in range(200):
        policy.update(2, 1.0)                       # arm 2 becomes the favourite
    arm, p = policy.select()
    assert policy.propensity_version == 0           # stale on purpose (documented)
    assert p == before[arm]
    assert policy.refresh_propensities()
    assert policy.propensity_version == policy.version == 200
    assert policy.cached_propensities()[2] > 0.99


def _copy_of(policy: ThompsonPolicy, seed: int, **kw) -> ThompsonPolicy:
    """A new kernel over a copy of ``policy``'s statistics (a reloaded experiment)."""
    return ThompsonPolicy(policy.pulls_array.copy(), policy.reward_sum_array.copy(),
                          Rng(seed), **kw)


def test_a_replacing_kernel_adopts_a_current_cache_without_drawing() -> None:
    old = _policy(seed=9)
    old.refresh_propensities()
    new = _copy_of(old, seed=10)
    assert new.adopt_propensities(old)
    assert new.propensity_version == new.version
    assert not new.refresh_propensities()           # current: nothing to redo
    # The very estimate, not a fresh one: another M = 4096 draws would differ.
    np.testing.assert_array_equal(new.cached_propensities(), old.cached_propensities())
    arm, p = new.select()
    assert p == old.cached_propensities()[arm]


def test_a_stale_cache_is_adopted_stale_and_refreshed_from_the_new_statistics() -> None:
    old = _policy(seed=11)
    old.refresh_propensities()
    for _ in range(200):
        old.update(2, 1.0)                          # arm 2 becomes the favourite
    new = _copy_of(old, seed=12)
    assert new.adopt_propensities(old)
    assert new.propensity_version != new.version    # stale there, stale here
    assert new.cached_propensities()[2] < 0.5       # the old estimate, until refreshed
    assert new.refresh_propensities()
    assert new.cached_propensities()[2] > 0.99


@pytest.mark.parametrize("change", [
    {"alpha0": 2.0}, {"beta0": 3.0}, {"propensity_draws": 1000}, "arms", "never built"])
def test_a_cache_is_not_adopted_when_it_cannot_describe_the_new_kernel(change) -> None:
    old = _policy(seed=13)
    if change != "never built":
        old.refresh_propensities()
    if change == "arms":
        new = ThompsonPolicy(np.array(PULLS[:4]), np.array(SUMS[:4]), Rng(14))
    else:
        new = _copy_of(old, seed=14, **(change if isinstance(change, dict) else {}))
    assert not new.adopt_propensities(old)
    assert new.propensity_version == -1             # still to be built, from its own draws


def test_refresh_in_a_worker_thread_beside_selects() -> None:
    policy = _policy(seed=8, propensity_draws=20_000)
    errors: list[BaseException] = []

    def refresher() -> None:
        try:
            for _ in range(5):
                policy.update(0, 0.0)
                policy.refresh_propensities()
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=refresher)
    t.start()
    arms = [policy.select()[0] for _ in range(20_000)]
    t.join()
    assert not errors
    assert set(arms) <= set(range(policy.n_arms))
    assert np.all(np.isfinite(policy.cached_propensities()))


def test_exact_ties_at_tiny_priors_are_broken_uniformly() -> None:
    """Beta(1e-3, 1e-3) draws underflow to exactly 0 or 1, so identical untried arms
    tie often; each of the 4 must still be chosen with probability 1/4."""
    policy = ThompsonPolicy(np.zeros(4), np.zeros(4), Rng(9), alpha0=1e-3, beta0=1e-3)
    n = 20_000
    counts = np.bincount([policy.select()[0] for _ in range(n)], minlength=4)
    assert np.all(np.abs(counts / n - 0.25) <= 4 * binomial_se(0.25, n))


def test_fractional_reward_updates_alpha_and_beta() -> None:
    pulls, sums = np.zeros(2), np.zeros(2)
    policy = ThompsonPolicy(pulls, sums, Rng(1), alpha0=2.0, beta0=3.0)
    policy.update(1, 0.25)
    policy.update(1, 1.0)
    assert pulls.tolist() == [0.0, 2.0] and sums.tolist() == [0.0, 1.25]
    # posterior of arm 1 is Beta(2 + 1.25, 3 + 0.75): check through the choice rule
    truth = thompson_win_probabilities(np.array([2.0, 3.25]), np.array([3.0, 3.75]))
    est = policy.win_probabilities(draws=40_000)
    assert np.all(np.abs(est - truth) <= 4 * binomial_se(truth, 40_000))


def test_a_subset_that_is_every_arm_uses_the_cache() -> None:
    policy = _policy(seed=10)
    policy.refresh_propensities()
    cache = policy.cached_propensities()
    arm, p = policy.select(np.array([4, 3, 2, 1, 0], dtype=np.intp))
    assert p == cache[arm]


@pytest.mark.parametrize(("kw", "match"), [
    ({"alpha0": 0.0}, "alpha0"),
    ({"alpha0": float("nan")}, "alpha0"),
    ({"beta0": -1.0}, "beta0"),
    ({"beta0": float("inf")}, "beta0"),
    ({"propensity_draws": 0}, "propensity_draws"),
])
def test_bad_parameters_raise(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ThompsonPolicy(np.zeros(2), np.zeros(2), Rng(1), **kw)


def test_action_distribution_of_the_full_set_is_the_cached_estimate() -> None:
    """Unfloored W_a / M from the cache select reads: within 4 SE of the exact win
    probabilities, summing to 1; select's propensity is it, floored at 1/(M+1)."""
    policy = _policy(seed=15)
    pi = policy.action_distribution()
    assert policy.propensity_version == 0           # built on first use
    m = policy.propensity_draws
    truth = _truth(policy)
    assert np.all(np.abs(pi - truth) <= 4 * binomial_se(truth, m))
    assert pi.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(np.maximum(pi, 1 / (m + 1)), policy.cached_propensities())
    for _ in range(200):
        arm, p = policy.select()
        assert p == max(pi[arm], 1 / (m + 1))
    every = np.array([4, 3, 2, 1, 0], dtype=np.intp)   # a "subset" of every arm: the cache
    np.testing.assert_array_equal(policy.action_distribution(every), pi)


def test_action_distribution_keeps_the_zero_the_propensity_floors() -> None:
    policy = ThompsonPolicy(np.array([10_000.0, 10_000.0]), np.array([9_000.0, 100.0]), Rng(1),
                            propensity_draws=1000)
    np.testing.assert_array_equal(policy.action_distribution(), [1.0, 0.0])
    assert policy.cached_propensities()[1] == pytest.approx(1 / 1001)


def test_action_distribution_of_a_subset_is_the_win_probability_within_it() -> None:
    """Arm 0 wins the full set almost surely, so a renormalised full-set estimate over
    {1, 2, 3} would be Monte Carlo noise; the subset's own estimate is within 4 SE of
    the exact win probabilities among the three."""
    policy = ThompsonPolicy(np.array([100.0, 20.0, 20.0, 20.0]), np.array([95.0, 12.0, 10.0, 8.0]),
                            Rng(16))
    assert policy.action_distribution()[0] > 0.99
    cand = np.array([3, 1, 2], dtype=np.intp)
    draws = 20_000
    pi = policy.action_distribution(cand, draws=draws)
    truth = _truth(policy, cand)
    assert pi[0] == 0.0
    assert pi.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.abs(pi[cand] - truth) <= 4 * binomial_se(truth, draws))
    assert truth[1] > 0.6                           # arm 1 is the likely winner among them


@pytest.mark.parametrize("draws", [0, 300])
def test_action_distribution_of_a_subset_spends_draws_samples(draws: int) -> None:
    """Twin kernels (same seed): the subset estimate is ``win_probabilities(C, draws)``,
    with draws = 0 meaning ``propensity_draws``."""
    cand = np.array([1, 4], dtype=np.intp)
    pi = _policy(seed=17).action_distribution(cand, draws=draws)
    np.testing.assert_array_equal(pi[cand], _policy(seed=17).win_probabilities(cand, draws))
    assert pi[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="draws"):
        _policy().action_distribution(cand, draws=-1)


def test_action_distribution_is_stale_with_the_cache_until_refreshed() -> None:
    policy = _policy(seed=18)
    before = policy.action_distribution()
    for _ in range(200):
        policy.update(2, 1.0)
    np.testing.assert_array_equal(policy.action_distribution(), before)
    assert policy.refresh_propensities()
    assert policy.action_distribution()[2] > 0.99
