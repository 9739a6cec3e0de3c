"""Bandit problems and uniformly logged streams (admin_cli/offline/bandit_problem.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from banditd.admin_cli.offline.bandit_problem import (
    ArmCounts,
    BanditProblem,
    ProblemConfig,
    StreamConfig,
    arm_counts_from_data,
    build_problem,
    logged_stream,
    problem_from_data,
)
from banditd.admin_cli.offline.movielens import read_movielens
from tests.admin_cli.offline.movielens_fixtures import make_fixture, write_csv


def _problem(n_ratings, n_positive) -> BanditProblem:
    n = np.asarray(n_ratings, dtype=np.int64)
    return BanditProblem("movie", tuple(str(i) for i in range(n.size)),
                         tuple(f"m{i}" for i in range(n.size)), n,
                         np.asarray(n_positive, dtype=np.int64), 4.0)


def test_arms_are_the_most_rated_movies_ties_by_smaller_id():
    counts = ArmCounts("movie", ("10", "2", "7", "3"), ("a", "b", "c", "d"),
                       np.array([5, 9, 9, 1]), np.array([1, 2, 3, 0]), 4.0)
    problem = build_problem(counts, ProblemConfig(n_arms=3))
    assert problem.arm_ids == ("2", "7", "10")
    assert problem.arm_labels == ("b", "c", "a")
    np.testing.assert_allclose(problem.true_means, [2 / 9, 3 / 9, 1 / 5])
    assert problem.best_arm == 1 and problem.best_value == pytest.approx(1 / 3)
    assert problem.uniform_value == pytest.approx((2 / 9 + 3 / 9 + 1 / 5) / 3)


def test_movie_arms_from_files_match_a_direct_count(tmp_path: Path):
    fixture = make_fixture(n_users=40, n_movies=12)
    data = read_movielens(write_csv(tmp_path, fixture))
    problem = problem_from_data(data, ProblemConfig(n_arms=5, reward_threshold=4))
    per_movie = Counter(m for _, m, _, _ in fixture.ratings)
    liked = Counter(m for _, m, r, _ in fixture.ratings if r >= 4)
    expected = sorted(per_movie, key=lambda m: (-per_movie[m], m))[:5]
    assert problem.arm_ids == tuple(str(m) for m in expected)
    assert problem.n_ratings.tolist() == [per_movie[m] for m in expected]
    assert problem.n_positive.tolist() == [liked[m] for m in expected]
    assert problem.arm_labels[0].endswith(f"({1990 + expected[0]})")


def test_genre_arms_count_a_rating_once_per_genre_of_its_movie(tmp_path: Path):
    fixture = make_fixture(n_users=30, n_movies=8)
    data = read_movielens(write_csv(tmp_path, fixture))
    counts = arm_counts_from_data(data, "genre", 3.0)
    genres = {m.movie_id: m.genres for m in fixture.movies}
    n, k = Counter(), Counter()
    for _, movie, rating, _ in fixture.ratings:
        for g in genres[movie]:
            n[g] += 1
            k[g] += rating >= 3.0
    assert dict(zip(counts.ids, counts.n_ratings.tolist(), strict=True)) == dict(n)
    assert dict(zip(counts.ids, counts.n_positive.tolist(), strict=True)) == dict(k)


def test_asking_for_more_arms_than_the_data_has_says_so(tmp_path: Path):
    data = read_movielens(write_csv(tmp_path, make_fixture(n_movies=4)))
    with pytest.raises(ValueError, match="asked for 5 movie arms but the data has only 4"):
        problem_from_data(data, ProblemConfig(n_arms=5))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ProblemConfig(n_arms=1), "at least 2 arms"),
        (lambda: ProblemConfig(reward_threshold=0.5), "reward threshold"),
        (lambda: ProblemConfig(reward_threshold=5.5), "reward threshold"),
        (lambda: ProblemConfig(arm_kind="actor"), "arm_kind"),
        (lambda: StreamConfig(sampling="stratified"), "sampling"),
        (lambda: StreamConfig(length=0), "stream length"),
    ],
)
def test_bad_configs_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_logged_arms_are_uniform():
    """Pearson chi-square goodness of fit of 60,000 logged arms to Uniform(10); with a
    fixed seed the test is deterministic, and p > 0.001 would fail for a logger that
    favoured one arm by even 1.5 %."""
    problem = _problem([10**6] * 10, [5 * 10**5] * 10)
    stream = logged_stream(problem, np.random.default_rng(11), StreamConfig(length=60_000))
    assert len(stream) == 60_000
    observed = np.bincount(stream.arms, minlength=10)
    assert stats.chisquare(observed).pvalue > 0.001
    np.testing.assert_allclose(stream.propensities, 0.1)


def test_bootstrap_rewards_follow_each_arms_mean():
    """Per-arm mean of Bernoulli(mu_a) rewards within 4 standard errors of mu_a."""
    problem = _problem([100, 100, 100], [10, 50, 90])
    stream = logged_stream(problem, np.random.default_rng(3),
                           StreamConfig(sampling="bootstrap", length=30_000))
    for a, mu in enumerate(problem.true_means):
        r = stream.rewards[stream.arms == a]
        assert abs(r.mean() - mu) <= 4 * np.sqrt(mu * (1 - mu) / r.size)


def test_without_replacement_stops_when_a_pool_runs_out():
    problem = _problem([30, 400, 400, 400], [12, 100, 200, 300])
    stream = logged_stream(problem, np.random.default_rng(5))
    counts = np.bincount(stream.arms, minlength=4)
    assert np.all(counts <= problem.n_ratings)
    exhausted = np.flatnonzero(counts == problem.n_ratings)
    assert exhausted.tolist() == [0]  # the 30-rating arm runs out first
    # Every rating of arm 0 was used exactly once, so its rewards add up exactly.
    assert stream.rewards[stream.arms == 0].sum() == 12


@settings(max_examples=60, deadline=None)
@given(
    pools=st.lists(st.tuples(st.integers(1, 40), st.floats(0, 1)), min_size=2, max_size=6),
    cap=st.one_of(st.none(), st.integers(1, 300)),
    seed=st.integers(0, 2**32 - 1),
)
def test_without_replacement_never_reuses_a_rating(pools, cap, seed):
    n = [size for size, _ in pools]
    k = [round(size * share) for size, share in pools]
    problem = _problem(n, k)
    stream = logged_stream(problem, np.random.default_rng(seed), StreamConfig(length=cap))
    if cap is not None:
        assert len(stream) <= cap
    for a in range(len(n)):
        r = stream.rewards[stream.arms == a]
        assert r.size <= n[a]
        assert r.sum() <= k[a] and (r.size - r.sum()) <= n[a] - k[a]
        assert set(np.unique(r).tolist()) <= {0.0, 1.0}
    if cap is None or len(stream) < cap:
        assert np.any(np.bincount(stream.arms, minlength=len(n)) == n)


def test_the_same_seed_gives_the_same_stream():
    problem = _problem([50, 60, 70], [5, 30, 60])
    a = logged_stream(problem, np.random.default_rng(9))
    b = logged_stream(problem, np.random.default_rng(9))
    np.testing.assert_array_equal(a.arms, b.arms)
    np.testing.assert_array_equal(a.rewards, b.rewards)
