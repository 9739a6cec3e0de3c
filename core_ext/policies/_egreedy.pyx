# cython: language_level=3
"""ε-greedy with an optional decaying schedule (Sutton & Barto 2018, §2.2–2.4;
the 1/t-type decay of Auer et al. 2002, §3, with a tunable rate).

With ``eps_t = epsilon / (1 + decay * N)`` (N = Σ_a n_a over all K arms): with
probability eps_t pick a candidate uniformly; otherwise pick uniformly among the
greedy set G = argmax_{a in C} mean_a, where ``mean_a = s_a / n_a`` and an untried
arm (n_a == 0) counts as +inf, so untried arms are exploited (explored) first.

Propensity of the chosen arm a, exact:
``p_a = eps_t / |C| + (1 - eps_t) * [a in G] / |G|``; ``action_distribution(C)`` is
that p_a for every a in C (0 outside), from the same helpers, so it equals the
propensity ``select`` reports bit for bit.

Cost: one pass over C for the greedy set (one division per arm), one more only for
the exploit pick when |G| > 1, plus one pass over all K arms for N when decay > 0.
"""

from libc.math cimport isfinite, INFINITY

import numpy as np

from banditd.core_ext.policies._arms cimport PolicyBase
from banditd.core_ext.policies._rng cimport Rng, uniform01, uniform_index


cdef inline double _mean(const double* n, const double* s, Py_ssize_t arm) noexcept nogil:
    return s[arm] / n[arm] if n[arm] > 0.0 else INFINITY


cdef inline double _prob(double eps, Py_ssize_t m, Py_ssize_t n_greedy, bint greedy) noexcept nogil:
    return eps / m + ((1.0 - eps) / n_greedy if greedy else 0.0)


cdef double _epsilon_t(double epsilon, double decay, const double* n, Py_ssize_t k) noexcept nogil:
    """epsilon / (1 + decay * N), N = pulls over all k arms."""
    cdef double total = 0.0
    cdef Py_ssize_t a
    if decay == 0.0:
        return epsilon
    for a in range(k):
        total += n[a]
    return epsilon / (1.0 + decay * total)


cdef Py_ssize_t _greedy_set(const double* n, const double* s, const Py_ssize_t* cand,
                            Py_ssize_t m, double* best, Py_ssize_t* first) noexcept nogil:
    """|G| for G = argmax_{a in C} mean_a; sets ``best`` (the max) and ``first`` (G's first arm)."""
    cdef Py_ssize_t j, arm, n_greedy = 0
    cdef double v
    best[0] = -INFINITY
    first[0] = 0
    for j in range(m):
        arm = j if cand == NULL else cand[j]
        v = _mean(n, s, arm)
        if v > best[0]:
            best[0] = v
            n_greedy = 1
            first[0] = arm
        elif v == best[0]:
            n_greedy += 1
    return n_greedy


cdef class EpsilonGreedyPolicy(PolicyBase):
    """ε-greedy over caller-owned ``pulls`` / ``reward_sum``; ``select -> (arm, propensity)``."""

    def __init__(self, pulls, reward_sum, Rng rng not None, double epsilon=0.1,
                 double decay=0.0):
        if not (0.0 <= epsilon <= 1.0):
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        if not (decay >= 0.0 and isfinite(decay)):
            raise ValueError(f"decay must be a finite number >= 0, got {decay!r}")
        PolicyBase.__init__(self, pulls, reward_sum, rng)
        self.epsilon = epsilon
        self.decay = decay

    @property
    def current_epsilon(self):
        """eps_t for the current statistics."""
        return _epsilon_t(self.epsilon, self.decay, &self.pulls[0], self.n_arms)

    def select(self, candidates=None):
        """Return ``(arm, propensity)`` with the exact ε-greedy propensity."""
        if candidates is None:
            return self._select(NULL, self.n_arms)
        cdef const Py_ssize_t[::1] cand = self.checked_candidates(candidates)
        return self._select(&cand[0], cand.shape[0])

    def action_distribution(self, candidates=None):
        """P(the next ``select(candidates)`` returns arm a), float64 of length K, exact.

        ε-greedy (Sutton & Barto 2018, §2.2–2.4) with ``eps_t = epsilon / (1 + decay N)``,
        N = Σ_a n_a over all K arms: ``p_a = eps_t / |C| + (1 - eps_t) [a in G] / |G|``
        for a in C, G the candidates of largest mean (an untried arm's is +inf), and 0
        outside C. ``candidates``: as ``select``.
        """
        if candidates is None:
            return self._distribution(NULL, self.n_arms)
        cdef const Py_ssize_t[::1] cand = self.checked_candidates(candidates)
        return self._distribution(&cand[0], cand.shape[0])

    cdef object _select(self, const Py_ssize_t* cand, Py_ssize_t m):
        cdef const double* n = &self.pulls[0]
        cdef const double* s = &self.reward_sum[0]
        cdef Py_ssize_t j, arm, chosen, n_greedy, pick
        cdef double eps, best
        cdef bint explore, chosen_greedy
        with nogil:
            eps = _epsilon_t(self.epsilon, self.decay, n, self.n_arms)
            n_greedy = _greedy_set(n, s, cand, m, &best, &chosen)
            explore = eps > 0.0 and uniform01(self.bitgen) < eps
            if explore:
                pick = uniform_index(self.bitgen, m)
                chosen = pick if cand == NULL else cand[pick]
                chosen_greedy = _mean(n, s, chosen) == best
            else:
                chosen_greedy = True
                if n_greedy > 1:
                    pick = uniform_index(self.bitgen, n_greedy)
                    for j in range(m):
                        arm = j if cand == NULL else cand[j]
                        if _mean(n, s, arm) == best:
                            if pick == 0:
                                chosen = arm
                                break
                            pick -= 1
        return chosen, _prob(eps, m, n_greedy, chosen_greedy)

    cdef object _distribution(self, const Py_ssize_t* cand, Py_ssize_t m):
        cdef const double* n = &self.pulls[0]
        cdef const double* s = &self.reward_sum[0]
        cdef Py_ssize_t j, arm, first
        cdef double best, eps = _epsilon_t(self.epsilon, self.decay, n, self.n_arms)
        cdef Py_ssize_t n_greedy = _greedy_set(n, s, cand, m, &best, &first)
        out = np.zeros(self.n_arms, dtype=np.float64)
        cdef double[::1] p = out
        for j in range(m):
            arm = j if cand == NULL else cand[j]
            p[arm] = _prob(eps, m, n_greedy, _mean(n, s, arm) == best)
        return out
