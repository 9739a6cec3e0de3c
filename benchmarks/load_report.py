"""The load study's report: its targets, ``benchmarks/results/load.json``, ``load.png``
and the PASS/FAIL and summary lines printed at the end of the run.

Targets (checked in full mode): ``select_vs_floor_qps`` ≥ 0.9;
``select_unloaded_p50_ms`` ≤ 1.15 x floor's; Select P95 at 50 % load ≤ 6 ms and its
P99 ≤ 1.5 x the floor's at the same rate; ``batch_select_decisions_per_s`` ≥ 20 x
``select_max_qps``; Select over a 10- and a 5-arm subset ≥ 0.9 x Select over all arms
(``select_subset_qps_ratio``, paired); ``reward_acks_per_s`` ≥ 0.8 x
``floor_max_qps``; the memory case < 256 MB RSS. The budget (both modes): Select P95 at
50 % load ≤ 120 ms, else exit 1; ``--short`` (CI) runs shorter phases and fails only on
the budget or on errors. The 50 % level is measured again (3 attempts in all) while the
hypervisor steals 0.1 cores or more during it; if every attempt was contended, short
mode reports the budget as inconclusive instead of failing on the host's load. Writes
``benchmarks/results/load.json`` and
``load.png``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.load_harness import ROOT, STEAL_WARN_CORES, cpu_probe, machine, steal_seconds
from benchmarks.report import RESULTS_DIR, machine_info, print_target, write_report

NAME = "load"
BUDGET_P95_MS = 120.0


def targets_of(out: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The targets as ``(name, ok, detail)``, the budget last."""
    p95_50 = out["select_p95_ms_at_50pct"]
    rows = [
        ("select_vs_floor_qps", out["select_vs_floor_qps"] >= 0.9,
         f"{out['select_max_qps']:.0f} / {out['floor_max_qps']:.0f} qps = "
         f"{out['select_vs_floor_qps']:.3f} (≥ 0.9); median of the paired runs "
         f"{out['select_vs_floor_qps_paired_median']:.3f}"),
        ("select_unloaded_p50", out["select_unloaded_p50_ms"] <= 1.15 * out[
            "floor_unloaded_p50_ms"],
         f"{out['select_unloaded_p50_ms']:.3f} ms vs floor {out['floor_unloaded_p50_ms']:.3f} "
         f"ms = {out['select_unloaded_p50_ms'] / out['floor_unloaded_p50_ms']:.3f}x (≤ 1.15x)"),
        ("select_p95_at_50pct", p95_50 <= 6.0,
         f"{p95_50:.3f} ms at {out['phases']['select_open']['50']['target_qps']:.0f}/s (≤ 6 ms; "
         f"floor {out['floor_p95_ms_at_50pct']:.3f} ms)"),
        ("select_p99_at_50pct_vs_floor",
         out["select_p99_ms_at_50pct"] <= 1.5 * out["floor_p99_ms_at_50pct"],
         f"{out['select_p99_ms_at_50pct']:.3f} ms vs floor {out['floor_p99_ms_at_50pct']:.3f} "
         f"ms at the same rate = "
         f"{out['select_p99_ms_at_50pct'] / out['floor_p99_ms_at_50pct']:.2f}x (≤ 1.5x)"),
        ("batch_vs_single", out["batch_select_decisions_per_s"] >= 20 * out["select_max_qps"],
         f"{out['batch_select_decisions_per_s']:.0f} decisions/s = "
         f"{out['batch_vs_single_select']:.1f}x single Select (≥ 20x)"),
        ("select_subset_vs_full", min(out["select_subset_qps_ratio"].values()) >= 0.9,
         f"Thompson, {out['phases']['select_subset']['arms']} arms: all arms "
         f"{out['select_subset_qps']['full']:.0f}/s; " + "; ".join(
             f"{size} arms {out['select_subset_qps'][size]:.0f}/s = {ratio:.3f}x"
             for size, ratio in out["select_subset_qps_ratio"].items())
         + " (median of the paired repeats; ≥ 0.9x)"),
        ("reward_vs_floor", out["reward_acks_per_s"] >= 0.8 * out["floor_max_qps"],
         f"{out['reward_acks_per_s']:.0f} acks/s = "
         f"{out['reward_acks_per_s'] / out['floor_max_qps']:.3f}x floor max qps (≥ 0.8x) at "
         f"{out['reward_concurrency_at_max']} callers; p50 {out['reward_p50_ms']:.2f} ms, "
         f"p99 {out['reward_p99_ms']:.2f} ms"),
    ]
    mem = out.get("memory")
    if mem:
        rows.append(("memory", mem["rss_mb"] < 256,
                     f"{mem['experiments']} x {mem['arms']} arms x {mem['policies']} policies "
                     f"over one arm catalogue: {mem['rss_mb']:.0f} MB RSS (< 256 MB), SERVING "
                     f"after {mem['startup_seconds']:.1f} s"))
    rows.append(("budget_p95_120ms", p95_50 <= BUDGET_P95_MS,
                 f"Select P95 at 50 % load {p95_50:.3f} ms (≤ {BUDGET_P95_MS:g} ms)"))
    return rows


def budget_contended(out: dict[str, Any]) -> bool:
    """Whether the hypervisor stole STEAL_WARN_CORES or more during the budget's phase
    (the least contended of its attempts)."""
    return out["phases"]["select_open"]["50"]["steal_cores"] >= STEAL_WARN_CORES


def _flat_phases(phases: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, value in phases.items():
        if isinstance(value, dict) and "errors" in value:
            yield name, value
        elif isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, dict) and "errors" in inner:
                    yield f"{name}.{sub}", inner


def rpc_errors(phases: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Error codes by phase: all of them, and those that fail the run."""
    all_errors = {name: s["error_codes"] for name, s in _flat_phases(phases) if s.get("errors")}
    # At 75 % of a maximum measured on a noisy machine the open loop can run past
    # saturation; gRPC then cancels calls queued too long (CANCELLED, the empty-handler
    # floor alike). Those are reported, not failures; any other error fails the run.
    errors = {name: codes for name, codes in all_errors.items()
              if not (name.endswith("_open.75") and set(codes) == {"CANCELLED"})}
    return all_errors, errors


def plot(out: dict[str, Any], path: Path) -> None:
    """Select latency against throughput for banditd and the floor, beside the
    throughputs of every phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    for name, color in (("select", "tab:blue"), ("floor", "tab:gray")):
        label = "banditd Select" if name == "select" else "floor (empty handler)"
        points = sorted((s["qps"], s["p50_ms"], s["p95_ms"], s["p99_ms"])
                        for s in out["phases"][f"{name}_open"].values())
        x = [p[0] for p in points]
        for i, (q, style, marker) in enumerate((("p50", "-", "o"), ("p95", "--", "s"),
                                                ("p99", ":", "^"))):
            ax.plot(x, [p[i + 1] for p in points], ls=style, marker=marker, color=color,
                    label=f"{label} {q} (open loop)")
        for c, s in out["phases"][f"{name}_closed"].items():  # saturated: C callers
            ax.scatter([s["qps"]], [s["p50_ms"]], marker="x", color=color, s=50,
                       label=f"{label} p50, closed loop" if c == next(
                           iter(out["phases"][f"{name}_closed"])) else None)
            ax.annotate(f"C={c}", (s["qps"], s["p50_ms"]), fontsize=7, color=color,
                        xytext=(3, 3), textcoords="offset points")
    ax.axhline(6.0, color="tab:orange", lw=1, label="target: p95 ≤ 6 ms at 50 %")
    ax.set_yscale("log")
    ax.set(xlabel="throughput (calls/s): open loop at 25/50/75 % of banditd's max; x: closed "
                  "loop with C callers",
           ylabel="latency from intended send (ms)",
           title=f"Select latency vs throughput ({out['mode']}, K={out['config']['arms']}, "
                 f"{out['machine']['cores']} cores shared)")
    ax.legend(fontsize=8)
    ax = axes[1]
    bars = [("Select\nmax", out["select_max_qps"]), ("floor\nmax", out["floor_max_qps"]),
            ("Reward\nacks", out["reward_acks_per_s"]),
            ("asyncpg\nrow txn", out["asyncpg_commit_rows_per_s"]),
            ("asyncpg\ngroup", out["asyncpg_group_commit_rows_per_s"]),
            ("Batch\n/20", out["batch_select_decisions_per_s"] / 20)]
    ax.bar([b[0] for b in bars], [b[1] for b in bars],
           color=["tab:blue", "tab:gray", "tab:green", "tab:olive", "tab:olive", "tab:purple"])
    ax.axhline(0.9 * out["floor_max_qps"], color="k", ls="--", lw=1, label="0.9 x floor")
    ax.set(ylabel="per second", title="throughput (batch decisions / 20)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_summary(out: dict[str, Any], targets: list[tuple[str, bool, str]], steal: float,
                   all_errors: dict[str, Any], errors: dict[str, Any]) -> None:
    """The targets' PASS/FAIL lines, then the context: INFO, WARN and the errors."""
    for name, ok, detail in targets:
        print_target(name, ok, detail)
    if "memory_distinct_arms" in out:  # context, not a target
        mem = out["memory_distinct_arms"]
        print(f"INFO memory_distinct_arms: the same with distinct arm names per experiment: "
              f"{mem['rss_mb']:.0f} MB RSS, SERVING after {mem['startup_seconds']:.1f} s",
              flush=True)
    print(f"INFO steal: the hypervisor took {steal:.2f} of {os.cpu_count()} cores on average "
          "during the run (per phase: steal_cores in load.json)", flush=True)
    if budget_contended(out):
        budget_phase = out["phases"]["select_open"]["50"]
        floor_phase = out["phases"]["floor_open"]["50"]
        print(f"WARN steal: {budget_phase['steal_cores']:.2f} cores were taken by the hypervisor "
              f"during the least contended of {budget_phase['attempts']} attempts at the 50 % "
              "open loop; its latencies measure the host's contention as much as banditd (the "
              f"empty-handler floor's P95 there: {floor_phase['p95_ms']:.1f} ms)", flush=True)
    for name in all_errors.keys() - errors.keys():
        print(f"INFO {name}: {all_errors[name]['CANCELLED']} calls CANCELLED by gRPC past "
              "saturation (not counted as errors)", flush=True)
    if errors:
        print_target("errors", False, f"RPC errors: {errors}")


def publish(out: dict[str, Any], started: float, steal_before: float) -> dict[str, Any]:
    """Complete ``out`` (errors, machine, targets, figure, elapsed time) for a run begun
    at ``started`` (monotonic) with ``steal_before`` steal seconds, write load.json and
    load.png and print the summary. Returns the RPC errors that fail the run."""
    all_errors, errors = rpc_errors(out["phases"])
    out["errors"] = all_errors
    steal = (steal_seconds() - steal_before) / (time.monotonic() - started)
    out["machine"] = {**machine_info(), **machine(), "cpu_probe": cpu_probe(),
                      "steal_cores_during_run": round(steal, 3)}
    targets = targets_of(out)
    out["targets"] = [{"name": n, "ok": bool(ok), "detail": d} for n, ok, d in targets]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    png = RESULTS_DIR / f"{NAME}.png"
    plot(out, png)
    out["figure"] = str(png.relative_to(ROOT))
    out["elapsed_seconds"] = round(time.monotonic() - started, 1)
    path = write_report(NAME, out)
    _print_summary(out, targets, steal, all_errors, errors)
    print(f"wrote {path} and {png} in {time.monotonic() - started:.1f}s", flush=True)
    return errors
