# cython: language_level=3
"""ε-greedy with an optional decaying schedule (Sutton & Barto 2018, §2.2–2.4;
the 1/t-type decay of Auer et al. 2002, §3, with a tunable rate).

With ``eps_t = epsilon / (1 + decay * N)`` (N = Σ_a n_a over all K arms): with
probability eps_t pick a candidate uniformly; otherwise pick uniformly among the
greedy set G = argmax_{a in C} mean_a, where ``mean_a = s_a / n_a`` and an untried
arm (n_a == 0) counts as +inf, so untried arms are exploited (explored) first.

Propensity of the chosen arm a, exact:
``p_a = eps_t / |C| + (1 - eps_t) * [a in G] / |G|``.

Cost: one pass over C for the greedy set (one division per arm), one more only for
the exploit pick when |G| > 1, plus one pass over all K arms for N when decay > 0.
"""

from libc.math cimport isfinite, INFINITY

from banditd.core_ext.policies._arms cimport PolicyBase
from banditd.core_ext.policies._rng cimport Rng, uniform01, uniform_index


cdef inline double _mean(const double* n, const double* s, Py_ssize_t arm) noexcept nogil:
    return s[arm] / n[arm] if n[arm] > 0.0 else INFINITY


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
        cdef double total = 0.0
        cdef Py_ssize_t a
        if self.decay == 0.0:
            return self.epsilon
        for a in range(self.n_arms):
            total += self.pulls[a]
        return self.epsilon / (1.0 + self.decay * total)

    def select(self, candidates=None):
        """Return ``(arm, propensity)`` with the exact ε-greedy propensity."""
        if candidates is None:
            return self._select(NULL, self.n_arms)
        cdef const Py_ssize_t[::1] cand = self.checked_candidates(candidates)
        return self._select(&cand[0], cand.shape[0])

    cdef object _select(self, const Py_ssize_t* cand, Py_ssize_t m):
        cdef const double* n = &self.pulls[0]
        cdef const double* s = &self.reward_sum[0]
        cdef Py_ssize_t j, arm, chosen = 0, n_greedy = 0, pick
        cdef double eps = self.epsilon, total = 0.0, best = -INFINITY, v
        cdef bint explore, chosen_greedy
        with nogil:
            if self.decay > 0.0:
                for j in range(self.n_arms):
                    total += n[j]
                eps = eps / (1.0 + self.decay * total)
            for j in range(m):
                arm = j if cand == NULL else cand[j]
                v = _mean(n, s, arm)
                if v > best:
                    best = v
                    n_greedy = 1
                    chosen = arm
                elif v == best:
                    n_greedy += 1
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
        return chosen, eps / m + ((1.0 - eps) / n_greedy if chosen_greedy else 0.0)
