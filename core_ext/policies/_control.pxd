# cython: language_level=3
"""Control policy (see ``_control.pyx``)."""

from banditd.core_ext.policies._arms cimport PolicyBase


cdef class ControlPolicy(PolicyBase):
    cdef readonly Py_ssize_t default_arm   # fixed arm index, or -1 for uniform

    cdef object _uniform(self, const Py_ssize_t* cand, Py_ssize_t m)
