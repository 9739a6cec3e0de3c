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

Cost: one pass over C (one sqrt and one division per arm, one log per call), plus a
second pass only when there are untried arms or ties.
"""

from libc.math cimport log, sqrt, isfinite, INFINITY

from banditd.core_ext.policies._arms cimport PolicyBase
from banditd.core_ext.policies._rng cimport Rng, uniform_index


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

    cdef object _select(self, const Py_ssize_t* cand, Py_ssize_t m):
        cdef const double* n = &self.pulls[0]
        cdef const double* s = &self.reward_sum[0]
        cdef Py_ssize_t j, arm, untried = 0, ties = 0, pick, best_arm = 0
        cdef double total = 0.0, best = -INFINITY, idx, log_total
        with nogil:
            for j in range(m):
                arm = j if cand == NULL else cand[j]
                if n[arm] <= 0.0:
                    untried += 1
                total += n[arm]
            if untried == 0:
                log_total = log(total) if total > 1.0 else 0.0   # N >= 1 for integer pulls
                for j in range(m):
                    arm = j if cand == NULL else cand[j]
                    idx = s[arm] / n[arm] + self.c * sqrt(log_total / n[arm])
                    if idx > best:
                        best = idx
                        best_arm = arm
                        ties = 1
                    elif idx == best:
                        ties += 1
                if ties > 1:        # second pass: the pick-th of the tied arms
                    pick = uniform_index(self.bitgen, ties)
                    for j in range(m):
                        arm = j if cand == NULL else cand[j]
                        if s[arm] / n[arm] + self.c * sqrt(log_total / n[arm]) == best:
                            if pick == 0:
                                best_arm = arm
                                break
                            pick -= 1
            else:
                pick = uniform_index(self.bitgen, untried)
                for j in range(m):
                    arm = j if cand == NULL else cand[j]
                    if n[arm] <= 0.0:
                        if pick == 0:
                            best_arm = arm
                            break
                        pick -= 1
        if untried:
            return best_arm, 1.0 / untried
        return best_arm, 1.0 / ties
