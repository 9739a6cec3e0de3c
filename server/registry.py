"""The in-memory experiment registry the hot path reads.

For each live experiment the registry keeps an ``ExperimentRuntime``: the
configuration, the assignment tables, the arm-name index, and per policy under
test the sufficient statistics (``pulls``, ``reward_sum``; one row per policy of
two C-contiguous float64 arrays) with the Cython kernel that reads them in place.
Statistics change only when rewards are committed (``apply_rewards``); reloading
an experiment's configuration keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from core_ext import Rng
from core_ext.policies import make_kernel
from server.assignment import buckets, policy_table, traffic_threshold, user_hash
from server.experiment import DEFAULT_POLICY, Experiment

# Stable wire codes of policies and of served_by, as encoded in decision ids.
POLICY_CODES = {"thompson": 0, "ucb": 1, "egreedy": 2, "control": 3}
POLICY_BY_CODE = {code: name for name, code in POLICY_CODES.items()}
SERVED_BY_NAMES = {1: "POLICY", 2: "CONTROL", 3: "OUTSIDE_TRAFFIC", 4: "EXPERIMENT_STOPPED",
                   5: "ROLLED_BACK"}
POLICY, CONTROL, OUTSIDE_TRAFFIC, EXPERIMENT_STOPPED, ROLLED_BACK = 1, 2, 3, 4, 5
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


class ExperimentRuntime:
    """Everything Select and Reward need about one experiment, in memory."""

    __slots__ = (
        "arm_index",
        "arms",
        "default_policy",
        "experiment",
        "key",
        "policies",
        "policy_by_code",
        "policy_for_bucket",
        "salt",
        "serving_from",
        "serving_until",
        "traffic_threshold",
    )

    def __init__(self, experiment: Experiment, rng: Rng) -> None:
        spec = experiment.spec
        self.experiment = experiment
        self.key = experiment.key
        self.arms = spec.arms
        self.arm_index = {arm: i for i, arm in enumerate(spec.arms)}
        self.salt = spec.salt.encode("ascii")
        # Epoch-second bounds of the serving period, so the hot path compares floats.
        running = experiment.status == "running"
        self.serving_from = (
            (experiment.start_at.timestamp() if experiment.start_at else 0.0)
            if running else math.inf
        )
        self.serving_until = experiment.end_at.timestamp() if experiment.end_at else math.inf
        self.traffic_threshold = traffic_threshold(spec.traffic_pct)
        self.policy_for_bucket = policy_table(spec.policy_split)
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
            )
            for i, name in enumerate(spec.policies)
        )
        self.policy_by_code = {p.code: p for p in self.policies}
        # What users outside the experiment get; control never reads statistics, so
        # these arrays stay zero and its rewards teach nothing.
        idle_pulls, idle_sums = np.zeros(n_arms), np.zeros(n_arms)
        self.default_policy = PolicyState(
            DEFAULT_POLICY,
            POLICY_CODES[DEFAULT_POLICY],
            idle_pulls,
            idle_sums,
            make_kernel(
                DEFAULT_POLICY, spec.kernel_params(DEFAULT_POLICY), idle_pulls, idle_sums, rng,
                spec.arms,
            ),
        )

    def serving(self, now_s: float) -> bool:
        """True while the policies under test serve (running, started, before ``end_at``)."""
        return self.serving_from <= now_s < self.serving_until

    def assign(self, user_id: str, now_s: float) -> tuple[PolicyState, int]:
        """The policy that serves ``user_id`` at ``now_s`` and why (a served_by code)."""
        if not self.serving(now_s):
            rolled_back = self.experiment.status == "rolled_back"
            return self.default_policy, ROLLED_BACK if rolled_back else EXPERIMENT_STOPPED
        traffic_bucket, policy_bucket = buckets(user_hash(self.salt, user_id))
        if traffic_bucket >= self.traffic_threshold:
            return self.default_policy, OUTSIDE_TRAFFIC
        policy = self.policies[self.policy_for_bucket[policy_bucket]]
        return policy, CONTROL if policy.code == POLICY_CODES["control"] else POLICY

    def adopt_statistics(self, previous: ExperimentRuntime) -> None:
        """Carry learned statistics over from the runtime this one replaces."""
        for policy in self.policies:
            old = previous.policy_by_code.get(policy.code)
            if old is not None and old.pulls.shape == policy.pulls.shape:
                policy.pulls[:] = old.pulls
                policy.reward_sum[:] = old.reward_sum

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


class Registry:
    """Live experiments by id and by numeric key."""

    __slots__ = ("_by_id", "_by_key", "rng")

    def __init__(self, rng: Rng) -> None:
        self.rng = rng
        self._by_id: dict[str, ExperimentRuntime] = {}
        self._by_key: dict[int, ExperimentRuntime] = {}

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
        runtime = ExperimentRuntime(experiment, self.rng)
        previous = self._by_id.get(experiment.id)
        if previous is not None:
            runtime.adopt_statistics(previous)
        self._by_id[experiment.id] = runtime
        self._by_key[experiment.key] = runtime
        return runtime

    def remove(self, experiment_id: str) -> None:
        runtime = self._by_id.pop(experiment_id, None)
        if runtime is not None:
            self._by_key.pop(runtime.key, None)
