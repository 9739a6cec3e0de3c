"""Scale-out study: worker processes on one port, and servers converging on each other.

``python -m benchmarks.scale [--short]`` writes ``benchmarks/results/scale.json``.

1. **Workers.** ``banditd serve --workers 1`` and ``--workers 2`` on one database, each
   behind a client target of 16 channels (``SO_REUSEPORT`` hands connections, not
   calls, to workers, so a client needs several connections to reach them all),
   closed-loop Select at 64 callers, the two alternating over the repeats. Per phase:
   Select/s, and the server's CPU — the supervisor and every worker, from ``/proc`` —
   as cores; decisions per server CPU-second is Select/s over cores. Target:
   **decisions per CPU-second with 2 workers ≥ 0.9 × with 1** (workers must not cost
   each other). On two cores shared with the client and PostgreSQL the aggregate
   Select/s cannot double; it is reported beside, both ways.
2. **Convergence.** Three servers on one database (sync interval 1 s), first without
   Redis, then with ``--redis-url``: decisions selected across the three, rewarded by 64
   closed-loop callers spread over the three (a reward mostly lands on a server that
   did not sign its id), as in the load study's Reward phase. The adoption lag is each
   server's own ``banditd_replica_sync_lag_seconds`` (commit transaction's time to
   adoption), the histograms' growth over the phase summed over the three servers, by
   path: ``postgres`` without Redis, ``redis`` with. A Redis message carries one
   commit, so its lag is that commit's; a poll adopts a cell once for all the commits
   since the last poll and is observed from the newest of them, so under steady load
   the poll's figures understate its oldest reward's wait, which is up to one interval
   longer. Quantiles are interpolated within
   buckets as PromQL's ``histogram_quantile`` does; the share of adoptions within
   100 ms is exact (a bucket bound). Target with Redis: **p99 ≤ 100 ms**, i.e. at least
   99 % of adoptions within the 0.1 s bucket.
3. **What the primary pays.** One server at its closed-loop maximum, Select (64
   callers), then Reward (128): per call, the CPU of every PostgreSQL process and the
   WAL written — the inputs of ``docs/scaling.md``'s arithmetic (no target).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from banditd.server.database import create_database, drop_database
from benchmarks.load_client import Target, closed_loop
from benchmarks.load_harness import (
    ADMIN_URL,
    BENCH_DB_PREFIX,
    Server,
    free_port,
    prepare_database,
    settle,
    start_banditd,
)
from benchmarks.load_phases import preselect_decisions, reward_requests, select_requests
from benchmarks.report import print_target, write_report

REDIS_URL = os.environ.get("BANDITD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LAG_METRIC = "banditd_replica_sync_lag_seconds"
CALLERS = 64
WORKER_CHANNELS = 16
EFFICIENCY_TARGET = 0.9
REDIS_P99_TARGET_S = 0.100


@dataclass(frozen=True)
class Settings:
    mode: str
    select_seconds: float
    reward_seconds: float
    repeats: int
    warmup: float = 0.5


MODES = {"short": Settings("short", 3.0, 4.0, 2), "full": Settings("full", 8.0, 10.0, 4)}


# -- process-tree CPU and metrics ---------------------------------------------------------


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and every process descended from it."""
    parent_of: dict[int, int] = {}
    cpu_of: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_of[int(entry)] = int(fields[1])
        cpu_of[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid, cpu in cpu_of.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parent_of:
            ancestor = parent_of[ancestor]
        if ancestor == root:
            total += cpu
    return total


def scrape_lag(metrics_port: int) -> dict[str, np.ndarray]:
    """Cumulative bucket counts of the lag histogram by path (``le`` ascending, +Inf
    last)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        if family.name != LAG_METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{LAG_METRIC}_bucket":
                buckets[sample.labels["path"]].append((float(sample.labels["le"]), sample.value))
    return {path: np.array(sorted(rows)) for path, rows in buckets.items()}


def lag_quantiles(bounded: np.ndarray) -> dict[str, Any]:
    """p50/p99 (interpolated within buckets, as ``histogram_quantile``) and the exact
    share within 100 ms of a histogram given as rows ``(le, cumulative count)``."""
    bounds, cumulative = bounded[:, 0], bounded[:, 1]
    total = cumulative[-1]
    if total == 0:
        return {"adoptions": 0}

    def quantile(q: float) -> float:
        rank = q * total
        i = int(np.searchsorted(cumulative, rank))
        if np.isinf(bounds[i]):
            return float(bounds[i - 1])  # beyond the last finite bound: that bound
        lower = bounds[i - 1] if i > 0 else 0.0
        below = cumulative[i - 1] if i > 0 else 0.0
        return float(lower + (bounds[i] - lower) * (rank - below) / (cumulative[i] - below))

    within = cumulative[np.searchsorted(bounds, REDIS_P99_TARGET_S)]
    return {"adoptions": int(total), "p50_ms": round(quantile(0.50) * 1e3, 2),
            "p99_ms": round(quantile(0.99) * 1e3, 2),
            "share_within_100ms": round(float(within / total), 4)}


# -- 1. workers ---------------------------------------------------------------------------


async def workers_phase(url: str, log_dir: Path, settings: Settings) -> dict[str, Any]:
    servers = {n: start_banditd(url, log_dir, extra=("--workers", str(n))) for n in (1, 2)}
    targets: dict[int, Target] = {}
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    try:
        for server in servers.values():
            await server.wait_serving()
        reqs = select_requests(20_000)
        for n, server in servers.items():
            targets[n] = Target(server.address, WORKER_CHANNELS)
            await targets[n].ready()
            await closed_loop(targets[n], "Select", reqs, concurrency=CALLERS, duration=1.0)
        for repeat in range(settings.repeats):
            for n in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                runs[n].append(await _measure_select(servers[n], targets[n], reqs, settings))
                print(f"  workers {n}: {runs[n][-1]}", flush=True)
    finally:
        for target in targets.values():
            await target.close()
        for server in servers.values():
            server.stop()
    out: dict[str, Any] = {}
    for n, repeats in runs.items():
        out[f"workers_{n}"] = {
            "select_qps": round(float(np.median([r["qps"] for r in repeats])), 1),
            "server_cpu_cores": round(float(np.median([r["cores"] for r in repeats])), 3),
            "decisions_per_cpu_second": round(
                float(np.median([r["qps"] / r["cores"] for r in repeats])), 1),
            "errors": int(sum(r["errors"] for r in repeats)),
            "repeats": repeats,
        }
    out["efficiency_2_vs_1"] = round(out["workers_2"]["decisions_per_cpu_second"]
                                     / out["workers_1"]["decisions_per_cpu_second"], 3)
    out["qps_2_vs_1"] = round(out["workers_2"]["select_qps"] / out["workers_1"]["select_qps"], 3)
    return out


async def _measure_select(server: Server, target: Target, reqs: list[bytes],
                          settings: Settings) -> dict[str, float]:
    await settle()
    cpu0, wall0 = tree_cpu_seconds(server.pid), time.perf_counter()
    result = await closed_loop(target, "Select", reqs, concurrency=CALLERS,
                               duration=settings.select_seconds, warmup=settings.warmup)
    cores = (tree_cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - wall0)
    return {"qps": round(len(result.latencies) / result.seconds, 1), "cores": round(cores, 3),
            "errors": result.errors}


# -- 2. convergence -------------------------------------------------------------------------


async def convergence_phase(url: str, log_dir: Path, settings: Settings,
                            redis_url: str | None) -> dict[str, Any]:
    ports = [free_port() for _ in range(3)]
    extra = ("--sync-interval", "1", *(("--redis-url", redis_url) if redis_url else ()))
    servers = [start_banditd(url, log_dir, extra=(*extra, "--metrics-port", str(p)))
               for p in ports]
    target = None
    try:
        for server in servers:
            await server.wait_serving()
        ids: list[str] = []
        per_server = int(4000 * (settings.reward_seconds + settings.warmup)) // 3 + 1000
        for server in servers:
            signer = Target(server.address, 2)
            await signer.ready()
            ids += await preselect_decisions(signer, per_server)
            await signer.close()
        random.Random(11).shuffle(ids)
        target = Target.over([s.address for s in servers])
        await target.ready()
        await settle()
        before = [scrape_lag(p) for p in ports]
        result = await closed_loop(target, "Reward", reward_requests(ids), concurrency=CALLERS,
                                   duration=settings.reward_seconds, warmup=settings.warmup,
                                   max_calls=len(ids))
        await asyncio.sleep(2.5)  # the last rewards reach every server (poll: 1 s)
        after = [scrape_lag(p) for p in ports]
    finally:
        if target is not None:
            await target.close()
        for server in servers:
            server.stop()
    out: dict[str, Any] = {"reward_acks_per_s": round(len(result.latencies) / result.seconds, 1),
                           "reward_errors": result.errors}
    for path in sorted({path for scrape in after for path in scrape}):
        out[f"lag_{path}"] = lag_quantiles(_growth(before, after, path))
    return out


def _growth(before: list[dict[str, np.ndarray]], after: list[dict[str, np.ndarray]],
            path: str) -> np.ndarray:
    """The histogram of ``path`` observed between the two scrapes, summed over servers."""
    bounds = next(scrape[path][:, 0] for scrape in after if path in scrape)
    grown = np.zeros(len(bounds))
    for b, a in zip(before, after, strict=True):
        if path in a:
            grown += a[path][:, 1] - (b[path][:, 1] if path in b else 0.0)
    return np.column_stack([bounds, grown])


# -- 3. what one PostgreSQL primary pays per decision and per reward -------------------------


async def primary_cost_phase(url: str, log_dir: Path, settings: Settings) -> dict[str, Any]:
    """One server at its closed-loop maximum, Select then Reward: the rate, and per call
    the PostgreSQL CPU (every process of the local PostgreSQL server: backends, WAL
    writer, checkpointer) and the WAL it wrote — the figures ``docs/scaling.md`` scales
    to a dedicated primary."""
    server = start_banditd(url, log_dir)
    target = None
    try:
        await server.wait_serving()
        postmaster = await _postmaster_pid(url)
        target = Target(server.address, 4)
        await target.ready()
        reqs = select_requests(20_000)
        await closed_loop(target, "Select", reqs, concurrency=CALLERS, duration=1.0)
        select = await _primary_cost(url, postmaster, closed_loop(
            target, "Select", reqs, concurrency=CALLERS, duration=settings.select_seconds,
            warmup=0.0))
        ids = await preselect_decisions(target, int(8000 * settings.reward_seconds) + 2000)
        await asyncio.sleep(0.5)  # the decision log writes the pre-selected decisions
        reward = await _primary_cost(url, postmaster, closed_loop(
            target, "Reward", reward_requests(ids), concurrency=2 * CALLERS,
            duration=settings.reward_seconds, warmup=0.0, max_calls=len(ids)))
    finally:
        if target is not None:
            await target.close()
        server.stop()
    return {"select": select, "reward": reward}


async def _postmaster_pid(url: str) -> int:
    """The local PostgreSQL server's main process: the parent of a backend."""
    from banditd.server.database import connect

    conn = await connect(url)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        # read while the connection holds the backend: it exits once it is closed
        with open(f"/proc/{backend}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    finally:
        await conn.close()


async def _primary_cost(url: str, postmaster: int, phase) -> dict[str, Any]:
    from banditd.server.database import connect

    conn = await connect(url)
    try:
        await settle()
        lsn0 = await conn.fetchval("SELECT pg_current_wal_lsn()")
        cpu0, wall0 = tree_cpu_seconds(postmaster), time.perf_counter()
        result = await phase
        await asyncio.sleep(0.3)  # the last decision-log flush (every 0.1 s)
        wall = time.perf_counter() - wall0
        cpu = tree_cpu_seconds(postmaster) - cpu0
        wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", lsn0)
    finally:
        await conn.close()
    calls = len(result.latencies)
    return {"calls_per_s": round(calls / result.seconds, 1), "errors": result.errors,
            "postgres_cpu_cores": round(cpu / wall, 3),
            "postgres_cpu_us_per_call": round(cpu / calls * 1e6, 1),
            "wal_bytes_per_call": round(float(wal) / calls, 1)}


# -- the run --------------------------------------------------------------------------------


async def run(settings: Settings, log_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": settings.mode}
    for name, phase in (
        ("workers", lambda url: workers_phase(url, log_dir, settings)),
        ("convergence_postgres", lambda url: convergence_phase(url, log_dir, settings, None)),
        ("convergence_redis", lambda url: convergence_phase(url, log_dir, settings, REDIS_URL)),
        ("primary_cost", lambda url: primary_cost_phase(url, log_dir, settings)),
    ):
        url = await create_database(ADMIN_URL, BENCH_DB_PREFIX)
        try:
            await prepare_database(url, tuple(f"arm-{i}" for i in range(10)))
            print(f"scale ({settings.mode}): {name}", flush=True)
            out[name] = await phase(url)
        finally:
            await drop_database(ADMIN_URL, url)
    return out


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    efficiency = out["workers"]["efficiency_2_vs_1"]
    redis_lag = out["convergence_redis"].get("lag_redis", {"adoptions": 0})
    p99_ok = redis_lag["adoptions"] > 0 and redis_lag["share_within_100ms"] >= 0.99
    return [
        {"name": "workers_2_cpu_efficiency", "ok": efficiency >= EFFICIENCY_TARGET,
         "detail": f"decisions per server CPU-second, 2 workers / 1 = {efficiency:.3f} "
                   f"(target >= {EFFICIENCY_TARGET})"},
        {"name": "redis_adoption_p99_100ms", "ok": p99_ok,
         "detail": f"{redis_lag.get('share_within_100ms', 0):.2%} of "
                   f"{redis_lag.get('adoptions', 0)} adoptions within 100 ms, p50 "
                   f"{redis_lag.get('p50_ms')} ms, p99 {redis_lag.get('p99_ms')} ms "
                   "(target: p99 <= 100 ms)"},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="CI mode: shorter phases")
    args = parser.parse_args(argv)
    settings = MODES["short" if args.short else "full"]
    log_dir = Path(tempfile.mkdtemp(prefix="banditd-scale-"))
    try:
        out = asyncio.run(run(settings, log_dir))
    except Exception as exc:
        print(f"FAIL scale: the benchmark did not complete: {exc!r} (server logs in {log_dir})",
              file=sys.stderr, flush=True)
        return 2
    out["targets"] = targets(out)
    for target in out["targets"]:
        print_target(target["name"], target["ok"], target["detail"])
    path = write_report("scale", out)
    print(f"wrote {path}", flush=True)
    shutil.rmtree(log_dir, ignore_errors=True)
    errors = out["workers"]["workers_1"]["errors"] + out["workers"]["workers_2"]["errors"] + \
        out["convergence_postgres"]["reward_errors"] + out["convergence_redis"]["reward_errors"] \
        + out["primary_cost"]["select"]["errors"] + out["primary_cost"]["reward"]["errors"]
    if errors:
        return 1
    return 0 if settings.mode == "short" or all(t["ok"] for t in out["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
