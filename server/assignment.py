"""Deterministic assignment: hash(salt, user) -> in traffic or not -> policy.

One 64-bit XXH64 hash ``h`` of ``utf8(salt) | 0x1F | utf8(user_id)`` (the kernels'
``banditd.core_ext.decider.hash64``) gives two buckets in [0, 10000):

- ``traffic_bucket = h mod 10000`` (the same value ``banditd.core_ext.decider.assignment_bucket``
  returns): the user is inside the experiment iff ``traffic_bucket < traffic_pct * 10000``;
- ``policy_bucket = (h div 10000) mod 10000``: the policy is the first whose
  cumulative split share exceeds ``policy_bucket / 10000``.

Using different digits of one hash keeps the two choices independent, so changing
``traffic_pct`` only adds or removes users and never moves a user from one policy
to another. No lookup and no state: the same user gets the same policy on every
replica and after every restart.

The decision itself runs in C (``banditd.core_ext.decider.Decider``); this module
builds the tables it reads. ``tests/server/test_assignment.py`` checks the C path
against the formulas
above, written there a second time in Python on purpose, as the test's oracle.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from banditd.core_ext.decider import BUCKETS

SEPARATOR = b"\x1f"


def traffic_threshold(traffic_pct: float) -> int:
    """Buckets below this are inside the experiment."""
    return round(traffic_pct * BUCKETS)


def policy_table(split: Sequence[float]) -> bytes:
    """For each policy bucket, the index of the policy that owns it (one byte each).

    Policy i owns the buckets in [round(c_{i-1} B), round(c_i B)), where c_i is the
    cumulative split; rounding the cumulative sums (not each share) makes the
    shares add up to exactly B buckets.

    Equal splits get the same (immutable) table of B = 10,000 bytes, so a thousand
    experiments with the usual equal split share one.
    """
    return _policy_table(tuple(float(s) for s in split))


@functools.lru_cache(maxsize=64)
def _policy_table(split: tuple[float, ...]) -> bytes:
    table: list[int] = []
    cumulative = 0.0
    for index, share in enumerate(split):
        cumulative += share
        upper = BUCKETS if index == len(split) - 1 else round(cumulative * BUCKETS)
        table.extend([index] * (upper - len(table)))
    return bytes(table)
