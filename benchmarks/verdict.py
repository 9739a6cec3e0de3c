"""Verdict-engine study: A/A false positives under daily peeking, power, SRM detection.

Setup. Binary rewards, control rate 10 %, 14 daily looks, a fixed daily
traffic per arm; every experiment is simulated as per-day binomial counts.

* A/A — both arms at 10 %. The engine (``banditd.admin_cli.stats.verdict.reach_verdict``, run on the
  full daily series, so its running-minimum p-value covers all 14 looks) flags an
  experiment when its always-valid p-value ≤ α. Beside it: the naive daily z-test
  (|Δ̂|/SE > z₀.₉₇₅ at any of the 14 looks) and the fixed-horizon z-test at day 14 only.
  Rates carry their Monte Carlo SE √(r(1 − r)/R).
* Power — treatment at 10.5 % (a true 5 % relative lift): the share of experiments the
  engine declares significantly better by day d, the fixed-horizon z-test's power if
  day d had been the planned horizon, and the day by which the engine's planning
  formula (``sequential.required_variance``) expects 80 % power.
* SRM — 10⁶ users assigned with probability 0.505 / 0.495 against a configured 50/50
  split, repeated; detection rate of the χ² test at p < 0.001, and its false-flag rate
  on a true 50/50 assignment.

The per-day curves use the same vectorised mSPRT core as the engine
(``banditd.admin_cli.stats.sequential``); the study checks that the engine and the core flag
exactly the same A/A experiments.

Targets: engine FPR ≤ 5 % + 3 SE; SRM detection ≥ 99 %. ``--short`` (CI) runs
1000 A/A experiments and 500 power / SRM samples; the full run 10 000 / 5000 / 5000 and
exits non-zero when a target fails. Writes ``benchmarks/results/verdict.json`` and
``verdict.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from banditd.admin_cli.stats.sequential import (
    always_valid_halfwidth,
    look_p_value,
    required_variance,
    running_p_value,
    tau2_from_mde,
)
from banditd.admin_cli.stats.srm import srm_test
from banditd.admin_cli.stats.sufficient import SampleStats, pool
from banditd.admin_cli.stats.verdict import PolicyData, VerdictCriteria, reach_verdict

NAME = "verdict"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

BASE_RATE = 0.10
RELATIVE_LIFT = 0.05
DAYS = 14
DAILY_USERS_PER_ARM = 10_000
SRM_USERS = 1_000_000
SRM_SHARE = 0.505
CRITERIA = VerdictCriteria()  # α = 0.05, MDE 5 %, SRM at p < 0.001
SEED = 2017
SIZES = {"short": {"aa": 1000, "power": 500, "srm": 500},
         "full": {"aa": 10_000, "power": 5000, "srm": 5000}}


def rate_se(rate: float, reps: int) -> float:
    """Monte Carlo standard error √(r(1 − r)/R) of a proportion from R replications."""
    return math.sqrt(rate * (1 - rate) / reps)


def clopper_pearson_lower(successes: int, trials: int, level: float = 0.95) -> float:
    """One-sided exact lower confidence bound of a binomial proportion (Clopper & Pearson
    1934); meaningful where the SE is not, e.g. 5000 detections out of 5000."""
    if successes == 0:
        return 0.0
    return float(sps.beta.ppf(1 - level, successes, trials - successes + 1))


def simulate_counts(rng: np.random.Generator, experiments: int, rate_t: float,
                    rate_c: float) -> np.ndarray:
    """Daily successes, shape (experiments, 2 arms [control, treatment], DAYS)."""
    rates = np.array([rate_c, rate_t])[None, :, None]
    return rng.binomial(DAILY_USERS_PER_ARM, rates, size=(experiments, 2, DAYS))


def looks(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Δ̂, plug-in Var(Δ̂) and τ² = (mde·x̄_C)² at each daily look, shape (E, DAYS)."""
    n = DAILY_USERS_PER_ARM * np.arange(1, DAYS + 1)
    m_c = counts[:, 0].cumsum(axis=1) / n
    m_t = counts[:, 1].cumsum(axis=1) / n
    # s²/n with the unbiased Bernoulli variance p̂(1 − p̂)·n/(n − 1), as SampleStats does.
    var = m_t * (1 - m_t) / (n - 1) + m_c * (1 - m_c) / (n - 1)
    return m_t - m_c, var, (CRITERIA.mde_relative * m_c) ** 2


def engine_flags(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``reach_verdict`` on each experiment's daily series: (significant, recommended ship)."""
    split = {"control": 0.5, "treatment": 0.5}
    significant = np.zeros(len(counts), bool)
    ship = np.zeros(len(counts), bool)
    for e, exp in enumerate(counts):
        policies = []
        for arm, name in enumerate(("control", "treatment")):
            daily = tuple(SampleStats.from_binary(int(k), DAILY_USERS_PER_ARM) for k in exp[arm])
            policies.append(PolicyData(name, pool(daily), DAILY_USERS_PER_ARM * DAYS, daily))
        (v,) = reach_verdict(policies, "control", split, CRITERIA, guardrails="healthy").verdicts
        significant[e] = v.absolute_lift.significant
        ship[e] = v.recommendation == "ship"
    return significant, ship


def aa_study(rng: np.random.Generator, experiments: int) -> dict[str, Any]:
    counts = simulate_counts(rng, experiments, BASE_RATE, BASE_RATE)
    diff, var, tau2 = looks(counts)
    p_path = running_p_value(look_p_value(diff, var, tau2), axis=1)
    z = np.abs(diff) / np.sqrt(var)
    z_crit = float(sps.norm.ppf(1 - CRITERIA.alpha / 2))
    msprt_by_day = (p_path <= CRITERIA.alpha).mean(axis=0)
    naive_by_day = np.maximum.accumulate(z > z_crit, axis=1).mean(axis=0)
    significant, _ = engine_flags(counts)
    engine_fpr = float(significant.mean())
    naive = float(naive_by_day[-1])
    fixed = float((z[:, -1] > z_crit).mean())
    return {
        "experiments": experiments,
        "engine_fpr": engine_fpr,
        "engine_fpr_se": rate_se(engine_fpr, experiments),
        "engine_matches_core": bool(np.array_equal(significant, p_path[:, -1] <= CRITERIA.alpha)),
        "naive_daily_z_fpr": naive,
        "naive_daily_z_fpr_se": rate_se(naive, experiments),
        "fixed_horizon_z_fpr_day14": fixed,
        "fixed_horizon_z_fpr_se": rate_se(fixed, experiments),
        "msprt_fpr_by_day": msprt_by_day.tolist(),
        "naive_fpr_by_day": naive_by_day.tolist(),
    }


def power_study(rng: np.random.Generator, experiments: int) -> dict[str, Any]:
    rate_t = BASE_RATE * (1 + RELATIVE_LIFT)
    counts = simulate_counts(rng, experiments, rate_t, BASE_RATE)
    diff, var, tau2 = looks(counts)
    p_path = running_p_value(look_p_value(diff, var, tau2), axis=1)
    better_by_day = ((p_path <= CRITERIA.alpha) & (diff > 0)).mean(axis=0)
    z_crit = float(sps.norm.ppf(1 - CRITERIA.alpha / 2))
    fixed_by_day = (diff / np.sqrt(var) > z_crit).mean(axis=0)
    significant, ship = engine_flags(counts)
    engine_power = float(ship.mean())
    # Planning formula: per-arm users for 80 % power at δ = the true lift.
    delta = rate_t - BASE_RATE
    v_star = required_variance(delta, tau2_from_mde(CRITERIA.mde_relative, BASE_RATE),
                               CRITERIA.alpha, CRITERIA.power)
    per_arm = (rate_t * (1 - rate_t) + BASE_RATE * (1 - BASE_RATE)) / v_star
    h14 = float(always_valid_halfwidth(
        (rate_t * (1 - rate_t) + BASE_RATE * (1 - BASE_RATE)) / (DAYS * DAILY_USERS_PER_ARM),
        tau2_from_mde(CRITERIA.mde_relative, BASE_RATE), CRITERIA.alpha))
    return {
        "experiments": experiments,
        "control_rate": BASE_RATE,
        "treatment_rate": rate_t,
        "true_relative_lift": RELATIVE_LIFT,
        "daily_users_per_arm": DAILY_USERS_PER_ARM,
        "engine_ship_rate_day14": engine_power,
        "engine_ship_rate_se": rate_se(engine_power, experiments),
        "engine_significant_rate_day14": float(significant.mean()),
        "fixed_horizon_z_power_day14": float(fixed_by_day[-1]),
        "always_valid_halfwidth_day14": h14,
        "planned_users_per_arm_for_80pct_power": per_arm,
        "planned_days_for_80pct_power": per_arm / DAILY_USERS_PER_ARM,
        "msprt_power_by_day": better_by_day.tolist(),
        "fixed_horizon_power_by_day": fixed_by_day.tolist(),
    }


def srm_study(rng: np.random.Generator, samples: int) -> dict[str, Any]:
    split = {"control": 0.5, "treatment": 0.5}

    def run(share: float) -> tuple[np.ndarray, np.ndarray]:
        control = rng.binomial(SRM_USERS, share, size=samples)
        results = [srm_test({"control": int(c), "treatment": SRM_USERS - int(c)}, split,
                            CRITERIA.srm_p_threshold) for c in control]
        return (np.array([r.flagged for r in results]),
                np.array([r.statistic for r in results]))

    flagged, chi2 = run(SRM_SHARE)
    null_flagged, null_chi2 = run(0.5)
    detection = float(flagged.mean())
    return {
        "samples": samples,
        "users": SRM_USERS,
        "assigned_share": [SRM_SHARE, 1 - SRM_SHARE],
        "configured_split": [0.5, 0.5],
        "threshold": CRITERIA.srm_p_threshold,
        "detection_rate": detection,
        "detection_rate_se": rate_se(detection, samples),
        "detection_rate_lower_95": clopper_pearson_lower(int(flagged.sum()), samples),
        "median_chi2": float(np.median(chi2)),
        "false_flag_rate_exact_split": float(null_flagged.mean()),
        "_chi2": chi2,
        "_null_chi2": null_chi2,
    }


def plot(aa: dict[str, Any], power: dict[str, Any], srm: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = np.arange(1, DAYS + 1)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    for key, label in (("naive_fpr_by_day", "naive daily z-test"),
                       ("msprt_fpr_by_day", "engine (mSPRT, always valid)")):
        rate = np.array(aa[key])
        se = np.sqrt(rate * (1 - rate) / aa["experiments"])
        ax.plot(days, rate, marker="o", label=label)
        ax.fill_between(days, rate - 2 * se, rate + 2 * se, alpha=0.2)
    ax.axhline(CRITERIA.alpha, color="k", ls="--", lw=1, label=f"α = {CRITERIA.alpha}")
    ax.set(title=f"A/A: P(any false positive by day d), {aa['experiments']} experiments",
           xlabel="day (look)", ylabel="false-positive rate")
    ax.legend()
    ax = axes[1]
    ax.plot(days, power["msprt_power_by_day"], marker="o", label="engine (mSPRT), by day d")
    ax.plot(days, power["fixed_horizon_power_by_day"], marker="s",
            label="fixed-horizon z-test if d were the horizon")
    planned = power["planned_days_for_80pct_power"]
    if planned <= DAYS:
        ax.axvline(planned, color="grey", ls=":", label=f"planned 80 % power: {planned:.1f} d")
    ax.axhline(0.8, color="k", ls="--", lw=1)
    ax.set(title=f"Power: +{RELATIVE_LIFT:.0%} on {BASE_RATE:.0%}, "
                 f"{DAILY_USERS_PER_ARM:,} users/arm/day",
           xlabel="day", ylabel="P(significantly better)", ylim=(0, 1))
    ax.legend()
    ax = axes[2]
    bins = np.linspace(0, max(200.0, float(np.max(srm["_chi2"]))), 60)
    ax.hist(srm["_null_chi2"], bins=bins, alpha=0.6, label="assignment 50/50")
    ax.hist(srm["_chi2"], bins=bins, alpha=0.6, label="assignment 50.5/49.5")
    ax.axvline(float(sps.chi2.isf(CRITERIA.srm_p_threshold, 1)), color="k", ls="--",
               label=f"flag: p < {CRITERIA.srm_p_threshold}")
    ax.set(title=f"SRM χ² at {SRM_USERS:,} users: detection {srm['detection_rate']:.1%}",
           xlabel="χ² (1 df)", ylabel="samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(payload: dict[str, Any]) -> Path:
    try:
        from benchmarks.report import write_report
    except ImportError:  # the shared helper is optional
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{NAME}.json"
        machine = {"python": platform.python_version(), "numpy": np.__version__,
                   "platform": platform.platform()}
        with path.open("w") as fh:
            json.dump({"name": NAME, "machine": machine, **payload}, fh, indent=2)
            fh.write("\n")
        return path
    return write_report(NAME, payload)


def _target(name: str, ok: bool, detail: str) -> None:
    try:
        from benchmarks.report import print_target
    except ImportError:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    else:
        print_target(name, ok, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verdict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true",
                        help="CI mode: 1000 A/A experiments, 500 power/SRM samples (seconds)")
    args = parser.parse_args(argv)
    mode = "short" if args.short else "full"
    sizes = SIZES[mode]
    started = time.monotonic()
    rng_aa, rng_power, rng_srm = (np.random.default_rng(s)
                                  for s in np.random.SeedSequence(SEED).spawn(3))
    print(f"verdict study ({mode}): A/A {sizes['aa']}, power {sizes['power']}, "
          f"SRM {sizes['srm']}", flush=True)
    aa = aa_study(rng_aa, sizes["aa"])
    print(f"  A/A done in {time.monotonic() - started:.1f}s", flush=True)
    power = power_study(rng_power, sizes["power"])
    print(f"  power done in {time.monotonic() - started:.1f}s", flush=True)
    srm = srm_study(rng_srm, sizes["srm"])

    fpr_bound = CRITERIA.alpha + 3 * rate_se(CRITERIA.alpha, aa["experiments"])
    targets = [
        ("engine_fpr", aa["engine_fpr"] <= fpr_bound,
         f"engine FPR {aa['engine_fpr']:.4f} ± {aa['engine_fpr_se']:.4f} ≤ {fpr_bound:.4f} "
         f"(α + 3 SE); naive daily z-test {aa['naive_daily_z_fpr']:.4f} ± "
         f"{aa['naive_daily_z_fpr_se']:.4f}"),
        ("engine_matches_core", aa["engine_matches_core"],
         "reach_verdict() flags exactly the experiments the vectorised mSPRT core flags"),
        ("srm_detection", srm["detection_rate"] >= 0.99,
         f"50.5/49.5 at {SRM_USERS:,} users detected in {srm['detection_rate']:.2%} of "
         f"{srm['samples']} samples (≥ 99 %; one-sided 95 % lower bound "
         f"{srm['detection_rate_lower_95']:.2%}); false flags on 50/50: "
         f"{srm['false_flag_rate_exact_split']:.2%}"),
    ]
    png = RESULTS_DIR / f"{NAME}.png"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot(aa, power, srm, png)
    payload = {
        "mode": mode,
        "config": {
            "base_rate": BASE_RATE, "days": DAYS, "looks": DAYS,
            "daily_users_per_arm": DAILY_USERS_PER_ARM, "criteria": CRITERIA.to_dict(),
            "seed": SEED,
        },
        "aa": aa,
        "power": power,
        "srm": {k: v for k, v in srm.items() if not k.startswith("_")},
        "targets": [{"name": n, "ok": bool(ok), "detail": d} for n, ok, d in targets],
        "figure": str(png.relative_to(RESULTS_DIR.parent.parent)),
        "elapsed_seconds": round(time.monotonic() - started, 2),
    }
    path = _write(payload)
    print(f"  engine power (ship by day {DAYS}) at +{RELATIVE_LIFT:.0%}: "
          f"{power['engine_ship_rate_day14']:.3f} ± {power['engine_ship_rate_se']:.3f}; "
          f"fixed-horizon z at day {DAYS}: {power['fixed_horizon_z_power_day14']:.3f}; "
          f"planned 80 % power after {power['planned_days_for_80pct_power']:.1f} days", flush=True)
    for name, ok, detail in targets:
        _target(name, ok, detail)
    print(f"wrote {path} and {png} in {time.monotonic() - started:.1f}s", flush=True)
    failed = [name for name, ok, _ in targets if not ok]
    return 1 if failed and mode == "full" else 0


if __name__ == "__main__":
    sys.exit(main())
