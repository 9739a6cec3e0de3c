"""RPC load benchmark: banditd against an empty gRPC handler, with the P95 budget check.

Setup. A fresh PostgreSQL database (the local one, ``BANDITD_BENCH_PG_URL``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``; or ``--embedded``: the
embedded default under a temporary data dir) gets the schema and one running
experiment of K arms (default 10) with the four policies. Two servers run as separate
processes: ``banditd serve`` on that database, and the **floor** — the same
``DecisionService`` on a plain ``grpc.aio`` server whose handlers return canned
responses of the same sizes (``benchmarks.load_floor``). This process is the client
(``benchmarks.load_client``: grpc.aio, requests serialised once, 4 channels, its
start-up objects frozen out of the cyclic GC's reach like both servers') and
measures both in the same run. ``--server-root DIR`` runs banditd from another checkout
(before/after comparisons).

This module is the command line and the order of the run; the phases are
``benchmarks.load_phases``, the processes and the CPU accounting
``benchmarks.load_harness``, the targets and the report ``benchmarks.load_report``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from banditd.server.database import create_database, drop_database
from benchmarks import load_harness, load_phases, load_report
from benchmarks.load_harness import (
    ADMIN_URL,
    BENCH_DB_PREFIX,
    POLICIES,
    ROOT,
    Placement,
    Server,
    prepare_database,
    start_banditd,
    start_floor,
    steal_seconds,
    stop_embedded,
)
from benchmarks.load_phases import BATCH_USERS, ServerPair, Settings
from benchmarks.load_report import BUDGET_P95_MS, budget_contended

# Seconds per phase and the closed-loop concurrency sweep, by mode.
MODES = {
    # Open-loop phases stay long enough in short mode that one scheduler stall of a
    # few hundred ms on a shared 2-core CI machine cannot own 5 % of the samples.
    # The closed loop gets more, shorter repeats in full mode: on this shared machine
    # one run's throughput swings widely (other tenants, steal time), so the median of
    # 7 pairs is what makes the max-QPS ratio repeatable. The subset study compares
    # variants of one server, whose throughput moves by ±10-20 % from one second to the
    # next on this VM: many short rotating rounds, so that the median of its paired
    # ratios moves by a few per cent between runs rather than by the swing itself.
    "short": {"unloaded": 1.5, "closed": 2.0, "open": 4.0, "batch": 3.0, "reward": 3.0,
              "asyncpg": 2.0, "warmup": 0.5, "concurrency": (64,), "repeats": 2,
              "closed_repeats": 3, "subset": 1.0, "subset_rounds": 12,
              "reward_concurrency": (64, 128)},
    "full": {"unloaded": 4.0, "closed": 3.0, "open": 6.0, "batch": 6.0, "reward": 6.0,
             "asyncpg": 5.0, "warmup": 1.0, "concurrency": (16, 64, 128), "repeats": 3,
             "closed_repeats": 7, "subset": 2.0, "subset_rounds": 15,
             "reward_concurrency": (64, 128)},
}


def settings_of(args: argparse.Namespace) -> Settings:
    """The run's settings: the mode's (``--short`` or full) and the command line's."""
    mode = "short" if args.short else "full"
    by_mode = dict(MODES[mode])
    if args.reward_concurrency:
        by_mode["reward_concurrency"] = args.reward_concurrency
    return Settings(
        mode=mode, **by_mode, arms=args.arms, channels=args.channels,
        batch_concurrency=args.batch_concurrency,
        memory_experiments=0 if args.skip_memory else args.memory_experiments,
        memory_arms=args.memory_arms, embedded=args.embedded, pin=args.pin,
        server_root=args.server_root.resolve() if args.server_root is not None else ROOT)


def config_of(settings: Settings) -> dict[str, Any]:
    """The report's ``config``: the command line's choices and the mode's settings."""
    by_mode = {key: getattr(settings, key) for key in MODES[settings.mode]}
    return {"arms": settings.arms, "policies": list(POLICIES), "channels": settings.channels,
            "batch_users": BATCH_USERS, "batch_concurrency": settings.batch_concurrency,
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in by_mode.items()}}


# -- the run ---------------------------------------------------------------------------


async def run(settings: Settings, log_dir: Path) -> dict[str, Any]:
    """The whole study on the local PostgreSQL or, with ``--embedded``, on the embedded
    default under a temporary data dir."""
    if not settings.embedded:
        return await run_on(settings, log_dir, ADMIN_URL)
    from banditd.server.database import embedded_database_url

    data_dir = Path(tempfile.mkdtemp(prefix="banditd-bench-"))
    try:
        return await run_on(settings, log_dir, embedded_database_url(data_dir, create=True))
    finally:
        stop_embedded(data_dir)


def _add(out: dict[str, Any], part: dict[str, Any]) -> None:
    """Merge a phase's part into the result: its figures, and its ``phases`` entries."""
    out["phases"].update(part.get("phases", {}))
    out.update((key, value) for key, value in part.items() if key != "phases")


async def run_on(settings: Settings, log_dir: Path, admin_url: str) -> dict[str, Any]:
    """Every phase in order against banditd on a fresh database of ``admin_url``'s
    server and the floor, then bare asyncpg with the servers stopped, then the memory
    case on a database of its own."""
    arms = tuple(f"arm-{i}" for i in range(settings.arms))
    url = await create_database(admin_url, BENCH_DB_PREFIX)
    servers: list[Server] = []
    out: dict[str, Any] = {"mode": settings.mode,
                           "database": "embedded" if settings.embedded else "local"}
    try:
        await prepare_database(url, arms)
        placement = Placement.split() if settings.pin else None
        if placement is not None:
            placement.pin_others([os.getpid()])
        out["placement"] = placement.to_json() if placement else None
        banditd = start_banditd(url, log_dir, root=settings.server_root, admin_url=admin_url,
                                placement=placement)
        servers.append(banditd)
        floor = start_floor(log_dir, placement)
        servers.append(floor)
        out["banditd_startup_seconds"] = round(await banditd.wait_serving(), 2)
        await floor.wait_serving()
        pair = await ServerPair.connect(banditd, floor, settings.channels)
        reqs = load_phases.select_requests(20_000)
        out["phases"] = {}
        print(f"load ({settings.mode}): K={settings.arms}, {settings.channels} channels, "
              f"concurrency {list(settings.concurrency)}", flush=True)
        await load_phases.warm_up(pair, reqs)
        _add(out, await load_phases.unloaded_latency(pair, reqs, settings))
        _add(out, await load_phases.closed_loop_maximum(pair, reqs, settings))
        _add(out, await load_phases.open_loop_levels(pair, reqs, settings, out["select_max_qps"]))
        _add(out, await load_phases.select_batch(pair, settings, out["select_max_qps"]))
        _add(out, await load_phases.subset_select(pair, settings))
        n_ids = load_phases.reward_id_count(settings, out["floor_max_qps"])
        _add(out, await load_phases.reward_sweep(pair, settings, n_ids))
        _add(out, await load_phases.reward_unloaded(pair, settings))
        await pair.close()
        for server in servers:
            server.stop()
        _add(out, await load_phases.bare_asyncpg(url, settings, n_ids,
                                                 out["reward_concurrency_at_max"]))
    finally:
        for server in servers:
            server.stop()
        await drop_database(admin_url, url)
    _add(out, await load_phases.memory(admin_url, log_dir, settings))
    return out


# -- the command line ------------------------------------------------------------------


def exit_status(out: dict[str, Any], mode: str, errors: dict[str, Any]) -> int:
    """1 when the budget fails (unless short mode could not measure it for host
    contention), on RPC errors, or in full mode when any target fails; else 0."""
    budget_ok = out["select_p95_ms_at_50pct"] <= BUDGET_P95_MS
    if not budget_ok and budget_contended(out) and mode == "short":
        # CI's machine could not measure the budget: every attempt ran while the host
        # took CPU away. Short mode then reports the budget as inconclusive rather than
        # failing the build on the host's load; full mode stays strict.
        print("WARN budget_p95_120ms: inconclusive in short mode (host contention in every "
              "attempt); not failing the run", flush=True)
        budget_ok = True
    if not budget_ok or errors:
        return 1
    if mode == "full" and not all(target["ok"] for target in out["targets"]):
        return 1
    return 0


def _concurrencies(text: str) -> tuple[int, ...]:
    """``--reward-concurrency``: comma-separated positive integers, e.g. ``64,128``."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 64,128, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    # The help shows the whole study's documentation: the setup, the phases, the CPU
    # accounting and the targets.
    description = "\n".join(
        doc for doc in (__doc__, load_phases.__doc__, load_harness.__doc__, load_report.__doc__)
        if doc)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true",
                        help="CI mode: shorter phases, one concurrency; fails only on the "
                             "120 ms budget or on errors")
    parser.add_argument("--embedded", action="store_true",
                        help="use the embedded PostgreSQL default (temporary data dir)")
    parser.add_argument("--arms", type=int, default=10, help="arms of the experiment (K)")
    parser.add_argument("--channels", type=int, default=4, help="client gRPC channels")
    parser.add_argument("--batch-concurrency", type=int, default=4,
                        help="concurrent SelectBatch callers in short mode (full mode: the "
                             "best of 2, 4, 8)")
    parser.add_argument("--reward-concurrency", type=_concurrencies, default=None,
                        help="concurrent Reward callers to sweep, comma-separated (default "
                             "64,128); bare asyncpg runs at the best of them")
    parser.add_argument("--memory-experiments", type=int, default=1000,
                        help="experiments of the memory case (0 skips it)")
    parser.add_argument("--memory-arms", type=int, default=1000, help="arms per experiment there")
    parser.add_argument("--server-root", type=Path, default=None,
                        help="run banditd from this checkout instead (before/after comparisons)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory case")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let the OS place the servers, the client and PostgreSQL "
                             "(default: the servers get a core of their own)")
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = settings_of(_parser().parse_args(argv))
    started, steal_before = time.monotonic(), steal_seconds()
    log_dir = Path(tempfile.mkdtemp(prefix="banditd-load-"))
    try:
        out = asyncio.run(run(settings, log_dir))
    except Exception as exc:
        print(f"FAIL load: the benchmark did not complete: {exc!r} (server logs in {log_dir})",
              file=sys.stderr, flush=True)
        return 2
    out["config"] = config_of(settings)
    errors = load_report.publish(out, started, steal_before)
    shutil.rmtree(log_dir, ignore_errors=True)
    return exit_status(out, settings.mode, errors)


if __name__ == "__main__":
    sys.exit(main())
