# cython: language_level=3
"""M joint posterior samples of K arms, kept as within-sample ranks (see
``_sample_ranks.pyx`` for the mechanism, its cost and the memory budget)."""

from libc.stdint cimport int32_t, int64_t

from banditd.core_ext.policies._rng cimport Rng


cdef class SampleRanks:
    cdef void* ranks                  # K x M arm-major: ranks[a * M + r], rank of arm a in sample r (0 = smallest; distinct within r)
    cdef readonly int itemsize        # bytes per rank: 1 (uint8) for K <= 256, else 2 (int16)
    cdef readonly Py_ssize_t n_rows   # M >= 1
    cdef readonly Py_ssize_t n_arms   # K, 1 <= K <= MAX_ARMS
    cdef readonly Py_ssize_t nbytes   # itemsize M K: counted against the process-wide budget while the object lives

    # Draw the M samples (Beta(a[j], b[j]) per arm j, from ``rng``, without the GIL),
    # rank each, and set wins[j] to the number of samples arm j tops. Called once, by
    # the builder, before the object is published; MemoryError for the scratch.
    cdef int fill(self, Rng rng, const double[::1] a, const double[::1] b,
                  int64_t[::1] wins) except -1

    # Position in cand[0..m-1] of the candidate ranked highest in sample ``row``.
    cdef Py_ssize_t winner(self, Py_ssize_t row, const Py_ssize_t* cand,
                           Py_ssize_t m) noexcept nogil

    # Number of samples in which cand[j] is ranked above every other of cand[0..m-1];
    # ``best`` is scratch of itemsize M bytes.
    cdef Py_ssize_t wins_of(self, Py_ssize_t j, const Py_ssize_t* cand, Py_ssize_t m,
                            void* best) noexcept nogil

    # counts[i] = number of samples whose highest-ranked candidate is cand[i], for
    # i < m; ``best`` (itemsize M bytes) and ``who`` (M) are scratch.
    cdef void count_winners(self, const Py_ssize_t* cand, Py_ssize_t m, void* best,
                            int32_t* who, int64_t* counts) noexcept nogil


# Whether a SampleRanks of M x K may be made: K <= MAX_ARMS and the bytes held by every
# live SampleRanks, less ``replacing`` (the size of the one it will replace, freed when
# that goes), plus its own, within the budget.
cdef bint fits(Py_ssize_t n_rows, Py_ssize_t n_arms, Py_ssize_t replacing) noexcept

# A new, unfilled SampleRanks of M x K if it ``fits``, else None.
cdef SampleRanks reserve(Py_ssize_t n_rows, Py_ssize_t n_arms, Py_ssize_t replacing)
