"""Assignment is deterministic, matches the configured split, and its two choices are
independent (so changing traffic never moves a user between policies)."""

import math

import numpy as np
import pytest
from scipy import stats

from banditd.core_ext.codecs import DecisionSigner
from banditd.core_ext.decider import BUCKETS, Decider, assignment_bucket, hash64
from banditd.core_ext.policies import ControlPolicy, Rng
from banditd.server.assignment import SEPARATOR, policy_table, traffic_threshold
from banditd.server.decision_id import DecisionIdCodec
from banditd.server.registry import SERVED_BY_CODE_NAMES

SALT = b"0123456789abcdef"


def user_hash(salt: bytes, user_id: str) -> int:
    """The module docstring's h = XXH64(utf8(salt) | 0x1F | utf8(user_id)), from core_ext's
    hash (itself checked against the xxhash package in tests/core_ext/decider/test_hashing.py)."""
    return hash64(salt + SEPARATOR + user_id.encode("utf-8"))


def buckets(h: int) -> tuple[int, int]:
    """(traffic_bucket, policy_bucket) = (h mod B, (h div B) mod B)."""
    return h % BUCKETS, (h // BUCKETS) % BUCKETS


@pytest.mark.parametrize(
    "split",
    [(0.25, 0.25, 0.25, 0.25), (0.4, 0.2, 0.2, 0.2), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.5, 0.0),
     (1.0,)],
)
def test_policy_table_gives_each_policy_its_share_of_buckets(split):
    table = policy_table(split)
    assert len(table) == BUCKETS
    counts = np.bincount(np.frombuffer(table, dtype=np.uint8), minlength=len(split))
    # Rounding the cumulative shares is off by at most one bucket per policy.
    assert np.all(np.abs(counts - np.array(split) * BUCKETS) <= 1)
    assert policy_table(list(split)) is table  # equal splits share one table


def _decider(traffic_pct: float, split, serving=(0.0, math.inf), rows=None) -> Decider:
    slots = tuple(
        (ControlPolicy(np.zeros(3), np.zeros(3), Rng(i)), i, 1) for i in range(len(split))
    )
    return Decider(
        signer=DecisionSigner(bytes(32), 1, 0), experiment_key=7, hash_prefix=SALT + SEPARATOR,
        traffic_threshold=traffic_threshold(traffic_pct), policy_table=policy_table(split),
        slots=slots, default=(ControlPolicy(np.zeros(3), np.zeros(3), Rng(9)), 3),
        outside=OUTSIDE, not_serving=STOPPED, serving_from=serving[0], serving_until=serving[1],
        rows=rows, arms=ARMS,
        policy_names=(*(f"policy-{i}" for i in range(len(split))), "default"),
        served_by_names=SERVED_BY_CODE_NAMES,
    )


OUTSIDE, STOPPED = 3, 4
ARMS = ("a", "b", "c")


@pytest.mark.parametrize(("traffic_pct", "split"), [(1.0, (0.25,) * 4), (0.3, (0.7, 0.2, 0.1))])
def test_decider_assigns_as_the_documented_scheme(traffic_pct, split):
    """The C assignment in ``banditd.core_ext.decider.Decider`` against this module's reference:
    outside the traffic -> the default (slot -1), else the policy table's slot."""
    decider = _decider(traffic_pct, split)
    table = policy_table(split)
    users = [f"user-{i}" for i in range(5000)] + ["ümlaut", "x" * 300]  # 300: the long path
    for user in users:
        traffic, policy = buckets(user_hash(SALT, user))
        expected = (table[policy], 1) if traffic < traffic_threshold(traffic_pct) else (-1, OUTSIDE)
        assert decider.assign(user, 1.0) == expected


def test_decider_signs_what_it_decided():
    """decide() = assign() + the slot's kernel + an id that verifies and names them."""
    codec = DecisionIdCodec({1: bytes(32)}, 1, 0)
    decider = _decider(0.5, (0.5, 0.5))
    for i in range(200):
        user = f"user-{i}"
        decision_id, slot, arm, propensity, served_by = decider.decide(user, 1_764_000_000.5)
        assert (slot, served_by) == decider.assign(user, 1_764_000_000.5)
        ref = codec.decode(decision_id)
        code = 3 if slot == -1 else slot  # the default's code is 3 in _decider
        assert (ref.experiment_key, ref.policy_index, ref.served_by, ref.arm_index) == (
            7, code, served_by, arm)
        assert ref.decided_at_ms == 1_764_000_000_500
        assert propensity == pytest.approx(1 / 3)  # uniform control over 3 arms
    for impossible in (math.nan, -1.0, 2.0**48):
        with pytest.raises(OverflowError, match="48-bit"):
            decider.decide("alice", impossible)


def test_decider_serves_the_default_outside_the_serving_period():
    decider = _decider(1.0, (0.5, 0.5), serving=(100.0, 200.0))
    assert decider.assign("alice", 99.9) == (-1, STOPPED)
    assert decider.assign("alice", 200.0) == (-1, STOPPED)
    assert decider.assign("alice", 150.0)[0] in (0, 1)


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


def test_the_decider_takes_its_arguments_by_name_only():
    """Two doubles and two flags stand side by side: by position a swap would pass."""
    with pytest.raises(TypeError):
        Decider(DecisionSigner(bytes(32), 1, 0), 7)
