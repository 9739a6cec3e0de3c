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
(f, F: Beta pdf and cdf), which has no closed form for K > 2. For the full set
(and a subset without a cache, below) it is estimated by Monte Carlo: draw M
independent posterior samples of every arm in C and set
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
- A candidate subset C ≠ all arms, with a subset cache (the server's case): see
  "Subset selection" below. The propensity is exact for the mechanism that chose.
- A candidate subset without one: ``select`` draws live over C, and estimates the
  propensity on the spot from M = ``propensity_draws`` fresh samples restricted to C
  (M·|C| Beta draws: 2-4 ms at |C| = 10), floored at ``1 / (M + 1)``, standard error
  ``sqrt(p (1 - p) / M)`` <= 0.0078 at M = 4096. These samples are independent of
  the one that chose the arm (reusing that one would bias p̂ upwards). This is the
  fallback: the first subset ``select`` asks for a cache, and the next
  ``refresh_propensities`` builds it (the server builds it before the first subset
  Select is answered: ``ExperimentRuntime.warm_subsets``); it remains the path when the
  memory budget refuses a cache (``subset_cache_refused``) or K > 32,767.
- A "subset" that contains every arm takes the cached full-set path.

Subset selection from cached joint samples. Let theta^(1), ..., theta^(M) be the M
joint posterior samples (theta_j^(r) ~ Beta(alpha_j, beta_j) independently) that
``refresh_propensities`` draws at version v, each kept as the ranks of its K draws
with exact ties put in a uniformly random order once (``_sample_ranks.pyx``), so
that every sample r orders the arms strictly. ``select(C)`` draws R uniformly from
{1, ..., M} and returns ``a* = argmax_{j in C} theta_j^(R)``. Given the cache,

    P(a* = a) = N_a(C) / M,   N_a(C) = #{r : a = argmax_{j in C} theta_j^(r)},

and that is the logged propensity, computed exactly by counting (never 0 for the
arm chosen: its own sample counts). Inverse-propensity weights built from it are
therefore the true inverse selection probabilities of the mechanism that chose the
arm, so IPS/DR estimates over these logs are unbiased for it (Horvitz & Thompson
1952; Li et al. 2011, who require the logging probabilities to be known). Its relation
to Thompson sampling on the current posterior: N_a(C) ~ Binomial(M, p_a(C)) over the
draw of the cache, so E[N_a / M] = p_a(C) and the gap has standard deviation
``sqrt(p_a (1 - p_a) / M)`` <= 0.0078 at M = 4096 (0.0016 at p = 0.01), plus the
staleness of the cache: it describes the posterior at ``subset_cache_version``, as
the full-set cache does (the server re-draws both every refresh interval, 0.25 s,
once rewards have moved ``version``). The two caches come from the same M samples
(the full-set W_a / M is N_a(all arms) / M); the full-set ``select`` still draws live.

What it changes for exploration: between two refreshes the subset choices come from
M fixed posterior samples instead of a new one each time. Each choice is still an
independent draw, from the cache's empirical posterior (1/M) Σ_r δ_{theta^(r)}
instead of the posterior itself: Thompson sampling on a snapshot, as in Thompson
sampling with delayed or batched updates (Chapelle & Li 2011 measure it robust to
feedback delayed in batches; Kalkanli & Özgür 2021 bound its regret) and the
structure of ensemble sampling, which keeps M models and acts on one drawn
uniformly per decision (Lu & Van Roy 2017). The cost of the snapshot is its
Monte Carlo error above, which persists until the next refresh instead of averaging
out over calls: an arm whose p_a(C) is far below 1/M may win no sample and then is
not offered for that C until the next refresh (its logged propensity is never
needed; an off-policy evaluation of another policy sees no support for it meanwhile).

Cost: one uniform index, then |C| + 1 streaming passes over M ranks of one byte (K
<= 256) or two (M·|C| comparisons; ~1 µs at |C| = 10, M = 4096, K = 20, where 2,048
fresh Beta draws per Select take ~110 µs; benchmarks/RESULTS.md). A refresh with a
subset cache adds M sorts of K ranks to its M·K draws (+20-50 %). Memory: M·K bytes
per cache up to K = 256, 2·M·K beyond (4 or 8 KiB per arm at M = 4096), made only for
kernels that are asked for subsets, within a process-wide budget
(``_sample_ranks.set_budget``, 256 MiB by default).

Why not something cheaper and exact: the Thompson probability itself,
``∫ f_a Π F_j``, needs |C| regularised incomplete-beta evaluations per quadrature
node (hundreds per Select at a few tens of nodes), more work than the counting above
and still numerical. An estimate p̂ from fresh draws (the path without a cache) is
exact for no mechanism: even unbiased, it makes IPS biased, since E[1/p̂] > 1/p
(Jensen), and noisy. The counting is exact for what was done, which is what IPS
needs.

``action_distribution(C)`` returns the distribution of the mechanism the next
``select(C)`` uses, over the K arms, unfloored (so it sums to 1): for the full set the
cached p̂ (what ``select`` reads, floor aside: its propensity is
``max(p̂_a, 1 / (M + 1))``), for a subset with a cache the exact N_a(C) / M
(``select`` logs exactly these numbers), for a subset without one a fresh
``win_probabilities(C, draws)``. It is never the full-set estimate renormalised over
C: an arm that rarely wins among all K can be the likely winner within C.

``action_distributions(offers)`` answers a whole array of candidate sets with the
same numbers, the subsets of them from the cache in one pass
(``SampleRanks.set_frequencies``).

References: Thompson (1933), Biometrika 25; Chapelle & Li (2011), "An Empirical
Evaluation of Thompson Sampling", NIPS; Horvitz & Thompson (1952), JASA 47; Li, Chu,
Langford & Wang (2011), "Unbiased Offline Evaluation of Contextual-bandit-based News
Article Recommendation Algorithms", WSDM; Lu & Van Roy (2017), "Ensemble Sampling",
NIPS; Kalkanli & Özgür (2021), "Batched Thompson Sampling", NeurIPS.
"""

from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint8_t

import threading

import numpy as np

from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_beta

from banditd.core_ext.policies._arms cimport PolicyBase, checked_offers
from banditd.core_ext.policies._rng cimport Rng, uniform_index
from banditd.core_ext.policies._sample_ranks cimport SampleRanks, fits, reserve


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
    two mechanisms (full set, subset), their propensities, errors and staleness.
    """

    def __init__(self, pulls, reward_sum, Rng rng not None, double alpha0=1.0,
                 double beta0=1.0, Py_ssize_t propensity_draws=4096):
        if not (alpha0 > 0.0 and isfinite(alpha0)):
            raise ValueError(f"alpha0 (prior successes) must be a finite number > 0, got {alpha0!r}")
        if not (beta0 > 0.0 and isfinite(beta0)):
            raise ValueError(f"beta0 (prior failures) must be a finite number > 0, got {beta0!r}")
        if propensity_draws < 1:
            raise ValueError(f"propensity_draws must be >= 1, got {propensity_draws}")
        PolicyBase.__init__(self, pulls, reward_sum, rng)
        self.alpha0 = alpha0
        self.beta0 = beta0
        self.propensity_draws = propensity_draws
        self.propensity_version = -1
        self.subset_cache_version = -1
        self.subset_cache_wanted = False
        self.subset_cache_refused = False
        self._prop = None       # set by the first estimate
        self._ranks = None      # set by the first refresh after a subset was asked for
        self._prop_rng = rng.spawn()
        self._refresh_lock = threading.Lock()
        self._a = self._b = None
        self._wins = None
        self._x = np.empty(self.n_arms, dtype=np.float64)
        self._best = None

    cdef void _ensure_scratch(self):
        """Allocate the estimator's scratch on first use: a server holds thousands of
        kernels (1,000 experiments x 1,000 arms: 24 MB) that may never estimate."""
        if self._a is None:
            self._a = np.empty(self.n_arms, dtype=np.float64)
            self._b = np.empty(self.n_arms, dtype=np.float64)
            self._wins = np.empty(self.n_arms, dtype=np.int64)

    def select(self, candidates=None):
        """``(arm, propensity)``: one live posterior draw per arm for the full set, one
        cached joint sample for a subset (module docstring)."""
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
        if cand.shape[0] == self.n_arms:    # distinct and in range, so every arm: the cache
            return self.select(None)
        cdef SampleRanks ranks = self._ranks    # a local reference: a swap cannot free it
        if ranks is not None:
            return self._select_from_ranks(ranks, cand)
        self.subset_cache_wanted = True         # the next refresh builds the cache
        return self._select_on_the_spot(cand)

    cdef object _select_from_ranks(self, SampleRanks ranks, const Py_ssize_t[::1] cand):
        """Sample R uniform in 0..M-1, answer C's top-ranked arm in it, and log the exact
        N_a(C) / M (module docstring)."""
        cdef Py_ssize_t m = cand.shape[0], rows = ranks.n_rows, j, wins, row
        if self._best is None:      # rows == M (adopt checks it); 2 bytes: either rank size
            self._best = np.empty(2 * rows, dtype=np.uint8)
        cdef void* best = &self._best[0]
        cdef const Py_ssize_t* c = &cand[0]
        row = uniform_index(self.bitgen, rows)
        if m < _NOGIL_MIN_ARMS:
            j = ranks.winner(row, c, m)
            wins = ranks.wins_of(j, c, m, best)
        else:
            with nogil:
                j = ranks.winner(row, c, m)
                wins = ranks.wins_of(j, c, m, best)
        return cand[j], wins / <double> rows

    cdef object _select_on_the_spot(self, const Py_ssize_t[::1] cand):
        """A live draw chooses; M fresh samples over C estimate the propensity (module
        docstring, "Without a subset cache")."""
        cdef Py_ssize_t m = cand.shape[0]
        cdef Py_ssize_t j, i, arm
        cdef Py_ssize_t draws = self.propensity_draws
        self._ensure_scratch()
        cdef double* a = &self._a[0]
        cdef double* b = &self._b[0]
        cdef int64_t* wins = &self._wins[0]
        cdef double* x = &self._x[0]
        cdef const double* n = &self.pulls[0]
        cdef const double* s = &self.reward_sum[0]
        with nogil:     # dominated by the M |C| draws below
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

    cdef bint _subset_due(self):
        """A subset cache was asked for and is missing or stale, and a refresh can act:
        build or replace it within the budget, or drop a stale one it cannot replace."""
        if not self.subset_cache_wanted:
            return False
        if self._ranks is not None:
            return self.subset_cache_version != self.version
        return fits(self.propensity_draws, self.n_arms, 0)

    @property
    def refresh_due(self):
        """Whether ``refresh_propensities`` would redo a cache that exists and is stale, or
        build a subset cache that was asked for: what a periodic refresher checks.
        (A full-set cache that was never built is not due here: building one is the
        job of whoever first needs it.)"""
        return (0 <= self.propensity_version != self.version) or self._subset_due()

    @property
    def subset_cache_bytes(self):
        """Bytes of this kernel's subset cache (0: none): M K up to K = 256, 2 M K beyond."""
        return 0 if self._ranks is None else self._ranks.nbytes

    def refresh_propensities(self, bint subsets=False, bint wait=False):
        """Bring the caches up to ``version``: the full-set win frequencies, and the
        subset cache if one was asked for (by a subset ``select``, or by ``subsets=True``
        here, which asks from now on).

        Both come from the same M joint samples: M·K Beta draws (plus M sorts of K
        ranks with a subset cache) with the GIL released and the kernel's own child
        generator, published by one reference swap each under the GIL, so ``select``
        may run meanwhile in another thread and sees the old cache or the new one,
        never a mixture. Call it off the request path. One refresh runs at a time:
        ``wait`` False returns False at once if another thread is refreshing, True
        waits for it (then does what is still due). Returns True if it recomputed,
        False if nothing was due (or another refresh was running). A subset cache the
        memory budget refuses is not built (``subset_cache_refused``); subset selects
        then estimate on the spot, and a stale one that cannot be replaced is dropped.
        """
        if subsets:
            self.subset_cache_wanted = True
        if not self._refresh_lock.acquire(wait):
            return False
        try:
            if self.propensity_version == self.version and not self._subset_due():
                return False
            self._refresh()
        finally:
            self._refresh_lock.release()
        return True

    def _refresh(self):
        cdef Py_ssize_t i, k = self.n_arms
        cdef int64_t version = self.version
        cdef SampleRanks ranks = None
        a_arr = np.empty(k, dtype=np.float64)
        b_arr = np.empty(k, dtype=np.float64)
        wins_arr = np.zeros(k, dtype=np.int64)
        cdef double[::1] a = a_arr
        cdef double[::1] b = b_arr
        cdef int64_t[::1] wins = wins_arr
        cdef double[::1] x
        if self.subset_cache_wanted and (self._ranks is None
                                         or self.subset_cache_version != version):
            ranks = reserve(self.propensity_draws, k, self.subset_cache_bytes)
            self.subset_cache_refused = ranks is None
            if ranks is None and self._ranks is not None:  # stale and irreplaceable
                self._ranks = None
                self.subset_cache_version = -1
        for i in range(k):     # copy under the GIL: the draws below must not see updates
            a[i] = _alpha(self.alpha0, self.reward_sum[i])
            b[i] = _beta(self.beta0, self.pulls[i], self.reward_sum[i])
        if ranks is not None:
            ranks.fill(self._prop_rng, a, b, wins)
        else:
            x = np.empty(k, dtype=np.float64)
            with nogil:
                _count_wins(self._prop_rng.bitgen, &a[0], &b[0], k, self.propensity_draws,
                            &wins[0], &x[0])
        self._prop = wins_arr / float(self.propensity_draws)
        self.propensity_version = version
        if ranks is not None:
            self._ranks = ranks
            self.subset_cache_version = version

    def adopt_propensities(self, ThompsonPolicy other not None):
        """Take over ``other``'s caches, for a kernel that replaces ``other`` over a copy
        of its current statistics (a reloaded experiment: the caller copies them first).

        The caches are a function of the statistics, the prior and M only, so they
        carry over when K, ``alpha0``, ``beta0`` and ``propensity_draws`` are equal and
        ``other`` has a full-set cache; otherwise nothing changes. With it go
        ``other``'s subset cache, if any, and its wish for one. Caches that were current
        for ``other`` are current here; if either was stale, ``version`` moves past
        both, so the refresher re-estimates them as it would have ``other``'s. The
        caches are shared, not copied: a refresh replaces a cache, it never writes into
        one. Returns True if the caches were adopted.
        """
        if (self.propensity_version >= 0 or other.propensity_version < 0
                or other.n_arms != self.n_arms or other.alpha0 != self.alpha0
                or other.beta0 != self.beta0
                or other.propensity_draws != self.propensity_draws):
            return False
        current = other.propensity_version == other.version and (
            other._ranks is None or other.subset_cache_version == other.version)
        self._prop = other._prop
        self._ranks = other._ranks
        self.subset_cache_wanted = self.subset_cache_wanted or other.subset_cache_wanted
        self.propensity_version = self.version
        self.subset_cache_version = -1 if self._ranks is None else self.version
        if not current:
            self.version += 1
        return True

    def cached_propensities(self):
        """The cached full-set win probabilities as ``select`` reports them (floored at
        1/(M+1)), as of ``propensity_version``."""
        if self.propensity_version < 0:
            self.refresh_propensities()
        return np.maximum(self._prop, 1.0 / (self.propensity_draws + 1.0))

    def action_distribution(self, candidates=None, Py_ssize_t draws=0):
        """P(the next ``select(candidates)`` returns arm a), float64 of length K: 0
        outside C, summing to 1, unfloored. Reads the caches; changes nothing.

        - ``candidates`` None (or every arm): the cached estimate ``select`` reads,
          W_a / M with M = ``propensity_draws``, of the Thompson probability P(theta_a
          = max_j theta_j), theta_j ~ Beta(alpha_j, beta_j) independently (Thompson
          1933; Chapelle & Li 2011): unbiased, standard error ``sqrt(P (1 - P) / M)``,
          as of ``propensity_version`` (computed if never built;
          ``refresh_propensities()`` brings a stale one up to date). ``draws`` is not
          used.
        - a proper subset C with a subset cache: N_a(C) / M, the exact distribution of
          the cached-sample mechanism that ``select(C)`` uses, the very numbers it
          logs as propensities (module docstring), as of ``subset_cache_version``.
          ``draws`` is not used.
        - a proper subset without one: ``select(C)`` then draws live, so this is a
          fresh Monte Carlo estimate of P(theta_a = max_{j in C} theta_j) from D =
          ``draws`` (0: ``propensity_draws``) joint samples of the arms in C, standard
          error ``sqrt(P (1 - P) / D)``.

        ``candidates`` is validated as in ``select``.
        """
        if draws < 0:
            raise ValueError(f"draws must be >= 1 (0: propensity_draws), got {draws}")
        if candidates is not None:
            cand = np.asarray(self.checked_candidates(candidates))
            if cand.shape[0] < self.n_arms:
                out = np.zeros(self.n_arms, dtype=np.float64)
                if self._ranks is not None:
                    out[cand] = _rank_frequencies(self._ranks, cand)
                else:
                    out[cand] = self.win_probabilities(cand, draws)
                return out
        if self.propensity_version < 0:
            self.refresh_propensities()
        return np.array(self._prop, copy=True)

    def action_distributions(self, offers, Py_ssize_t draws=0):
        """``action_distribution`` of many candidate sets at once: row s of the float64
        (S, K) result is that of the arms row s of ``offers`` (bool (S, K)) marks. With
        a subset cache the proper subsets are answered together from it
        (``SampleRanks.set_frequencies``: the same N_a(C) / M, far cheaper per set than
        one call each), without one each draws ``draws`` fresh samples, as
        ``action_distribution`` does."""
        marks = checked_offers(offers, self.n_arms)
        out = np.zeros(marks.shape, dtype=np.float64)
        full = marks.all(axis=1)
        if full.any():
            out[full] = self.action_distribution(None)
        subset = np.flatnonzero(~full)
        cdef SampleRanks ranks = self._ranks
        if subset.size and ranks is not None:
            out[subset] = ranks.set_frequencies(marks[subset])
        elif subset.size:
            for s in subset.tolist():
                out[s] = self.action_distribution(np.flatnonzero(marks[s]), draws)
        return out

    def win_probabilities(self, candidates=None, Py_ssize_t draws=0):
        """Monte Carlo estimate ``W_a / draws`` of P(arm a wins) for each candidate (in
        the order given; all K arms if None), unfloored, from fresh joint samples of
        the current statistics (never the caches). ``draws`` defaults to
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


cdef object _rank_frequencies(SampleRanks ranks, const Py_ssize_t[::1] cand):
    """N_i / M for each cand[i]: the share of the M cached samples whose top-ranked
    candidate is cand[i] (scratch allocated here: not a select-thread path)."""
    cdef Py_ssize_t m = cand.shape[0], rows = ranks.n_rows
    cdef uint8_t[::1] best = np.empty(2 * rows, dtype=np.uint8)
    cdef int32_t[::1] who = np.empty(rows, dtype=np.int32)
    counts_arr = np.empty(m, dtype=np.int64)
    cdef int64_t[::1] counts = counts_arr
    with nogil:
        ranks.count_winners(&cand[0], m, &best[0], &who[0], &counts[0])
    return counts_arr / float(rows)


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

