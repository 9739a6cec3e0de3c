# cython: language_level=3
"""ε-greedy (see ``_egreedy.pyx``)."""

from banditd.core_ext.policies._arms cimport PolicyBase


cdef class EpsilonGreedyPolicy(PolicyBase):
    cdef readonly double epsilon    # exploration probability at t = 0, in [0, 1]
    cdef readonly double decay      # eps_t = epsilon / (1 + decay * total_pulls), decay >= 0

    cdef object _select(self, const Py_ssize_t* cand, Py_ssize_t m)
    cdef object _distribution(self, const Py_ssize_t* cand, Py_ssize_t m)
