# cython: language_level=3
"""The random source every kernel draws from: numpy's PCG64 ``bitgen_t``.

The inline helpers below are the only way kernels draw uniforms and indices, so the
whole package uses one convention: ``uniform01`` is in [0, 1) with 53 random bits,
``uniform_index(bg, n)`` is exactly uniform on {0, ..., n-1} (numpy's masked
rejection in ``random_interval``, no modulo bias). Both need ``n >= 1`` and a live
``bitgen_t``; they cannot fail, hence ``noexcept nogil``.
"""

from libc.stdint cimport uint64_t
from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_interval


cdef class Rng:
    cdef object _bit_generator   # the numpy PCG64 that owns the C state (keeps it alive)
    cdef bitgen_t* bitgen        # borrowed pointer into _bit_generator's capsule; valid for self's life
    cdef object _lock            # the bit generator's lock, for callers that share one Rng across threads


cdef inline double uniform01(bitgen_t* bg) noexcept nogil:
    """One double uniform on [0, 1)."""
    return bg.next_double(bg.state)


cdef inline Py_ssize_t uniform_index(bitgen_t* bg, Py_ssize_t n) noexcept nogil:
    """One index uniform on {0, ..., n-1}; ``n >= 1`` (n == 1 consumes no randomness)."""
    return <Py_ssize_t> random_interval(bg, <uint64_t> (n - 1))
