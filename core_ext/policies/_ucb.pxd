# cython: language_level=3
"""UCB1 (see ``_ucb.pyx``)."""

from banditd.core_ext.policies._arms cimport PolicyBase


cdef class UCB1Policy(PolicyBase):
    cdef readonly double c      # exploration constant, >= 0 (sqrt(2) in Auer et al. 2002)

    cdef object _select(self, const Py_ssize_t* cand, Py_ssize_t m)
    cdef object _distribution(self, const Py_ssize_t* cand, Py_ssize_t m)
