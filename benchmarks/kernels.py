"""Kernel micro-benchmarks against baselines measured in the same run.

``python -m benchmarks.kernels [--short]`` writes ``benchmarks/results/kernels.json``:
for K in 10, 100, 1000, nanoseconds per call of

- ``thompson_select_ns``, ``ucb_select_ns``, ``egreedy_select_ns``: ``policy.select()``
  (all arms, propensity cache warm), a Python-level call with the state in place;
- ``thompson_subset_select_ns``: Thompson ``select(C)`` over random subsets of
  ``min(10, K // 2)`` arms from a warm subset cache (the loop's ``next`` over the
  prepared subsets included), and ``thompson_refresh_ms`` /
  ``thompson_refresh_subsets_ms``: one ``refresh_propensities()`` after an update,
  without and with a subset cache (the ranking's share of a refresh);
- ``update_ns``: ``policy.update(arm, reward)``;
- ``raw_beta_draws_ns``: the floor, K numpy C ``random_beta`` draws with the same
  posterior parameters in a tight C loop (``banditd.core_ext.policies._thompson.raw_beta_draws``);
  ``thompson_over_raw`` is the median ratio of alternating select / floor batches;
- ``numpy_thompson_ns``: ``Generator.beta(a, b).argmax()``;
- ``mabwiser_{thompson,ucb,egreedy}_predict_ns`` and ``mabwiser_partial_fit_ns`` (one
  event), MABWiser fitted on the same kind of history.

Each figure is the median over several batches of ``time.perf_counter_ns`` around a
loop of many calls (the loop's own cost, ~15 ns, is included: it is what a caller
pays). Targets are printed as PASS/FAIL lines; the full mode exits 1
when one fails, the short mode (fewer, shorter batches) only on errors.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

KS: tuple[int, ...] = (10, 100, 1000)


def _batch_size(fn: Callable[[], object], batch_s: float) -> int:
    """Number of calls of ``fn`` that take about ``batch_s`` seconds."""
    n = 1
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        dt = time.perf_counter_ns() - t0
        if dt >= batch_s * 1e9 / 4 or n >= 1 << 24:
            return max(1, int(n * batch_s * 1e9 / max(dt, 1)))
        n *= 4


def _batch(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def time_calls(fn: Callable[[], object], batch_s: float, batches: int) -> float:
    """Median over ``batches`` of the ns per call of ``fn`` in a batch of ~batch_s."""
    n = _batch_size(fn, batch_s)
    return statistics.median(_batch(fn, n) for _ in range(batches))


def time_select_and_floor(select: Callable[[], object], k: int, rng, a: np.ndarray,
                          b: np.ndarray, batch_s: float,
                          batches: int) -> tuple[float, float, float]:
    """(select ns, floor ns, median of per-pair ratios). The floor is one round of K raw
    Beta draws in C, timed over many rounds in one call. Select and floor batches
    alternate, so a change in machine load hits both sides of each ratio."""
    from banditd.core_ext.policies._thompson import raw_beta_draws

    n = _batch_size(select, batch_s)
    reps = max(1, int(batch_s * 1e9 / (30.0 * k)))   # ~30 ns per draw
    sel, floor, ratio = [], [], []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        raw_beta_draws(rng, a, b, reps)
        floor.append((time.perf_counter_ns() - t0) / reps)
        sel.append(_batch(select, n))
        ratio.append(sel[-1] / floor[-1])
    return statistics.median(sel), statistics.median(floor), statistics.median(ratio)


def state(k: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """A mid-experiment state: 100–5000 pulls per arm, success rates 2–50 %."""
    g = np.random.default_rng([seed, k])
    pulls = g.integers(100, 5000, size=k).astype(np.float64)
    reward_sum = g.binomial(pulls.astype(np.int64), g.uniform(0.02, 0.5, size=k)).astype(float)
    return pulls, reward_sum


def bench_k(k: int, batch_s: float, batches: int) -> dict[str, float]:
    from banditd.core_ext.policies import EpsilonGreedyPolicy, Rng, ThompsonPolicy, UCB1Policy

    pulls, reward_sum = state(k)
    rng = Rng(seed=k)
    out: dict[str, float] = {}
    ts = ThompsonPolicy(pulls.copy(), reward_sum.copy(), rng)
    ts.refresh_propensities()
    a = 1.0 + reward_sum
    b = 1.0 + pulls - reward_sum
    (out["thompson_select_ns"], out["raw_beta_draws_ns"],
     out["thompson_over_raw"]) = time_select_and_floor(ts.select, k, rng, a, b, batch_s, batches)
    out.update(bench_subsets(k, pulls, reward_sum, rng, batch_s, batches))
    out["ucb_select_ns"] = time_calls(
        UCB1Policy(pulls.copy(), reward_sum.copy(), rng).select, batch_s, batches)
    out["egreedy_select_ns"] = time_calls(
        EpsilonGreedyPolicy(pulls.copy(), reward_sum.copy(), rng).select, batch_s, batches)
    upd = ThompsonPolicy(pulls.copy(), reward_sum.copy(), rng).update
    arm = k // 2
    out["update_ns"] = time_calls(lambda: upd(arm, 1.0), batch_s, batches)
    gen = np.random.default_rng(k)
    out["numpy_thompson_ns"] = time_calls(lambda: gen.beta(a, b).argmax(), batch_s, batches)
    out.update(bench_mabwiser(k, pulls, reward_sum, batch_s, batches))
    return out


def bench_subsets(k: int, pulls: np.ndarray, reward_sum: np.ndarray, rng, batch_s: float,
                  batches: int) -> dict[str, float]:
    """Thompson over candidate subsets: select from the subset cache, and the refresh
    with and without one (median of 3 refreshes each)."""
    from banditd.core_ext.policies import ThompsonPolicy

    out: dict[str, float] = {}
    ts = ThompsonPolicy(pulls.copy(), reward_sum.copy(), rng)
    ts.refresh_propensities(subsets=True)
    g = np.random.default_rng([k, 99])
    subsets = itertools.cycle([g.choice(k, min(10, k // 2), replace=False).astype(np.intp)
                               for _ in range(256)])
    out["thompson_subset_select_ns"] = time_calls(lambda: ts.select(next(subsets)), batch_s,
                                                  batches)
    for key, subsets_too in (("thompson_refresh_ms", False), ("thompson_refresh_subsets_ms", True)):
        kernel = ThompsonPolicy(pulls.copy(), reward_sum.copy(), rng)
        kernel.refresh_propensities(subsets=subsets_too)
        times = []
        for _ in range(3):
            kernel.update(0, 1.0)
            t0 = time.perf_counter_ns()
            kernel.refresh_propensities()
            times.append((time.perf_counter_ns() - t0) / 1e6)
        out[key] = statistics.median(times)
    return out


def bench_mabwiser(k: int, pulls: np.ndarray, reward_sum: np.ndarray, batch_s: float,
                   batches: int) -> dict[str, float]:
    """MABWiser (Strong et al. 2019) fitted on a binary history with ~the same means."""
    from mabwiser.mab import MAB, LearningPolicy

    g = np.random.default_rng(k)
    arms = list(range(k))
    n_hist = 20 * k
    decisions = g.integers(0, k, size=n_hist)
    rewards = (g.random(n_hist) < (reward_sum / pulls)[decisions]).astype(np.int64)
    out = {}
    policies = {
        "thompson": LearningPolicy.ThompsonSampling(),
        "ucb": LearningPolicy.UCB1(alpha=1.0),
        "egreedy": LearningPolicy.EpsilonGreedy(epsilon=0.1),
    }
    for name, lp in policies.items():
        mab = MAB(arms, lp, seed=k)
        mab.fit(decisions, rewards)
        out[f"mabwiser_{name}_predict_ns"] = time_calls(mab.predict, batch_s, batches)
        if name == "thompson":
            out["mabwiser_partial_fit_ns"] = time_calls(
                lambda mab=mab: mab.partial_fit([1], [1]), batch_s, batches)
    return out


def check_targets(results: dict[str, dict[str, float]]) -> bool:
    """Print the targets as PASS/FAIL lines; True when all pass."""
    from benchmarks.report import print_target

    ok_all = True

    def target(name: str, ok: bool, detail: str) -> None:
        nonlocal ok_all
        ok_all &= ok
        print_target(name, ok, detail)

    for k, limit in (("10", 1.5), ("100", 1.2), ("1000", 1.2)):
        r = results[k]
        ratio = r["thompson_over_raw"]
        target(f"thompson_vs_raw_beta_K{k}", ratio <= limit,
               f"select {r['thompson_select_ns']:.0f} ns vs raw K Beta draws "
               f"{r['raw_beta_draws_ns']:.0f} ns: {ratio:.2f}x (median of paired batches; "
               f"limit {limit}x)")
    r = results["10"]
    speedup = r["numpy_thompson_ns"] / r["thompson_select_ns"]
    target("thompson_vs_numpy_K10", speedup >= 10,
           f"{speedup:.1f}x faster than numpy beta().argmax() {r['numpy_thompson_ns']:.0f} ns "
           "(need >= 10x)")
    speedup = r["mabwiser_thompson_predict_ns"] / r["thompson_select_ns"]
    target("thompson_vs_mabwiser_K10", speedup >= 15,
           f"{speedup:.1f}x faster than MABWiser TS predict "
           f"{r['mabwiser_thompson_predict_ns']:.0f} ns (need >= 15x)")
    for k, r in results.items():
        speedup = r["mabwiser_partial_fit_ns"] / r["update_ns"]
        target(f"update_vs_mabwiser_partial_fit_K{k}", speedup >= 500,
               f"update {r['update_ns']:.0f} ns, {speedup:.0f}x faster than MABWiser "
               f"partial_fit {r['mabwiser_partial_fit_ns']:.0f} ns (need >= 500x)")
    return ok_all


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_report

    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true",
                        help="CI mode: shorter batches; report targets but fail only on errors")
    args = parser.parse_args(argv)
    batch_s, batches = (0.02, 5) if args.short else (0.1, 9)
    started = time.monotonic()
    results: dict[str, dict[str, float]] = {}
    for k in KS:
        results[str(k)] = bench_k(k, batch_s, batches)
        print(f"K={k}: " + ", ".join(f"{n}={v:.0f}" if n.endswith("_ns") else f"{n}={v:.3f}"
                                     for n, v in results[str(k)].items()),
              flush=True)
    ok = check_targets(results)
    path = write_report("kernels", {
        **results,
        "mode": "short" if args.short else "full",
        "batch_seconds": batch_s, "batches": batches,
        "all_targets_pass": ok, "elapsed_s": time.monotonic() - started,
    })
    print(f"wrote {path}")
    return 0 if ok or args.short else 1


if __name__ == "__main__":
    sys.exit(main())
