"""Off-policy evaluation of candidate policies on an experiment's logged decisions.

Input: every decision of the experiment (``decisions``) with its reward
(``rewards``; a decision whose reward window is still open has none and is left
out), the logged arm and the propensity the server recorded for it. Rewards are
normalised to [0, 1] by the experiment's ``[reward_min, reward_max]`` for the
estimators, and reported back in the experiment's units.

Candidates and their target distribution ``pi``. The server's policies are not
contextual, so each candidate is evaluated as the *fixed distribution over arms it
would play after learning from the log*:

- a kernel policy (``thompson``, ``ucb``, ``egreedy``, ``control``): the
  ``core_ext`` kernel, with the experiment's parameters for that policy, is given
  the per-arm statistics (pulls, reward sums) of the logged events; ``pi(a)`` is
  its probability of selecting ``a`` in that state, read from the propensities it
  reports over ``draws`` selections (exact for ε-greedy, UCB and control; the
  kernel's Monte Carlo estimate for Thompson; arms never selected get 0);
- ``greedy``: all mass on the arm with the highest mean logged reward (ties share);
- ``uniform``: ``1/K`` on every arm.

2-fold cross-fitting: the events are split at random into two halves; events of one
half are scored with the distribution learned on the other, so no candidate is
scored on the events it learned from (which would flatter greedy choices). The
estimates are then those of :mod:`admin_cli.offline.estimators` (IPS, SNIPS, DM,
DR) with bootstrap intervals, the effective sample size and warnings.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np

from admin_cli.offline.estimators import (
    Estimate,
    EstimationConfig,
    LoggedData,
    estimate_policy,
)
from admin_cli.offline.replay import Kernel, KernelFactory, core_ext_factory

FIXED_CANDIDATES = ("uniform", "greedy")


@dataclass(frozen=True)
class LoggedExperiment:
    """An experiment's logged decisions that have a reward, shapes ``(n,)``."""

    experiment_id: str
    arms: tuple[str, ...]
    policies: tuple[str, ...]
    policy_params: Mapping[str, Mapping[str, Any]]
    reward_min: float
    reward_max: float
    actions: np.ndarray  # int64 arm index
    values: np.ndarray  # float64 reward in the experiment's units
    propensities: np.ndarray  # float64; NaN where missing
    logged_policy: np.ndarray  # object: the policy that served each decision
    n_pending: int = 0  # decisions without a reward yet (left out)
    n_unknown_arm: int = 0  # decisions whose arm is not an arm of the experiment (left out)

    def normalised_rewards(self) -> np.ndarray:
        span = self.reward_max - self.reward_min
        return np.clip((self.values - self.reward_min) / span, 0.0, 1.0)

    def to_logged_data(self) -> LoggedData:
        return LoggedData(
            actions=self.actions,
            rewards=self.normalised_rewards(),
            propensities=self.propensities,
            n_arms=len(self.arms),
        )


async def fetch_logged_experiment(conn: asyncpg.Connection, experiment_id: str) -> LoggedExperiment:
    """Read experiment ``experiment_id`` and its rewarded decisions.

    Raises ``server.experiment_store.ExperimentNotFound`` for an unknown id.
    """
    from server.experiment_store import get_experiment

    experiment = await get_experiment(conn, experiment_id)
    spec = experiment.spec
    rows = await conn.fetch(
        """SELECT d.arm, d.propensity, d.policy, r.value
             FROM decisions d LEFT JOIN rewards r ON r.decision_id = d.decision_id
            WHERE d.experiment_key = $1
            ORDER BY d.decided_at, d.decision_id""",
        experiment.key,
    )
    arms = tuple(spec.arms)
    index = {arm: i for i, arm in enumerate(arms)}
    pending = sum(1 for r in rows if r["value"] is None)
    usable = [r for r in rows if r["value"] is not None and r["arm"] in index]
    unknown = len(rows) - pending - len(usable)
    return LoggedExperiment(
        experiment_id=spec.id,
        arms=arms,
        policies=tuple(spec.policies),
        policy_params={k: dict(v) for k, v in spec.policy_params.items()},
        reward_min=float(spec.reward_min),
        reward_max=float(spec.reward_max),
        actions=np.array([index[r["arm"]] for r in usable], dtype=np.int64),
        values=np.array([r["value"] for r in usable], dtype=np.float64),
        propensities=np.array(
            [np.nan if r["propensity"] is None else r["propensity"] for r in usable],
            dtype=np.float64,
        ),
        logged_policy=np.array([r["policy"] for r in usable], dtype=object),
        n_pending=pending,
        n_unknown_arm=unknown,
    )


@dataclass(frozen=True)
class EvaluateConfig:
    """Candidate construction and estimation settings."""

    draws: int = 4000  # selections per state when reading a kernel's arm distribution
    seed: int = 0  # fold split and kernel randomness
    estimation: EstimationConfig = field(default_factory=EstimationConfig)

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")


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
            "decisions_used": int(self.logged.actions.shape[0]),
            "decisions_pending": self.logged.n_pending,
            "logged_value_by_policy": {
                p: {"decisions": n, "mean_reward": v} for p, (n, v) in self.logged_values.items()
            },
            "candidates": candidates,
            "warnings": list(self.warnings),
        }


def kernel_action_distribution(kernel: Kernel, n_arms: int, draws: int) -> np.ndarray:
    """``pi(a)`` of a kernel in its current state, from the propensities it reports.

    Selects ``draws`` times without updating; ``pi(a)`` is the propensity reported
    when ``a`` was selected (arms never selected get 0), renormalised to sum to 1.
    """
    pi = np.zeros(n_arms)
    seen = np.zeros(n_arms, dtype=bool)
    for _ in range(draws):
        arm, propensity = kernel.select(None)
        if not seen[arm]:
            seen[arm] = True
            pi[arm] = propensity
    total = pi.sum()
    if not total > 0:
        raise ValueError("the kernel reported zero propensities for every selected arm")
    return pi / total


def greedy_distribution(actions: np.ndarray, rewards: np.ndarray, n_arms: int) -> np.ndarray:
    """All mass on the arm(s) with the highest mean reward in the data (ties share it);
    arms never seen count at the overall mean."""
    counts = np.bincount(actions, minlength=n_arms).astype(np.float64)
    sums = np.bincount(actions, weights=rewards, minlength=n_arms)
    overall = rewards.mean() if rewards.size else 0.0
    means = np.where(counts > 0, sums / np.maximum(counts, 1.0), overall)
    best = np.isclose(means, means.max(), rtol=0, atol=1e-12)
    return best / best.sum()


def evaluate_experiment(
    logged: LoggedExperiment,
    candidates: Sequence[str],
    config: EvaluateConfig | None = None,
    *,
    factory: KernelFactory | None = None,
) -> EvaluationReport:
    """Estimate every candidate's value on ``logged`` (see the module docstring)."""
    config = config or EvaluateConfig()
    data = logged.to_logged_data()
    k = len(logged.arms)
    n = len(data)
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
    kernel_candidates = [c for c in candidates if c not in FIXED_CANDIDATES]
    if kernel_candidates and factory is None:
        factory = core_ext_factory(logged.policy_params, logged.arms)
    rng = np.random.default_rng(config.seed)
    fold = rng.permutation(n) % 2  # 2-fold cross-fitting
    rewards = data.rewards
    results = []
    for cand in candidates:
        pi = np.empty((n, k))
        for f in (0, 1):
            learn = fold != f
            if cand == "uniform":
                dist = np.full(k, 1.0 / k)
            elif cand == "greedy":
                dist = greedy_distribution(data.actions[learn], rewards[learn], k)
            else:
                assert factory is not None
                pulls = np.bincount(data.actions[learn], minlength=k).astype(np.float64)
                reward_sum = np.bincount(data.actions[learn], weights=rewards[learn], minlength=k)
                seed = np.random.SeedSequence(config.seed, spawn_key=(f, zlib.crc32(cand.encode())))
                kernel = factory(cand, pulls, reward_sum, seed)
                dist = kernel_action_distribution(kernel, k, config.draws)
            pi[fold == f] = dist
        estimates = estimate_policy(data, pi, config=config.estimation)
        mean_dist = pi.mean(axis=0) if n else np.full(k, 1.0 / k)
        results.append(CandidateEvaluation(cand, mean_dist, estimates))
    logged_values = {}
    for policy in sorted(set(logged.logged_policy.tolist())):
        mask = logged.logged_policy == policy
        logged_values[policy] = (int(mask.sum()), float(logged.values[mask].mean()))
    return EvaluationReport(logged, tuple(results), logged_values, tuple(warnings))
