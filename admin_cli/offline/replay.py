"""The replay method (Li, Chu, Langford & Wang 2011) with the server's ``core_ext`` kernels.

For each run ``r = 1..R`` a fresh uniformly logged stream is drawn from the bandit
problem (:func:`banditd.admin_cli.offline.bandit_problem.logged_stream`; the construction
and why it makes the estimate unbiased are documented there). Every policy then
walks the *same* stream (common random numbers, so policies are compared on equal
footing and differences are paired per run):

    for each logged event (a_t, r_t):
        a = policy.select()
        if a == a_t:                 # keep the event
            policy.update(a, r_t)    # the policy learns only from kept events
            record r_t

The policy's replay value in that run is its mean reward over the kept events
(about ``T / K`` of them), and the cumulative reward rate after each kept event is
its learning curve. Over ``R`` runs (different seeds: new stream, new policy
randomness) we report the mean value with a Student-t interval over runs, the
kept-event counts, the mean curve, and each policy's paired lift over ``control``.

The intervals are over the randomness of the stream and of the policies on this
dataset: they say how precisely replay pins down a policy's reward rate on this
problem, not how it would generalise to a different user population.

Kernels come from ``banditd.core_ext.policies.make_kernel``: the same Cython code the
server runs, with the caller-owned ``pulls`` / ``reward_sum`` arrays it updates.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import stats

from banditd.admin_cli.offline.bandit_problem import (
    BanditProblem,
    LoggedStream,
    StreamConfig,
    logged_stream,
)

CONTROL = "control"


class Kernel(Protocol):
    """What replay needs of a ``core_ext`` policy kernel."""

    def select(self, candidates: Any = None) -> tuple[int, float]: ...

    def update(self, arm: int, reward: float) -> None: ...


# make(policy name, pulls, reward_sum, seed) -> kernel; the default wraps core_ext.
KernelFactory = Callable[[str, np.ndarray, np.ndarray, np.random.SeedSequence], Kernel]
# Called as on_progress(policy runs done, policy runs total).
ReplayProgress = Callable[[int, int], None]


def policy_names() -> tuple[str, ...]:
    """The policies the kernels implement (``banditd.core_ext.policies.POLICY_NAMES``)."""
    from banditd.core_ext.policies import POLICY_NAMES

    return tuple(POLICY_NAMES)


def core_ext_factory(
    policy_params: Mapping[str, Mapping[str, Any]] | None = None,
    arms: Sequence[str] = (),
) -> KernelFactory:
    """A factory building the server's kernels (``banditd.core_ext.policies.make_kernel``) with
    per-policy parameters as in an experiment's ``policy_params``. ``arms`` are the arm
    names, index-aligned with the statistics (they resolve ``control.default_arm``)."""
    from banditd.core_ext.policies import Rng, make_kernel, params_from_dict

    params = {name: params_from_dict(name, dict(p)) for name, p in (policy_params or {}).items()}
    arm_names = tuple(arms)

    def make(
        name: str, pulls: np.ndarray, reward_sum: np.ndarray, seed: np.random.SeedSequence
    ) -> Kernel:
        p = params.get(name)
        if p is None:
            p = params[name] = params_from_dict(name, {})
        return make_kernel(name, p, pulls, reward_sum, Rng(seed), arm_names)

    return make


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay and how often."""

    policies: tuple[str, ...] = ("thompson", "ucb", "egreedy", CONTROL)
    runs: int = 10
    seed: int = 0
    alpha: float = 0.05  # 1 - confidence level of the intervals over runs
    stream: StreamConfig = field(default_factory=StreamConfig)
    curve_points: int = 200  # points kept per learning curve in reports

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("name at least one policy to replay")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies must be distinct, got {', '.join(self.policies)}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.curve_points < 2:
            raise ValueError(f"curve_points must be >= 2, got {self.curve_points}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class PolicyRun:
    """One policy replayed on one stream."""

    kept_rewards: np.ndarray  # float64 (kept,): rewards of the kept events, in order

    @property
    def kept(self) -> int:
        return int(self.kept_rewards.shape[0])

    @property
    def reward_rate(self) -> float:
        return float(self.kept_rewards.mean()) if self.kept else float("nan")

    @property
    def curve(self) -> np.ndarray:
        """Cumulative reward rate after each kept event, shape ``(kept,)``."""
        return np.cumsum(self.kept_rewards) / np.arange(1, self.kept + 1)


def replay_policy(kernel: Kernel, stream: LoggedStream) -> PolicyRun:
    """Walk ``stream`` with ``kernel``: keep events where it picks the logged arm, learn
    from those only (Li et al. 2011, Algorithm 1 "Policy_Evaluator")."""
    select = kernel.select
    update = kernel.update
    arms = stream.arms.tolist()
    rewards = stream.rewards.tolist()
    kept: list[float] = []
    for logged_arm, reward in zip(arms, rewards, strict=True):
        arm, _propensity = select(None)
        if arm == logged_arm:
            update(arm, reward)
            kept.append(reward)
    return PolicyRun(np.asarray(kept, dtype=np.float64))


@dataclass(frozen=True)
class Interval:
    """A mean over runs with its Student-t interval (NaN bounds with fewer than 2 runs)."""

    mean: float
    low: float
    high: float

    @classmethod
    def over_runs(cls, values: np.ndarray, alpha: float) -> Interval:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return cls(float("nan"), float("nan"), float("nan"))
        mean = float(values.mean())
        if values.size < 2:
            return cls(mean, float("nan"), float("nan"))
        se = float(values.std(ddof=1)) / math.sqrt(values.size)
        half = float(stats.t.ppf(1 - alpha / 2, values.size - 1)) * se
        return cls(mean, mean - half, mean + half)

    def to_json(self) -> dict[str, float | None]:
        return {k: (None if math.isnan(v) else v) for k, v in vars(self).items()}


@dataclass(frozen=True)
class PolicySummary:
    """One policy over all runs."""

    policy: str
    kept: np.ndarray  # int64 (R,)
    reward_rates: np.ndarray  # float64 (R,)
    reward_rate: Interval
    lift_vs_control: Interval | None  # paired per-run difference; None without control
    curve_x: np.ndarray  # kept-event counts
    curve_mean: np.ndarray  # mean cumulative reward rate over runs at curve_x
    curve_low: np.ndarray  # pointwise alpha/2 quantile over runs
    curve_high: np.ndarray  # pointwise 1 - alpha/2 quantile over runs


@dataclass(frozen=True)
class ReplayResult:
    """Everything one replay study produced."""

    problem: BanditProblem
    config: ReplayConfig
    stream_lengths: np.ndarray  # int64 (R,)
    policies: tuple[PolicySummary, ...]
    elapsed_seconds: float
    source: str = ""

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per policy, for tables."""
        out = []
        for s in self.policies:
            out.append(
                {
                    "policy": s.policy,
                    "kept_events": float(s.kept.mean()),
                    "reward_rate": s.reward_rate.mean,
                    "ci_low": s.reward_rate.low,
                    "ci_high": s.reward_rate.high,
                    "lift_vs_control": s.lift_vs_control.mean if s.lift_vs_control else None,
                    "lift_ci_low": s.lift_vs_control.low if s.lift_vs_control else None,
                    "lift_ci_high": s.lift_vs_control.high if s.lift_vs_control else None,
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "method": "replay (Li, Chu, Langford & Wang, WSDM 2011)",
            "source": self.source,
            "config": {
                "policies": list(cfg.policies),
                "runs": cfg.runs,
                "seed": cfg.seed,
                "confidence": 1 - cfg.alpha,
                "sampling": cfg.stream.sampling,
                "stream_length": cfg.stream.length,
            },
            "problem": self.problem.to_json(),
            "stream_events_mean": float(self.stream_lengths.mean()),
            "elapsed_seconds": self.elapsed_seconds,
            "policies": [
                {
                    "policy": s.policy,
                    "kept_events_mean": float(s.kept.mean()),
                    "kept_events": s.kept.tolist(),
                    "reward_rate": s.reward_rate.to_json(),
                    "reward_rates": s.reward_rates.tolist(),
                    "lift_vs_control": s.lift_vs_control.to_json() if s.lift_vs_control else None,
                    "curve": {
                        "kept_events": s.curve_x.tolist(),
                        "mean": s.curve_mean.tolist(),
                        "low": s.curve_low.tolist(),
                        "high": s.curve_high.tolist(),
                    },
                }
                for s in self.policies
            ],
        }


def _seed(seed: int, run: int, *key: int) -> np.random.SeedSequence:
    # Seeds depend on (seed, run, policy name) only, so adding a policy to the list
    # does not change what the others see.
    return np.random.SeedSequence(seed, spawn_key=(run, *key))


def run_replay(
    problem: BanditProblem,
    config: ReplayConfig,
    *,
    factory: KernelFactory | None = None,
    on_progress: ReplayProgress | None = None,
    source: str = "",
) -> ReplayResult:
    """Replay every policy of ``config`` on ``config.runs`` fresh streams of ``problem``."""
    if factory is None:
        known = policy_names()
        unknown = [p for p in config.policies if p not in known]
        if unknown:
            raise ValueError(f"unknown policy {', '.join(unknown)}; known: {', '.join(known)}")
        factory = core_ext_factory(arms=problem.arm_ids)
    started = time.monotonic()
    k = problem.n_arms
    runs: dict[str, list[PolicyRun]] = {p: [] for p in config.policies}
    lengths = np.zeros(config.runs, dtype=np.int64)
    total = config.runs * len(config.policies)
    done = 0
    for run in range(config.runs):
        stream = logged_stream(problem, np.random.default_rng(_seed(config.seed, run, 0)),
                               config.stream)
        lengths[run] = len(stream)
        for name in config.policies:
            pulls = np.zeros(k, dtype=np.float64)
            reward_sum = np.zeros(k, dtype=np.float64)
            kernel = factory(name, pulls, reward_sum,
                             _seed(config.seed, run, 1, zlib.crc32(name.encode())))
            runs[name].append(replay_policy(kernel, stream))
            done += 1
            if on_progress is not None:
                on_progress(done, total)
    summaries = tuple(
        _summarise(name, runs[name], runs.get(CONTROL), config) for name in config.policies
    )
    return ReplayResult(
        problem=problem,
        config=config,
        stream_lengths=lengths,
        policies=summaries,
        elapsed_seconds=time.monotonic() - started,
        source=source,
    )


def _summarise(
    name: str,
    runs: Sequence[PolicyRun],
    control: Sequence[PolicyRun] | None,
    config: ReplayConfig,
) -> PolicySummary:
    kept = np.array([r.kept for r in runs], dtype=np.int64)
    rates = np.array([r.reward_rate for r in runs], dtype=np.float64)
    lift = None
    if control is not None and name != CONTROL:
        control_rates = np.array([r.reward_rate for r in control], dtype=np.float64)
        lift = Interval.over_runs(rates - control_rates, config.alpha)
    x, mean, low, high = _mean_curve([r.curve for r in runs], config.curve_points, config.alpha)
    return PolicySummary(
        policy=name,
        kept=kept,
        reward_rates=rates,
        reward_rate=Interval.over_runs(rates, config.alpha),
        lift_vs_control=lift,
        curve_x=x,
        curve_mean=mean,
        curve_low=low,
        curve_high=high,
    )


def _mean_curve(
    curves: Sequence[np.ndarray], points: int, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and quantiles over runs, up to the shortest run, at ``<= points`` x."""
    length = min((c.shape[0] for c in curves), default=0)
    if length == 0:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty, empty
    x = np.unique(np.linspace(1, length, num=min(points, length)).round().astype(np.int64))
    stacked = np.stack([c[x - 1] for c in curves])
    low, high = np.quantile(stacked, [alpha / 2, 1 - alpha / 2], axis=0)
    return x, stacked.mean(axis=0), low, high
