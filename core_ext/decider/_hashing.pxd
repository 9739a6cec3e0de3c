# cython: language_level=3
"""XXH64 for the other kernels' modules (see ``_hashing.pyx``)."""

from libc.stdint cimport uint64_t


cdef uint64_t xxh64(const unsigned char* p, Py_ssize_t length, uint64_t seed) noexcept nogil
