"""Off-policy evaluation of candidate policies on an experiment's logged decisions.

Input: every decision of the experiment (``decisions``) with its reward
(``rewards``; a decision whose reward window is still open has none and is left
out), the logged arm, the propensity the server recorded for it and the candidate
set the request offered (``decisions.candidates``, migration 0004). Rewards are
normalised to [0, 1] by the experiment's ``[reward_min, reward_max]`` for the
estimators, and reported back in the experiment's units.

Candidate sets. ``Select`` accepts ``candidate_arms``, a per-request subset ``C_i``
of the K arms, and the logged propensity is the probability of the chosen arm *among
C_i*. The value being estimated is the candidate policy's value *on the same
requests*, i.e. choosing among ``C_i`` too, so every target distribution ``pi_i`` is
restricted to ``C_i`` (zero outside it). Treating targets as distributions over all
K arms instead puts mass on arms the request never offered, whose weight the log
cannot support: IPS is then scaled by about ``|C|/K`` (SNIPS hides it by
renormalising). ``candidates`` NULL means the request offered every arm; decisions
logged before migration 0004 have NULL too and are therefore treated as full-arm
requests (for those served by control a subset shows in the propensity, and a
warning says so). Candidate names that are not arms of the experiment are dropped;
a logged arm missing from its own set is added (both with a warning).

Candidates and their target distribution ``pi_i`` over ``C_i`` (all K arms when
NULL). The server's policies are not contextual, so each candidate is evaluated as
the *fixed policy it would be after learning from the log*, asked to choose from
``C_i``:

- a kernel policy (``thompson``, ``ucb``, ``egreedy``, ``control``): the
  ``core_ext`` kernel, with the experiment's parameters for that policy, is given
  the per-arm statistics (pulls, reward sums) of the logged events, and ``pi_i`` is
  the kernel's own ``action_distribution(C_i)``: the probability that its next
  ``select(C_i)`` picks each arm (once per distinct set and fold, many sets per call:
  ``action_distributions``). Nothing is selected or learned while reading it.

  * ``ucb`` / ``egreedy`` / ``control``: exact, from the kernel's own rule. Their
    subset rule is not a renormalisation of the full-set one (UCB's bonus uses
    ``N = sum_{a in C} n_a`` and plays untried offered arms first; ε-greedy explores
    uniformly over ``C`` and exploits the best arm *within* ``C``; control plays its
    default arm if offered, else uniform over ``C``), which is why it is read from
    the kernel rather than rebuilt here;
  * ``thompson``: ``P(theta_a = max_{j in C_i} theta_j)`` estimated by win
    frequencies of ``M`` = ``propensity_draws`` (4096) joint posterior samples
    (unbiased, unfloored, standard error ``sqrt(p (1 - p) / M)``), drawn once per
    fold: the kernel's cached full-set estimate, and for a subset ``N_a(C_i) / M``
    counted in the kernel's subset cache, i.e. the exact distribution of the
    mechanism the server's ``select(C)`` uses (``core_ext/policies/_thompson.pyx``).
    Every set of a fold is answered at once from the prefix tree of the M samples'
    orders (``SampleRanks.set_frequencies``): no posterior draw, and about K steps
    per set once the posteriors have separated (the server's memory budget for such
    caches refusing one, ``EvaluateConfig.draws`` fresh samples per set are the
    fallback). Renormalising the full-set probabilities over ``C_i`` would be wrong
    (an arm rarely the global winner can be the likely winner within ``C_i``), so it
    is not done;

- ``greedy``: all mass on the arm(s) of ``C_i`` with the highest mean logged reward
  (ties share; arms never logged count at the overall mean);
- ``uniform``: ``1/|C_i|`` on every arm of ``C_i`` (exact).

The reward model of DM/DR stays the per-arm mean reward (not contextual); DM for
event ``i`` is ``sum_{a in C_i} pi_i(a) q(a)``. The reported
``action_distribution`` of a candidate is the mean of ``pi_i`` over the events.

2-fold cross-fitting: each event falls in one of two folds by a fair coin drawn from
the seed and its position in read order (:func:`fold_of`); events of one fold are
scored with the distribution learned on the other, so no candidate is
scored on the events it learned from (which would flatter greedy choices). The
estimates are then those of :mod:`banditd.admin_cli.offline.estimators` (IPS, SNIPS, DM,
DR) with delta-method intervals, the effective sample size and warnings.

Bounded memory and time. A target distribution depends on the event only through
its fold and candidate set, so events are pooled into cells (fold, set, arm) with
the nine power sums the estimators need (``CellMoments``): per candidate the cost is
one distribution per distinct (fold, set), computed a block of sets at a time by the
kernel's ``action_distributions`` and folded into what the estimators read of it
(``TargetAccumulator``), and O(cells) arithmetic: never an (n, K) matrix, nor one of
every set. The pooling happens as the log is read, a UTC day at a time (``COPY`` CSV
from the database, record batches from an export), with the candidate lists
interned: what is kept is the cells, the per-fold per-arm statistics the candidates
learn from, per-policy totals and the counts behind the warnings
(:class:`LoggedExperiment`), never a per-event column. Both sources give the rows in
``(decided_at, decision_id)`` order and the folds and sums depend only on that order,
so every estimate is the same from either.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from banditd.admin_cli.export import (
    BATCH_ROWS,
    FILE_NAME,
    METADATA_KEY,
    NAME_SEPARATOR,
    SCHEMA,
    ExportedExperiment,
    day_bounds,
    day_query,
    exported_experiment,
)
from banditd.admin_cli.offline.estimators import (
    CellMoments,
    Estimate,
    EstimationConfig,
    TargetAccumulator,
    estimate_cells,
    propensity_notes,
    usable_propensities,
)
from banditd.admin_cli.offline.replay import KernelFactory, core_ext_factory

FIXED_CANDIDATES = ("uniform", "greedy")


FULL_SET = -1  # candidate-set index of a request that offered every arm


@dataclass(frozen=True)
class EvaluateConfig:
    """Candidate construction and estimation settings."""

    draws: int = 4000  # Thompson posterior samples per candidate subset's win probabilities
    seed: int = 0  # fold split and kernel randomness
    estimation: EstimationConfig = field(default_factory=EstimationConfig)

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014) of a uint64 array: a
    bijection whose output bits look independent even for consecutive inputs."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def fold_of(seed: int, positions: np.ndarray) -> np.ndarray:
    """The cross-fitting fold, 0 or 1 (int64), of the events at ``positions`` (their
    rank in read order): the top bit of SplitMix64 of ``position * golden + mix(seed)``.
    Each event's fold is a fair coin, independent across events, that depends only on
    the seed and the position, so however the rows arrive batched."""
    key = _mix64(np.array([seed % (1 << 64)], dtype=np.uint64))
    mixed = _mix64(positions.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key)
    return (mixed >> np.uint64(63)).astype(np.int64)


_BLOCK = 1 << 18  # events pooled at a time (bounds the per-event temporaries)


class _LogPool:
    """Pools events, in read order, into the state of a :class:`LoggedExperiment`.

    Rows are buffered and pooled ``_BLOCK`` at a time, blocks aligned on read
    positions, so every floating-point sum is the same however the rows arrive
    batched (the database and an export batch differently). Per event the pool keeps
    nothing once its block is pooled."""

    def __init__(self, n_arms: int, reward_min: float, reward_max: float,
                 config: EvaluateConfig) -> None:
        self.k = n_arms
        self.reward_min, self.span = reward_min, reward_max - reward_min
        self.config = config
        self.policies: dict[str, int] = {}
        self._buffer: list[tuple[np.ndarray, ...]] = []
        self._buffered = 0
        self._read = 0
        self._parts: list[tuple[int, CellMoments]] = []  # (blocks pooled, their cells)
        self._group_sizes = np.zeros(0, np.int64)
        self._pulls = np.zeros(2 * n_arms)
        self._reward_sums = np.zeros(2 * n_arms)
        self._policy_n = np.zeros(0, np.int64)
        self._policy_sum = np.zeros(0)
        self.n_unusable = 0
        self.n_tiny = 0
        self.min_tiny = math.inf
        self._odd = (np.zeros(0), np.zeros(0, np.int64))  # distinct values, their counts

    def add(self, arms: np.ndarray, values: np.ndarray, propensities: np.ndarray,
            policy: np.ndarray, candidate_set: np.ndarray) -> None:
        """Events in read order: arm index, reward in units, propensity (NaN when
        missing), policy code (``policies``) and candidate-set index or ``FULL_SET``."""
        columns = (arms.astype(np.int64), values.astype(np.float64),
                   propensities.astype(np.float64), policy.astype(np.int64),
                   candidate_set.astype(np.int64))
        self._buffer.append(columns)
        self._buffered += arms.shape[0]
        if self._buffered >= _BLOCK:
            block = [np.concatenate(c) for c in zip(*self._buffer, strict=True)]
            whole = self._buffered - self._buffered % _BLOCK
            for start in range(0, whole, _BLOCK):
                self._pool(*(c[start:start + _BLOCK] for c in block))
            rest = tuple(c[whole:].copy() for c in block)  # a view would pin the block
            self._buffered = rest[0].shape[0]
            self._buffer = [rest] if self._buffered else []

    def _pool(self, arms, values, propensities, policy, candidate_set) -> None:
        m, k = arms.shape[0], self.k
        fold = fold_of(self.config.seed, np.arange(self._read, self._read + m))
        self._read += m
        slot = candidate_set + 1  # 0: every arm offered
        group = slot * 2 + fold
        sizes = np.bincount(group)
        if sizes.size > self._group_sizes.size:
            self._group_sizes = np.pad(self._group_sizes, (0, sizes.size - self._group_sizes.size))
        self._group_sizes[:sizes.size] += sizes
        rewards = np.clip((values - self.reward_min) / self.span, 0.0, 1.0)
        self._pulls += np.bincount(fold * k + arms, minlength=2 * k)
        self._reward_sums += np.bincount(fold * k + arms, weights=rewards, minlength=2 * k)
        n_policies = len(self.policies)
        self._policy_n = np.pad(self._policy_n, (0, n_policies - self._policy_n.size))
        self._policy_sum = np.pad(self._policy_sum, (0, n_policies - self._policy_sum.size))
        self._policy_n += np.bincount(policy, minlength=n_policies)
        self._policy_sum += np.bincount(policy, weights=values, minlength=n_policies)

        usable = usable_propensities(propensities)
        self.n_unusable += int(m - usable.sum())
        tiny = usable & (propensities < self.config.estimation.min_propensity)
        if tiny.any():
            self.n_tiny += int(tiny.sum())
            self.min_tiny = min(self.min_tiny, float(propensities[tiny].min()))
        self._parts.append((1, CellMoments.from_events(
            group[usable], arms[usable], rewards[usable], propensities[usable], 0, k)))
        # a binary counter of parts: two parts of as many blocks are summed into one, so
        # a merge never holds more than about twice the cells so far, and each block's
        # cells take part in log2(blocks) merges
        while len(self._parts) > 1 and self._parts[-2][0] <= self._parts[-1][0]:
            (a, first), (b, second) = self._parts[-2:]
            self._parts[-2:] = [(a + b, CellMoments.pooled([first, second], 0, k))]

        control = self.policies.get("control", -1)
        p = propensities
        odd = (slot == 0) & (policy == control) & np.isfinite(p)
        odd &= ~np.isclose(p, 1.0 / k, rtol=1e-6) & ~np.isclose(p, 1.0, rtol=1e-6)
        if odd.any():
            values_seen, counts = self._odd
            distinct, inverse = np.unique(np.concatenate([values_seen, p[odd]]),
                                          return_inverse=True)
            weights = np.concatenate([counts, np.ones(int(odd.sum()), np.int64)])
            self._odd = (distinct, np.bincount(inverse.ravel(), weights=weights).astype(np.int64))

    def _drain_parts(self) -> list[CellMoments]:
        parts = [part for _, part in self._parts]
        self._parts = []
        return parts

    def finish(self, n_sets: int) -> dict[str, Any]:
        """The pooled state as :class:`LoggedExperiment` fields, ``n_sets`` candidate
        subsets (groups ``2 (n_sets + 1)``)."""
        if self._buffered:
            self._pool(*(np.concatenate(c) for c in zip(*self._buffer, strict=True)))
            self._buffer, self._buffered = [], 0
        n_groups = 2 * (n_sets + 1)
        k = self.k
        names = list(self.policies)
        values, counts = self._odd
        order = np.cumsum(counts)
        total = int(order[-1]) if order.size else 0
        # the median of the odd propensities from their distinct values and counts
        middle = (values[np.searchsorted(order, (total - 1) // 2, side="right")]
                  + values[np.searchsorted(order, total // 2, side="right")]) / 2 \
            if total else math.nan
        return dict(
            config=self.config,
            cells=CellMoments.drain(self._drain_parts(), n_groups, k),
            group_sizes=np.pad(self._group_sizes, (0, n_groups - self._group_sizes.size)),
            pulls=self._pulls.reshape(2, k),
            reward_sums=self._reward_sums.reshape(2, k),
            logged_totals={names[i]: (int(self._policy_n[i]), float(self._policy_sum[i]))
                           for i in np.flatnonzero(self._policy_n).tolist()},
            n_unusable_propensity=self.n_unusable,
            n_tiny_propensity=self.n_tiny,
            min_tiny_propensity=self.min_tiny,
            n_unrecorded_subset=total,
            unrecorded_subset_median=float(middle),
        )


@dataclass(frozen=True)
class LoggedExperiment:
    """An experiment's rewarded logged decisions, pooled as the estimators read them.

    Each decision has a cross-fitting fold (:func:`fold_of` of its position in read
    order, with ``config.seed``) and a candidate slot: 0 when the request offered every
    arm (candidates NULL, or listing every arm), ``j + 1`` when it offered
    the arms of row ``j`` of ``candidate_masks`` (a proper subset of the arms). Its group
    is ``slot * 2 + fold``. Kept: the cells (group, arm) of the decisions with a usable
    propensity, the decisions per group, per fold and arm the pulls and normalised
    reward sums, per served policy its decisions and reward sum, and the counts behind
    the warnings: O(groups + cells), whatever the number of decisions.
    """

    experiment_id: str
    arms: tuple[str, ...]
    policies: tuple[str, ...]
    policy_params: Mapping[str, Mapping[str, Any]]
    reward_min: float
    reward_max: float
    config: EvaluateConfig  # its seed drew the folds, its min_propensity the tiny count
    cells: CellMoments  # decisions with a usable propensity, by (group, arm)
    group_sizes: np.ndarray  # int64 (2 (sets + 1),): every decision
    pulls: np.ndarray  # float64 (2, K): decisions of each fold per arm
    reward_sums: np.ndarray  # float64 (2, K): their normalised rewards summed
    logged_totals: Mapping[str, tuple[int, float]]  # served policy -> (decisions, reward sum)
    candidate_masks: np.ndarray  # bool (sets, K): the arms each candidate subset offers
    n_pending: int = 0  # decisions without a reward yet (left out)
    n_unknown_arm: int = 0  # decisions whose arm is not an arm of the experiment (left out)
    n_unknown_candidate: int = 0  # decisions whose candidates named non-arms (names dropped)
    n_arm_not_candidate: int = 0  # decisions whose arm was missing from its candidates (added)
    n_unusable_propensity: int = 0  # missing, <= 0 or > 1
    n_tiny_propensity: int = 0  # usable but below config's min_propensity
    min_tiny_propensity: float = math.inf
    # control decisions offering every arm whose propensity only a subset gives
    n_unrecorded_subset: int = 0
    unrecorded_subset_median: float = math.nan

    @classmethod
    def from_events(
        cls, *, experiment_id: str, arms: Sequence[str], policies: Sequence[str],
        policy_params: Mapping[str, Mapping[str, Any]], reward_min: float, reward_max: float,
        actions: np.ndarray, values: np.ndarray, propensities: np.ndarray,
        logged_policy: np.ndarray, candidate_sets: Sequence[Sequence[int]] = (),
        candidate_set: np.ndarray | None = None, config: EvaluateConfig | None = None,
        **counts: int,
    ) -> LoggedExperiment:
        """Pool per-decision arrays ``(n,)`` given in read order: arm index, reward in
        units, propensity (NaN where missing), serving policy's name and index in
        ``candidate_sets`` or ``FULL_SET`` (``candidate_set`` None: every arm).
        ``counts``: the ``n_*`` counts of decisions left out or cleaned."""
        n = np.shape(actions)[0]
        if candidate_set is None:
            candidate_set = np.full(n, FULL_SET, dtype=np.int64)
        if np.shape(candidate_set) != (n,):
            raise ValueError("candidate_set must have one entry per decision")
        if n and (candidate_set.min() < FULL_SET or candidate_set.max() >= len(candidate_sets)):
            raise ValueError("candidate_set entries must index candidate_sets or be -1")
        pool = _LogPool(len(arms), reward_min, reward_max, config or EvaluateConfig())
        masks = np.zeros((len(candidate_sets), len(arms)), dtype=bool)
        for j, offered in enumerate(candidate_sets):
            masks[j, list(offered)] = True
        names, codes = np.unique(np.asarray(logged_policy, dtype=str), return_inverse=True)
        pool.policies.update((str(p), i) for i, p in enumerate(names))
        pool.add(np.asarray(actions), np.asarray(values), np.asarray(propensities),
                 codes.ravel(), np.asarray(candidate_set))
        return cls(
            experiment_id=experiment_id, arms=tuple(arms), policies=tuple(policies),
            policy_params=policy_params, reward_min=reward_min, reward_max=reward_max,
            candidate_masks=masks,
            **pool.finish(len(candidate_sets)), **counts,
        )

    @property
    def n_decisions(self) -> int:
        return int(self.group_sizes.sum())

    @property
    def candidate_sets(self) -> tuple[tuple[int, ...], ...]:
        """The candidate subsets as sorted arm indices, in set-index order."""
        return tuple(tuple(np.flatnonzero(row).tolist()) for row in self.candidate_masks)

    def slot_offers(self) -> np.ndarray:
        """The arms each candidate slot offers, bool ``(sets + 1, K)``, slot 0 every arm."""
        return np.vstack([np.ones((1, len(self.arms)), dtype=bool), self.candidate_masks])

    def slot_sizes(self) -> np.ndarray:
        """Decisions per candidate slot (0: every arm, ``j + 1``: candidate subset j),
        int64 ``(sets + 1,)``."""
        return self.group_sizes[0::2] + self.group_sizes[1::2]

    def set_sizes(self) -> np.ndarray:
        """``|C|`` per candidate slot (K for slot 0), int64 ``(sets + 1,)``."""
        return np.concatenate([[len(self.arms)], self.candidate_masks.sum(axis=1)]).astype(np.int64)


class _CandidateSets:
    """Interns the candidate sets of the rows being read (see :class:`LoggedExperiment`).

    A batch's candidate lists become bitmasks over the arms in numpy, every row at once
    (a set is a row of ``words`` uint64, arm a at bit ``a % 64`` of word ``a // 64``);
    its distinct masks are looked up among the sets so far, kept as one sorted array,
    and the new ones numbered in order. Interning a row at a time in Python cost more
    than the rest of the evaluation on a log whose subsets are mostly distinct, and a
    dict of them held a hundred bytes per set; here a set costs its mask and its id."""

    def __init__(self, index: Mapping[str, int]) -> None:
        self.index = index
        self.k = len(index)
        self.words = (self.k + 63) // 64
        self._kind = f"V{8 * self.words}"  # a mask as one comparable value
        self._sorted = np.zeros(0, dtype=self._kind)  # the masks so far, sorted
        self._sorted_ids = np.zeros(0, dtype=np.int64)
        self._new: list[np.ndarray] = []  # the masks in id order, a batch's new ones each
        self.n_sets = 0
        self.n_unknown = 0
        self.n_arm_missing = 0
        full = np.zeros(self.words * 64, dtype=bool)
        full[:self.k] = True
        self._full = np.packbits(full, bitorder="little").view(np.uint64)

    def add(self, candidates: pa.Array, arms: np.ndarray) -> np.ndarray:
        """The set index (int64, ``FULL_SET`` for every arm) of each row choosing
        ``arms[i]`` among ``candidates[i]`` (a list of names, or the names joined by
        ``NAME_SEPARATOR``; null: every arm). Names that are not arms are dropped, and
        a chosen arm missing from its list is added (both counted)."""
        if not pa.types.is_list(candidates.type) and not pa.types.is_large_list(candidates.type):
            candidates = pc.split_pattern(candidates, NAME_SEPARATOR)
        rows = arms.shape[0]
        out = np.full(rows, FULL_SET, dtype=np.int64)
        listed = candidates.is_valid().to_numpy(zero_copy_only=False)
        if not listed.any():
            return out
        names = pc.list_flatten(candidates)
        owner = pc.list_parent_indices(candidates).to_numpy(zero_copy_only=False)
        arm_of = _codes(names, lambda a: self.index.get(a, -1) if a else -2)  # "": none
        named = arm_of != -2
        owner, arm_of = owner[named], arm_of[named]
        known = arm_of >= 0
        self.n_unknown += int(np.unique(owner[~known]).size)
        masks = np.zeros((rows, self.words), dtype=np.uint64)
        np.bitwise_or.at(masks, (owner[known], arm_of[known] >> 6),
                         np.left_shift(np.uint64(1), (arm_of[known] & 63).astype(np.uint64)))
        word, bit = arms >> 6, np.left_shift(np.uint64(1), (arms & 63).astype(np.uint64))
        at = np.arange(rows)
        self.n_arm_missing += int((listed & ((masks[at, word] & bit) == 0)).sum())
        masks[at, word] |= bit
        subset = np.flatnonzero(listed & ~(masks == self._full).all(axis=1))
        if subset.size:
            distinct, inverse = np.unique(
                np.ascontiguousarray(masks[subset]).view(self._kind).ravel(),
                return_inverse=True)
            out[subset] = self._ids(distinct)[inverse.ravel()]
        return out

    def _ids(self, distinct: np.ndarray) -> np.ndarray:
        """The ids of sorted distinct masks, numbering the unseen ones from ``n_sets``."""
        where = np.searchsorted(self._sorted, distinct)
        seen = where < self._sorted.size
        seen[seen] = self._sorted[where[seen]] == distinct[seen]
        ids = np.empty(distinct.size, dtype=np.int64)
        ids[seen] = self._sorted_ids[where[seen]]
        fresh = distinct[~seen]
        ids[~seen] = np.arange(self.n_sets, self.n_sets + fresh.size)
        if fresh.size:
            self._new.append(fresh)
            merged = np.concatenate([self._sorted, fresh])
            order = np.argsort(merged, kind="stable")
            self._sorted = merged[order]
            self._sorted_ids = np.concatenate([self._sorted_ids, ids[~seen]])[order]
            self.n_sets += fresh.size
        return ids

    def masks(self) -> np.ndarray:
        """The sets in index order as a bool matrix ``(sets, K)``."""
        packed = np.concatenate(self._new) if self._new else np.zeros(0, self._kind)
        bits = np.unpackbits(packed.view(np.uint8), bitorder="little")
        return bits.reshape(self.n_sets, 64 * self.words)[:, :self.k].astype(bool)


LOG_SCHEMA = pa.schema([SCHEMA.field(name)
                        for name in ("policy", "arm", "propensity", "candidates", "reward")])


def _codes(column: pa.Array, lookup: Callable[[str], int]) -> np.ndarray:
    """``lookup`` of every value of a string column, looked up once per distinct value."""
    encoded = column.dictionary_encode()
    table = np.array([lookup(v) for v in encoded.dictionary.to_pylist()], dtype=np.int64)
    return table[encoded.indices.to_numpy(zero_copy_only=False)] if table.size else table


class LogReader:
    """Builds a :class:`LoggedExperiment` from record batches of the export's columns
    (``LOG_SCHEMA``; ``candidates`` may come joined by ``NAME_SEPARATOR``, null for
    every arm), a batch at a time: each batch's rows are coded (arm, policy, interned
    candidate set) and handed to a :class:`_LogPool`, which keeps no row once pooled."""

    def __init__(self, experiment: ExportedExperiment, config: EvaluateConfig | None = None
                 ) -> None:
        self.experiment = experiment
        self.index = {arm: i for i, arm in enumerate(experiment.arms)}
        self._sets = _CandidateSets(self.index)
        self._pool = _LogPool(len(self.index), experiment.reward_min, experiment.reward_max,
                              config or EvaluateConfig())
        self.n_pending = 0
        self.n_unknown_arm = 0

    def add(self, batch: pa.RecordBatch) -> None:
        rewarded = batch.column("reward").is_valid().to_numpy(zero_copy_only=False)
        arms = _codes(batch.column("arm"), lambda a: self.index.get(a, -1))
        self.n_pending += int(batch.num_rows - rewarded.sum())
        self.n_unknown_arm += int((rewarded & (arms < 0)).sum())
        keep = np.flatnonzero(rewarded & (arms >= 0))
        if keep.size == 0:
            return
        batch = batch.take(pa.array(keep))
        arms = arms[keep]
        policies = self._pool.policies
        policy = _codes(batch.column("policy"), lambda p: policies.setdefault(p, len(policies)))
        candidate_set = self._sets.add(batch.column("candidates"), arms)
        self._pool.add(
            arms,
            batch.column("reward").to_numpy(zero_copy_only=False),
            batch.column("propensity").to_numpy(zero_copy_only=False),
            policy,
            candidate_set,
        )

    def finish(self) -> LoggedExperiment:
        spec = self.experiment
        return LoggedExperiment(
            experiment_id=spec.id,
            arms=tuple(spec.arms),
            policies=tuple(spec.policies),
            policy_params={k: dict(v) for k, v in spec.policy_params.items()},
            reward_min=spec.reward_min,
            reward_max=spec.reward_max,
            n_pending=self.n_pending,
            n_unknown_arm=self.n_unknown_arm,
            candidate_masks=self._sets.masks(),
            n_unknown_candidate=self._sets.n_unknown,
            n_arm_not_candidate=self._sets.n_arm_missing,
            **self._pool.finish(self._sets.n_sets),
        )


RowProgress = Callable[[int], None]  # called with the rows of each batch read


_CSV_PIECE = 8 << 20  # bytes of COPY output parsed at a time (about 2.5 10^5 rows)
_CSV_COLUMNS = ("policy", "arm", "propensity", "candidates_joined", "reward")


class _CsvFeed:
    """Parses the CSV that ``COPY ... TO STDOUT`` streams, ``_CSV_PIECE`` bytes of whole
    lines at a time, into batches for a :class:`LogReader` (values never contain a
    newline: policy and arm names are printable, the others are numbers).

    A piece is parsed and pooled in a worker thread while the next one arrives, one
    piece at a time and in order: PostgreSQL writing the CSV and the pooling then share
    the two sides of the socket instead of taking turns (pyarrow and numpy release the
    GIL for most of the pooling)."""

    def __init__(self, reader: LogReader, on_rows: RowProgress | None) -> None:
        import pyarrow.csv as pacsv

        self._reader = reader
        self._on_rows = on_rows
        self._pending = bytearray()
        self._read = pacsv.ReadOptions(column_names=list(LOG_SCHEMA.names))
        # PostgreSQL's CSV writes NULL unquoted and an empty string as ""
        self._convert = pacsv.ConvertOptions(
            column_types={**{f.name: f.type for f in LOG_SCHEMA}, "candidates": pa.string()},
            strings_can_be_null=True, quoted_strings_can_be_null=False,
        )
        self._parse = pacsv.read_csv
        self._feeding: asyncio.Future | None = None

    async def write(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) >= _CSV_PIECE:
            cut = self._pending.rfind(b"\n") + 1
            await self._hand_over(bytes(self._pending[:cut]))
            del self._pending[:cut]

    async def close(self) -> None:
        """Pool what is left, and wait for every piece to be pooled."""
        if self._pending:
            await self._hand_over(bytes(self._pending))
            self._pending.clear()
        if self._feeding is not None:
            await self._feeding
            self._feeding = None

    async def _hand_over(self, piece: bytes) -> None:
        if self._feeding is not None:
            await self._feeding  # in order, one at a time; re-raises its failure
        self._feeding = asyncio.ensure_future(asyncio.to_thread(self._feed, piece))

    def _feed(self, piece: bytes) -> None:
        table = self._parse(pa.BufferReader(piece), read_options=self._read,
                            convert_options=self._convert)
        # one batch per piece: the candidate lists are interned once per batch
        for batch in table.combine_chunks().to_batches():
            self._reader.add(batch)
        if self._on_rows is not None:
            self._on_rows(table.num_rows)


_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's mallopt parameters (malloc.h)


def return_freed_arrays() -> None:
    """Make this process's glibc malloc give every block of 1 MiB or more back to the
    system when it is freed, and keep at most two arenas (the reading thread's and the
    main one's); elsewhere (not glibc) nothing changes.

    Why: reading a large log allocates and frees thousands of array temporaries of
    1-30 MB. By default glibc raises its mmap threshold to the largest block freed
    (up to 32 MiB) and then serves such blocks from heaps it keeps, one per thread,
    so freed temporaries stay resident: on a log of 10^7 decisions the peak RSS was
    1.0-1.15 GB with the defaults against 0.85 GB with these settings, for about
    10 s more page faults in a 45 s run (benchmarks/RESULTS.md)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    mallopt(_M_ARENA_MAX, 2)


async def fetch_logged_experiment(
    conn: asyncpg.Connection, experiment_id: str, on_rows: RowProgress | None = None,
    config: EvaluateConfig | None = None,
) -> LoggedExperiment:
    """Read experiment ``experiment_id`` and its rewarded decisions from the database,
    one day partition at a time in one snapshot, as ``COPY`` CSV parsed by pyarrow in
    pieces (an order of magnitude cheaper per row than decoding records).

    Raises ``banditd.server.experiment_store.ExperimentNotFound`` for an unknown id.
    """
    from banditd.server.log_partitions import log_partitions

    experiment = await exported_experiment(conn, experiment_id)
    reader = LogReader(experiment, config)
    feed = _CsvFeed(reader, on_rows)
    query = day_query(_CSV_COLUMNS)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            days = sorted({p.day for p in await log_partitions(conn)
                           if p.table == "decisions"})
            for day in days:
                start, end = day_bounds(day)
                await conn.copy_from_query(query, experiment.key, start, end,
                                           output=feed.write, format="csv")
    finally:
        await feed.close()  # no piece is left pooling behind the caller's back
    return reader.finish()


class ExportNotFound(LookupError):
    """No export of the experiment under the directory."""


def read_parquet_experiment(
    root: Path, experiment_id: str, on_rows: RowProgress | None = None,
    config: EvaluateConfig | None = None,
) -> LoggedExperiment:
    """Read experiment ``experiment_id``'s rewarded decisions from an export under
    ``root`` (``banditd.admin_cli.export``), days in order, rows in the file's order:
    the same rows in the same order as :func:`fetch_logged_experiment` reads, so the
    same estimates. The experiment's configuration is the newest day's file metadata.

    Raises :class:`ExportNotFound` when there is no such export, ``ValueError`` for
    a file that is not one of banditctl's.
    """
    files = sorted((Path(root) / f"experiment={experiment_id}").glob(f"date=*/{FILE_NAME}"))
    if not files:
        raise ExportNotFound(
            f"no export of experiment {experiment_id!r} under {root} (expected "
            f"{root}/experiment={experiment_id}/date=YYYY-MM-DD/{FILE_NAME}; write one with "
            f"`banditctl export --experiment {experiment_id} ... --out {root}`)"
        )
    metadata = pq.read_schema(files[-1]).metadata or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{files[-1]} has no {METADATA_KEY.decode()} metadata: it was not "
                         "written by banditctl export")
    reader = LogReader(ExportedExperiment.from_json(json.loads(metadata[METADATA_KEY])),
                       config)
    for path in files:
        source = pq.ParquetFile(path)
        missing = set(LOG_SCHEMA.names) - set(source.schema_arrow.names)
        if missing:
            raise ValueError(f"{path} lacks the columns {', '.join(sorted(missing))}")
        for batch in source.iter_batches(batch_size=BATCH_ROWS, columns=LOG_SCHEMA.names):
            reader.add(batch)
            if on_rows is not None:
                on_rows(batch.num_rows)
    return reader.finish()


@dataclass(frozen=True)
class CandidateEvaluation:
    """One candidate policy: its (fold-averaged) arm distribution and its estimates."""

    candidate: str
    action_dist: np.ndarray  # (K,) mean over events of pi(. | x_i)
    estimates: Mapping[str, Estimate]  # by estimator name, values in [0, 1]


@dataclass(frozen=True)
class EvaluationReport:
    """All candidates on one experiment's log."""

    logged: LoggedExperiment
    candidates: tuple[CandidateEvaluation, ...]
    logged_values: Mapping[str, tuple[int, float]]  # served policy -> (decisions, mean reward)
    warnings: tuple[str, ...]

    def to_units(self, x: float) -> float:
        """A [0, 1] value in the experiment's reward units."""
        return self.logged.reward_min + x * (self.logged.reward_max - self.logged.reward_min)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (candidate, estimator), values in the experiment's units."""
        out = []
        for cand in self.candidates:
            for est in cand.estimates.values():
                out.append(
                    {
                        "candidate": cand.candidate,
                        "estimator": est.estimator,
                        "value": self.to_units(est.value),
                        "ci_low": self.to_units(est.ci_low),
                        "ci_high": self.to_units(est.ci_high),
                        "n": est.n,
                        "ess": est.ess,
                    }
                )
        return out

    def candidate_set_summary(self) -> dict[str, Any]:
        """How many used decisions offered a candidate subset, and the sets' sizes."""
        used = self.logged.slot_sizes()
        n = self.logged.n_decisions
        return {
            "decisions_with_subset": int(used[1:].sum()),
            "distinct_subsets": int(np.count_nonzero(used[1:])),
            "mean_size": float(used @ self.logged.set_sizes()) / n if n else None,
        }

    def to_json(self) -> dict[str, Any]:
        def units(x: float | None) -> float | None:
            return None if x is None or math.isnan(x) else self.to_units(x)

        candidates = []
        for cand in self.candidates:
            estimates = {}
            for name, est in cand.estimates.items():
                data = est.to_json()
                for key in ("value", "ci_low", "ci_high"):
                    data[key] = units(data[key])
                estimates[name] = data
            candidates.append(
                {
                    "candidate": cand.candidate,
                    "action_distribution": dict(
                        zip(self.logged.arms, cand.action_dist.tolist(), strict=True)
                    ),
                    "estimates": estimates,
                }
            )
        return {
            "experiment_id": self.logged.experiment_id,
            "arms": list(self.logged.arms),
            "reward_range": [self.logged.reward_min, self.logged.reward_max],
            "decisions_used": self.logged.n_decisions,
            "decisions_pending": self.logged.n_pending,
            "candidate_sets": self.candidate_set_summary(),
            "logged_value_by_policy": {
                p: {"decisions": n, "mean_reward": v} for p, (n, v) in self.logged_values.items()
            },
            "candidates": candidates,
            "warnings": list(self.warnings),
        }


def per_arm_means(pulls: np.ndarray, reward_sum: np.ndarray) -> np.ndarray:
    """Mean reward per arm from its pulls and reward sum; arms never pulled count at
    the overall mean (0 when nothing was pulled)."""
    seen = pulls > 0
    total = float(pulls.sum())
    overall = float(reward_sum.sum()) / total if total else 0.0
    return np.where(seen, reward_sum / np.where(seen, pulls, 1.0), overall)


def arm_means(actions: np.ndarray, rewards: np.ndarray, n_arms: int) -> np.ndarray:
    """Mean reward per arm; arms never seen count at the overall mean."""
    return per_arm_means(np.bincount(actions, minlength=n_arms).astype(np.float64),
                         np.bincount(actions, weights=rewards, minlength=n_arms))


def greedy_over(means: np.ndarray, candidates: Sequence[int] | None = None) -> np.ndarray:
    """All mass on the candidate(s) with the highest mean (ties share it), [K];
    ``candidates`` None: every arm."""
    if candidates is None:
        best = means >= means.max() - 1e-12  # within 1e-12 of the best: a tie
        return best / best.sum()
    cand = np.asarray(candidates, dtype=np.intp)
    sub = means[cand]
    best = sub >= sub.max() - 1e-12
    pi = np.zeros(means.shape[0])
    pi[cand[best]] = 1.0 / best.sum()
    return pi


def greedy_distribution(actions: np.ndarray, rewards: np.ndarray, n_arms: int) -> np.ndarray:
    """All mass on the arm(s) with the highest mean reward in the data (ties share it);
    arms never seen count at the overall mean."""
    return greedy_over(arm_means(actions, rewards, n_arms))


def uniform_over(n_arms: int, candidates: Sequence[int] | None = None) -> np.ndarray:
    """``1/|C|`` on the candidates (every arm when None), [K]."""
    if candidates is None:
        return np.full(n_arms, 1.0 / n_arms)
    pi = np.zeros(n_arms)
    pi[np.asarray(candidates, dtype=np.intp)] = 1.0 / len(candidates)
    return pi


def _subset_propensity_warning(logged: LoggedExperiment) -> str | None:
    """Control decisions without a candidate set whose propensity only a subset gives.

    Control logs ``1/K`` (uniform over every arm) or ``1.0`` (its default arm) for a
    full-set request, ``1/|C|`` otherwise; anything else on a NULL-candidates row
    means the request used a subset that was not recorded (logged before migration
    0004), so the estimates treat it wrongly as a full-set request.
    """
    n_odd = logged.n_unrecorded_subset
    if not n_odd:
        return None
    k = len(logged.arms)
    typical = logged.unrecorded_subset_median
    return (
        f"{n_odd} decisions served by control have no recorded candidate set but a "
        f"propensity (median {typical:.3g}, about 1/{1 / typical:.3g}) that only a candidate "
        f"subset gives, not 1/{k}: they were probably logged before decisions recorded their "
        "candidates (migration 0004) and are treated as offering every arm, which biases "
        "IPS/DM/DR (IPS by about |C|/K)"
    )


def _logged_warnings(logged: LoggedExperiment) -> list[str]:
    warnings: list[str] = []
    if logged.n_pending:
        warnings.append(
            f"{logged.n_pending} decisions have no reward yet (window still open) and are "
            "left out"
        )
    if logged.n_unknown_arm:
        warnings.append(
            f"{logged.n_unknown_arm} decisions name an arm that is not an arm of the experiment "
            "and are left out"
        )
    if logged.n_unknown_candidate:
        warnings.append(
            f"{logged.n_unknown_candidate} decisions list candidates that are not arms of the "
            "experiment; those candidates are ignored"
        )
    if logged.n_arm_not_candidate:
        warnings.append(
            f"{logged.n_arm_not_candidate} decisions chose an arm missing from their own "
            "candidate set; it is added to the set"
        )
    subset = _subset_propensity_warning(logged)
    if subset:
        warnings.append(subset)
    return warnings


def evaluate_experiment(
    logged: LoggedExperiment,
    candidates: Sequence[str],
    config: EvaluateConfig | None = None,
    *,
    factory: KernelFactory | None = None,
) -> EvaluationReport:
    """Estimate every candidate's value on ``logged`` (see the module docstring).

    ``config`` defaults to the one ``logged`` was read with; its seed and
    ``min_propensity`` must be that one's, since the folds and the tiny-propensity
    count were fixed when the log was read."""
    config = config or logged.config
    read = logged.config
    if (config.seed, config.estimation.min_propensity) != (
            read.seed, read.estimation.min_propensity):
        raise ValueError("config's seed and min_propensity must be those the log was read "
                         f"with ({read.seed}, {read.estimation.min_propensity:g})")
    k = len(logged.arms)
    n = logged.n_decisions
    warnings = _logged_warnings(logged)
    kernel_candidates = [c for c in candidates if c not in FIXED_CANDIDATES]
    if kernel_candidates and factory is None:
        factory = core_ext_factory(logged.policy_params, logged.arms)
    offers = logged.slot_offers()
    group_sizes = logged.group_sizes  # group slot * 2 + fold, slot 0 the full set
    notes = propensity_notes(n, logged.n_unusable_propensity, logged.n_tiny_propensity,
                             logged.min_tiny_propensity, config.estimation)
    results = []
    for cand in candidates:
        summary = TargetAccumulator(logged.cells)
        mass = np.zeros(k)  # sum over every decision of its pi
        for f in (0, 1):
            present = np.flatnonzero(group_sizes[f::2])
            if present.size == 0:
                continue
            # fold f's candidates learn from the other fold's events
            distributions = _distributions(cand, logged.pulls[1 - f], logged.reward_sums[1 - f],
                                           f, config, factory, subsets=bool(present[-1] > 0))
            for start in range(0, present.size, _SLOT_CHUNK):
                slots = present[start:start + _SLOT_CHUNK]
                rows = distributions(offers[slots])
                groups = slots * 2 + f  # slot s of fold f is group s * 2 + f
                summary.add(groups, rows)
                mass += group_sizes[groups] @ rows
        target = summary.finish()
        del summary  # its per-cell index would outlive the summary otherwise
        estimates = estimate_cells(logged.cells, target, config=config.estimation,
                                   warnings=notes)
        mean_dist = mass / n if n else np.full(k, 1.0 / k)
        results.append(CandidateEvaluation(cand, mean_dist, estimates))
    logged_values = {p: (count, total / count)
                     for p, (count, total) in sorted(logged.logged_totals.items())}
    return EvaluationReport(logged, tuple(results), logged_values, tuple(warnings))


_SLOT_CHUNK = 1 << 16  # candidate slots whose target rows exist at a time


def _fixed_targets(cand: str, offers: np.ndarray, pulls: np.ndarray,
                   reward_sum: np.ndarray) -> np.ndarray:
    """``uniform`` or ``greedy``'s distribution (as :func:`uniform_over` and
    :func:`greedy_over`) over each row's offered arms, ``offers`` bool (rows, K)."""
    if cand == "uniform":
        return offers / offers.sum(axis=1, keepdims=True)
    means = np.where(offers, per_arm_means(pulls, reward_sum), -np.inf)
    best = offers & (means >= means.max(axis=1, keepdims=True) - 1e-12)  # ties share
    return best / best.sum(axis=1, keepdims=True)


def _distributions(
    cand: str,
    pulls: np.ndarray,
    reward_sum: np.ndarray,
    fold: int,
    config: EvaluateConfig,
    factory: KernelFactory | None,
    *,
    subsets: bool,
) -> Callable[[np.ndarray], np.ndarray]:
    """``distributions(offers)``: the candidate's arm distribution over each row's
    offered arms (bool (rows, K)) after learning ``pulls`` / ``reward_sum`` (module
    docstring), as rows of a (rows, K) array."""
    if cand in FIXED_CANDIDATES:
        return partial(_fixed_targets, cand, pulls=pulls, reward_sum=reward_sum)
    assert factory is not None
    seed = np.random.SeedSequence(config.seed, spawn_key=(fold, zlib.crc32(cand.encode())))
    kernel = factory(cand, pulls, reward_sum, seed)
    if cand == "thompson":
        if subsets:
            # the server's subset mechanism: M cached joint samples, every set answered
            # from them at once (no posterior draws per set)
            kernel.refresh_propensities(subsets=True, wait=True)
        return partial(kernel.action_distributions, draws=config.draws)
    return kernel.action_distributions
