"""The banditd process: wiring, start-up and graceful shutdown.

Start-up: resolve the database (embedded default or URL), check the schema,
load the signing keys, experiments and their committed statistics, then report
SERVING on ``grpc.health.v1.Health`` — never before the state is loaded.
Shutdown (SIGTERM/SIGINT): health goes NOT_SERVING, new calls are refused,
in-flight calls get ``grace`` seconds, queued rewards are committed, the decision
buffer is flushed, and the pool is closed. Statistics need no separate final
checkpoint: every acknowledged reward is already committed with its aggregate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from banditd.core_ext.policies import Rng
from banditd.server import __version__
from banditd.server.change_feed import ChangeFeed
from banditd.server.database import (
    DatabaseConfigError,
    DatabaseUnreachable,
    resolve_database_url,
    wait_for_pool,
)
from banditd.server.decision_id import DecisionIdCodec
from banditd.server.decision_log import DecisionLog
from banditd.server.default_rewards import DefaultRewardWorker
from banditd.server.demo_experiment import ensure_demo
from banditd.server.heartbeat import Heartbeat
from banditd.server.log_maintenance import LogMaintenance
from banditd.server.metrics import METRICS
from banditd.server.migrate import SchemaMismatchError, check_schema, migrate
from banditd.server.propensity import PropensityRefresher
from banditd.server.redis_fanout import RedisFanout, deployment_channel
from banditd.server.registry import Registry
from banditd.server.replica_sync import ReplicaSync
from banditd.server.reward_commit import RewardCommitter
from banditd.server.servicer import DecisionServicer, add_to_server
from banditd.v1 import decision_pb2

log = logging.getLogger("banditd.app")

SERVICE_NAME = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name


EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE = 1, 2, 5


class StartupError(RuntimeError):
    """The server cannot start as configured; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything ``banditd serve`` can be told (each flag also as BANDITD_<NAME>)."""

    database_url: str | None = None
    data_dir: str = ".banditd"
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9095
    log_dir: str | None = None
    grace_seconds: float = 10.0
    max_connection_age: float | None = None
    database_wait: float = 60.0
    migrate: bool = False
    default_reward_interval: float = 5.0
    sync_interval: float = 1.0
    redis_url: str | None = None
    decision_buffer: int = 200_000
    seed: int | None = None
    create_demo: bool = False


async def prepare_schema(conn, config: ServeConfig) -> int:
    """Migrate when asked (always for the embedded default), check the schema and create
    the demo when asked; the schema version."""
    if config.migrate or not config.database_url:
        await migrate(conn)
    version = await check_schema(conn)
    if config.create_demo and await ensure_demo(conn):
        log.info("created and started the demo experiment")
    return version


class BanditServer:
    """One banditd replica."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.server_id = f"{socket.gethostname()}:{config.port}:{os.getpid()}"
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._grpc: grpc.aio.Server | None = None
        self._waiting_health: grpc.aio.Server | None = None
        self.pool = None
        self._health = health.aio.HealthServicer()
        self._stopped = asyncio.Event()
        self.registry: Registry | None = None
        self.decision_log: DecisionLog | None = None
        self.committer: RewardCommitter | None = None
        self.fanout: RedisFanout | None = None
        self.feed: ChangeFeed | None = None
        self.servicer: DecisionServicer | None = None
        self.heartbeat: Heartbeat | None = None
        self.default_rewards: DefaultRewardWorker | None = None

    async def start(self, *, freeze_gc: bool = False) -> None:
        """Load everything, then report SERVING; ``freeze_gc`` first moves what start-up
        left alive out of the cyclic GC's reach (``_freeze_startup_objects``: for a
        process that serves, not for one that starts many servers, like the tests)."""
        config = self.config
        url = resolve_database_url(config.database_url, config.data_dir, create=True)
        self.pool = await wait_for_pool(
            url, wait_seconds=config.database_wait, log=log, min_size=2, max_size=8,
            on_first_failure=self._answer_health_while_waiting,
        )
        async with self.pool.acquire() as conn:
            version = await prepare_schema(conn, config)
            keys = {r["key_id"]: bytes(r["secret"]) for r in await conn.fetch(
                "SELECT key_id, secret FROM signing_keys")}
            nonce = await conn.fetchval("SELECT nextval('server_nonces')")
        if not keys:
            raise StartupError("no decision-id signing key in the database: "
                               "run `banditctl migrate`")
        codec = DecisionIdCodec(keys, max(keys), nonce)
        self.decision_log = DecisionLog(self.pool, self.server_id, capacity=config.decision_buffer)
        registry = Registry(
            Rng(config.seed),
            codec.signer(int.from_bytes(os.urandom(4), "big")),
            self.decision_log.rows,
        )
        self.fanout = (
            RedisFanout(config.redis_url, registry, deployment_channel(keys))
            if config.redis_url else None
        )
        self.committer = RewardCommitter(
            self.pool, registry, publish=self.fanout.publish if self.fanout else None)
        self.registry = registry
        self.feed = ChangeFeed(url, self.pool, registry, poll_interval=config.sync_interval)
        self.servicer = DecisionServicer(registry, codec, self.decision_log, self.committer)

        self._grpc = grpc.aio.server(options=_connection_options(config))
        add_to_server(self.servicer, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        # While PostgreSQL was awaited, a health-only server held the port (and chose it,
        # for port 0); SO_REUSEPORT (grpc's default on Linux) lets this one bind it too.
        self.port = _bind(self._grpc, config.host, self.port or config.port)
        await self._grpc.start()
        await self._stop_waiting_health()

        await self.feed.load_all()
        self.default_rewards = DefaultRewardWorker(
            self.pool, registry, self.committer, interval=config.default_reward_interval
        )
        self._tasks = [
            asyncio.create_task(self.feed.run(), name="change-feed"),
            asyncio.create_task(self.decision_log.run(), name="decision-log"),
            asyncio.create_task(self.committer.run(), name="reward-committer"),
            asyncio.create_task(self.default_rewards.run(), name="default-rewards"),
            asyncio.create_task(LogMaintenance(self.pool).run(), name="log-maintenance"),
            asyncio.create_task(PropensityRefresher(registry).run(), name="propensities"),
            asyncio.create_task(
                ReplicaSync(self.pool, registry, interval=config.sync_interval).run(),
                name="replica-sync",
            ),
        ]
        if self.fanout is not None:
            self._tasks.append(asyncio.create_task(self.fanout.run(), name="redis-fanout"))
        self.heartbeat = Heartbeat(self.pool, self.server_id, f"{config.host}:{self.port}")
        self._tasks.append(
            asyncio.create_task(self.heartbeat.run(lambda: len(registry)), name="heartbeat")
        )
        if config.metrics_port is not None:
            httpd, _thread = start_http_server(config.metrics_port, config.metrics_host,
                                               METRICS.registry)
            self.metrics_port = httpd.server_port
        if freeze_gc:
            _freeze_startup_objects()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "banditd %s serving on %s:%d (schema v%d, %d experiments, server_id %s)",
            __version__, config.host, self.port, version, len(registry), self.server_id,
        )

    async def _answer_health_while_waiting(self) -> None:
        """Serve ``grpc.health.v1`` (NOT_SERVING) on the port while PostgreSQL is awaited,
        so that probes and clients see a server that is starting, not a closed port."""
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        port = _bind(server, self.config.host, self.config.port)
        await server.start()
        self._waiting_health, self.port = server, port

    async def _stop_waiting_health(self) -> None:
        if self._waiting_health is not None:
            await self._waiting_health.stop(None)
            self._waiting_health = None

    async def stop(self) -> None:
        """Drain and stop; safe to call more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self._stop_waiting_health()
        if self.pool is None:  # start-up never reached the database: nothing to drain
            return
        if self.servicer is not None:
            self.servicer.draining = True
        if self.heartbeat is not None:
            with contextlib.suppress(Exception):
                await self.heartbeat.beat("draining")
        log.info("draining: health NOT_SERVING, grace %.1fs", self.config.grace_seconds)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._grpc is not None:
            await self._grpc.stop(self.config.grace_seconds)
        if self.committer is not None:
            await self.committer.drain(self.config.grace_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.decision_log is not None:
            if await self.decision_log.flush():
                log.info("decision log flushed")
            else:
                log.error("ERROR decision log NOT flushed: %d decisions lost (see workers.log)",
                          len(self.decision_log))
        if self.heartbeat is not None:
            with contextlib.suppress(Exception):
                await self.heartbeat.beat("stopped")
        if self.pool is not None:
            await self.pool.close()
        log.info("banditd stopped")

    async def _set_health(self, status) -> None:
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)


def _connection_options(config: ServeConfig) -> list[tuple[str, int]]:
    """gRPC server options. With ``max_connection_age`` the server sends GOAWAY to a
    connection that old (jittered by ±10 % by gRPC core, so clients do not reconnect in
    step) and lets its calls finish within ``grace_seconds``: a client channel then
    reconnects and re-resolves its target, which is how a round_robin client behind
    DNS or a headless Service learns of pods added since, and how reconnections
    spread over the workers sharing a port."""
    if config.max_connection_age is None:
        return []
    return [("grpc.max_connection_age_ms", int(config.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.grace_seconds * 1000))]


def _bind(server: grpc.aio.Server, host: str, port: int) -> int:
    """Listen on ``host:port``; the port bound (chosen by the system for 0)."""
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpc raises on a failed bind, older releases return 0
        raise StartupError(f"cannot listen on {host}:{port}: {exc}") from None
    if bound == 0:
        raise StartupError(f"cannot listen on {host}:{port} (in use?)")
    return bound


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up out of the cyclic garbage collector's reach.

    The modules, the registry and its experiments live as long as the process, yet
    every full (generation 2) collection traversed them all again, stopping the event
    loop for tens of milliseconds under load (benchmarks/RESULTS.md), a stall every
    call queued behind it then carried into its latency. ``gc.freeze`` (Python 3.7+, the
    ``gc`` module documentation) moves them to a permanent generation that later
    collections skip; they are still freed by reference counting. Collected first so
    that start-up's own garbage is not frozen with them.
    """
    gc.collect()
    gc.freeze()


async def serve(config: ServeConfig, *, on_started=None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    server = BanditServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start(freeze_gc=True)
        if on_started is not None:
            await on_started(server)
        await stop.wait()
    finally:
        await server.stop()


def report_failure(message: str, code: int) -> int:
    """Say why the server cannot run, in one line on stderr; returns the exit ``code``."""
    import click

    from banditd.server import logs

    logs.shutdown()
    click.echo(f"error: {message}", err=True)
    return code


def run_until_stopped(config: ServeConfig, *, on_started=None) -> int:
    """``serve`` in a new event loop; the exit code, with one line on stderr on failure:
    0 stopped cleanly, 1 failed to start, 2 bad configuration, 5 database unreachable
    or not migrated."""
    try:
        asyncio.run(serve(config, on_started=on_started))
    except (SchemaMismatchError, DatabaseUnreachable) as exc:
        return report_failure(str(exc), EXIT_DATABASE)
    except DatabaseConfigError as exc:
        return report_failure(str(exc), EXIT_USAGE)
    except OSError as exc:  # e.g. the metrics port is taken
        return report_failure(f"cannot start: {exc}", EXIT_FAILED)
    except StartupError as exc:
        return report_failure(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        pass
    return 0
