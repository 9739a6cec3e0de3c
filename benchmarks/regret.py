"""Regret study on the Chapelle & Li (2011, §4.1) setup, and the helpers the tests reuse.

Setup: K Bernoulli arms, the best with mean 0.5 and the other K - 1 with 0.5 - ε;
horizon T; R independent runs per policy with common random numbers (run r of every
policy sees the same reward uniforms). Regret is the pseudo-regret
``Σ_t (μ* - μ_{a_t})``, whose run-to-run spread is smaller than that of realised
regret.

The Lai & Robbins (1985) lower bound on the regret of any consistent policy is
``Σ_{a: Δ_a > 0} Δ_a / KL(μ_a, μ*) · ln T`` with Δ_a = μ* - μ_a and KL the Bernoulli
Kullback–Leibler divergence; the study reports the constant, the bound at T, and
``regret / (constant · ln T)`` (asymptotically ≥ 1; Thompson sampling attains 1,
Kaufmann, Korda & Munos 2012).

``python -m benchmarks.regret [--short]`` runs the grid K ∈ {10, 100} × ε ∈ {0.1, 0.02}
(short: T = 10⁴, full: T = 10⁶), writes ``benchmarks/results/regret.json`` and
``regret.png`` (mean regret against t on a log axis, with the bound).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

POLICIES: tuple[str, ...] = ("thompson", "ucb", "egreedy")
GRID_K: tuple[int, ...] = (10, 100)
GRID_EPS: tuple[float, ...] = (0.1, 0.02)
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


def _plot(cells: list[dict], horizon: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(GRID_K), len(GRID_EPS), figsize=(11, 8), squeeze=False)
    t = log_checkpoints(horizon)
    for cell in cells:
        ax = axes[GRID_K.index(cell["K"])][GRID_EPS.index(cell["epsilon"])]
        for name, res in cell["policies"].items():
            ax.plot(t, res["curve"], label=name)
        const = cell["lai_robbins_constant"]
        ax.plot(t, const * np.log(np.maximum(t, 1)), "k--", label="Lai–Robbins bound")
        ax.set_xscale("log")
        ax.set_title(f"K={cell['K']}, ε={cell['epsilon']}")
        ax.set_xlabel("t")
        ax.set_ylabel("mean regret")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Chapelle & Li (2011) setup, T={horizon:g}, mean of R runs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import RESULTS_DIR, write_report

    parser = argparse.ArgumentParser(prog="python -m benchmarks.regret", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="T = 1e4 (CI); default T = 1e6")
    parser.add_argument("--runs", type=int, default=None, help="runs per policy and cell")
    parser.add_argument("--horizon", type=int, default=None, help="override T")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    args = parser.parse_args(argv)
    horizon = args.horizon or (10_000 if args.short else 1_000_000)
    runs = args.runs or (50 if args.short else 20)
    started = time.monotonic()
    cells = []
    print(f"{'K':>4} {'eps':>5} {'policy':>9} {'regret':>10} {'± SE':>8} {'LR const':>9} "
          f"{'bound':>8} {'regret/bound':>12}")
    for k in GRID_K:
        for eps in GRID_EPS:
            means = chapelle_li_means(k, eps)
            const = lai_robbins_constant(means)
            bound = const * math.log(horizon)
            res = run_cell(k, eps, horizon, runs, jobs=args.jobs)
            cell = {"K": k, "epsilon": eps, "lai_robbins_constant": const,
                    "bound_at_T": bound, "policies": {}}
            for name, s in res.items():
                cell["policies"][name] = {
                    "mean_regret": s.mean, "se": s.se, "runs": s.runs,
                    "regret_over_bound": s.mean / bound, "curve": s.curve,
                }
                print(f"{k:>4} {eps:>5} {name:>9} {s.mean:>10.1f} {s.se:>8.1f} {const:>9.1f} "
                      f"{bound:>8.1f} {s.mean / bound:>12.3f}", flush=True)
            cells.append(cell)
    elapsed = time.monotonic() - started
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    png = RESULTS_DIR / "regret.png"
    _plot(cells, horizon, png)
    path = write_report("regret", {
        "mode": "short" if args.short else "full", "horizon": horizon, "runs": runs,
        "checkpoints": log_checkpoints(horizon), "elapsed_s": elapsed, "plot": png.name,
        "policy_parameters": {"thompson": {"alpha0": 1.0, "beta0": 1.0},
                              "ucb": {"c": math.sqrt(2.0)},
                              "egreedy": {"epsilon": 0.1, "decay": 0.0}},
        "cells": cells,
    })
    print(f"wrote {path} and {png} in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
