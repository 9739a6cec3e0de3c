"""``banditd serve --workers N``: N processes on one address that behave as one server.

One Python process tops out near one core of gRPC. The supervisor (this module) starts
N workers with the ``spawn`` start method, so each is a fresh interpreter with its own
event loop, pool, registry and gRPC server, and no gRPC state crosses a ``fork``. Every
worker listens on the same ``host:port``; gRPC sets ``SO_REUSEPORT`` on Linux, and the
kernel spreads new connections over the listening sockets by a hash of the
connection's addresses. The workers share nothing in memory: each adopts the others'
committed rewards as separate servers do (``banditd.server.replica_sync``).

A decision id carries its worker's random 32-bit ``server_nonce`` and a 32-bit counter
that starts at a random value (``banditd.server.decision_id``); two ids collide only if
two processes drew the same nonce and their counters meet within the same millisecond,
experiment, policy and arm. With n = 1,000 processes the chance that any two share a
nonce is about n² / 2³³ ≈ 1.2·10⁻⁴, and even then their counters must coincide.

The supervisor forwards SIGTERM and SIGINT to every worker, each drains as a single
server does, and it exits 0 when all stopped cleanly. A worker that dies is restarted
with exponential back-off (1 s doubling to 30 s, logged); more than ``restart_limit``
deaths within ``restart_window`` seconds stop the server with exit code 1. A worker
that fails before any worker ever served (a database that is unreachable, a port that
is taken) stops the server with that worker's own exit code: restarting cannot help.

Metrics: each worker serves its own registry on a private loopback port; the public
``--metrics-port`` is the supervisor's, which scrapes the workers at each request and
merges them (:class:`MergedWorkerMetrics`), so the hot path costs what it costs in a
single server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

import click

from banditd.server.app import (
    EXIT_DATABASE,
    EXIT_FAILED,
    EXIT_USAGE,
    ServeConfig,
    prepare_schema,
    report_failure,
    run_until_stopped,
)
from banditd.server.database import (
    DatabaseConfigError,
    DatabaseUnreachable,
    resolve_database_url,
    wait_for_pool,
)
from banditd.server.demo_experiment import DEMO_ID
from banditd.server.migrate import SchemaMismatchError
from banditd.server.quickstart import banner
from banditd.server.worker_metrics import serve_merged_metrics

log = logging.getLogger("banditd.app")

_BACKOFF_FIRST, _BACKOFF_MAX = 1.0, 30.0


def usable_cores() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota
    (``cpu.max``, what a Kubernetes CPU limit becomes), rounded up, at least 1."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores
    if quota != "max":
        cores = min(cores, math.ceil(int(quota) / int(period)))
    return max(cores, 1)


def parse_workers(value: str) -> int:
    """``--workers``: a count >= 1, or ``auto`` for :func:`usable_cores`."""
    if value == "auto":
        return usable_cores()
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"--workers must be a number >= 1 or 'auto', got {value!r}") from None
    if count < 1:
        raise ValueError(f"--workers must be >= 1, got {count}")
    return count


async def prepare_database(config: ServeConfig) -> ServeConfig:
    """Once, before any worker: resolve the database (starting the embedded one),
    migrate and create the demo as asked; the workers' config names the database by
    URL and does neither, so N workers never race to create the same thing."""
    url = resolve_database_url(config.database_url, config.data_dir, create=True)
    pool = await wait_for_pool(url, wait_seconds=config.database_wait, log=log, max_size=1)
    try:
        async with pool.acquire() as conn:
            await prepare_schema(conn, config)
    finally:
        await pool.close()
    return dataclasses.replace(config, database_url=url, migrate=False, create_demo=False)


def _worker_main(config: ServeConfig, index: int, conn: Connection) -> None:
    """A worker: one server whose metrics are on a private port, reported when serving."""
    from banditd.server import logs

    _die_with_parent()
    logs.configure(config.log_dir, prefix=f"worker {index}")

    async def started(server) -> None:
        conn.send(("serving", server.metrics_port))

    raise SystemExit(run_until_stopped(config, on_started=started))


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies (``prctl(2)``,
    PR_SET_PDEATHSIG), so a supervisor killed outright leaves no orphan serving."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclasses.dataclass(slots=True)
class _Worker:
    index: int
    process: multiprocessing.process.BaseProcess
    conn: Connection
    metrics_port: int | None = None
    serving: bool = False


class Supervisor:
    """Runs ``workers`` worker processes for ``config`` until SIGTERM or SIGINT."""

    def __init__(self, config: ServeConfig, workers: int, *, restart_limit: int = 5,
                 restart_window: float = 60.0) -> None:
        self.config = config
        self.count = workers
        self.restart_limit = restart_limit
        self.restart_window = restart_window
        self._context = multiprocessing.get_context("spawn")
        self._worker_config = dataclasses.replace(
            config, metrics_host="127.0.0.1",
            metrics_port=None if config.metrics_port is None else 0)
        self._workers: dict[int, _Worker] = {}
        self._restart_at: dict[int, float] = {}
        self._deaths: list[float] = []
        self._backoff: dict[int, float] = {}
        self._stopping = False
        self._ever_served = False

    def run(self) -> int:
        """Supervise until stopped; the exit code for ``banditd serve``."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        try:
            self._worker_config = asyncio.run(prepare_database(self._worker_config))
        except (SchemaMismatchError, DatabaseUnreachable) as exc:
            return report_failure(str(exc), EXIT_DATABASE)
        except DatabaseConfigError as exc:
            return report_failure(str(exc), EXIT_USAGE)
        metrics = None
        if self.config.metrics_port:
            try:
                metrics = serve_merged_metrics(
                    self.config.metrics_host, self.config.metrics_port,
                    lambda: [(w.index, w.metrics_port) for w in self._workers.values()
                             if w.serving and w.metrics_port])
            except OSError as exc:  # the metrics port is taken
                return report_failure(f"cannot start: {exc}", EXIT_FAILED)
        for index in range(self.count):
            self._start(index)
        try:
            while not self._stopping:
                code = self._step()
                if code is not None:
                    return code
            return self._stop_all()
        finally:
            if metrics is not None:
                metrics.shutdown()
            self._stop_all()

    def _stop(self, signum, _frame) -> None:
        self._stopping = True

    def _start(self, index: int) -> None:
        ours, theirs = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main, args=(self._worker_config, index, theirs),
            name=f"banditd-worker-{index}", daemon=False)
        process.start()
        theirs.close()
        self._workers[index] = _Worker(index, process, ours)
        log.info("worker %d started (pid %d)", index, process.pid)

    def _step(self) -> int | None:
        """Wait for a message, a death or a restart that is due; an exit code ends it."""
        due = list(self._restart_at.values())
        timeout = max(0.0, min(due) - time.monotonic()) if due else 0.5
        handles = [w.conn for w in self._workers.values()]
        handles += [w.process.sentinel for w in self._workers.values()]
        for ready in wait(handles, timeout=min(timeout, 0.5)):
            for worker in list(self._workers.values()):
                if ready is worker.conn:
                    self._receive(worker)
        for worker in list(self._workers.values()):
            if not worker.process.is_alive() and not self._stopping:
                code = self._died(worker)
                if code is not None:
                    return code
        now = time.monotonic()
        for index, at in list(self._restart_at.items()):
            if at <= now and not self._stopping:
                del self._restart_at[index]
                self._start(index)
        return None

    def _receive(self, worker: _Worker) -> None:
        try:
            kind, port = worker.conn.recv()
        except EOFError:
            return
        if kind == "serving":
            worker.serving, worker.metrics_port = True, port
            self._backoff.pop(worker.index, None)
            if not self._ever_served:
                self._ever_served = True
                if self.config.create_demo:
                    click.echo(banner(f"{self.config.host}:{self.config.port}", DEMO_ID),
                               err=True)
            if all(w.serving for w in self._workers.values()) and not self._restart_at:
                log.info("%d workers serving on %s:%d", len(self._workers),
                         self.config.host, self.config.port)

    def _died(self, worker: _Worker) -> int | None:
        del self._workers[worker.index]
        worker.conn.close()
        code = worker.process.exitcode
        if not self._ever_served:
            log.error("worker %d failed to start (exit code %s); stopping", worker.index, code)
            return code if code and code > 0 else EXIT_FAILED
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < self.restart_window] + [now]
        if len(self._deaths) > self.restart_limit:
            log.error("ERROR workers died %d times in %.0fs; stopping the server",
                      len(self._deaths), self.restart_window)
            return EXIT_FAILED
        delay = self._backoff.get(worker.index, _BACKOFF_FIRST)
        self._backoff[worker.index] = min(delay * 2, _BACKOFF_MAX)
        self._restart_at[worker.index] = now + delay
        log.error("ERROR worker %d (pid %d) exited with code %s; restarting in %.0fs",
                  worker.index, worker.process.pid, code, delay)
        return None

    def _stop_all(self) -> int:
        """SIGTERM every worker, wait for them to drain; 0 when all stopped cleanly."""
        workers, self._workers = list(self._workers.values()), {}
        self._restart_at.clear()
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        clean = True
        for worker in workers:
            worker.process.join(self.config.grace_seconds + 30)
            if worker.process.is_alive():
                log.error("ERROR worker %d did not stop; killing it", worker.index)
                worker.process.kill()
                worker.process.join()
            clean = clean and worker.process.exitcode == 0
            worker.conn.close()
        if workers:
            log.info("banditd stopped (%d workers)", len(workers))
        return 0 if clean else EXIT_FAILED
