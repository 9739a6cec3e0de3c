"""Assignment is deterministic, matches the configured split, and its two choices are
independent (so changing traffic never moves a user between policies)."""

import numpy as np
import pytest
from scipy import stats

from core_ext import BUCKETS, assignment_bucket
from server.assignment import buckets, policy_table, traffic_threshold, user_hash

SALT = b"0123456789abcdef"


@pytest.mark.parametrize(
    "split",
    [(0.25, 0.25, 0.25, 0.25), (0.4, 0.2, 0.2, 0.2), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.5, 0.0),
     (1.0,)],
)
def test_policy_table_gives_each_policy_its_share_of_buckets(split):
    table = policy_table(split)
    assert len(table) == BUCKETS
    counts = np.bincount(table, minlength=len(split))
    # Rounding the cumulative shares is off by at most one bucket per policy.
    assert np.all(np.abs(counts - np.array(split) * BUCKETS) <= 1)


def test_traffic_bucket_is_the_kernels_assignment_bucket():
    for user in ("alice", "bob", "ümlaut-user", "42"):
        assert buckets(user_hash(SALT, user))[0] == assignment_bucket(SALT.decode(), user)


def test_traffic_threshold_covers_the_share():
    assert traffic_threshold(0.8) == 8000
    assert traffic_threshold(0.0) == 0
    assert traffic_threshold(1.0) == BUCKETS


def test_traffic_and_policy_buckets_are_independent():
    """χ² test of independence on a 10 x 10 table of (traffic decile, policy decile) over
    200,000 users: under independence the statistic is χ²(81); p > 0.001 fails only by chance
    once in a thousand runs, and the users are fixed, so the test is deterministic."""
    pairs = np.array([buckets(user_hash(SALT, f"user-{i}")) for i in range(200_000)])
    table = np.zeros((10, 10))
    np.add.at(table, (pairs[:, 0] * 10 // BUCKETS, pairs[:, 1] * 10 // BUCKETS), 1)
    _, p_value, dof, _ = stats.chi2_contingency(table)
    assert dof == 81
    assert p_value > 0.001
