"""Regret study on the Chapelle & Li (2011, §4.1) setup.

The simulation and the Lai–Robbins bound are :mod:`banditd.admin_cli.offline.regret`'s;
the study reports, per cell, each policy's mean regret, the bound's constant, the bound
at T, and ``regret / (constant · ln T)``.

``python -m benchmarks.regret [--short]`` runs the grid K ∈ {10, 100} × ε ∈ {0.1, 0.02}
(short: T = 10⁴, full: T = 10⁶), writes ``benchmarks/results/regret.json`` and
``regret.png`` (mean regret against t on a log axis, with the bound).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from banditd.admin_cli.offline.regret import (
    chapelle_li_means,
    lai_robbins_constant,
    log_checkpoints,
    run_cell,
)

GRID_K: tuple[int, ...] = (10, 100)
GRID_EPS: tuple[float, ...] = (0.1, 0.02)


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
