# cython: language_level=3
"""Thompson sampling, Beta–Bernoulli (see ``_thompson.pyx`` for the estimator notes)."""

from libc.stdint cimport int64_t

from banditd.core_ext.policies._arms cimport PolicyBase
from banditd.core_ext.policies._rng cimport Rng


cdef class ThompsonPolicy(PolicyBase):
    cdef readonly double alpha0                 # prior successes, > 0
    cdef readonly double beta0                  # prior failures, > 0
    cdef readonly Py_ssize_t propensity_draws   # M: full-set Monte Carlo draws per refresh
    cdef readonly Py_ssize_t subset_draw_budget # Beta draws spent per subset propensity
    cdef readonly int64_t propensity_version    # ``version`` the cache was computed at; -1 = never
    cdef double[::1] _prop                      # cached full-set win frequencies W_a / M (unfloored)
    cdef Rng _prop_rng                          # child generator for refresh (may run in a worker thread)
    cdef bint _refreshing                       # a refresh is running (checked and set under the GIL)
    cdef double[::1] _a                         # estimator scratch (lazy): Beta alpha per compacted arm
    cdef double[::1] _b                         # estimator scratch (lazy): Beta beta per compacted arm
    cdef int64_t[::1] _wins                     # estimator scratch (lazy): Monte Carlo win counts
    cdef double[::1] _x                         # select-thread scratch: one posterior draw per arm

    cdef void _ensure_scratch(self)
    cdef object _select_subset(self, const Py_ssize_t[::1] cand)
    cdef object _estimate_full(self, Rng rng, double[::1] a, double[::1] b, int64_t[::1] wins,
                               double[::1] x)
