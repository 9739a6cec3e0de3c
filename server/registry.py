"""The in-memory experiment registry the hot path reads.

For each live experiment the registry keeps an ``ExperimentRuntime``: the
configuration, the assignment tables, the arm-name index, and per policy under
test the sufficient statistics (``pulls``, ``reward_sum``; one row per policy of
two C-contiguous float64 arrays) with the Cython kernel that reads them in place.
Statistics change only when rewards are committed (``banditd.server.reward_commit``) or
adopted from other replicas (``banditd.server.replica_sync``); reloading an experiment's
configuration keeps them, and the Thompson propensity caches built from them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from banditd.core_ext.codecs import DecisionRows, DecisionSigner
from banditd.core_ext.decider import Decider
from banditd.core_ext.policies import (
    POLICY_CODES,
    Rng,
    make_kernel,
    subset_cache_budget,
    subset_cache_bytes,
)
from banditd.server.assignment import SEPARATOR, policy_table, traffic_threshold
from banditd.server.experiment import DEFAULT_POLICY, Experiment
from banditd.v1 import decision_pb2

log = logging.getLogger("banditd.app")

# Wire codes, as encoded in decision ids: policies from core_ext's policy table,
# served_by from the ServedBy enum of decision.proto.
POLICY_BY_CODE = {code: name for name, code in POLICY_CODES.items()}
SERVED_BY_NAMES = {v.number: v.name for v in decision_pb2.ServedBy.DESCRIPTOR.values if v.number}
POLICY, CONTROL, OUTSIDE_TRAFFIC, EXPERIMENT_STOPPED, ROLLED_BACK = (
    decision_pb2.POLICY, decision_pb2.CONTROL, decision_pb2.OUTSIDE_TRAFFIC,
    decision_pb2.EXPERIMENT_STOPPED, decision_pb2.ROLLED_BACK)
# The same names indexed by code, for the decider's log rows (code 0 is unused).
SERVED_BY_CODE_NAMES = tuple(SERVED_BY_NAMES.get(code, "")
                             for code in range(max(SERVED_BY_NAMES) + 1))
# Decisions that belong to the experiment and teach its policies.
LEARNING_SERVED_BY = frozenset((POLICY, CONTROL))


@dataclass(slots=True)
class PolicyState:
    """One policy under test: its name, wire code, statistics rows and kernel."""

    name: str
    code: int
    pulls: np.ndarray
    reward_sum: np.ndarray
    kernel: object
    # served_by of a decision by this policy for a user inside the experiment.
    served_by: int = POLICY


class ArmTables:
    """Arm-name tuples and name -> index dicts, shared by experiments with the same arms.

    A thousand experiments over one catalogue of a thousand arms otherwise hold a
    million arm-name strings and a thousand identical 1,000-entry dicts. Entries are
    reference-counted by the registry and dropped with their last experiment. An index
    dict is built on first use (a Select with candidate_arms, a reward by arm name):
    many experiments never need one. The shared dicts are read-only.
    """

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[tuple[str, ...], list] = {}  # arms -> [arms, index, users]

    def acquire(self, arms: tuple[str, ...]) -> tuple[str, ...]:
        """The shared tuple equal to ``arms`` (counted as one more user)."""
        entry = self._tables.get(arms)
        if entry is None:
            entry = [arms, None, 0]
            self._tables[arms] = entry
        entry[2] += 1
        return entry[0]

    def index(self, arms: tuple[str, ...]) -> dict[str, int]:
        """The shared arm name -> index dict of an acquired ``arms``."""
        entry = self._tables.get(arms)
        if entry is None:  # released meanwhile (the runtime was replaced): a private one
            return _index_of(arms)
        if entry[1] is None:
            entry[1] = _index_of(arms)
        return entry[1]

    def release(self, arms: tuple[str, ...]) -> None:
        entry = self._tables.get(arms)
        if entry is not None:
            entry[2] -= 1
            if entry[2] <= 0:
                del self._tables[arms]

    def __len__(self) -> int:
        return len(self._tables)


class ExperimentRuntime:
    """Everything Select and Reward need about one experiment, in memory.

    ``decider`` makes its decisions (assignment, kernel, signed id in one C call);
    ``slot_policies`` maps the decider's slots to policies: the policies under test in
    order, then the default policy, so that slot -1 is the default. ``cold`` says that
    a Thompson policy has no propensity cache yet: ``warm()`` builds them first;
    ``subset_cold`` that one has no subset cache yet, which a Select with candidates
    needs: ``warm_subsets()`` builds them first.
    """

    __slots__ = (
        "_arm_index",
        "_arm_tables",
        "_warming",
        "_warming_subsets",
        "arms",
        "cold",
        "decider",
        "default_policy",
        "experiment",
        "id",
        "key",
        "policies",
        "policy_by_code",
        "slot_policies",
        "subset_cold",
    )

    def __init__(
        self,
        experiment: Experiment,
        rng: Rng,
        signer: DecisionSigner,
        arm_tables: ArmTables | None = None,
        rows: DecisionRows | None = None,
    ) -> None:
        spec = experiment.spec
        self.experiment = experiment
        self.id = spec.id
        self.key = experiment.key
        self._arm_tables = arm_tables
        self._arm_index: dict[str, int] | None = None
        self.arms = spec.arms if arm_tables is None else arm_tables.acquire(spec.arms)
        n_arms = len(spec.arms)
        pulls = np.zeros((len(spec.policies), n_arms))
        sums = np.zeros((len(spec.policies), n_arms))
        self.policies = tuple(
            PolicyState(
                name,
                POLICY_CODES[name],
                pulls[i],
                sums[i],
                make_kernel(
                    name, spec.kernel_params(name), pulls[i], sums[i], rng, spec.arms
                ),
                CONTROL if name == DEFAULT_POLICY else POLICY,
            )
            for i, name in enumerate(spec.policies)
        )
        self.policy_by_code = {p.code: p for p in self.policies}
        # What users outside the experiment get. Control never reads statistics and the
        # default policy's rewards teach nothing (they are not LEARNING_SERVED_BY), so
        # when control is under test its kernel (same parameters, same generator) serves
        # the default too; otherwise a kernel over arrays that stay zero.
        control = next((p for p in self.policies if p.name == DEFAULT_POLICY), None)
        if control is not None:
            self.default_policy = PolicyState(
                DEFAULT_POLICY, control.code, control.pulls, control.reward_sum, control.kernel,
            )
        else:
            idle_pulls, idle_sums = np.zeros(n_arms), np.zeros(n_arms)
            self.default_policy = PolicyState(
                DEFAULT_POLICY,
                POLICY_CODES[DEFAULT_POLICY],
                idle_pulls,
                idle_sums,
                make_kernel(
                    DEFAULT_POLICY, spec.kernel_params(DEFAULT_POLICY), idle_pulls, idle_sums,
                    rng, spec.arms,
                ),
            )
        self.slot_policies = (*self.policies, self.default_policy)
        self.cold = self._has_unbuilt_cache()
        self.subset_cold = self._lacks_subset_cache()
        self._warming: asyncio.Future | None = None
        self._warming_subsets: asyncio.Future | None = None
        # The serving period in epoch seconds: running, from start_at, before end_at.
        running = experiment.status == "running"
        serving_from = (
            (experiment.start_at.timestamp() if experiment.start_at else 0.0)
            if running else math.inf
        )
        self.decider = Decider(
            signer=signer,
            experiment_key=experiment.key,
            hash_prefix=spec.salt.encode("ascii") + SEPARATOR,
            traffic_threshold=traffic_threshold(spec.traffic_pct),
            policy_table=policy_table(spec.policy_split),
            slots=tuple((p.kernel, p.code, p.served_by) for p in self.policies),
            default=(self.default_policy.kernel, self.default_policy.code),
            outside=OUTSIDE_TRAFFIC,
            not_serving=ROLLED_BACK if experiment.status == "rolled_back" else EXPERIMENT_STOPPED,
            serving_from=serving_from,
            serving_until=experiment.end_at.timestamp() if experiment.end_at else math.inf,
            rows=rows,
            arms=self.arms,
            policy_names=tuple(p.name for p in self.slot_policies),
            served_by_names=SERVED_BY_CODE_NAMES,
        )

    async def warm(self) -> None:
        """Build the missing Thompson propensity caches in a worker thread, once.

        A Thompson kernel's first full-set ``select`` would build its cache itself:
        M x K Beta draws (M = 4096: up to a second at K = 1,000, benchmarks/RESULTS.md)
        on the event loop, stopping
        every other call meanwhile, after every start and for every new experiment (an
        edited one keeps its caches: ``adopt_statistics``). The draws release the GIL
        (``refresh_propensities``), so here they run beside the loop; the experiment's
        first calls wait for them together and nothing else does. Cancelling one
        waiting call does not cancel the build.
        """
        if self._warming is None:
            self._warming = asyncio.ensure_future(asyncio.to_thread(self._build_caches))
        try:
            await asyncio.shield(self._warming)
        finally:
            if self._warming.done():
                self.cold = False  # even if the build failed: select builds its own

    async def warm_subsets(self) -> None:
        """Build the Thompson subset caches (and, from the same draws, any full-set
        cache still missing) in a worker thread, once.

        Without its subset cache a Thompson kernel answers a Select with candidates by
        estimating the propensity on the spot, M x |C| fresh Beta draws (milliseconds)
        on the event loop, until the refresher builds the cache; and building it costs
        M x K draws plus M sorts (0.42 s at K = 1,000, 0.35 s without the sorts;
        benchmarks/RESULTS.md). So the experiment's first Selects with candidates wait
        for it here, beside the loop, as its first Selects wait for ``warm``; only
        Thompson kernels of experiments that receive candidates pay its memory (M x K
        bytes, twice that past 256 arms). A cache the memory budget refuses is logged
        once, and that kernel keeps estimating on the spot.
        """
        if self._warming_subsets is None:
            self._warming_subsets = asyncio.ensure_future(
                asyncio.to_thread(self._build_subset_caches))
        try:
            await asyncio.shield(self._warming_subsets)
        finally:
            if self._warming_subsets.done():
                self.subset_cold = False  # even if refused or failed: select copes
                self.cold = self._has_unbuilt_cache()

    def _has_unbuilt_cache(self) -> bool:
        return any(_needs_cache(p.kernel) for p in self.slot_policies)

    def _lacks_subset_cache(self) -> bool:
        return any(getattr(p.kernel, "subset_cache_bytes", 1) == 0 for p in self.slot_policies)

    def _build_caches(self) -> None:
        for policy in self.slot_policies:
            if _needs_cache(policy.kernel):
                policy.kernel.refresh_propensities()

    def _build_subset_caches(self) -> None:
        for policy in self.slot_policies:
            if getattr(policy.kernel, "subset_cache_bytes", 1) == 0:
                # wait: the refresher may be re-drawing this kernel's full-set cache
                policy.kernel.refresh_propensities(subsets=True, wait=True)
                if policy.kernel.subset_cache_refused:
                    log.warning(
                        "Subset cache refused for experiment %s, policy %s: %.0f of "
                        "%.0f MiB of the subset cache budget in use; its Selects with "
                        "candidate_arms estimate propensities on the spot (%d x |C| Beta "
                        "draws each)", self.id, policy.name, subset_cache_bytes() / 2**20,
                        subset_cache_budget() / 2**20, policy.kernel.propensity_draws)

    @property
    def arm_index(self) -> dict[str, int]:
        """Arm name -> index (read-only; built on first use, shared when arms are)."""
        index = self._arm_index
        if index is None:
            tables = self._arm_tables
            index = _index_of(self.arms) if tables is None else tables.index(self.arms)
            self._arm_index = index
        return index

    def adopt_statistics(self, previous: ExperimentRuntime) -> None:
        """Carry learned statistics over from the runtime this one replaces, and with
        them the Thompson propensity caches (full-set and subset) built from them.

        Every status change and settings edit replaces a runtime; without its caches
        the new one would be cold, and the experiment's next calls would wait for
        M x K Beta draws again (0.65 s at K = 1,000) on every replica, at each step of
        a traffic ramp. A cache carries over only with equal statistics, prior and M
        (``ThompsonPolicy.adopt_propensities``).
        """
        for policy in self.policies:
            old = previous.policy_by_code.get(policy.code)
            if old is not None and old.pulls.shape == policy.pulls.shape:
                policy.pulls[:] = old.pulls
                policy.reward_sum[:] = old.reward_sum
                if hasattr(policy.kernel, "adopt_propensities"):  # same code, same class
                    policy.kernel.adopt_propensities(old.kernel)
        self.cold = self._has_unbuilt_cache()
        self.subset_cold = self._lacks_subset_cache()

    def load_statistics(self, rows: Iterable[tuple[str, str, float, float]]) -> None:
        """Set statistics from (policy, arm, pulls, reward_sum) rows of ``arm_stats``."""
        by_name = {p.name: p for p in self.policies}
        for policy_name, arm, pulls, reward_sum in rows:
            policy = by_name.get(policy_name)
            index = self.arm_index.get(arm)
            if policy is None or index is None:
                continue
            policy.pulls[index] = pulls
            policy.reward_sum[index] = reward_sum


def _needs_cache(kernel) -> bool:
    """A kernel with a propensity cache (Thompson) that was never built."""
    return getattr(kernel, "propensity_version", 0) < 0


def _index_of(arms: tuple[str, ...]) -> dict[str, int]:
    return {arm: i for i, arm in enumerate(arms)}


class Registry:
    """Live experiments by id and by numeric key."""

    __slots__ = ("_by_id", "_by_key", "arm_tables", "rng", "rows", "signer")

    def __init__(self, rng: Rng, signer: DecisionSigner, rows: DecisionRows | None = None) -> None:
        self.rng = rng
        self.signer = signer
        self.rows = rows  # where the deciders log decisions (None: nowhere)
        self._by_id: dict[str, ExperimentRuntime] = {}
        self._by_key: dict[int, ExperimentRuntime] = {}
        self.arm_tables = ArmTables()

    def get(self, experiment_id: str) -> ExperimentRuntime | None:
        return self._by_id.get(experiment_id)

    def by_key(self, key: int) -> ExperimentRuntime | None:
        return self._by_key.get(key)

    def __iter__(self):
        return iter(tuple(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def upsert(self, experiment: Experiment) -> ExperimentRuntime:
        """Install or replace an experiment's runtime, keeping its learned statistics."""
        runtime = ExperimentRuntime(
            experiment, self.rng, self.signer, self.arm_tables, self.rows
        )
        if runtime.arms is not experiment.spec.arms:
            # An equal tuple is already held: let the spec share it too, so that the
            # strings this row was decoded into can be freed (same value, frozen spec).
            object.__setattr__(experiment.spec, "arms", runtime.arms)
        previous = self._by_id.get(experiment.id)
        if previous is not None:
            runtime.adopt_statistics(previous)
            self.arm_tables.release(previous.arms)
        self._by_id[experiment.id] = runtime
        self._by_key[experiment.key] = runtime
        return runtime

    def remove(self, experiment_id: str) -> None:
        runtime = self._by_id.pop(experiment_id, None)
        if runtime is not None:
            self._by_key.pop(runtime.key, None)
            self.arm_tables.release(runtime.arms)
