# cython: language_level=3
"""Shared state of every policy kernel: the caller's per-arm statistics, the random
source, candidate validation, O(1) update and adoption of committed statistics.

Subclasses (one kernel family per module) add only ``select`` and their parameters.
"""

from libc.stdint cimport int64_t, uint64_t
from numpy.random cimport bitgen_t

from banditd.core_ext.policies._rng cimport Rng


cdef class PolicyBase:
    cdef double[::1] pulls             # caller-owned: rewarded decisions per arm, length K
    cdef double[::1] reward_sum        # caller-owned: sum of rewards in [0, 1] per arm, length K
    cdef readonly object pulls_array   # the caller's numpy array behind ``pulls`` (kept alive)
    cdef readonly object reward_sum_array  # the caller's numpy array behind ``reward_sum``
    cdef readonly Rng rng              # the random source of ``select`` (event-loop thread only)
    cdef bitgen_t* bitgen              # == rng.bitgen, cached to skip one indirection per call
    cdef readonly Py_ssize_t n_arms    # K >= 1
    cdef readonly int64_t version      # bumped by every update / adoption; caches key on it
    cdef uint64_t[::1] _stamp          # per-arm mark of the last validation that saw the arm (lazy)
    cdef uint64_t _stamp_gen           # current mark; a repeat within one call is a duplicate

    # Validate ``candidates`` (a 1-D integer array of distinct indices in [0, K)) and
    # return a contiguous ``intp`` view onto it; raises ValueError before any state changes.
    cdef const Py_ssize_t[::1] checked_candidates(self, object candidates)


cdef int check_unit_reward(double reward) except -1
cdef object as_stats_array(object values, str name)

# ``offers`` as a bool (S, K) array, each row marking at least one of the K = ``n_arms``
# arms (a candidate set per row), or ValueError.
cdef object checked_offers(object offers, Py_ssize_t n_arms)
