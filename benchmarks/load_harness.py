"""The load study's harness: the server processes, their ports and databases, and the
accounting of the CPU, memory and hypervisor steal of every measured phase.

Two cores are shared by the client, both servers and PostgreSQL, and by whatever else
runs on the machine: the client and the server under test compete for CPU, so
absolute figures are lower than on a machine with a core per process, and they drift.
The report gives the CPU each process used in every phase (banditd's PostgreSQL
backends too) and a probe of how much CPU two busy processes really get
(``machine.cpu_probe``).

Placement. Left to the scheduler, the server under test shares both cores with the
client and PostgreSQL, and its tail measures that contention: the slow requests come
in bursts in which the server process is simply not running (what ``PYTHONASYNCIODEBUG``
and the GC callbacks showed, benchmarks/RESULTS.md). A ``Placement`` gives the servers a
core of their own and puts the client and banditd's PostgreSQL backends on the other,
as in production, where a server has its cores and PostgreSQL its host. banditd and the
floor get the same core, so every ratio compares like with like.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from benchmarks.load_client import RunResult, merge

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get(
    "BANDITD_BENCH_PG_URL",
    os.environ.get("BANDITD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)
EXPERIMENT_ID = "load"
# The subset study's experiment: Thompson and the control every experiment must have,
# with a fixed salt so that the study can send only users Thompson serves
# (``thompson_users``): every Select it sends is served by the kernel whose subset path
# it measures (benchmarks.load_phases.subset_select).
SUBSET_EXPERIMENT_ID = "load-subset"
SUBSET_ARMS = tuple(f"movie-{i}" for i in range(20))
SUBSET_POLICIES = ("thompson", "control")
SUBSET_SPLIT = (0.9, 0.1)
SUBSET_SALT = "5b5e7c0ffee0"
BENCH_DB_PREFIX = "banditd_bench"
POLICIES = ("thompson", "egreedy", "ucb", "control")
# Steal (cores the hypervisor gave to other guests) above which a phase's latencies
# are flagged as measured under host contention.
STEAL_WARN_CORES = 0.1


# -- processes and databases ---------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """CPUs for the servers under test, and for the client with banditd's PostgreSQL
    backends (see the module doc)."""

    servers: frozenset[int]
    others: frozenset[int]

    @classmethod
    def split(cls) -> Placement | None:
        """The last usable CPU for the servers, the rest for the others; None with
        fewer than two usable CPUs."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        return cls(frozenset(cpus[-1:]), frozenset(cpus[:-1]))

    def pin_others(self, pids: list[int]) -> None:
        """Move ``pids`` (and this process, the client, when it is among them) to the
        others' CPUs; a process that has exited is skipped."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, self.others)

    def to_json(self) -> dict[str, list[int]]:
        return {"servers": sorted(self.servers), "client_and_postgres": sorted(self.others)}


async def prepare_database(url: str, arms: tuple[str, ...]) -> None:
    """Schema plus one running experiment with the four policies, and the subset study's
    experiment over SUBSET_ARMS."""
    from banditd.server.database import connect
    from banditd.server.experiment import ExperimentSpec
    from banditd.server.experiment_store import change_status, create_experiment
    from banditd.server.migrate import migrate

    conn = await connect(url)
    try:
        await migrate(conn)
        spec = ExperimentSpec(id=EXPERIMENT_ID, name="load benchmark", arms=arms,
                              policies=POLICIES)
        await create_experiment(conn, spec, actor="benchmark")
        await change_status(conn, EXPERIMENT_ID, "start", actor="benchmark")
        subset = ExperimentSpec(id=SUBSET_EXPERIMENT_ID, name="load benchmark, subsets",
                                arms=SUBSET_ARMS, policies=SUBSET_POLICIES,
                                policy_split=SUBSET_SPLIT, salt=SUBSET_SALT)
        await create_experiment(conn, subset, actor="benchmark")
        await change_status(conn, SUBSET_EXPERIMENT_ID, "start", actor="benchmark")
    finally:
        await conn.close()


def thompson_users(n: int, prefix: str) -> list[str]:
    """``n`` user ids that the subset experiment assigns to Thompson (the scheme of
    ``banditd.server.assignment``: policy bucket ``(h div B) mod B`` of ``h =
    XXH64(salt | 0x1F | user)``, all traffic inside)."""
    from banditd.core_ext.decider import BUCKETS, hash64
    from banditd.server.assignment import SEPARATOR, policy_table

    table = policy_table(SUBSET_SPLIT)
    thompson = SUBSET_POLICIES.index("thompson")
    key = SUBSET_SALT.encode() + SEPARATOR
    users: list[str] = []
    i = 0
    while len(users) < n:
        user = f"{prefix}-{i:07d}"
        if table[(hash64(key + user.encode()) // BUCKETS) % BUCKETS] == thompson:
            users.append(user)
        i += 1
    return users


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL this process started (banditd has exited), then
    remove its data directory."""
    from banditd.server import database

    pgdata = (data_dir / "pgdata").resolve()
    server = database._embedded_servers.pop(pgdata, None)
    if server is not None:
        server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


def rotated(items: list, by: int) -> list:
    """``items`` rotated left by ``by`` places: round ``by`` of a paired study runs its
    variants in this order, so that none of them always runs first."""
    k = by % len(items)
    return items[k:] + items[:k]


def free_port() -> int:
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
    """A server subprocess (banditd or the floor); stopped with SIGTERM, then killed.

    ``backends`` is ``(admin URL, database URL)`` where banditd's PostgreSQL backends
    are looked up before every measured phase, for the CPU accounting; None for the
    floor."""

    def __init__(self, name: str, cmd: list[str], port: int, log_dir: Path,
                 cwd: Path = ROOT, backends: tuple[str, str] | None = None,
                 placement: Placement | None = None) -> None:
        self.name = name
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.backends = backends
        self.placement = placement
        self.stderr_path = log_dir / f"{name}.err"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # set in the child before exec: every thread the server starts inherits it
        pin = (None if placement is None
               else lambda: os.sched_setaffinity(0, placement.servers))
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env=env, preexec_fn=pin)

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
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code. Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._stderr.close()
        return self.proc.returncode


def start_banditd(url: str | None, log_dir: Path, *, root: Path = ROOT,
                  admin_url: str | None = None, data_dir: Path | None = None,
                  extra: tuple[str, ...] = (), placement: Placement | None = None) -> Server:
    """``banditd serve`` on ``url`` (else the embedded default under ``data_dir``), run
    from the checkout ``root`` (``--server-root``: before/after comparisons), with the
    ``extra`` flags (a flag given twice: the last one counts), on ``placement``'s server
    CPUs when given. Given ``admin_url``, its PostgreSQL backends count in the CPU
    accounting (and move to the others' CPUs before every measured phase)."""
    port = free_port()
    cmd = [sys.executable, "-m", "banditd.server.main", "serve", "--port", str(port),
           "--metrics-port", "0", "--log-dir", str(log_dir), "--grace", "5"]
    cmd += ["--database-url", url] if url else ["--data-dir", str(data_dir)]
    cmd += extra
    backends = (admin_url, url) if admin_url and url else None
    return Server(f"banditd-{port}", cmd, port, log_dir, cwd=root, backends=backends,
                  placement=placement)


def start_floor(log_dir: Path, placement: Placement | None = None) -> Server:
    """The empty-handler floor server (``benchmarks.load_floor``) on a free port."""
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.load_floor", "--port", str(port)]
    return Server(f"floor-{port}", cmd, port, log_dir, placement=placement)


# -- CPU, memory and steal accounting ----------------------------------------------------


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


def pooled(ms: list[Measured]) -> Measured:
    """The repeats of one phase as one: latency samples pooled, CPU and steal averaged."""
    pg = [m.postgres_cpu for m in ms if m.postgres_cpu is not None]
    return Measured(merge([m.result for m in ms]),
                    float(np.mean([m.server_cpu for m in ms])),
                    float(np.mean([m.client_cpu for m in ms])),
                    float(np.mean(pg)) if pg else None,
                    float(np.mean([m.steal for m in ms])))


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


def steal_seconds() -> float:
    """CPU seconds the hypervisor has taken from this machine's cores since boot."""
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
    """Run ``coro``, a client phase against ``server``, once the machine is quiet, and
    account the CPU of both sides (and of banditd's PostgreSQL backends) and the steal
    while it ran."""
    await settle()
    pg = await postgres_backends(*server.backends) if server.backends else []
    if server.placement is not None:
        server.placement.pin_others(pg)  # the pool may have opened connections since
    s0, c0, w0 = process_cpu_seconds(server.pid), time.process_time(), time.perf_counter()
    p0, st0 = _cpu_of(pg), steal_seconds()
    result = await coro
    wall = time.perf_counter() - w0
    return Measured(result, (process_cpu_seconds(server.pid) - s0) / wall,
                    (time.process_time() - c0) / wall,
                    (_cpu_of(pg) - p0) / wall if pg else None,
                    (steal_seconds() - st0) / wall)


# -- the machine -----------------------------------------------------------------------


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
    """The RPC stack's versions (grpcio, protobuf and its backend, asyncpg), Python and
    the cores."""
    import asyncpg
    import grpc
    from google.protobuf import __version__ as protobuf_version
    from google.protobuf.internal import api_implementation

    return {"grpcio": grpc.__version__, "protobuf": protobuf_version,
            "protobuf_backend": api_implementation.Type(), "asyncpg": asyncpg.__version__,
            "python": platform.python_version(), "cores": os.cpu_count()}
