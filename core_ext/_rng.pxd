# cython: language_level=3
"""The random source every kernel draws from: numpy's PCG64 ``bitgen_t``."""

from numpy.random cimport bitgen_t


cdef class Rng:
    cdef object _bit_generator   # the numpy PCG64 that owns the C state (keeps it alive)
    cdef bitgen_t* bitgen        # borrowed pointer into _bit_generator's capsule; valid for self's life
    cdef object _lock            # the bit generator's lock, for callers that share one Rng across threads
