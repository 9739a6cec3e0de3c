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
  ``select(C_i)`` picks each arm (once per distinct set and fold: sets repeat per
  user, so this is cheap). Nothing is selected or learned while reading it.

  * ``ucb`` / ``egreedy`` / ``control``: exact, from the kernel's own rule. Their
    subset rule is not a renormalisation of the full-set one (UCB's bonus uses
    ``N = sum_{a in C} n_a`` and plays untried offered arms first; ε-greedy explores
    uniformly over ``C`` and exploits the best arm *within* ``C``; control plays its
    default arm if offered, else uniform over ``C``), which is why it is read from
    the kernel rather than rebuilt here;
  * ``thompson``: ``P(theta_a = max_{j in C_i} theta_j)`` estimated by win
    frequencies of joint posterior samples (unbiased, unfloored, standard error
    ``sqrt(p (1 - p) / D)``): for a full-set request the kernel's cached estimate,
    the one its propensities come from (``D`` = its ``propensity_draws``, 4096), for
    a subset ``D`` = ``EvaluateConfig.draws`` fresh samples of the arms in ``C_i``
    (independent per set and fold). Renormalising the full-set probabilities over
    ``C_i`` would be wrong (an arm rarely the global winner can be the likely winner
    within ``C_i``), so it is not done;

- ``greedy``: all mass on the arm(s) of ``C_i`` with the highest mean logged reward
  (ties share; arms never logged count at the overall mean);
- ``uniform``: ``1/|C_i|`` on every arm of ``C_i`` (exact).

The reward model of DM/DR stays the per-arm mean reward (not contextual); DM for
event ``i`` is ``sum_{a in C_i} pi_i(a) q(a)``. The reported
``action_distribution`` of a candidate is the mean of ``pi_i`` over the events.

2-fold cross-fitting: the events are split at random into two halves; events of one
half are scored with the distribution learned on the other, so no candidate is
scored on the events it learned from (which would flatter greedy choices). The
estimates are then those of :mod:`banditd.admin_cli.offline.estimators` (IPS, SNIPS, DM,
DR) with bootstrap intervals, the effective sample size and warnings.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import asyncpg
import numpy as np

from banditd.admin_cli.offline.estimators import (
    Estimate,
    EstimationConfig,
    LoggedData,
    estimate_policy,
)
from banditd.admin_cli.offline.replay import KernelFactory, core_ext_factory

FIXED_CANDIDATES = ("uniform", "greedy")


FULL_SET = -1  # LoggedExperiment.candidate_set of a request that offered every arm


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
    # Distinct candidate subsets offered (sorted arm indices, each a proper subset of
    # the arms) and, per decision, the index of its set in them or FULL_SET (-1) when
    # the request offered every arm (candidates NULL, or listing every arm). None: all
    # decisions offered every arm.
    candidate_sets: tuple[tuple[int, ...], ...] = ()
    candidate_set: np.ndarray | None = None  # int64 (n,)
    n_unknown_candidate: int = 0  # decisions whose candidates named non-arms (names dropped)
    n_arm_not_candidate: int = 0  # decisions whose arm was missing from its candidates (added)

    def __post_init__(self) -> None:
        if self.candidate_set is not None:
            index = self.candidate_set
            if index.shape != self.actions.shape:
                raise ValueError("candidate_set must have one entry per decision")
            if index.size and (index.min() < FULL_SET or index.max() >= len(self.candidate_sets)):
                raise ValueError("candidate_set entries must index candidate_sets or be -1")

    def candidate_index(self) -> np.ndarray:
        """Per decision, its index in ``candidate_sets`` or ``FULL_SET``, int64 ``(n,)``."""
        if self.candidate_set is None:
            return np.full(self.actions.shape[0], FULL_SET, dtype=np.int64)
        return self.candidate_set

    def candidate_sizes(self) -> np.ndarray:
        """``|C_i|`` per decision (K for full-set requests), int64 ``(n,)``."""
        sizes = np.array([len(c) for c in self.candidate_sets] + [len(self.arms)], dtype=np.int64)
        return sizes[self.candidate_index()]  # FULL_SET = -1 picks the last entry, K

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


@dataclass
class _CandidateSets:
    """Interns the candidate sets of the rows being read (see :class:`LoggedExperiment`)."""

    index: Mapping[str, int]
    sets: dict[tuple[int, ...], int] = field(default_factory=dict)
    n_unknown: int = 0
    n_arm_missing: int = 0

    def add(self, names: Sequence[str] | None, arm: int) -> int:
        if names is None:
            return FULL_SET
        offered = {self.index[a] for a in names if a in self.index}
        if len(offered) < len(set(names)):
            self.n_unknown += 1
        if arm not in offered:
            self.n_arm_missing += 1
            offered.add(arm)
        if len(offered) == len(self.index):
            return FULL_SET
        key = tuple(sorted(offered))
        return self.sets.setdefault(key, len(self.sets))


async def fetch_logged_experiment(conn: asyncpg.Connection, experiment_id: str) -> LoggedExperiment:
    """Read experiment ``experiment_id`` and its rewarded decisions.

    Raises ``banditd.server.experiment_store.ExperimentNotFound`` for an unknown id.
    """
    from banditd.server.experiment_store import get_experiment

    experiment = await get_experiment(conn, experiment_id)
    spec = experiment.spec
    rows = await conn.fetch(
        """SELECT d.arm, d.propensity, d.policy, d.candidates, r.value
             FROM decisions d LEFT JOIN rewards r USING (experiment_key, decided_at, decision_id)
            WHERE d.experiment_key = $1
            ORDER BY d.decided_at, d.decision_id""",
        experiment.key,
    )
    arms = tuple(spec.arms)
    index = {arm: i for i, arm in enumerate(arms)}
    pending = sum(1 for r in rows if r["value"] is None)
    usable = [r for r in rows if r["value"] is not None and r["arm"] in index]
    unknown = len(rows) - pending - len(usable)
    actions = np.array([index[r["arm"]] for r in usable], dtype=np.int64)
    interned = _CandidateSets(index)
    candidate_set = np.array(
        [interned.add(r["candidates"], int(a)) for r, a in zip(usable, actions, strict=True)],
        dtype=np.int64,
    )
    return LoggedExperiment(
        experiment_id=spec.id,
        arms=arms,
        policies=tuple(spec.policies),
        policy_params={k: dict(v) for k, v in spec.policy_params.items()},
        reward_min=float(spec.reward_min),
        reward_max=float(spec.reward_max),
        actions=actions,
        values=np.array([r["value"] for r in usable], dtype=np.float64),
        propensities=np.array(
            [np.nan if r["propensity"] is None else r["propensity"] for r in usable],
            dtype=np.float64,
        ),
        logged_policy=np.array([r["policy"] for r in usable], dtype=object),
        n_pending=pending,
        n_unknown_arm=unknown,
        candidate_sets=tuple(interned.sets),  # dicts keep insertion order = set index
        candidate_set=candidate_set,
        n_unknown_candidate=interned.n_unknown,
        n_arm_not_candidate=interned.n_arm_missing,
    )


@dataclass(frozen=True)
class EvaluateConfig:
    """Candidate construction and estimation settings."""

    draws: int = 4000  # Thompson posterior samples per candidate subset's win probabilities
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

    def candidate_set_summary(self) -> dict[str, Any]:
        """How many used decisions offered a candidate subset, and the sets' sizes."""
        index = self.logged.candidate_index()
        sizes = self.logged.candidate_sizes()
        subset = index != FULL_SET
        return {
            "decisions_with_subset": int(subset.sum()),
            "distinct_subsets": int(np.unique(index[subset]).size),
            "mean_size": float(sizes.mean()) if sizes.size else None,
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
            "decisions_used": int(self.logged.actions.shape[0]),
            "decisions_pending": self.logged.n_pending,
            "candidate_sets": self.candidate_set_summary(),
            "logged_value_by_policy": {
                p: {"decisions": n, "mean_reward": v} for p, (n, v) in self.logged_values.items()
            },
            "candidates": candidates,
            "warnings": list(self.warnings),
        }


def arm_means(actions: np.ndarray, rewards: np.ndarray, n_arms: int) -> np.ndarray:
    """Mean reward per arm; arms never seen count at the overall mean."""
    counts = np.bincount(actions, minlength=n_arms).astype(np.float64)
    sums = np.bincount(actions, weights=rewards, minlength=n_arms)
    overall = rewards.mean() if rewards.size else 0.0
    return np.where(counts > 0, sums / np.maximum(counts, 1.0), overall)


def greedy_over(means: np.ndarray, candidates: Sequence[int] | None = None) -> np.ndarray:
    """All mass on the candidate(s) with the highest mean (ties share it), [K];
    ``candidates`` None: every arm."""
    if candidates is None:
        best = np.isclose(means, means.max(), rtol=0, atol=1e-12)
        return best / best.sum()
    cand = np.asarray(candidates, dtype=np.intp)
    sub = means[cand]
    best = np.isclose(sub, sub.max(), rtol=0, atol=1e-12)
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
    k = len(logged.arms)
    p = logged.propensities
    full = (logged.candidate_index() == FULL_SET) & (logged.logged_policy == "control")
    full &= np.isfinite(p)
    odd = full & ~np.isclose(p, 1.0 / k, rtol=1e-6) & ~np.isclose(p, 1.0, rtol=1e-6)
    n_odd = int(odd.sum())
    if not n_odd:
        return None
    typical = float(np.median(p[odd]))
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
    """Estimate every candidate's value on ``logged`` (see the module docstring)."""
    config = config or EvaluateConfig()
    data = logged.to_logged_data()
    k = len(logged.arms)
    n = len(data)
    warnings = _logged_warnings(logged)
    kernel_candidates = [c for c in candidates if c not in FIXED_CANDIDATES]
    if kernel_candidates and factory is None:
        factory = core_ext_factory(logged.policy_params, logged.arms)
    rng = np.random.default_rng(config.seed)
    fold = rng.permutation(n) % 2  # 2-fold cross-fitting
    rewards = data.rewards
    set_index = logged.candidate_index()
    sets = logged.candidate_sets
    results = []
    for cand in candidates:
        pi = np.empty((n, k))
        for f in (0, 1):
            learn = fold != f
            scored = fold == f
            full_rows = scored & (set_index == FULL_SET)
            # the distinct candidate subsets of this fold, and each subset row's position
            used, rows_set = np.unique(set_index[scored & ~full_rows], return_inverse=True)
            if cand == "uniform":
                distribution = partial(uniform_over, k)
            elif cand == "greedy":
                distribution = partial(greedy_over, arm_means(data.actions[learn],
                                                              rewards[learn], k))
            else:
                assert factory is not None
                pulls = np.bincount(data.actions[learn], minlength=k).astype(np.float64)
                # astype: numpy's bincount of an empty fold is int64 even with float weights
                reward_sum = np.bincount(data.actions[learn], weights=rewards[learn],
                                         minlength=k).astype(np.float64)
                seed = np.random.SeedSequence(config.seed, spawn_key=(f, zlib.crc32(cand.encode())))
                distribution = factory(cand, pulls, reward_sum, seed).action_distribution
                if cand == "thompson":
                    distribution = partial(distribution, draws=config.draws)

            if full_rows.any():
                pi[full_rows] = distribution()
            if used.size:
                per_set = np.stack([distribution(sets[s]) for s in used.tolist()])
                pi[scored & ~full_rows] = per_set[rows_set.ravel()]
        estimates = estimate_policy(data, pi, config=config.estimation)
        mean_dist = pi.mean(axis=0) if n else np.full(k, 1.0 / k)
        results.append(CandidateEvaluation(cand, mean_dist, estimates))
    logged_values = {}
    for policy in sorted(set(logged.logged_policy.tolist())):
        mask = logged.logged_policy == policy
        logged_values[policy] = (int(mask.sum()), float(logged.values[mask].mean()))
    return EvaluationReport(logged, tuple(results), logged_values, tuple(warnings))
