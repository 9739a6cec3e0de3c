# cython: language_level=3
"""M joint posterior samples of K arms, kept as within-sample ranks: the subset cache
of Thompson sampling (``_thompson.pyx`` states the selection rule and its propensity).

Representation. Sample r (0 <= r < M) draws theta_j^(r) ~ Beta(a_j, b_j) for every arm
j, sorts the K values and stores each arm's position in that order, its rank
``R[j, r]`` in 0..K-1: a ``uint8`` for K <= 256, an ``int16`` up to K = 32,767. Within
one sample, ranks order the arms exactly as the draws do, so the arm of a candidate
set C with the largest draw in sample r is the one with the largest rank: every
question the cache answers compares ranks within one sample, never across samples,
and the values themselves are not needed. Exact ties among draws (only
floating-point underflow to 0 or 1 at priors far below 1 produces them) get distinct
ranks in a uniformly random order, drawn once when the sample is built (a
Fisher–Yates shuffle of each tied run, Knuth TAOCP vol. 2, Algorithm 3.4.2 P): the
largest rank among any tied arms is then uniform over them, which is how ``select``
breaks ties, and every later answer about that sample is deterministic.

Why ranks and not the draws: one or two bytes per entry instead of eight (float32
would round distinct draws into ties, whose uniform breaking would make the answers
random again), and comparisons that vectorise with plain SSE2 (``pmaxub`` on sixteen
unsigned bytes, ``pmaxsw`` on eight signed 16-bit lanes: hence signed ``int16`` and
K <= 32767). Bytes matter beyond memory: a subset question streams |C| rows of ranks
through the cache, and inside the loaded server the cost of that traffic to the code
around it is several times the scan's own (benchmarks/RESULTS.md).

Layout: arm-major, ``ranks[j * M + r]``, so the M ranks of one arm are contiguous and a
question over a candidate set C streams |C| rows of M ranks (|C| x 4 KiB at M = 4096,
K <= 256). ``wins_of`` (how many samples a given candidate tops) is |C| passes of a
running maximum then one comparison pass: M |C| lane operations, about a microsecond
at M = 4096, |C| = 10 (benchmarks/RESULTS.md).

Many sets at once (an offline evaluation asks about every distinct candidate set of a
log): ``set_frequencies`` walks the prefix tree of the samples' arm orders instead,
whose nodes above a set's winners are few once the posteriors separate (its
docstring); the answers are the same counts.

Memory: itemsize x M x K bytes per cache (M = 4096: 4 KiB per arm up to K = 256, so
80 KiB at K = 20; 8 KiB per arm beyond, 8 MiB at K = 1,000). Every live
``SampleRanks`` counts against one process-wide budget (``set_budget``; default 256
MiB); ``reserve`` refuses a new one that would exceed it, and its caller then does
without (Thompson estimates the subset propensity on the spot). The budget can be
exceeded by one cache at a time, while a rebuild draws its replacement beside the
one still in use.

Thread rules: ``fill`` runs once, on an object nobody else holds yet (it releases the
GIL for the draws); once published the object is read-only, so readers need no lock
and a holder of a reference can never see it change or vanish. Replacing a cache is
one reference assignment. The byte count is changed only with the GIL held.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import numpy as np

from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_beta

from banditd.core_ext.policies._arms cimport checked_offers
from banditd.core_ext.policies._rng cimport Rng, uniform_index


MAX_ARMS = 32767                        # ranks 0..K-1 must fit an int16 (uint8 up to 256)
cdef Py_ssize_t _MAX_ARMS = 32767
cdef Py_ssize_t _in_use = 0             # bytes held by live SampleRanks (GIL held to change)
cdef Py_ssize_t _budget = 256 << 20     # reserve() refuses past this many bytes
# At or below this many arms a sample is sorted by insertion, above by an LSD radix
# sort: measured per sample, insertion 1.1 µs and radix 2.0 µs at K = 64, about even
# near K = 100, insertion 11 µs and radix 5 µs at K = 256 (benchmarks/RESULTS.md).
cdef Py_ssize_t _INSERTION_MAX = 80
# Samples per byte-wide partial count in ``_count_above``: at most 255 (a byte), and a
# multiple of sixteen so that every full block is whole vectors.
cdef Py_ssize_t _COUNT_BLOCK = 240


ctypedef struct _Keyed:
    uint64_t key            # the bits of the sample's draw of ``arm``: a draw is a double
                            # in [0, 1], whose bit patterns order as the values do
    Py_ssize_t arm


cdef _Keyed* _sort(_Keyed* keyed, _Keyed* spare, Py_ssize_t k) noexcept nogil:
    """Sort keyed[0..k-1] by key, ascending, with spare[0..k-1] as scratch; returns the
    one of the two that holds the result (the order of equal keys is arbitrary:
    ``_shuffle_ties`` randomises it)."""
    cdef Py_ssize_t i, j, total
    cdef int shift, digit
    cdef _Keyed item
    cdef _Keyed* tmp
    cdef Py_ssize_t counts[256]
    if k <= _INSERTION_MAX:
        for i in range(1, k):
            item = keyed[i]
            j = i - 1
            while j >= 0 and keyed[j].key > item.key:
                keyed[j + 1] = keyed[j]
                j -= 1
            keyed[j + 1] = item
        return keyed
    # LSD radix sort, one byte per pass (stable, so each pass keeps the order of the
    # bytes below); a pass whose byte is the same in every key would change nothing and
    # is skipped (the exponent bytes of draws from one narrow posterior mostly are).
    for shift in range(0, 64, 8):
        for digit in range(256):
            counts[digit] = 0
        for i in range(k):
            counts[(keyed[i].key >> shift) & 0xFF] += 1
        if counts[(keyed[0].key >> shift) & 0xFF] == k:
            continue
        total = 0
        for digit in range(256):
            j = counts[digit]
            counts[digit] = total
            total += j
        for i in range(k):
            digit = (keyed[i].key >> shift) & 0xFF
            spare[counts[digit]] = keyed[i]
            counts[digit] += 1
        tmp = keyed
        keyed = spare
        spare = tmp
    return keyed


cdef void _shuffle_ties(bitgen_t* bg, _Keyed* keyed, Py_ssize_t k) noexcept nogil:
    """Put every run of equal keys (equal draws) of the sorted keyed[0..k-1] in a
    uniformly random order (Fisher–Yates within the run)."""
    cdef Py_ssize_t start = 0, end, t, u
    cdef _Keyed tmp
    while start < k:
        end = start + 1
        while end < k and keyed[end].key == keyed[start].key:
            end += 1
        t = end - 1
        while t > start:
            u = start + uniform_index(bg, t - start + 1)
            tmp = keyed[t]
            keyed[t] = keyed[u]
            keyed[u] = tmp
            t -= 1
        start = end


ctypedef fused rank_t:
    uint8_t         # K <= 256
    int16_t         # K <= 32767


cdef inline void _running_max(rank_t* best, const rank_t* row, Py_ssize_t n) noexcept nogil:
    """best[r] = max(best[r], row[r]); branch-free so that it vectorises."""
    cdef Py_ssize_t r
    for r in range(n):
        best[r] = row[r] if row[r] > best[r] else best[r]


cdef inline Py_ssize_t _count_above(const rank_t* mine, const rank_t* best,
                                    Py_ssize_t n) noexcept nogil:
    """#{r : mine[r] > best[r]}. Counted in blocks of _COUNT_BLOCK into one byte, which
    lets the compiler compare and add sixteen byte lanes at once: a running count as
    wide as Py_ssize_t makes it widen every comparison to 64 bits first, several times
    the instructions of the whole comparison pass."""
    cdef Py_ssize_t start = 0, r, end, count = 0
    cdef uint8_t block
    while start < n:
        end = start + _COUNT_BLOCK if start + _COUNT_BLOCK < n else n
        block = 0
        for r in range(start, end):
            block += mine[r] > best[r]
        count += block
        start = end
    return count


cdef void _store(rank_t* ranks, const _Keyed* ordered, Py_ssize_t k, Py_ssize_t rows,
                 Py_ssize_t r) noexcept nogil:
    """Write sample r's ranks: the arm in position i of ``ordered`` has rank i."""
    cdef Py_ssize_t i
    for i in range(k):
        ranks[ordered[i].arm * rows + r] = <rank_t> i


cdef Py_ssize_t _winner(const rank_t* ranks, Py_ssize_t rows, Py_ssize_t row,
                        const Py_ssize_t* cand, Py_ssize_t m) noexcept nogil:
    cdef const rank_t* column = ranks + row
    cdef Py_ssize_t i, j = 0
    cdef rank_t v, best = column[cand[0] * rows]
    for i in range(1, m):
        v = column[cand[i] * rows]
        if v > best:
            best = v
            j = i
    return j


cdef Py_ssize_t _wins_of(const rank_t* ranks, Py_ssize_t rows, Py_ssize_t j,
                         const Py_ssize_t* cand, Py_ssize_t m, rank_t* best) noexcept nogil:
    cdef Py_ssize_t i, first
    cdef const rank_t* mine = ranks + cand[j] * rows
    if m == 1:
        return rows
    first = 1 if j == 0 else 0
    memcpy(best, ranks + cand[first] * rows, rows * sizeof(rank_t))
    for i in range(first + 1, m):
        if i != j:
            _running_max(best, ranks + cand[i] * rows, rows)
    return _count_above(mine, best, rows)


cdef void _count_winners(const rank_t* ranks, Py_ssize_t rows, const Py_ssize_t* cand,
                         Py_ssize_t m, rank_t* best, int32_t* who,
                         int64_t* counts) noexcept nogil:
    cdef Py_ssize_t i, r
    cdef const rank_t* column = ranks + cand[0] * rows
    for r in range(rows):       # ranks are distinct within a sample: strict > decides
        best[r] = column[r]
        who[r] = 0
    for i in range(m):
        counts[i] = 0
    for i in range(1, m):
        column = ranks + cand[i] * rows
        for r in range(rows):
            if column[r] > best[r]:
                best[r] = column[r]
                who[r] = <int32_t> i
    for r in range(rows):
        counts[who[r]] += 1


cdef class SampleRanks:
    """See the module docstring; made by ``reserve``, filled once, then read-only."""

    def __cinit__(self, Py_ssize_t n_rows, Py_ssize_t n_arms):
        global _in_use
        if n_rows < 1 or not 1 <= n_arms <= _MAX_ARMS:
            raise ValueError(f"a sample-rank cache needs M >= 1 rows and 1..{_MAX_ARMS} arms, "
                             f"got M={n_rows}, K={n_arms}")
        self.itemsize = _itemsize(n_arms)
        self.ranks = malloc(self.itemsize * n_rows * n_arms)
        if self.ranks == NULL:
            raise MemoryError(f"sample-rank cache of {n_rows} x {n_arms}")
        self.n_rows = n_rows
        self.n_arms = n_arms
        self.nbytes = self.itemsize * n_rows * n_arms
        _in_use += self.nbytes

    def __dealloc__(self):
        global _in_use
        if self.ranks != NULL:
            free(self.ranks)
            _in_use -= self.nbytes

    cdef int fill(self, Rng rng, const double[::1] a, const double[::1] b,
                  int64_t[::1] wins) except -1:
        cdef Py_ssize_t k = self.n_arms, m = self.n_rows, r, i
        cdef bitgen_t* bg = rng.bitgen
        cdef const double* pa = &a[0]
        cdef const double* pb = &b[0]
        cdef int64_t* w = &wins[0]
        cdef double draw
        cdef _Keyed* ordered
        cdef _Keyed* keyed = <_Keyed*> malloc(2 * k * sizeof(_Keyed))
        if keyed == NULL:
            raise MemoryError(f"sample-rank scratch of {k} arms")
        try:
            with nogil:
                for i in range(k):
                    w[i] = 0
                for r in range(m):
                    for i in range(k):
                        draw = random_beta(bg, pa[i], pb[i])
                        memcpy(&keyed[i].key, &draw, 8)
                        keyed[i].arm = i
                    ordered = _sort(keyed, keyed + k, k)
                    _shuffle_ties(bg, ordered, k)
                    if self.itemsize == 1:
                        _store(<uint8_t*> self.ranks, ordered, k, m, r)
                    else:
                        _store(<int16_t*> self.ranks, ordered, k, m, r)
                    w[ordered[k - 1].arm] += 1
        finally:
            free(keyed)
        return 0

    cdef Py_ssize_t winner(self, Py_ssize_t row, const Py_ssize_t* cand,
                           Py_ssize_t m) noexcept nogil:
        if self.itemsize == 1:
            return _winner(<const uint8_t*> self.ranks, self.n_rows, row, cand, m)
        return _winner(<const int16_t*> self.ranks, self.n_rows, row, cand, m)

    cdef Py_ssize_t wins_of(self, Py_ssize_t j, const Py_ssize_t* cand, Py_ssize_t m,
                            void* best) noexcept nogil:
        if self.itemsize == 1:
            return _wins_of(<const uint8_t*> self.ranks, self.n_rows, j, cand, m,
                            <uint8_t*> best)
        return _wins_of(<const int16_t*> self.ranks, self.n_rows, j, cand, m, <int16_t*> best)

    cdef void count_winners(self, const Py_ssize_t* cand, Py_ssize_t m, void* best,
                            int32_t* who, int64_t* counts) noexcept nogil:
        if self.itemsize == 1:
            _count_winners(<const uint8_t*> self.ranks, self.n_rows, cand, m,
                           <uint8_t*> best, who, counts)
        else:
            _count_winners(<const int16_t*> self.ranks, self.n_rows, cand, m,
                           <int16_t*> best, who, counts)

    def orders(self):
        """The samples as arm orders, int32 (M, K): row i lists the arms of one sample
        from the highest-ranked down, and the rows are sorted lexicographically (so
        samples that agree on their top arms are adjacent; which sample is which does
        not matter to any question the cache answers)."""
        cdef Py_ssize_t k = self.n_arms, m = self.n_rows
        if self.itemsize == 1:
            ranks = np.asarray(<uint8_t[:k * m]> <uint8_t*> self.ranks)
        else:
            ranks = np.asarray(<int16_t[:k * m]> <int16_t*> self.ranks)
        ranks = ranks.reshape(k, m).T.astype(np.int32)     # ranks[r, arm]
        order = np.empty((m, k), dtype=np.int32)
        order[np.arange(m)[:, None], k - 1 - ranks] = np.arange(k, dtype=np.int32)
        return np.ascontiguousarray(order[np.lexsort(order.T[::-1])])

    def set_frequencies(self, offers):
        """N_a(C) / M for many candidate sets at once: row s of the float64 (S, K)
        result is, for the set C_s of arms that row s of ``offers`` (bool (S, K), each
        row naming at least one arm) marks, the share of the M samples whose
        highest-ranked arm of C_s is a; 0 outside C_s. The same numbers as
        ``count_winners`` per set, by another route: the samples' orders as a prefix
        tree (``orders``), walked per set from the root, adding a node's sample count to
        its arm when the arm is in C_s and descending into its children otherwise. A
        node of one sample ends the tree there, and the walk reads the rest of that
        sample's order. A set thus costs the nodes above its winners, about K when the
        posteriors have separated (most samples share their top arms), at most M times
        the depth of its winners, where counting costs M |C_s| comparisons."""
        cdef Py_ssize_t k = self.n_arms, m = self.n_rows
        # an empty row would send a walk past the end of a sample's order
        marks = np.ascontiguousarray(checked_offers(offers, k)).view(np.uint8)
        order_arr = self.orders()
        arm_arr, count_arr, first_arr, last_arr = _prefix_tree(order_arr)
        out_arr = np.zeros((marks.shape[0], k), dtype=np.float64)
        cdef const int32_t[:, ::1] order = order_arr
        cdef const int32_t[::1] arm = arm_arr, count = count_arr, first = first_arr
        cdef const int32_t[::1] last = last_arr
        cdef const uint8_t[:, ::1] mark = marks
        cdef double[:, ::1] out = out_arr
        cdef int32_t[::1] stack = np.empty(arm_arr.shape[0] + 1, dtype=np.int32)
        cdef Py_ssize_t s, node, depth, top, j, n_sets = marks.shape[0]
        cdef double scale = 1.0 / m
        with nogil:
            for s in range(n_sets):
                stack[0] = 0                        # node 0: the root, every sample
                top = 1
                while top:
                    top -= 1
                    node = stack[top]
                    if node and mark[s, arm[node]]:
                        out[s, arm[node]] += count[node] * scale
                    elif first[node] >= 0:          # children first[node]..last[node]-1
                        for j in range(first[node], last[node]):
                            stack[top] = <int32_t> j
                            top += 1
                    else:                           # one sample: read on along its order
                        depth = last[node] + 1
                        while not mark[s, order[-first[node] - 1, depth]]:
                            depth += 1
                        out[s, order[-first[node] - 1, depth]] += scale
        return out_arr

    def __repr__(self):
        return f"<SampleRanks M={self.n_rows} K={self.n_arms} {self.nbytes} bytes>"


def _prefix_tree(order):
    """The prefix tree of the sorted orders (M, K) (``SampleRanks.orders``) as flat
    int32 arrays ``(arm, count, first, last)`` over its nodes, numbered level by level,
    node 0 the root (every sample, no arm). A node is a run of samples sharing a prefix
    of their orders; its arm is the prefix's last arm and its count the run's length. A
    node of two or more samples has the children ``first .. last - 1`` (the runs one
    arm deeper; none below depth K - 1, where no walk descends, since some arm of a
    non-empty set is left); a node of one sample, row r at depth d, has none:
    ``first = -(r + 1)``, ``last = d``."""
    m, k = order.shape
    root = [np.zeros(1, np.int32), np.full(1, m, np.int32), np.zeros(1, np.int32),
            np.zeros(1, np.int32)]
    levels = [root]
    parent_level, parent_index = root, np.zeros(1, np.int64)    # live parents
    parent_start, parent_end = np.zeros(1, np.int64), np.full(1, m, np.int64)
    boundary = np.zeros(m, dtype=bool)
    boundary[0] = True
    n_nodes = 1
    for depth in range(k):
        column = order[:, depth]
        boundary[1:] |= column[1:] != column[:-1]
        start = np.flatnonzero(boundary)
        end = np.append(start[1:], m)
        owner = np.searchsorted(parent_start, start, side="right") - 1
        inside = start < parent_end[owner]          # runs below a live parent only
        start, end, owner = start[inside], end[inside], owner[inside]
        parents = np.arange(parent_start.size)
        parent_level[2][parent_index] = n_nodes + np.searchsorted(owner, parents, "left")
        parent_level[3][parent_index] = n_nodes + np.searchsorted(owner, parents, "right")
        size = end - start
        single = size == 1
        first = np.zeros(start.size, np.int32)
        first[single] = -(start[single] + 1)
        level = [column[start].astype(np.int32), size.astype(np.int32), first,
                 np.where(single, depth, 0).astype(np.int32)]
        levels.append(level)
        n_nodes += start.size
        parent_level, parent_index = level, np.flatnonzero(~single)
        parent_start, parent_end = start[~single], end[~single]
        if parent_index.size == 0:
            break
    return tuple(np.concatenate(field) for field in zip(*levels, strict=True))


cdef inline Py_ssize_t _itemsize(Py_ssize_t n_arms) noexcept:
    return 1 if n_arms <= 256 else 2


cdef bint fits(Py_ssize_t n_rows, Py_ssize_t n_arms, Py_ssize_t replacing) noexcept:
    return (n_arms <= _MAX_ARMS
            and _in_use - replacing + _itemsize(n_arms) * n_rows * n_arms <= _budget)


cdef SampleRanks reserve(Py_ssize_t n_rows, Py_ssize_t n_arms, Py_ssize_t replacing):
    if not fits(n_rows, n_arms, replacing):
        return None
    return SampleRanks(n_rows, n_arms)


def bytes_in_use():
    """Bytes held by every live sample-rank cache of this process."""
    return _in_use


def budget():
    """The process-wide byte budget of sample-rank caches."""
    return _budget


def set_budget(Py_ssize_t nbytes):
    """Set the process-wide byte budget (>= 0) for caches built from now on; caches
    already built stay until replaced or freed. Returns the previous budget."""
    global _budget
    if nbytes < 0:
        raise ValueError(f"the sample-rank cache budget must be >= 0 bytes, got {nbytes}")
    previous = _budget
    _budget = nbytes
    return previous
