# cython: language_level=3
"""UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed
bandit problem", Machine Learning 47, fig. 1).

For candidate set C with N = Σ_{a in C} n_a total pulls, the index of a tried arm is
``mean_a + c * sqrt(ln N / n_a)`` with ``mean_a = s_a / n_a``; c = sqrt(2) is the
paper's constant. ``select`` returns:

- an untried candidate (n_a == 0) if there is one, uniformly among the untried:
  propensity exactly ``1 / #untried``;
- otherwise the candidate with the largest index; exact ties (e.g. arms with identical
  statistics) are broken uniformly: propensity exactly ``1 / #tied``. Without a tie the
  choice is a deterministic function of the statistics: propensity 1.0. (Logged UCB
  decisions therefore support off-policy evaluation only through these exact values.)

``action_distribution(C)`` is the same rule written out: mass ``1 / #untried`` on each
untried candidate, else ``1 / #tied`` on each candidate of largest index, 0 elsewhere.
It shares the scan with ``select``, so both see bit-identical indices and ties.

Cost: one pass over C (one sqrt and one division per arm, one log per call), plus a
second pass only when there are untried arms or ties.
"""

from libc.math cimport log, sqrt, isfinite, INFINITY

import numpy as np

from banditd.core_ext.policies._arms cimport PolicyBase
from banditd.core_ext.policies._rng cimport Rng, uniform_index


ctypedef struct _Scan:
    Py_ssize_t untried      # candidates with n_a == 0
    Py_ssize_t ties         # candidates of largest index (computed only when untried == 0)
    Py_ssize_t first        # the first arm of the set select chooses from
    double best             # the largest index
    double log_total        # ln N, N = pulls over the candidates


cdef inline double _index(const double* n, const double* s, Py_ssize_t arm, double c,
                          double log_total) noexcept nogil:
    return s[arm] / n[arm] + c * sqrt(log_total / n[arm])


cdef _Scan _scan(const double* n, const double* s, double c, const Py_ssize_t* cand,
                 Py_ssize_t m) noexcept nogil:
    """Untried count, or (when none) the largest index and its ties, over C."""
    cdef _Scan r
    cdef Py_ssize_t j, arm
    cdef double total = 0.0, idx
    r.untried = r.ties = 0
    r.first = -1
    r.best = -INFINITY
    r.log_total = 0.0
    for j in range(m):
        arm = j if cand == NULL else cand[j]
        if n[arm] <= 0.0:
            if r.untried == 0:
                r.first = arm
            r.untried += 1
        total += n[arm]
    if r.untried:
        return r
    if total > 1.0:     # N >= 1 for integer pulls
        r.log_total = log(total)
    for j in range(m):
        arm = j if cand == NULL else cand[j]
        idx = _index(n, s, arm, c, r.log_total)
        if idx > r.best:
            r.best = idx
            r.first = arm
            r.ties = 1
        elif idx == r.best:
            r.ties += 1
    return r


cdef inline bint _chosen_from(const double* n, const double* s, double c, Py_ssize_t arm,
                              const _Scan* r) noexcept nogil:
    """Is ``arm`` in the set select picks uniformly from (untried, else tied best)?"""
    if r.untried:
        return n[arm] <= 0.0
    return _index(n, s, arm, c, r.log_total) == r.best


cdef class UCB1Policy(PolicyBase):
    """UCB1 over caller-owned ``pulls`` / ``reward_sum``; ``select -> (arm, propensity)``."""

    def __init__(self, pulls, reward_sum, Rng rng not None, double c=1.4142135623730951):
        if not (c >= 0.0 and isfinite(c)):
            raise ValueError(f"c (UCB exploration constant) must be a finite number >= 0, got {c!r}")
        PolicyBase.__init__(self, pulls, reward_sum, rng)
        self.c = c

    def select(self, candidates=None):
        """Return ``(arm, propensity)``: untried candidates first, then the largest index."""
        if candidates is None:
            return self._select(NULL, self.n_arms)
        cdef const Py_ssize_t[::1] cand = self.checked_candidates(candidates)
        return self._select(&cand[0], cand.shape[0])

    def action_distribution(self, candidates=None):
        """P(the next ``select(candidates)`` returns arm a), float64 of length K, exact.

        UCB1 (Auer, Cesa-Bianchi & Fischer 2002, fig. 1) with N = Σ_{a in C} n_a:
        ``1 / #untried`` on every untried candidate if there is one; otherwise
        ``1 / #tied`` on every candidate whose index ``mean_a + c sqrt(ln N / n_a)``
        equals the largest; 0 elsewhere and outside C. ``candidates``: as ``select``.
        """
        if candidates is None:
            return self._distribution(NULL, self.n_arms)
        cdef const Py_ssize_t[::1] cand = self.checked_candidates(candidates)
        return self._distribution(&cand[0], cand.shape[0])

    cdef object _select(self, const Py_ssize_t* cand, Py_ssize_t m):
        cdef const double* n = &self.pulls[0]
        cdef const double* s = &self.reward_sum[0]
        cdef Py_ssize_t j, arm, count, pick
        cdef _Scan r
        with nogil:
            r = _scan(n, s, self.c, cand, m)
            arm = r.first
            count = r.untried if r.untried else r.ties
            if count > 1:        # second pass: the pick-th arm of the set
                pick = uniform_index(self.bitgen, count)
                for j in range(m):
                    arm = j if cand == NULL else cand[j]
                    if _chosen_from(n, s, self.c, arm, &r):
                        if pick == 0:
                            break
                        pick -= 1
        return arm, 1.0 / count

    cdef object _distribution(self, const Py_ssize_t* cand, Py_ssize_t m):
        cdef const double* n = &self.pulls[0]
        cdef const double* s = &self.reward_sum[0]
        cdef _Scan r = _scan(n, s, self.c, cand, m)
        cdef double share = 1.0 / (r.untried if r.untried else r.ties)
        out = np.zeros(self.n_arms, dtype=np.float64)
        cdef double[::1] p = out
        cdef Py_ssize_t j, arm
        for j in range(m):
            arm = j if cand == NULL else cand[j]
            if _chosen_from(n, s, self.c, arm, &r):
                p[arm] = share
        return out
