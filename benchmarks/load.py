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
measures both in the same run. Every phase is repeated with the order of the two
servers alternating, and a figure is the median (throughput) or the pooled samples
(latency) of its repeats — never the best run:

* unloaded latency: one caller, closed loop (``*_unloaded_p50_ms``);
* maximum throughput: C callers, closed loop (``*_max_qps``: per concurrency the
  median of the repeats, then the best concurrency of the sweep);
* open loop at 25/50/75 % of banditd's maximum, for banditd and for the floor at the
  same absolute rates; latency from each request's intended send time (wrk2-style
  constant-rate schedule, no coordinated omission);
* SelectBatch with 100 users per call (``batch_select_decisions_per_s``);
* Reward, durable with group commit, closed loop, every call with a fresh decision id
  selected beforehand, repeated and alternating with the floor's Reward, at 64 and 128
  callers (``reward_acks_per_s``: per concurrency the median of the repeats, then the
  best concurrency, as for ``*_max_qps``; its p50/p99 pooled), then one caller
  (``reward_unloaded_p50_ms``). Both concurrencies are needed: at 64 callers a
  Reward's latency is mostly its group's commit cycle (fill, then one commit), so the
  server is waiting rather than saturated (0.89 of a core against 1.0 at 128 callers)
  and 64 callers cannot reach its maximum;
* for context, the same reward rows committed by bare asyncpg at the concurrency of
  that maximum:
  one ``INSERT ... ON CONFLICT DO NOTHING`` transaction per row over a pool of
  min(C, 40) connections (``asyncpg_commit_rows_per_s``), and group-commit style, C
  producers and 2 committers each writing everything queued in one ``unnest`` INSERT
  transaction (``asyncpg_group_commit_rows_per_s``);
* memory: a second database with 1,000 running experiments x 1,000 arms x 4 policies
  (bulk INSERT into ``experiments``; every experiment over one catalogue of arm names),
  a fresh server on it: seconds to SERVING and its VmRSS then (``memory``); full mode
  also reports the same with distinct arm names per experiment (context, no target).

Two cores are shared by the client, both servers and PostgreSQL, and by whatever else
runs on the machine: the client and the server under test compete for CPU, so
absolute figures are lower than on a machine with a core per process, and they drift.
The report gives the CPU each process used in every phase (banditd's PostgreSQL
backends too) and a probe of how much CPU two busy processes really get
(``machine.cpu_probe``). ``--server-root DIR`` runs banditd from another checkout
(before/after comparisons).

Targets (checked in full mode): ``select_vs_floor_qps`` ≥ 0.9;
``select_unloaded_p50_ms`` ≤ 1.15 x floor's; Select P95 at 50 % load ≤ 6 ms;
``batch_select_decisions_per_s`` ≥ 20 x ``select_max_qps``; ``reward_acks_per_s`` ≥
0.8 x ``floor_max_qps``; the memory case < 256 MB RSS. The budget (both modes): Select
P95 at 50 % load ≤ 120 ms, else exit 1; ``--short`` (CI) runs shorter phases and fails
only on the budget or on errors. The 50 % level is measured again (3 attempts in all)
while the hypervisor steals 0.1 cores or more during it; if every attempt was
contended, short mode reports the budget as inconclusive instead of failing on the
host's load. Writes ``benchmarks/results/load.json`` and
``load.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from benchmarks.load_client import RunResult, Target, closed_loop, merge, open_loop
from server.database import create_database, drop_database

NAME = "load"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get(
    "BANDITD_BENCH_PG_URL",
    os.environ.get("BANDITD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)
EXPERIMENT_ID = "load"
BENCH_DB_PREFIX = "banditd_bench"
POLICIES = ("thompson", "egreedy", "ucb", "control")
BATCH_USERS = 100
LOAD_LEVELS = (0.25, 0.50, 0.75)
BUDGET_P95_MS = 120.0
# Steal (cores the hypervisor gave to other guests) above which a phase's latencies
# are flagged as measured under host contention.
STEAL_WARN_CORES = 0.1
BUDGET_ATTEMPTS = 3

# Seconds per phase and the closed-loop concurrency sweep, by mode.
MODES = {
    # Open-loop phases stay long enough in short mode that one scheduler stall of a
    # few hundred ms on a shared 2-core CI machine cannot own 5 % of the samples.
    # The closed loop gets more, shorter repeats in full mode: on this shared machine
    # one run's throughput swings by up to +-30 % (other tenants, steal time), so the
    # median of 7 pairs is what makes the max-QPS ratio repeatable.
    "short": {"unloaded": 1.5, "closed": 2.0, "open": 4.0, "batch": 3.0, "reward": 3.0,
              "asyncpg": 2.0, "warmup": 0.5, "concurrency": (64,), "repeats": 2,
              "closed_repeats": 3, "reward_concurrency": (64, 128)},
    "full": {"unloaded": 4.0, "closed": 3.0, "open": 6.0, "batch": 6.0, "reward": 6.0,
             "asyncpg": 5.0, "warmup": 1.0, "concurrency": (16, 64, 128), "repeats": 3,
             "closed_repeats": 7, "reward_concurrency": (64, 128)},
}


# -- processes and databases ---------------------------------------------------------


async def prepare_database(url: str, arms: tuple[str, ...]) -> None:
    """Schema plus one running experiment with the four policies."""
    from server.database import connect
    from server.experiment import ExperimentSpec
    from server.experiment_store import change_status, create_experiment
    from server.migrate import migrate

    conn = await connect(url)
    try:
        await migrate(conn)
        spec = ExperimentSpec(id=EXPERIMENT_ID, name="load benchmark", arms=arms,
                              policies=POLICIES)
        await create_experiment(conn, spec, actor="benchmark")
        await change_status(conn, EXPERIMENT_ID, "start", actor="benchmark")
    finally:
        await conn.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


class Server:
    """A server subprocess (banditd or the floor); stopped with SIGTERM, then killed."""

    def __init__(self, name: str, cmd: list[str], port: int, log_dir: Path,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.stderr_path = log_dir / f"{name}.err"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_serving(self, timeout: float = 300.0) -> float:
        """Seconds until grpc.health.v1 says SERVING."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        started = time.monotonic()
        deadline = started + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                       f"{self.stderr_path.read_text()[-3000:]}")
                with contextlib.suppress(grpc.RpcError):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - started
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} not SERVING after {timeout}s")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._stderr.close()
        return self.proc.returncode


# ``--server-root``: run ``server.main`` from another checkout (before/after comparisons).
SERVER_ROOT = ROOT


def start_banditd(url: str | None, log_dir: Path, data_dir: Path | None = None) -> Server:
    port = _free_port()
    cmd = [sys.executable, "-m", "server.main", "serve", "--port", str(port),
           "--metrics-port", "0", "--log-dir", str(log_dir), "--grace", "5"]
    cmd += ["--database-url", url] if url else ["--data-dir", str(data_dir)]
    return Server(f"banditd-{port}", cmd, port, log_dir, cwd=SERVER_ROOT)


def start_floor(log_dir: Path) -> Server:
    port = _free_port()
    cmd = [sys.executable, "-m", "benchmarks.load_floor", "--port", str(port)]
    return Server(f"floor-{port}", cmd, port, log_dir)


# -- measurements ---------------------------------------------------------------------


@dataclass
class Measured:
    """One phase against one server: the client result plus the CPU both sides (and
    banditd's PostgreSQL backends) used, and the CPU the hypervisor gave to other
    guests meanwhile (steal: time this machine's cores were taken away), in cores."""

    result: RunResult
    server_cpu: float
    client_cpu: float
    postgres_cpu: float | None = None
    steal: float = 0.0

    def summary(self, per_call: int = 1) -> dict[str, Any]:
        out = {**self.result.summary(per_call), "server_cpu_cores": round(self.server_cpu, 2),
               "client_cpu_cores": round(self.client_cpu, 2),
               "steal_cores": round(self.steal, 2)}
        if self.postgres_cpu is not None:
            out["postgres_cpu_cores"] = round(self.postgres_cpu, 2)
        return out


# Where to find the PostgreSQL backends serving banditd (set once it is up): their
# pids are looked up before every measured banditd phase, for the CPU accounting.
POSTGRES_DB: dict[str, str] = {}


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += process_cpu_seconds(pid)
    return total


async def postgres_backends(admin_url: str, url: str) -> list[int]:
    """Pids of the PostgreSQL backends connected to ``url``'s database (local server)."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1",
                                urlsplit(url).path.lstrip("/"))
    finally:
        await conn.close()
    return [r["pid"] for r in rows if Path(f"/proc/{r['pid']}").exists()]


def _cpu_jiffies() -> list[int]:
    """The machine's CPU time by state (/proc/stat: user nice system idle iowait irq
    softirq steal ...), in clock ticks summed over the cores."""
    with open("/proc/stat") as fh:
        return [int(v) for v in fh.readline().split()[1:]]


def _cpu_busy_jiffies() -> tuple[int, int]:
    values = _cpu_jiffies()
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def _steal_seconds() -> float:
    values = _cpu_jiffies()
    return (values[7] if len(values) > 7 else 0) / os.sysconf("SC_CLK_TCK")


async def settle(max_seconds: float = 3.0, busy_below: float = 0.15) -> float:
    """Wait until the machine is quiet (at most ``max_seconds``): the previous phase's
    after-effects (decision-log flushes, PostgreSQL's autovacuum and checkpoints, the
    other tenants) must not land on the next phase, which may measure the other server.
    Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < max_seconds:
        busy0, total0 = _cpu_busy_jiffies()
        await asyncio.sleep(0.2)
        busy1, total1 = _cpu_busy_jiffies()
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) < busy_below:
            break
    return time.monotonic() - started


async def measured(server: Server, coro) -> Measured:
    await settle()
    pg = []
    if server.name.startswith("banditd") and POSTGRES_DB:
        pg = await postgres_backends(POSTGRES_DB["admin_url"], POSTGRES_DB["url"])
    s0, c0, w0 = process_cpu_seconds(server.pid), time.process_time(), time.perf_counter()
    p0, st0 = _cpu_of(pg), _steal_seconds()
    result = await coro
    wall = time.perf_counter() - w0
    return Measured(result, (process_cpu_seconds(server.pid) - s0) / wall,
                    (time.process_time() - c0) / wall,
                    (_cpu_of(pg) - p0) / wall if pg else None,
                    (_steal_seconds() - st0) / wall)


def select_requests(n_users: int, experiment_id: str = EXPERIMENT_ID) -> list[bytes]:
    from banditd.v1 import decision_pb2 as pb

    return [pb.SelectRequest(experiment_id=experiment_id, user_id=f"user-{i:07d}")
            .SerializeToString() for i in range(n_users)]


def batch_requests(n_calls: int, users: int = BATCH_USERS) -> list[bytes]:
    from banditd.v1 import decision_pb2 as pb

    out = []
    for c in range(n_calls):
        items = [pb.SelectRequest(experiment_id=EXPERIMENT_ID, user_id=f"user-{c}-{u}")
                 for u in range(users)]
        out.append(pb.SelectBatchRequest(requests=items).SerializeToString())
    return out


async def preselect_decisions(target: Target, n: int) -> list[str]:
    """``n`` fresh decision ids from SelectBatch calls (100 users each)."""
    from banditd.v1 import decision_pb2 as pb

    call = target.method("SelectBatch")
    ids: list[str] = []
    tag = secrets.token_hex(3)

    async def worker(w: int) -> None:
        b = w
        while len(ids) < n:
            req = pb.SelectBatchRequest(requests=[
                pb.SelectRequest(experiment_id=EXPERIMENT_ID, user_id=f"rw-{tag}-{b}-{u}")
                for u in range(BATCH_USERS)])
            reply = pb.SelectBatchResponse.FromString(await call(req.SerializeToString()))
            ids.extend(r.decision_id for r in reply.responses)
            b += 8

    await asyncio.gather(*(worker(w) for w in range(8)))
    return ids[:n]


def reward_requests(decision_ids: list[str]) -> list[bytes]:
    from banditd.v1 import decision_pb2 as pb

    rnd = random.Random(7)
    return [pb.RewardRequest(decision_id=d, value=float(rnd.random() < 0.3)).SerializeToString()
            for d in decision_ids]


async def asyncpg_commit(url: str, decision_ids: list[str], *, concurrency: int,
                         duration: float, group: bool) -> dict[str, Any]:
    """The reward rows committed by bare asyncpg at ``concurrency`` (see module doc)."""
    import asyncpg

    from server.database import connect

    setup = await connect(url)
    table = f"bench_commit_{'group' if group else 'row'}"
    await setup.execute(f"""CREATE TABLE {table} (decision_id text PRIMARY KEY,
        experiment_key int, policy text, arm text, served_by text, value float8, source text,
        decided_at timestamptz, event_time timestamptz)""")
    await setup.close()
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    rows = [(d, 1, "thompson", "arm-3", "POLICY", float(i % 3 == 0), "client", now, None)
            for i, d in enumerate(decision_ids)]
    pool_size = min(concurrency, 40) if not group else 2
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    latencies: list[float] = []
    next_row = iter(rows)
    clock = time.perf_counter
    end = clock() + duration
    insert_one = f"""INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (decision_id) DO NOTHING"""
    insert_many = f"""INSERT INTO {table} SELECT * FROM unnest($1::text[], $2::int[],
        $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::timestamptz[],
        $9::timestamptz[]) ON CONFLICT (decision_id) DO NOTHING RETURNING decision_id"""
    queue: list[tuple[tuple, asyncio.Future]] = []
    ready = asyncio.Event()
    stop = False

    async def committer() -> None:
        while not stop or queue:
            while not queue:
                ready.clear()
                if stop:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), 0.1)
            batch = queue[:]
            queue.clear()
            columns = [list(c) for c in zip(*(row for row, _ in batch), strict=True)]
            async with pool.acquire() as conn, conn.transaction():
                await conn.fetch(insert_many, *columns)
            for _, future in batch:
                future.set_result(None)

    async def producer() -> None:
        loop = asyncio.get_running_loop()
        for row in next_row:
            t = clock()
            if t >= end:
                return
            if group:
                future = loop.create_future()
                queue.append((row, future))
                ready.set()
                await future
            else:
                async with pool.acquire() as conn:
                    await conn.execute(insert_one, *row)
            latencies.append(clock() - t)

    started = clock()
    committers = [asyncio.create_task(committer()) for _ in range(2)] if group else []
    await asyncio.gather(*(producer() for _ in range(concurrency)))
    elapsed = clock() - started
    stop = True
    ready.set()
    await asyncio.gather(*committers)
    await pool.close()
    lat = np.asarray(latencies) * 1e3
    return {
        "rows_per_s": round(len(latencies) / elapsed, 1),
        "rows": len(latencies),
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "connections": pool_size,
        "concurrency": concurrency,
    }


async def memory_case(admin_url: str, log_dir: Path, *, experiments: int, arms: int,
                      distinct_arms: bool) -> dict[str, Any]:
    """Start a fresh server over ``experiments`` running experiments of ``arms`` arms."""
    from server.database import connect
    from server.migrate import migrate

    url = await create_database(admin_url, BENCH_DB_PREFIX)
    server = None
    try:
        conn = await connect(url)
        try:
            await migrate(conn)
            t = time.monotonic()
            arm_expr = "'e' || g || '-arm-' || a" if distinct_arms else "'arm-' || a"
            await conn.execute(f"""
                INSERT INTO experiments (id, name, arms, policies, policy_split, traffic_pct,
                                         status, start_at, salt)
                SELECT 'mem-' || g, 'memory case ' || g,
                       ARRAY(SELECT {arm_expr} FROM generate_series(0, $1 - 1) a),
                       $2::text[], $3::float8[], 1.0, 'running', now(), md5(g::text)
                FROM generate_series(1, $4) g""",
                arms, list(POLICIES), [1 / len(POLICIES)] * len(POLICIES), experiments)
            insert_s = time.monotonic() - t
        finally:
            await conn.close()
        server = start_banditd(url, log_dir)
        startup = await server.wait_serving(timeout=600)
        at_serving = process_memory(server.pid)
        return {
            "experiments": experiments, "arms": arms, "policies": len(POLICIES),
            "distinct_arm_names": distinct_arms,
            "bulk_insert_seconds": round(insert_s, 2),
            "startup_seconds": round(startup, 2),
            "rss_mb": at_serving["VmRSS"],
            "hwm_mb": at_serving["VmHWM"],
        }
    finally:
        if server is not None:
            server.stop()
        await drop_database(admin_url, url)


# -- the run ---------------------------------------------------------------------------


async def run(args: argparse.Namespace, mode: str, log_dir: Path) -> dict[str, Any]:
    if not args.embedded:
        return await run_on(args, mode, log_dir, ADMIN_URL)
    from server.database import embedded_database_url

    data_dir = Path(tempfile.mkdtemp(prefix="banditd-bench-"))
    try:
        return await run_on(args, mode, log_dir, embedded_database_url(data_dir, create=True))
    finally:
        stop_embedded(data_dir)


async def run_on(args: argparse.Namespace, mode: str, log_dir: Path,
                 admin_url: str) -> dict[str, Any]:
    cfg = MODES[mode]
    warm = cfg["warmup"]
    arms = tuple(f"arm-{i}" for i in range(args.arms))
    url = await create_database(admin_url, BENCH_DB_PREFIX)
    servers: list[Server] = []
    out: dict[str, Any] = {"mode": mode, "database": "embedded" if args.embedded else "local"}
    try:
        await prepare_database(url, arms)
        banditd = start_banditd(url, log_dir)
        servers.append(banditd)
        floor = start_floor(log_dir)
        servers.append(floor)
        out["banditd_startup_seconds"] = round(await banditd.wait_serving(), 2)
        await floor.wait_serving()
        POSTGRES_DB.update(admin_url=admin_url, url=url)
        sel_t = Target(banditd.address, args.channels)
        floor_t = Target(floor.address, args.channels)
        await sel_t.ready()
        await floor_t.ready()
        reqs = select_requests(20_000)
        targets = {"select": (banditd, sel_t), "floor": (floor, floor_t)}
        phases: dict[str, Any] = {}
        out["phases"] = phases

        print(f"load ({mode}): K={args.arms}, {args.channels} channels, "
              f"concurrency {list(cfg['concurrency'])}", flush=True)
        # Warm both servers (imports, caches, the first Thompson propensity estimate).
        for _server, target in targets.values():
            await closed_loop(target, "Select", reqs, concurrency=8, duration=1.0, warmup=0.2)
        # The client's own full GC collections traverse every module and request and
        # stall its loop for 17-36 ms, delaying sends and replies alike. An open-loop
        # probe on banditd at 1,900/s, 5 s windows: a window holding a 32 ms collection
        # had p99 22 ms, the others 3.8-9.1 ms; frozen, as banditd and the floor freeze
        # theirs, no window held a full collection and p99 was 3.4-4.7 ms.
        gc.collect()
        gc.freeze()

        # Repeats alternate which server goes first, so that drift (the other tenants of
        # a shared machine) hits both alike; a figure is the median (or the pooled
        # samples) of its repeats, never the best one.
        def order(repeat: int) -> list[tuple[str, tuple[Server, Target]]]:
            items = list(targets.items())
            return items if repeat % 2 == 0 else items[::-1]

        def pooled(ms: list[Measured]) -> Measured:
            pg = [m.postgres_cpu for m in ms if m.postgres_cpu is not None]
            return Measured(merge([m.result for m in ms]),
                            float(np.mean([m.server_cpu for m in ms])),
                            float(np.mean([m.client_cpu for m in ms])),
                            float(np.mean(pg)) if pg else None,
                            float(np.mean([m.steal for m in ms])))

        # 1. Unloaded: one caller.
        unloaded: dict[str, list[Measured]] = {"select": [], "floor": []}
        for r in range(cfg["repeats"]):
            for name, (server, target) in order(r):
                unloaded[name].append(await measured(server, closed_loop(
                    target, "Select", reqs, concurrency=1, duration=cfg["unloaded"],
                    warmup=warm)))
        for name, runs in unloaded.items():
            phases[f"{name}_unloaded"] = {"repeats": len(runs), **pooled(runs).summary()}
            out[f"{name}_unloaded_p50_ms"] = phases[f"{name}_unloaded"]["p50_ms"]
        print(f"  unloaded p50: select {out['select_unloaded_p50_ms']:.3f} ms, "
              f"floor {out['floor_unloaded_p50_ms']:.3f} ms", flush=True)

        # 2. Closed loop: the maximum throughput over the concurrency sweep (per
        #    concurrency the median of the repeats).
        closed: dict[str, dict[int, dict]] = {"select": {}, "floor": {}}
        pair_ratios: dict[int, list[float]] = {}
        for c in cfg["concurrency"]:
            runs = {"select": [], "floor": []}
            for r in range(cfg["closed_repeats"]):
                for name, (server, target) in order(r):
                    runs[name].append(await measured(server, closed_loop(
                        target, "Select", reqs, concurrency=c, duration=cfg["closed"],
                        warmup=warm)))
            pair_ratios[c] = [a.result.qps / b.result.qps
                              for a, b in zip(runs["select"], runs["floor"], strict=True)]
            for name, ms in runs.items():
                median_qps = float(np.median([m.result.qps for m in ms]))
                closed[name][c] = {**pooled(ms).summary(), "qps": round(median_qps, 1),
                                   "qps_repeats": [round(m.result.qps, 1) for m in ms]}
        for name in closed:
            phases[f"{name}_closed"] = {str(c): s for c, s in closed[name].items()}
            out[f"{name}_max_qps"] = max(s["qps"] for s in closed[name].values())
        out["select_vs_floor_qps"] = round(out["select_max_qps"] / out["floor_max_qps"], 3)
        out["select_vs_floor_qps_paired"] = {
            str(c): [round(x, 3) for x in ratios] for c, ratios in pair_ratios.items()}
        out["select_vs_floor_qps_paired_median"] = round(float(np.median(
            [x for ratios in pair_ratios.values() for x in ratios])), 3)
        print(f"  max qps: select {out['select_max_qps']:.0f}, floor {out['floor_max_qps']:.0f} "
              f"(ratio {out['select_vs_floor_qps']:.3f}; paired ratios "
              f"{out['select_vs_floor_qps_paired']})", flush=True)

        # 3. Open loop at 25/50/75 % of banditd's maximum, both servers at the same rates.
        #    The budget level (50 %) is measured again, up to BUDGET_ATTEMPTS times in
        #    all, while the hypervisor steals STEAL_WARN_CORES or more during it: those
        #    latencies measure the host. Every attempt is kept in the report; the one
        #    with the least steal is the figure.
        open_results: dict[str, dict[str, dict]] = {"select": {}, "floor": {}}
        for level in LOAD_LEVELS:
            rate = level * out["select_max_qps"]
            attempts: list[dict[str, dict]] = []
            while True:
                runs: dict[str, list[Measured]] = {"select": [], "floor": []}
                for r in range(cfg["repeats"]):  # the samples of the repeats are pooled
                    for name, (server, target) in order(r):
                        runs[name].append(await measured(server, open_loop(
                            target, "Select", reqs, rate=rate, duration=cfg["open"],
                            warmup=warm)))
                attempts.append({name: {"target_qps": round(rate, 1), "repeats": len(ms),
                                         **pooled(ms).summary()}
                                 for name, ms in runs.items()})
                stolen = attempts[-1]["select"]["steal_cores"]
                if level != 0.5 or stolen < STEAL_WARN_CORES or len(attempts) >= BUDGET_ATTEMPTS:
                    break
                print(f"  open loop 50 %: {stolen:.2f} cores stolen by the hypervisor; "
                      "measuring again", flush=True)
            best = min(attempts, key=lambda a: a["select"]["steal_cores"])
            for name in open_results:
                open_results[name][f"{round(level * 100)}"] = {
                    **best[name], "attempts": len(attempts),
                    "steal_cores_of_attempts": [a[name]["steal_cores"] for a in attempts]}
        for name, levels in open_results.items():
            phases[f"{name}_open"] = levels
            for pct, s in levels.items():
                for q in ("p50", "p95", "p99"):
                    out[f"{name}_{q}_ms_at_{pct}pct"] = s[f"{q}_ms"]
        for pct in open_results["select"]:
            s, f = open_results["select"][pct], open_results["floor"][pct]
            print(f"  open loop {pct} % ({s['target_qps']:.0f}/s): select p50/p95/p99 "
                  f"{s['p50_ms']:.2f}/{s['p95_ms']:.2f}/{s['p99_ms']:.2f} ms; floor "
                  f"{f['p50_ms']:.2f}/{f['p95_ms']:.2f}/{f['p99_ms']:.2f} ms", flush=True)

        # 4. SelectBatch, 100 users per call.
        batches = batch_requests(200)
        best_batch = None
        for c in (args.batch_concurrency,) if mode == "short" else (2, 4, 8):
            m = await measured(banditd, closed_loop(
                sel_t, "SelectBatch", batches, concurrency=c, duration=cfg["batch"],
                warmup=warm))
            s = {"concurrency": c, "users_per_call": BATCH_USERS, **m.summary(BATCH_USERS)}
            if best_batch is None or s["items_per_s"] > best_batch["items_per_s"]:
                best_batch = s
        phases["select_batch"] = best_batch
        out["batch_select_decisions_per_s"] = best_batch["items_per_s"]
        out["batch_vs_single_select"] = round(
            out["batch_select_decisions_per_s"] / out["select_max_qps"], 2)
        print(f"  SelectBatch: {out['batch_select_decisions_per_s']:.0f} decisions/s "
              f"({out['batch_vs_single_select']:.1f}x single Select)", flush=True)

        # 5. Reward: durable, group-committed; a fresh decision id per call. At each
        #    concurrency repeated like the closed loop, alternating with the floor's
        #    Reward; the figure is the best concurrency's median (latencies pooled).
        #    Ids for up to twice the floor's rate: group commit can outrun it.
        reward_cs = args.reward_concurrency or cfg["reward_concurrency"]
        n_ids = int(2 * out["floor_max_qps"] * (cfg["reward"] + warm)) + 4000
        reward_runs: dict[int, tuple[list[Measured], list[Measured]]] = {}
        for c in reward_cs:
            rewards: list[Measured] = []
            floor_rewards: list[Measured] = []
            for r in range(cfg["repeats"]):
                ids = await preselect_decisions(sel_t, n_ids)
                await asyncio.sleep(0.5)  # let the decision log flush the pre-selected ones
                banditd_phase = closed_loop(
                    sel_t, "Reward", reward_requests(ids), concurrency=c,
                    duration=cfg["reward"], warmup=warm, max_calls=len(ids))
                floor_phase = closed_loop(
                    floor_t, "Reward", reward_requests(ids[:20_000]), concurrency=c,
                    duration=cfg["reward"], warmup=warm)
                if r % 2 == 0:
                    rewards.append(await measured(banditd, banditd_phase))
                    floor_rewards.append(await measured(floor, floor_phase))
                else:
                    floor_rewards.append(await measured(floor, floor_phase))
                    rewards.append(await measured(banditd, banditd_phase))
            reward_runs[c] = rewards, floor_rewards
        for key, index in (("reward", 0), ("floor_reward", 1)):
            phases[key] = {str(c): {
                "concurrency": c, "repeats": len(runs[index]), **pooled(runs[index]).summary(),
                "qps": round(float(np.median([m.result.qps for m in runs[index]])), 1),
                "qps_repeats": [round(m.result.qps, 1) for m in runs[index]]}
                for c, runs in reward_runs.items()}
        best_c = max(reward_cs, key=lambda c: phases["reward"][str(c)]["qps"])
        best = phases["reward"][str(best_c)]
        out["reward_acks_per_s"] = best["qps"]
        out["reward_concurrency_at_max"] = best_c
        out["reward_p50_ms"] = best["p50_ms"]
        out["reward_p99_ms"] = best["p99_ms"]
        out["reward_vs_floor_reward_paired"] = {
            str(c): [round(a.result.qps / b.result.qps, 3)
                     for a, b in zip(*runs, strict=True)]
            for c, runs in reward_runs.items()}
        spare = await preselect_decisions(sel_t, 4000)
        await asyncio.sleep(0.5)
        m = await measured(banditd, closed_loop(  # one caller: a durable reward's own latency
            sel_t, "Reward", reward_requests(spare), concurrency=1,
            duration=cfg["unloaded"], warmup=0.2, max_calls=len(spare)))
        phases["reward_unloaded"] = m.summary()
        out["reward_unloaded_p50_ms"] = phases["reward_unloaded"]["p50_ms"]
        for c in reward_cs:
            s, f = phases["reward"][str(c)], phases["floor_reward"][str(c)]
            print(f"  Reward, {c} callers: {s['qps']:.0f} acks/s (repeats {s['qps_repeats']}), "
                  f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms (floor Reward "
                  f"{f['qps']:.0f}/s; paired ratios "
                  f"{out['reward_vs_floor_reward_paired'][str(c)]})", flush=True)

        await sel_t.close()
        await floor_t.close()
        for server in servers:
            server.stop()
        POSTGRES_DB.clear()

        # 6. The same rows through bare asyncpg (servers stopped), at the concurrency of
        #    banditd's Reward maximum.
        fresh = await preselect_free_ids(n_ids)
        phases["asyncpg_row"] = await asyncpg_commit(
            url, fresh, concurrency=best_c, duration=cfg["asyncpg"], group=False)
        phases["asyncpg_group"] = await asyncpg_commit(
            url, fresh, concurrency=best_c, duration=cfg["asyncpg"], group=True)
        out["asyncpg_commit_rows_per_s"] = phases["asyncpg_row"]["rows_per_s"]
        out["asyncpg_group_commit_rows_per_s"] = phases["asyncpg_group"]["rows_per_s"]
        out["asyncpg_commit_method"] = (
            f"asyncpg_commit_rows_per_s: {best_c} concurrent callers, one INSERT ... ON CONFLICT "
            f"(decision_id) DO NOTHING transaction per row over a pool of "
            f"{phases['asyncpg_row']['connections']} connections; "
            f"asyncpg_group_commit_rows_per_s: {best_c} producers, 2 committers each taking "
            "everything queued into one unnest INSERT ... ON CONFLICT DO NOTHING RETURNING "
            "transaction (banditd's scheme without gRPC and the arm_stats upsert)")
        print(f"  bare asyncpg: {out['asyncpg_commit_rows_per_s']:.0f} rows/s (row per "
              f"transaction), {out['asyncpg_group_commit_rows_per_s']:.0f} rows/s "
              "(group commit)", flush=True)
    finally:
        for server in servers:
            server.stop()
        await drop_database(admin_url, url)

    # 7. Memory: many experiments, many arms.
    if args.memory_experiments > 0:
        cases = [("memory", False)] + ([("memory_distinct_arms", True)] if mode == "full" else [])
        for key, distinct in cases:
            mem = await memory_case(admin_url, log_dir, experiments=args.memory_experiments,
                                    arms=args.memory_arms, distinct_arms=distinct)
            out[key] = mem
            names = "distinct arm names per experiment" if distinct else "one arm catalogue"
            print(f"  {key}: {mem['experiments']} experiments x {mem['arms']} arms x "
                  f"{mem['policies']} policies ({names}): RSS {mem['rss_mb']:.0f} MB at "
                  f"SERVING after {mem['startup_seconds']:.1f} s", flush=True)
    return out


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL this process started (banditd has exited), then
    remove its data directory."""
    from server import database

    pgdata = (data_dir / "pgdata").resolve()
    server = database._embedded_servers.pop(pgdata, None)
    if server is not None:
        server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


async def preselect_free_ids(n: int) -> list[str]:
    """Decision-id-shaped unique keys for the bare asyncpg rows."""
    return ["d" + secrets.token_urlsafe(39)[:52] for _ in range(n)]


_PROBE = """
import sys, time
end = time.perf_counter() + float(sys.argv[1]); n = 0; worst = 0.0; last = time.perf_counter()
while True:
    t = time.perf_counter(); worst = max(worst, t - last); last = t; n += 1
    if t > end: break
print(n, worst)
"""


def cpu_probe(seconds: float = 1.0) -> dict[str, Any]:
    """How much CPU this machine really gives two busy processes (the server and the
    client each want one): loop iterations of two concurrent busy loops relative to one
    alone, and the longest pause either saw (time the OS or host took the core away)."""
    def run(k: int) -> list[tuple[int, float]]:
        procs = [subprocess.Popen([sys.executable, "-c", _PROBE, str(seconds)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(k)]
        out = []
        for proc in procs:
            n, worst = proc.communicate()[0].split()
            out.append((int(n), float(worst)))
        return out

    solo = run(1)[0][0]
    pair = run(2)
    return {"effective_cores_for_two_busy_processes": round(sum(n for n, _ in pair) / solo, 2),
            "slowest_of_two_vs_alone": round(min(n for n, _ in pair) / solo, 2),
            "longest_pause_ms": round(max(w for _, w in pair) * 1e3, 1)}


def machine() -> dict[str, Any]:
    import asyncpg
    import grpc
    from google.protobuf import __version__ as protobuf_version
    from google.protobuf.internal import api_implementation

    return {"grpcio": grpc.__version__, "protobuf": protobuf_version,
            "protobuf_backend": api_implementation.Type(), "asyncpg": asyncpg.__version__,
            "python": platform.python_version(), "cores": os.cpu_count()}


def targets_of(out: dict[str, Any]) -> list[tuple[str, bool, str]]:
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
        ("batch_vs_single", out["batch_select_decisions_per_s"] >= 20 * out["select_max_qps"],
         f"{out['batch_select_decisions_per_s']:.0f} decisions/s = "
         f"{out['batch_vs_single_select']:.1f}x single Select (≥ 20x)"),
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


def plot(out: dict[str, Any], path: Path) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__,
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
    args = parser.parse_args(argv)
    if args.skip_memory:
        args.memory_experiments = 0
    if args.server_root is not None:
        global SERVER_ROOT
        SERVER_ROOT = args.server_root.resolve()
    mode = "short" if args.short else "full"
    started, steal_before = time.monotonic(), _steal_seconds()
    log_dir = Path(tempfile.mkdtemp(prefix="banditd-load-"))
    try:
        out = asyncio.run(run(args, mode, log_dir))
    except Exception as exc:
        print(f"FAIL load: the benchmark did not complete: {exc!r} (server logs in {log_dir})",
              file=sys.stderr, flush=True)
        return 2
    out["config"] = {"arms": args.arms, "policies": list(POLICIES), "channels": args.channels,
                     "batch_users": BATCH_USERS, "batch_concurrency": args.batch_concurrency,
                     **{k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in MODES[mode].items()}}
    if args.reward_concurrency:
        out["config"]["reward_concurrency"] = list(args.reward_concurrency)
    # At 75 % of a maximum measured on a noisy machine the open loop can run past
    # saturation; gRPC then cancels calls queued too long (CANCELLED, the empty-handler
    # floor alike). Those are reported, not failures; any other error fails the run.
    all_errors = {name: s["error_codes"] for name, s in _flat_phases(out["phases"])
                  if s.get("errors")}
    errors = {name: codes for name, codes in all_errors.items()
              if not (name.endswith("_open.75") and set(codes) == {"CANCELLED"})}
    out["errors"] = all_errors
    from benchmarks.report import machine_info, print_target, write_report

    steal = (_steal_seconds() - steal_before) / (time.monotonic() - started)
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
    for name, ok, detail in targets:
        print_target(name, ok, detail)
    if "memory_distinct_arms" in out:  # context, not a target
        mem = out["memory_distinct_arms"]
        print(f"INFO memory_distinct_arms: the same with distinct arm names per experiment: "
              f"{mem['rss_mb']:.0f} MB RSS, SERVING after {mem['startup_seconds']:.1f} s",
              flush=True)
    print(f"INFO steal: the hypervisor took {steal:.2f} of {os.cpu_count()} cores on average "
          "during the run (per phase: steal_cores in load.json)", flush=True)
    budget_phase = out["phases"]["select_open"]["50"]
    contended = budget_phase["steal_cores"] >= STEAL_WARN_CORES
    if contended:
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
    print(f"wrote {path} and {png} in {time.monotonic() - started:.1f}s", flush=True)
    shutil.rmtree(log_dir, ignore_errors=True)
    budget_ok = out["select_p95_ms_at_50pct"] <= BUDGET_P95_MS
    if not budget_ok and contended and mode == "short":
        # CI's machine could not measure the budget: every attempt ran while the host
        # took CPU away. Short mode then reports the budget as inconclusive rather than
        # failing the build on the host's load; full mode stays strict.
        print("WARN budget_p95_120ms: inconclusive in short mode (host contention in every "
              "attempt); not failing the run", flush=True)
        budget_ok = True
    if not budget_ok or errors:
        return 1
    if mode == "full" and not all(ok for _, ok, _ in targets):
        return 1
    return 0


def _flat_phases(phases: dict[str, Any]):
    for name, value in phases.items():
        if isinstance(value, dict) and "errors" in value:
            yield name, value
        elif isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, dict) and "errors" in inner:
                    yield f"{name}.{sub}", inner


if __name__ == "__main__":
    sys.exit(main())
