# cython: language_level=3
"""Thompson sampling, Beta–Bernoulli (see ``_thompson.pyx`` for the estimator notes)."""

from libc.stdint cimport int64_t, uint8_t

from banditd.core_ext.policies._arms cimport PolicyBase
from banditd.core_ext.policies._rng cimport Rng
from banditd.core_ext.policies._sample_ranks cimport SampleRanks


cdef class ThompsonPolicy(PolicyBase):
    cdef readonly double alpha0                 # prior successes, > 0
    cdef readonly double beta0                  # prior failures, > 0
    cdef readonly Py_ssize_t propensity_draws   # M: joint posterior samples per cache (both caches)
    cdef readonly int64_t propensity_version    # ``version`` the full-set cache was computed at; -1 = never
    cdef readonly int64_t subset_cache_version  # ``version`` the subset cache was drawn at; -1 = none
    cdef readonly bint subset_cache_wanted      # a subset select or refresh_propensities(subsets=True) asked for one
    cdef readonly bint subset_cache_refused     # the last attempt to build one was refused by the memory budget
    cdef double[::1] _prop                      # cached full-set win frequencies W_a / M (unfloored)
    cdef SampleRanks _ranks                     # the subset cache (None: none); replaced whole, never written once set
    cdef Rng _prop_rng                          # child generator for refresh (may run in a worker thread)
    cdef object _refresh_lock                   # threading.Lock held by the one refresh running
    cdef double[::1] _a                         # estimator scratch (lazy): Beta alpha per compacted arm
    cdef double[::1] _b                         # estimator scratch (lazy): Beta beta per compacted arm
    cdef int64_t[::1] _wins                     # estimator scratch (lazy): Monte Carlo win counts
    cdef double[::1] _x                         # select-thread scratch: one posterior draw per arm
    cdef uint8_t[::1] _best                     # select-thread scratch (lazy): running max of ranks, 2 M bytes

    cdef void _ensure_scratch(self)
    cdef bint _subset_due(self)
    cdef object _select_subset(self, const Py_ssize_t[::1] cand)
    cdef object _select_from_ranks(self, SampleRanks ranks, const Py_ssize_t[::1] cand)
    cdef object _select_on_the_spot(self, const Py_ssize_t[::1] cand)
    cdef object _estimate_full(self, Rng rng, double[::1] a, double[::1] b, int64_t[::1] wins,
                               double[::1] x)
