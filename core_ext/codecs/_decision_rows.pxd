# cython: language_level=3
"""The decision log's rows in PostgreSQL's binary COPY format (see ``_decision_rows.pyx``)."""

from libc.stdint cimport int32_t, uint32_t


cdef class DecisionRows:
    cdef readonly str server_id
    cdef char* _data          # the rows written since the last take(), back to back
    cdef Py_ssize_t _size
    cdef Py_ssize_t _capacity
    cdef int32_t* _keys       # experiment_key per row, in row order
    cdef Py_ssize_t _rows
    cdef Py_ssize_t _key_capacity

    cdef char* _reserve(self, Py_ssize_t n) except NULL
    cdef int add(self, str decision_id, uint32_t experiment_key, str user_id, str policy,
                 str arm, double propensity, str served_by, double decided_at,
                 double latency_seconds, object context_json, tuple arms,
                 object candidates) except -1
