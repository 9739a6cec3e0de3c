# cython: language_level=3, boundscheck=False, wraparound=False
"""The decision log's rows, written by the ``Decider`` in PostgreSQL's binary COPY format.

Each Select appends one ``decisions`` row here, in C, instead of building a Python
tuple (with a datetime and a list) that asyncpg then encodes field by field at flush:
inside the loaded server those two steps cost more than the decision itself
(benchmarks/RESULTS.md).
A flush takes the bytes and hands them to ``COPY decisions (...) FROM STDIN (FORMAT
binary)`` between ``COPY_HEADER`` and ``COPY_TRAILER``.

The format is PostgreSQL's ("COPY", File Formats: Binary Format): per row an int16
field count, then per field an int32 byte length (-1 for NULL) and the value in the
type's binary send format, all integers big-endian:

* text: the UTF-8 bytes; int4: 4 bytes; float8: the IEEE 754 double's 8 bytes;
* timestamptz: int64 microseconds since 2000-01-01 00:00:00 UTC;
* jsonb: the version byte 1, then the JSON text;
* text[]: int32 ndim (1), int32 flags (0: no NULLs), int32 element type (25, text),
  int32 length, int32 lower bound (1), then each element as a field.

The columns, in order, are ``COLUMNS`` (``decisions`` in ``0001_core.sql`` plus
``candidates`` from ``0004``).
"""

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.math cimport floor
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np

COLUMNS = (
    "decision_id", "experiment_key", "user_id", "policy", "arm", "propensity", "served_by",
    "decided_at", "latency_us", "context", "server_id", "candidates",
)
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)   # signature, flags, no header extension
COPY_TRAILER = b"\xff\xff"                         # field count -1

cdef int16_t _FIELDS = len(COLUMNS)  # tests/core_ext/codecs/test_decision_rows.py: = the table's
cdef int32_t _TEXT_OID = 25
cdef int64_t _PG_EPOCH_US = 946684800000000        # 2000-01-01T00:00:00Z in Unix microseconds
cdef Py_ssize_t _KEEP_BYTES = 1 << 20               # capacity kept between flushes
cdef Py_ssize_t _ROW_FIXED = 2 + 12 * 4 + 4 + 8 + 8 + 4   # counts, lengths, int4 float8 ts int4


cdef inline void _be32(char* p, uint32_t v) noexcept:
    p[0] = <char> (v >> 24)
    p[1] = <char> (v >> 16)
    p[2] = <char> (v >> 8)
    p[3] = <char> v


cdef inline void _be64(char* p, uint64_t v) noexcept:
    _be32(p, <uint32_t> (v >> 32))
    _be32(p + 4, <uint32_t> v)


cdef class DecisionRows:
    """A growing buffer of ``decisions`` rows for one server (``server_id``).

    ``len()`` is the number of rows; ``take()`` hands them over and starts afresh.
    """

    def __init__(self, str server_id not None):
        self.server_id = server_id

    def __dealloc__(self):
        PyMem_Free(self._data)
        PyMem_Free(self._keys)

    def __len__(self):
        return self._rows

    cdef char* _reserve(self, Py_ssize_t n) except NULL:
        """Room for ``n`` more bytes (and one more key); the write position."""
        cdef Py_ssize_t capacity
        cdef void* grown
        if self._size + n > self._capacity:
            capacity = max(self._capacity * 2, self._size + n, 4096)
            grown = PyMem_Realloc(self._data, capacity)
            if grown == NULL:
                raise MemoryError()
            self._data, self._capacity = <char*> grown, capacity
        if self._rows == self._key_capacity:
            capacity = max(self._key_capacity * 2, 256)
            grown = PyMem_Realloc(self._keys, capacity * sizeof(int32_t))
            if grown == NULL:
                raise MemoryError()
            self._keys, self._key_capacity = <int32_t*> grown, capacity
        return self._data + self._size

    cdef int add(self, str decision_id, uint32_t experiment_key, str user_id, str policy,
                 str arm, double propensity, str served_by, double decided_at,
                 double latency_seconds, object context_json, tuple arms,
                 object candidates) except -1:
        """Append one row. ``decided_at`` is epoch seconds; ``context_json`` the JSON text
        (bytes) or None; ``candidates`` the offered arm indices (into ``arms``) or None."""
        cdef Py_ssize_t n_id, n_user, n_policy, n_arm, n_served, n_server, n_context = 0
        cdef const char* id_ = PyUnicode_AsUTF8AndSize(decision_id, &n_id)
        cdef const char* user = PyUnicode_AsUTF8AndSize(user_id, &n_user)
        cdef const char* policy_ = PyUnicode_AsUTF8AndSize(policy, &n_policy)
        cdef const char* arm_ = PyUnicode_AsUTF8AndSize(arm, &n_arm)
        cdef const char* served = PyUnicode_AsUTF8AndSize(served_by, &n_served)
        cdef const char* server = PyUnicode_AsUTF8AndSize(self.server_id, &n_server)
        cdef const char* context = NULL
        cdef const char* name
        cdef Py_ssize_t n_name, i, array_size = 0
        cdef const Py_ssize_t[::1] offered
        cdef Py_ssize_t n_offered = 0, n_arms = len(arms)
        cdef bytes context_bytes
        cdef double micros = floor(decided_at * 1e6 + 0.5)
        cdef int64_t latency_us = <int64_t> (latency_seconds * 1e6)
        cdef uint64_t bits
        if not -9.2e18 < micros < 9.2e18:   # NaN fails too
            raise OverflowError(f"decided_at {decided_at!r} is out of timestamptz's range")
        if context_json is not None:
            context_bytes = context_json
            context = context_bytes
            n_context = len(context_bytes)
        if candidates is not None:
            # The decider passes the servicer's intp array: a view, no copy, and the
            # names read in place from ``arms`` (a list of them cost 1 µs per Select).
            offered = np.ascontiguousarray(candidates, dtype=np.intp)
            n_offered = offered.shape[0]
            array_size = 20
            for i in range(n_offered):
                if not 0 <= offered[i] < n_arms:
                    raise IndexError(f"candidate arm index {offered[i]} is out of range "
                                     f"for {n_arms} arms")
                PyUnicode_AsUTF8AndSize(<object> PyTuple_GET_ITEM(arms, offered[i]), &n_name)
                array_size += 4 + n_name
        cdef char* p = self._reserve(
            _ROW_FIXED + n_id + n_user + n_policy + n_arm + n_served + n_server
            + (1 + n_context if context != NULL else 0) + array_size)
        cdef char* start = p
        p[0], p[1] = 0, <char> _FIELDS
        p += 2
        _be32(p, <uint32_t> n_id); memcpy(p + 4, id_, n_id); p += 4 + n_id
        _be32(p, 4); _be32(p + 4, experiment_key); p += 8
        _be32(p, <uint32_t> n_user); memcpy(p + 4, user, n_user); p += 4 + n_user
        _be32(p, <uint32_t> n_policy); memcpy(p + 4, policy_, n_policy); p += 4 + n_policy
        _be32(p, <uint32_t> n_arm); memcpy(p + 4, arm_, n_arm); p += 4 + n_arm
        memcpy(&bits, &propensity, 8)
        _be32(p, 8); _be64(p + 4, bits); p += 12
        _be32(p, <uint32_t> n_served); memcpy(p + 4, served, n_served); p += 4 + n_served
        _be32(p, 8); _be64(p + 4, <uint64_t> (<int64_t> micros - _PG_EPOCH_US)); p += 12
        _be32(p, 4); _be32(p + 4, <uint32_t> <int32_t> min(max(latency_us, 0), 2147483647))
        p += 8
        if context == NULL:
            _be32(p, 0xFFFFFFFF); p += 4
        else:
            _be32(p, <uint32_t> (1 + n_context)); p[4] = 1
            memcpy(p + 5, context, n_context); p += 5 + n_context
        _be32(p, <uint32_t> n_server); memcpy(p + 4, server, n_server); p += 4 + n_server
        if candidates is None:
            _be32(p, 0xFFFFFFFF); p += 4
        else:
            _be32(p, <uint32_t> array_size); _be32(p + 4, 1); _be32(p + 8, 0)
            _be32(p + 12, <uint32_t> _TEXT_OID); _be32(p + 16, <uint32_t> n_offered)
            _be32(p + 20, 1); p += 24
            for i in range(n_offered):
                name = PyUnicode_AsUTF8AndSize(
                    <object> PyTuple_GET_ITEM(arms, offered[i]), &n_name)
                _be32(p, <uint32_t> n_name); memcpy(p + 4, name, n_name); p += 4 + n_name
        self._size += p - start
        self._keys[self._rows] = <int32_t> experiment_key
        self._rows += 1
        return 0

    def take(self):
        """``(rows, keys)``: the rows' bytes (no header or trailer) and each row's
        experiment key (an int32 array); the buffer is then empty."""
        rows = (<char*> self._data)[:self._size] if self._size else b""
        keys = np.empty(self._rows, dtype=np.int32)
        cdef int32_t[::1] out = keys
        if self._rows:
            memcpy(&out[0], self._keys, self._rows * sizeof(int32_t))
        self._size = 0
        self._rows = 0
        if self._capacity > _KEEP_BYTES:  # after a burst (or an outage) give memory back
            PyMem_Free(self._data)
            PyMem_Free(self._keys)
            self._data, self._keys = NULL, NULL
            self._capacity = self._key_capacity = 0
        return rows, keys
