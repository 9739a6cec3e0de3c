"""Regret of the kernels on simulated Bernoulli arms, and the Lai–Robbins bound.

Setup (Chapelle & Li 2011, §4.1): K Bernoulli arms, the best with mean 0.5 and the
other K - 1 with 0.5 - ε; horizon T; R independent runs per policy with common random
numbers (run r of every policy sees the same reward uniforms). Regret is the
pseudo-regret ``Σ_t (μ* - μ_{a_t})``, whose run-to-run spread is smaller than that of
realised regret.

The Lai & Robbins (1985) lower bound on the regret of any consistent policy is
``Σ_{a: Δ_a > 0} Δ_a / KL(μ_a, μ*) · ln T`` with Δ_a = μ* - μ_a and KL the Bernoulli
Kullback–Leibler divergence (asymptotically regret / bound ≥ 1; Thompson sampling
attains 1, Kaufmann, Korda & Munos 2012). The regret study
(``python -m benchmarks.regret``) and the tests run the same simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

POLICIES: tuple[str, ...] = ("thompson", "ucb", "egreedy")
_CHUNK = 8192


def chapelle_li_means(k: int, eps: float) -> np.ndarray:
    """Arm means of the Chapelle & Li setup: arm 0 at 0.5, the K - 1 others at 0.5 - eps."""
    if k < 2 or not 0.0 < eps < 0.5:
        raise ValueError(f"need K >= 2 and 0 < eps < 0.5, got K={k}, eps={eps}")
    means = np.full(k, 0.5 - eps)
    means[0] = 0.5
    return means


def bernoulli_kl(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats, for p in [0, 1], q in (0, 1)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    out = 0.0
    if p > 0.0:
        out += p * math.log(p / q)
    if p < 1.0:
        out += (1.0 - p) * math.log((1.0 - p) / (1.0 - q))
    return out


def lai_robbins_constant(means: Sequence[float]) -> float:
    """Σ_{a: Δ_a > 0} Δ_a / KL(μ_a, μ*) (Lai & Robbins 1985, Thm. 2)."""
    best = max(means)
    return sum((best - m) / bernoulli_kl(m, best) for m in means if m < best)


def lai_robbins_bound(means: Sequence[float], horizon: float) -> float:
    """The asymptotic lower bound ``lai_robbins_constant(means) · ln T``."""
    return lai_robbins_constant(means) * math.log(horizon)


def make_policy(name: str, k: int, seed: int | Sequence[int]):
    """A fresh kernel of policy ``name`` over new zero statistics (default parameters)."""
    from banditd.core_ext.policies import EpsilonGreedyPolicy, Rng, ThompsonPolicy, UCB1Policy

    builders: dict[str, Callable] = {
        "thompson": ThompsonPolicy,
        "ucb": UCB1Policy,
        "egreedy": EpsilonGreedyPolicy,
    }
    return builders[name](np.zeros(k), np.zeros(k), Rng(np.random.SeedSequence(seed)))


def log_checkpoints(horizon: int, n: int = 60) -> np.ndarray:
    """Distinct steps 1..T, log-spaced, always ending at T."""
    pts = np.unique(np.geomspace(1, horizon, n).astype(np.int64))
    return pts if pts[-1] == horizon else np.append(pts, horizon)


def simulate(policy, means: np.ndarray, horizon: int, seed: int | Sequence[int],
             checkpoints: np.ndarray) -> np.ndarray:
    """Run ``policy`` for ``horizon`` steps on Bernoulli arms ``means``; return the
    cumulative pseudo-regret at each of ``checkpoints`` (sorted steps in 1..T)."""
    gaps = (means.max() - means).tolist()
    mu = means.tolist()
    uniforms = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    select, update = policy.select, policy.update
    out = np.empty(len(checkpoints))
    regret = 0.0
    t = 0
    ci = 0
    next_cp = int(checkpoints[0])
    while t < horizon:
        u = uniforms.random(min(_CHUNK, horizon - t)).tolist()
        for x in u:
            arm = select()[0]
            update(arm, 1.0 if x < mu[arm] else 0.0)
            regret += gaps[arm]
            t += 1
            if t == next_cp:
                out[ci] = regret
                ci += 1
                next_cp = int(checkpoints[ci]) if ci < len(checkpoints) else -1
    return out


@dataclass(frozen=True, slots=True)
class RegretSummary:
    """Mean final regret of R runs with its standard error (sample sd / sqrt(R))."""

    policy: str
    mean: float
    se: float
    runs: int
    curve: np.ndarray          # mean regret at each checkpoint


def _one_run(args: tuple[str, int, float, int, int, int]) -> np.ndarray:
    name, k, eps, horizon, run, base_seed = args
    means = chapelle_li_means(k, eps)
    cps = log_checkpoints(horizon)
    cell = (base_seed, k, round(eps * 1000))
    policy = make_policy(name, k, (*cell, POLICIES.index(name), run))
    return simulate(policy, means, horizon, (*cell, 999, run), cps)   # common random numbers


def run_cell(k: int, eps: float, horizon: int, runs: int, policies: Sequence[str] = POLICIES,
             base_seed: int = 20110101, jobs: int = 1) -> dict[str, RegretSummary]:
    """R runs of each policy on one (K, ε) cell."""
    tasks = [(p, k, eps, horizon, r, base_seed) for p in policies for r in range(runs)]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            curves = list(pool.map(_one_run, tasks, chunksize=1))
    else:
        curves = [_one_run(t) for t in tasks]
    out = {}
    for i, p in enumerate(policies):
        c = np.array(curves[i * runs:(i + 1) * runs])
        final = c[:, -1]
        out[p] = RegretSummary(p, float(final.mean()), float(final.std(ddof=1) / math.sqrt(runs)),
                               runs, c.mean(axis=0))
    return out
