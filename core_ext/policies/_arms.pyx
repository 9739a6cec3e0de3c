# cython: language_level=3
"""Shared state of every policy kernel (see ``_arms.pxd`` for the fields).

The sufficient statistics of arm ``a`` are ``pulls[a]`` (n_a, the number of rewarded
decisions) and ``reward_sum[a]`` (s_a, the sum of their rewards, each in [0, 1]); the
arrays are float64, C-contiguous, length K, and owned by the caller (the server's state
store). Kernels hold typed memoryviews onto them, so an ``update`` here is visible to
the caller at once and vice versa.

Invariants every entry point keeps (checked on construction, on update and on adoption):
n_a and s_a are finite, ``0 <= s_a <= n_a + tol(n_a)`` with
``tol(n) = 1e-9 * max(1, n)`` (room for float rounding in committed sums; kernels
clamp ``n_a - s_a`` at 0). A bad input raises ``ValueError`` before anything is written.
"""

from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint64_t

import numpy as np

from banditd.core_ext.policies._rng cimport Rng


cdef double _SUM_TOL = 1e-9   # relative slack allowed for s_a over n_a (float rounding)


cdef int check_unit_reward(double reward) except -1:
    """Raise unless ``reward`` is a finite number in [0, 1] (NaN fails the comparison)."""
    if not (0.0 <= reward <= 1.0):
        raise ValueError(
            f"reward must be a finite number in [0, 1], got {reward!r}; "
            "normalise rewards to [0, 1] before updating"
        )
    return 0


cdef object checked_offers(object offers, Py_ssize_t n_arms):
    """``offers`` as a bool (S, K) array whose every row marks at least one arm, or
    ValueError."""
    marks = np.asarray(offers, dtype=bool)
    if marks.ndim != 2 or marks.shape[1] != n_arms:
        raise ValueError(f"offers must be a (sets, {n_arms}) boolean array, got shape "
                         f"{np.shape(offers)}")
    if marks.shape[0] and not marks.any(axis=1).all():
        raise ValueError("every row of offers must mark at least one arm")
    return marks


cdef object as_stats_array(object values, str name):
    """Return ``values`` if it is a writeable, C-contiguous, 1-D float64 numpy array."""
    if not isinstance(values, np.ndarray):
        raise ValueError(
            f"{name} must be a numpy float64 array, got {type(values).__name__}; "
            f"use np.zeros(K, dtype=np.float64)"
        )
    if values.dtype != np.float64 or values.ndim != 1 or not values.flags.c_contiguous:
        raise ValueError(
            f"{name} must be a 1-D C-contiguous float64 array, got dtype={values.dtype}, "
            f"ndim={values.ndim}, c_contiguous={values.flags.c_contiguous}; "
            "use np.ascontiguousarray(x, dtype=np.float64)"
        )
    if not values.flags.writeable:
        raise ValueError(f"{name} must be writeable: the kernel updates it in place")
    return values


def _check_stats(pulls, reward_sum, str what):
    """Raise ValueError unless (pulls, reward_sum) satisfy the module invariants."""
    if not (np.isfinite(pulls).all() and np.isfinite(reward_sum).all()):
        raise ValueError(f"{what} contain NaN or inf; every entry must be finite")
    if (pulls < 0).any():
        raise ValueError(f"{what}: pulls must be >= 0 (first bad arm {int(np.argmax(pulls < 0))})")
    bad = (reward_sum < 0) | (reward_sum > pulls + _SUM_TOL * np.maximum(1.0, pulls))
    if bad.any():
        a = int(np.argmax(bad))
        raise ValueError(
            f"{what}: reward_sum must be in [0, pulls] since rewards are in [0, 1]; "
            f"arm {a} has pulls={pulls[a]!r}, reward_sum={reward_sum[a]!r}"
        )


cdef class PolicyBase:
    """Base of every kernel: statistics, RNG, candidate validation, update and merge."""

    def __init__(self, pulls, reward_sum, Rng rng not None):
        pulls = as_stats_array(pulls, "pulls")
        reward_sum = as_stats_array(reward_sum, "reward_sum")
        if pulls.shape[0] != reward_sum.shape[0]:
            raise ValueError(
                f"pulls and reward_sum must have the same length K, "
                f"got {pulls.shape[0]} and {reward_sum.shape[0]}"
            )
        if pulls.shape[0] == 0:
            raise ValueError("a policy needs at least one arm (K == 0)")
        if np.shares_memory(pulls, reward_sum):
            raise ValueError("pulls and reward_sum must be two separate arrays")
        _check_stats(pulls, reward_sum, "pulls/reward_sum")
        self.pulls_array = pulls
        self.reward_sum_array = reward_sum
        self.pulls = pulls
        self.reward_sum = reward_sum
        self.rng = rng
        self.bitgen = rng.bitgen
        self.n_arms = pulls.shape[0]
        self.version = 0
        self._stamp = None      # allocated by the first candidate check
        self._stamp_gen = 0

    cdef const Py_ssize_t[::1] checked_candidates(self, object candidates):
        cdef const Py_ssize_t[::1] cand
        if isinstance(candidates, np.ndarray) and candidates.dtype == np.intp:
            arr = candidates
        else:
            arr = np.asarray(candidates)
            if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and arr.size == 0):
                raise ValueError(
                    f"candidates must be integer arm indices, got dtype {arr.dtype}; "
                    "pass None for all arms or np.array([...], dtype=np.intp)"
                )
            arr = arr.astype(np.intp, copy=False)
        if arr.ndim != 1:
            raise ValueError(f"candidates must be a 1-D array of arm indices, got ndim={arr.ndim}")
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        cand = arr
        cdef Py_ssize_t n = cand.shape[0]
        cdef Py_ssize_t i, a
        cdef Py_ssize_t k = self.n_arms
        if n == 0:
            raise ValueError("candidates is empty: pass None for all arms or at least one index")
        if self._stamp is None:
            self._stamp = np.zeros(k, dtype=np.uint64)
        self._stamp_gen += 1
        cdef uint64_t gen = self._stamp_gen
        for i in range(n):
            a = cand[i]
            if a < 0 or a >= k:
                raise ValueError(
                    f"candidate arm index {a} is out of range: this policy has K={k} arms "
                    f"(valid indices 0..{k - 1})"
                )
            if self._stamp[a] == gen:
                raise ValueError(f"candidate arm index {a} appears more than once in candidates")
            self._stamp[a] = gen
        return cand

    def action_distributions(self, offers):
        """``action_distribution`` of many candidate sets: row s of the float64 (S, K)
        result is that of the arms row s of ``offers`` (bool (S, K)) marks (a full row:
        every arm). One call per set here; a kernel with a cheaper batch overrides it."""
        marks = checked_offers(offers, self.n_arms)
        out = np.empty(marks.shape, dtype=np.float64)
        for s in range(marks.shape[0]):
            row = marks[s]
            out[s] = self.action_distribution(None if row.all() else np.flatnonzero(row))
        return out

    def update(self, arm, double reward):
        """Record one reward: ``pulls[arm] += 1; reward_sum[arm] += reward``; O(1).

        A fractional reward r is the Beta–Bernoulli pseudo-count update alpha += r,
        beta += 1 - r. Raises ValueError (state untouched) for a bad arm or reward.
        """
        cdef Py_ssize_t a
        try:
            a = arm
        except OverflowError:
            a = -1
        if a < 0 or a >= self.n_arms:
            raise ValueError(
                f"arm index {arm} is out of range: this policy has K={self.n_arms} arms"
            )
        check_unit_reward(reward)
        self.pulls[a] += 1.0
        self.reward_sum[a] += reward
        self.version += 1

    def adopt(self, arm, double pulls, double reward_sum):
        """Take one arm's committed statistics ``(pulls, reward_sum)`` if they count more
        rewards than memory does; True when they were taken. O(1).

        Every committed reward adds exactly one to ``pulls``, so of two snapshots of
        one arm the one with more pulls holds every reward the other holds: keeping the
        maximum by ``pulls`` is idempotent, commutative and associative (a
        join-semilattice, as in state-based CRDTs: Shapiro et al. 2011), so snapshots
        from any replica, repeated, lost or out of order, never double-count and never
        move memory backwards. A bad arm or snapshot raises ValueError, state untouched.
        """
        cdef Py_ssize_t a
        try:
            a = arm
        except OverflowError:
            a = -1
        if a < 0 or a >= self.n_arms:
            raise ValueError(
                f"arm index {arm} is out of range: this policy has K={self.n_arms} arms"
            )
        if not (isfinite(pulls) and isfinite(reward_sum) and pulls >= 0.0 and reward_sum >= 0.0
                and reward_sum <= pulls + _SUM_TOL * max(1.0, pulls)):
            raise ValueError(
                f"arm {a}: committed statistics must be finite with 0 <= reward_sum <= pulls,"
                f" got pulls={pulls!r}, reward_sum={reward_sum!r}"
            )
        if pulls <= self.pulls[a]:
            return False
        self.pulls[a] = pulls
        self.reward_sum[a] = reward_sum
        self.version += 1
        return True

    def __repr__(self):
        return f"<{type(self).__name__} K={self.n_arms} version={self.version}>"
