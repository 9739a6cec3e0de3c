# cython: language_level=3
"""PCG64 random source for the kernels.

Wraps ``numpy.random.PCG64`` (O'Neill 2014, "PCG: a family of simple fast
space-efficient statistically good algorithms for random number generation") and
exposes its C ``bitgen_t`` so kernels can call numpy's C distributions
(``random_standard_gamma``, ``random_beta``) without the GIL. Seeded from OS entropy
by default (``numpy.random.SeedSequence``), or from an integer for tests and replay.

A ``bitgen_t`` is not thread-safe: one ``Rng`` must be used by one thread at a time.
The asyncio server uses it from its event-loop thread only; work that runs in another
thread (``ThompsonPolicy.refresh_propensities``) draws from its own child generator made
with :meth:`Rng.spawn`, so kernels may release the GIL without sharing C state.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from numpy.random cimport bitgen_t

import numpy as np

from numpy.random.c_distributions cimport random_beta, random_standard_gamma


cdef class Rng:
    """A seedable PCG64 generator whose C state the kernels draw from directly."""

    def __cinit__(self, seed=None):
        """``seed``: None (OS entropy), an int, or a ``numpy.random.SeedSequence``."""
        cdef const char* capsule_name = "BitGenerator"
        self._bit_generator = np.random.PCG64(seed)
        capsule = self._bit_generator.capsule
        if not PyCapsule_IsValid(capsule, capsule_name):
            raise RuntimeError("numpy PCG64 did not expose a valid BitGenerator capsule")
        self.bitgen = <bitgen_t*> PyCapsule_GetPointer(capsule, capsule_name)
        self._lock = self._bit_generator.lock

    def spawn(self):
        """A new, statistically independent ``Rng`` (``SeedSequence.spawn``), reproducible
        from this one's seed; give one to each thread that draws."""
        return Rng(self._bit_generator.seed_seq.spawn(1)[0])

    def random(self, Py_ssize_t size):
        """``size`` uniforms on [0, 1) from the same C stream the kernels use."""
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        out = np.empty(size, dtype=np.float64)
        cdef double[::1] view = out
        cdef Py_ssize_t i
        with nogil:
            for i in range(size):
                view[i] = uniform01(self.bitgen)
        return out

    @property
    def bit_generator(self):
        """The underlying ``numpy.random.PCG64`` (for ``numpy.random.Generator(rng.bit_generator)``)."""
        return self._bit_generator

    def beta(self, double a, double b, Py_ssize_t size):
        """``size`` draws from Beta(a, b) with numpy's C ``random_beta`` (for tests)."""
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if not (a > 0 and b > 0):
            raise ValueError(f"Beta parameters must be > 0, got a={a}, b={b}")
        out = np.empty(size, dtype=np.float64)
        cdef double[::1] view = out
        cdef Py_ssize_t i
        with nogil:
            for i in range(size):
                view[i] = random_beta(self.bitgen, a, b)
        return out

    def standard_gamma(self, double shape, Py_ssize_t size):
        """``size`` draws from Gamma(shape, 1) with numpy's C ``random_standard_gamma``."""
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if not shape > 0:
            raise ValueError(f"Gamma shape must be > 0, got {shape}")
        out = np.empty(size, dtype=np.float64)
        cdef double[::1] view = out
        cdef Py_ssize_t i
        with nogil:
            for i in range(size):
                view[i] = random_standard_gamma(self.bitgen, shape)
        return out
