# cython: language_level=3
"""Thompson sampling for Bernoulli (or [0, 1]-bounded) rewards with a Beta prior.

Model (Thompson 1933; Chapelle & Li 2011, Algorithm 2). Arm a has posterior
``Beta(alpha_a, beta_a)`` with ``alpha_a = alpha0 + s_a`` and
``beta_a = beta0 + max(n_a - s_a, 0)``, where n_a = ``pulls[a]`` and s_a =
``reward_sum[a]``; a fractional reward r adds r to alpha and 1 - r to beta
(Agrawal & Goyal 2012 treat it as a Bernoulli(r) trial in expectation). ``select``
draws ``theta_a ~ Beta(alpha_a, beta_a)`` for every candidate with numpy's C
``random_beta`` over the policy's ``bitgen_t`` and returns the argmax (exact ties,
which only floating-point underflow at tiny priors can produce, are broken uniformly).

Propensity. The probability that Thompson picks arm a from candidate set C is
``p_a = P(theta_a = max_{j in C} theta_j) = ∫ f_a(x) Π_{j≠a} F_j(x) dx``
(f, F: Beta pdf and cdf), which has no closed form for K > 2. It is estimated by
Monte Carlo: draw M independent posterior samples of every arm in C and set
``p̂_a = W_a / M`` with W_a the number of samples that arm a wins. p̂_a is unbiased
with standard error ``sqrt(p_a (1 - p_a) / M)`` (about 0.0078 at p = 0.5 and 0.0016
at p = 0.01 for M = 4096). Because an estimate of 0 would make inverse-propensity
weights infinite for an arm that was in fact chosen, the returned value is floored at
``1 / (M + 1)``; the floor only binds when p_a is itself below about 1/M.

- ``candidates is None`` (the fast path): the propensity is read from a cache of all
  K win probabilities, computed with M = ``propensity_draws`` full-set samples by
  ``refresh_propensities()`` (M·K Beta draws, 60-170 ns each: 4096 x 100 draws take
  68 ms under the uniform prior, whose Beta(1, 1) draws are the slowest, and 24 ms
  after 1,000 pulls per arm). The server calls it off the request path; it copies
  the statistics under the GIL, then releases the GIL and draws from its own child
  generator (``Rng.spawn``), so it may run in a worker thread beside ``select``. If
  the cache has never been computed, the first ``select`` computes it synchronously
  (the server builds it first, in a thread: ``ExperimentRuntime.warm``, or takes it
  over from the kernel it replaces: ``adopt_propensities``). If the statistics
  changed since (``version`` moved on), ``select`` keeps using the stale cache: the
  returned propensity then describes the policy as of
  ``propensity_version``, which is off by the drift of the posterior between
  refreshes (small once arms have many pulls; refresh often while they have few).
- A candidate subset C ≠ all arms: the propensity is estimated on the spot with
  ``m = max(16, subset_draw_budget // |C|)`` samples restricted to C (about
  ``subset_draw_budget`` extra Beta draws, ≈ 60 µs at the default 2048), floored at
  ``1 / (m + 1)``; standard error ``sqrt(p (1 - p) / m)``. These samples are
  independent of the one that chose the arm (reusing that one would bias p̂ upwards).
  A "subset" that contains every arm takes the cached full-set path.

``action_distribution(C)`` returns these Monte Carlo estimates as a vector over the K
arms, unfloored (so they sum to 1): for the full set the cached p̂ (what ``select``
reads, floor aside: its propensity is ``max(p̂_a, 1 / (M + 1))``), for a subset a
fresh ``win_probabilities(C, draws)``. It is never the full-set estimate renormalised
over C: an arm that rarely wins among all K can be the likely winner within C.
"""

from libc.math cimport isfinite
from libc.stdint cimport int64_t

import numpy as np

from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_beta

from banditd.core_ext.policies._arms cimport PolicyBase
from banditd.core_ext.policies._rng cimport Rng, uniform_index


# Below this many candidates the draw loop keeps the GIL: releasing and re-taking it
# costs ~40 ns, 15 % of a K = 10 select, and nothing else could run in that window.
cdef Py_ssize_t _NOGIL_MIN_ARMS = 64


cdef inline double _alpha(double a0, double s) noexcept nogil:
    return a0 + s


cdef inline double _beta(double b0, double n, double s) noexcept nogil:
    cdef double f = n - s
    return b0 + (f if f > 0.0 else 0.0)   # clamp: s may exceed n by float rounding


cdef Py_ssize_t _argmax(bitgen_t* bg, const double* x, Py_ssize_t m) noexcept nogil:
    """Position of the largest of x[0..m-1], m >= 1; exact ties broken uniformly
    (reservoir sampling: the i-th tied value replaces the pick with probability 1/i)."""
    cdef double best = x[0]
    cdef Py_ssize_t j, best_j = 0, ties = 1
    for j in range(1, m):
        if x[j] > best:
            best = x[j]
            best_j = j
            ties = 1
        elif x[j] == best:      # only on underflow to 0 or 1 at priors far below 1
            ties += 1
            if uniform_index(bg, ties) == 0:
                best_j = j
    return best_j


# Draw first, compare after: the two-pass form costs little over the raw draw loop,
# a one-pass loop with the tie test between the draws several times more
# (benchmarks/RESULTS.md).
cdef Py_ssize_t _argmax_draw(bitgen_t* bg, const double* n, const double* s,
                             const Py_ssize_t* cand, Py_ssize_t m, double a0, double b0,
                             double* x) noexcept nogil:
    """Position in 0..m-1 of the largest posterior draw among m arms (``cand`` NULL:
    arms 0..m-1, else arms cand[0..m-1]); ``x`` is scratch of length >= m."""
    cdef Py_ssize_t j, arm
    if cand == NULL:
        for j in range(m):
            x[j] = random_beta(bg, _alpha(a0, s[j]), _beta(b0, n[j], s[j]))
    else:
        for j in range(m):
            arm = cand[j]
            x[j] = random_beta(bg, _alpha(a0, s[arm]), _beta(b0, n[arm], s[arm]))
    return _argmax(bg, x, m)


cdef void _count_wins(bitgen_t* bg, const double* a, const double* b, Py_ssize_t m,
                      Py_ssize_t draws, int64_t* wins, double* x) noexcept nogil:
    """Add to wins[j] the number of ``draws`` joint posterior samples that arm j wins,
    for m arms with Beta parameters a[j], b[j]; ``x`` is scratch of length >= m."""
    cdef Py_ssize_t d, j
    for d in range(draws):
        for j in range(m):
            x[j] = random_beta(bg, a[j], b[j])
        wins[_argmax(bg, x, m)] += 1


cdef class ThompsonPolicy(PolicyBase):
    """Beta–Bernoulli Thompson sampling over caller-owned ``pulls`` / ``reward_sum``.

    ``select(candidates=None) -> (arm, propensity)``; see the module docstring for the
    propensity estimator, its standard error and its staleness.
    """

    def __init__(self, pulls, reward_sum, Rng rng not None, double alpha0=1.0,
                 double beta0=1.0, Py_ssize_t propensity_draws=4096,
                 Py_ssize_t subset_draw_budget=2048):
        if not (alpha0 > 0.0 and isfinite(alpha0)):
            raise ValueError(f"alpha0 (prior successes) must be a finite number > 0, got {alpha0!r}")
        if not (beta0 > 0.0 and isfinite(beta0)):
            raise ValueError(f"beta0 (prior failures) must be a finite number > 0, got {beta0!r}")
        if propensity_draws < 1:
            raise ValueError(f"propensity_draws must be >= 1, got {propensity_draws}")
        if subset_draw_budget < 1:
            raise ValueError(f"subset_draw_budget must be >= 1, got {subset_draw_budget}")
        PolicyBase.__init__(self, pulls, reward_sum, rng)
        self.alpha0 = alpha0
        self.beta0 = beta0
        self.propensity_draws = propensity_draws
        self.subset_draw_budget = subset_draw_budget
        self.propensity_version = -1
        self._prop = None       # set by the first estimate
        self._prop_rng = rng.spawn()
        self._refreshing = False
        self._a = self._b = None
        self._wins = None
        self._x = np.empty(self.n_arms, dtype=np.float64)

    cdef void _ensure_scratch(self):
        """Allocate the estimator's scratch on first use: a server holds thousands of
        kernels (1,000 experiments x 1,000 arms: 24 MB) that may never estimate."""
        if self._a is None:
            self._a = np.empty(self.n_arms, dtype=np.float64)
            self._b = np.empty(self.n_arms, dtype=np.float64)
            self._wins = np.empty(self.n_arms, dtype=np.int64)

    def select(self, candidates=None):
        """Draw one posterior sample per candidate and return ``(arm, propensity)``."""
        cdef Py_ssize_t k = self.n_arms
        cdef Py_ssize_t j
        if candidates is None:
            if k < _NOGIL_MIN_ARMS:
                j = _argmax_draw(self.bitgen, &self.pulls[0], &self.reward_sum[0], NULL, k,
                                 self.alpha0, self.beta0, &self._x[0])
            else:
                with nogil:
                    j = _argmax_draw(self.bitgen, &self.pulls[0], &self.reward_sum[0], NULL, k,
                                     self.alpha0, self.beta0, &self._x[0])
            if self.propensity_version < 0:
                self._ensure_scratch()
                self._prop = self._estimate_full(self.rng, self._a, self._b, self._wins, self._x)
                self.propensity_version = self.version
            if self._prop[j] == 0.0:
                return j, 1.0 / (self.propensity_draws + 1.0)   # the floor (module docstring)
            return j, self._prop[j]
        return self._select_subset(self.checked_candidates(candidates))

    cdef object _select_subset(self, const Py_ssize_t[::1] cand):
        cdef Py_ssize_t m = cand.shape[0]
        if m == self.n_arms:        # distinct and in range, so every arm: use the cache
            return self.select(None)
        cdef Py_ssize_t j, i, arm
        cdef Py_ssize_t draws = max(16, self.subset_draw_budget // m)
        self._ensure_scratch()
        cdef double* a = &self._a[0]
        cdef double* b = &self._b[0]
        cdef int64_t* wins = &self._wins[0]
        cdef double* x = &self._x[0]
        cdef const double* n = &self.pulls[0]
        cdef const double* s = &self.reward_sum[0]
        with nogil:     # dominated by the ~subset_draw_budget draws below
            j = _argmax_draw(self.bitgen, n, s, &cand[0], m, self.alpha0, self.beta0, x)
            for i in range(m):
                arm = cand[i]
                a[i] = _alpha(self.alpha0, s[arm])
                b[i] = _beta(self.beta0, n[arm], s[arm])
                wins[i] = 0
            _count_wins(self.bitgen, a, b, m, draws, wins, x)
        cdef double p = wins[j] / <double> draws
        if wins[j] == 0:
            p = 1.0 / (draws + 1.0)        # the floor (see module docstring)
        return cand[j], p

    cdef object _estimate_full(self, Rng rng, double[::1] a, double[::1] b, int64_t[::1] wins,
                               double[::1] x):
        """Win probabilities W_a / M of all K arms from M full-set samples (unfloored)."""
        cdef Py_ssize_t i, k = self.n_arms
        cdef Py_ssize_t draws = self.propensity_draws
        for i in range(k):     # copy under the GIL: the loop below must not see updates
            a[i] = _alpha(self.alpha0, self.reward_sum[i])
            b[i] = _beta(self.beta0, self.pulls[i], self.reward_sum[i])
            wins[i] = 0
        with nogil:
            _count_wins(rng.bitgen, &a[0], &b[0], k, draws, &wins[0], &x[0])
        return np.asarray(wins) / float(draws)

    def refresh_propensities(self):
        """Recompute the cached full-set win probabilities if ``version`` moved on.

        Returns True if it recomputed, False if the cache was current (or another
        thread is refreshing). Costs ``propensity_draws * K`` Beta draws with the GIL
        released and its own generator: call it off the request path, at most one
        thread at a time (e.g. ``loop.run_in_executor``).
        """
        if self._refreshing or self.propensity_version == self.version:
            return False
        self._refreshing = True
        try:
            version = self.version
            k = self.n_arms
            prop = self._estimate_full(
                self._prop_rng,
                np.empty(k, dtype=np.float64),
                np.empty(k, dtype=np.float64),
                np.empty(k, dtype=np.int64),
                np.empty(k, dtype=np.float64),
            )
            self._prop = prop
            self.propensity_version = version
        finally:
            self._refreshing = False
        return True

    def adopt_propensities(self, ThompsonPolicy other not None):
        """Take over ``other``'s cache, for a kernel that replaces ``other`` over a copy
        of its current statistics (a reloaded experiment: the caller copies them first).

        The cache is a function of the statistics, the prior and M only, so it carries
        over when K, ``alpha0``, ``beta0`` and ``propensity_draws`` are equal and
        ``other`` has one; otherwise nothing changes. A cache that was current for
        ``other`` is current here; a stale one stays stale (``version`` moves past it),
        so the refresher re-estimates it as it would have ``other``'s. The array is
        shared, not copied: a refresh replaces a cache, it never writes into one.
        Returns True if the cache was adopted.
        """
        if (self.propensity_version >= 0 or other.propensity_version < 0
                or other.n_arms != self.n_arms or other.alpha0 != self.alpha0
                or other.beta0 != self.beta0
                or other.propensity_draws != self.propensity_draws):
            return False
        self._prop = other._prop
        self.propensity_version = self.version
        if other.propensity_version != other.version:
            self.version += 1
        return True

    def cached_propensities(self):
        """The cached full-set win probabilities as ``select`` reports them (floored at
        1/(M+1)), as of ``propensity_version``."""
        if self.propensity_version < 0:
            self.refresh_propensities()
        return np.maximum(self._prop, 1.0 / (self.propensity_draws + 1.0))

    def action_distribution(self, candidates=None, Py_ssize_t draws=0):
        """Estimated P(the next ``select(candidates)`` returns arm a), float64 of length K.

        P(a) = P(theta_a = max_{j in C} theta_j), theta_j ~ Beta(alpha_j, beta_j)
        independently (Thompson 1933; Chapelle & Li 2011), estimated by the win
        frequency W_a / D over D joint posterior samples of the arms in C: unbiased,
        standard error ``sqrt(P(a) (1 - P(a)) / D)``, unfloored, summing to 1, 0
        outside C.

        ``candidates`` None (or every arm): the cached estimate ``select`` reads, D =
        ``propensity_draws``, as of ``propensity_version`` (computed if never built;
        ``refresh_propensities()`` brings a stale one up to date); ``draws`` is not
        used. A proper subset: a fresh estimate with D = ``draws`` (0:
        ``propensity_draws``). ``candidates`` is validated as in ``select``.
        """
        if draws < 0:
            raise ValueError(f"draws must be >= 1 (0: propensity_draws), got {draws}")
        if candidates is not None:
            cand = np.asarray(self.checked_candidates(candidates))
            if cand.shape[0] < self.n_arms:
                out = np.zeros(self.n_arms, dtype=np.float64)
                out[cand] = self.win_probabilities(cand, draws)
                return out
        if self.propensity_version < 0:
            self.refresh_propensities()
        return np.array(self._prop, copy=True)

    def win_probabilities(self, candidates=None, Py_ssize_t draws=0):
        """Monte Carlo estimate ``W_a / draws`` of P(arm a wins) for each candidate (in
        the order given; all K arms if None), unfloored. ``draws`` defaults to
        ``propensity_draws``. For tests and operators: O(draws · |C|)."""
        if draws == 0:
            draws = self.propensity_draws
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        if candidates is None:
            cand_arr = np.arange(self.n_arms, dtype=np.intp)
        else:
            cand_arr = np.asarray(self.checked_candidates(candidates))
        cdef const Py_ssize_t[::1] cand = cand_arr
        cdef Py_ssize_t i, m = cand.shape[0]
        a_arr = np.empty(m, dtype=np.float64)
        b_arr = np.empty(m, dtype=np.float64)
        wins_arr = np.zeros(m, dtype=np.int64)
        cdef double[::1] a = a_arr
        cdef double[::1] b = b_arr
        cdef int64_t[::1] wins = wins_arr
        cdef double[::1] x = np.empty(m, dtype=np.float64)
        for i in range(m):
            a[i] = _alpha(self.alpha0, self.reward_sum[cand[i]])
            b[i] = _beta(self.beta0, self.pulls[cand[i]], self.reward_sum[cand[i]])
        with nogil:
            _count_wins(self.bitgen, &a[0], &b[0], m, draws, &wins[0], &x[0])
        return wins_arr / float(draws)


def raw_beta_draws(Rng rng not None, const double[::1] a, const double[::1] b,
                   Py_ssize_t reps):
    """Benchmark floor: ``reps`` rounds of K = len(a) ``random_beta(a[i], b[i])`` draws
    in a tight C loop (no argmax, no Python per round). Returns the sum of the draws so
    the work cannot be optimised away; time it and divide by ``reps``."""
    if a.shape[0] != b.shape[0]:
        raise ValueError("a and b must have the same length")
    cdef Py_ssize_t r, i, k = a.shape[0]
    cdef double total = 0.0
    with nogil:
        for r in range(reps):
            for i in range(k):
                total += random_beta(rng.bitgen, a[i], b[i])
    return total

