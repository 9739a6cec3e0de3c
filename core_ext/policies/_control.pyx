# cython: language_level=3
"""Control: the experiment's baseline, and the source of unbiased replay logs.

``default_arm == -1``: a candidate uniformly at random, propensity exactly ``1/|C|``
(uniform logs give unbiased offline replay, Li et al. 2011). Otherwise the fixed
default arm with propensity 1.0 when it is a candidate, and the uniform choice over
the candidates (propensity ``1/|C|``) when it is not. The statistics are still updated
(control's reward is the comparison baseline) but never read by ``select``.
``action_distribution(C)`` is the same rule as a vector over the K arms.
"""

import numpy as np

from banditd.core_ext.policies._arms cimport PolicyBase, checked_offers
from banditd.core_ext.policies._rng cimport Rng, uniform_index


cdef class ControlPolicy(PolicyBase):
    """Uniform or fixed-arm control over caller-owned statistics."""

    def __init__(self, pulls, reward_sum, Rng rng not None, Py_ssize_t default_arm=-1):
        PolicyBase.__init__(self, pulls, reward_sum, rng)
        if not (default_arm == -1 or 0 <= default_arm < self.n_arms):
            raise ValueError(
                f"default_arm must be -1 (uniform) or an arm index in 0..{self.n_arms - 1}, "
                f"got {default_arm}"
            )
        self.default_arm = default_arm

    def select(self, candidates=None):
        """Return ``(arm, propensity)``: the default arm (1.0) or uniform (1/|C|)."""
        cdef Py_ssize_t j
        if candidates is None:
            if self.default_arm >= 0:
                return self.default_arm, 1.0
            return self._uniform(NULL, self.n_arms)
        cdef const Py_ssize_t[::1] cand = self.checked_candidates(candidates)
        if self.default_arm >= 0:
            for j in range(cand.shape[0]):
                if cand[j] == self.default_arm:
                    return self.default_arm, 1.0
        return self._uniform(&cand[0], cand.shape[0])

    def action_distribution(self, candidates=None):
        """P(the next ``select(candidates)`` returns arm a), float64 of length K, exact:
        1 on the default arm when it is a candidate, else ``1/|C|`` on every candidate;
        0 outside C. ``candidates``: as ``select``."""
        if candidates is None:
            arms = np.arange(self.n_arms)
        else:
            arms = np.asarray(self.checked_candidates(candidates))
        out = np.zeros(self.n_arms, dtype=np.float64)
        if self.default_arm >= 0 and (arms == self.default_arm).any():
            out[self.default_arm] = 1.0
        else:
            out[arms] = 1.0 / arms.shape[0]
        return out

    def action_distributions(self, offers):
        """``action_distribution`` of every set row s of ``offers`` (bool (S, K)) marks,
        as rows of a float64 (S, K) array, by the same rule for all rows at once."""
        marks = checked_offers(offers, self.n_arms)
        out = marks / marks.sum(axis=1, keepdims=True)
        if self.default_arm >= 0:
            default = marks[:, self.default_arm]
            out[default] = 0.0
            out[default, self.default_arm] = 1.0
        return out

    cdef object _uniform(self, const Py_ssize_t* cand, Py_ssize_t m):
        cdef Py_ssize_t pick = uniform_index(self.bitgen, m)
        return (pick if cand == NULL else cand[pick]), 1.0 / m
