"""Shared fixtures: real PostgreSQL databases created and dropped per test, and real
banditd servers (in-process or as subprocesses) on them.

The tests talk to a real PostgreSQL server: ``BANDITD_TEST_PG_URL`` (default the
local one, ``postgresql://postgres@127.0.0.1:5432/postgres``). Each database
fixture creates a fresh ``banditd_test_<random>`` database and drops it
afterwards, so tests never see each other's data. Redis is the local one too
(``BANDITD_TEST_REDIS_URL``); servers on different test databases have different
signing keys, hence different channels on it. A test that stops Redis runs its own
``redis-server`` (``redis_process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from banditd.server import database
from banditd.server.app import BanditServer, ServeConfig
from banditd.server.database import connect
from banditd.server.experiment import ExperimentSpec
from banditd.server.experiment_store import change_status, create_experiment
from banditd.v1 import decision_pb2_grpc

ADMIN_URL = os.environ.get("BANDITD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BANDITD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def create_database() -> str:
    return await database.create_database(ADMIN_URL, "banditd_test")


async def drop_database(url: str) -> None:
    await database.drop_database(ADMIN_URL, url)


@pytest.fixture
async def database_url():
    """URL of a fresh, empty database (dropped after the test)."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def migrated_db_url(database_url):
    """URL of a fresh database with every banditd migration applied."""
    from banditd.server.database import connect
    from banditd.server.migrate import migrate

    conn = await connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return database_url


@pytest.fixture
async def db_conn(migrated_db_url):
    """A connection (with banditd's codecs) to a fresh migrated database."""
    from banditd.server.database import connect

    conn = await connect(migrated_db_url)
    try:
        yield conn
    finally:
        await conn.close()

async def migrate_to(conn, version: int) -> None:
    """Apply migrations 1 .. ``version`` as ``migrate`` does, recording each: a database
    as an older banditd left it."""
    from banditd.server.migrate import available_migrations

    await conn.execute("CREATE TABLE banditd_schema (version integer PRIMARY KEY, "
                       "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
    for m in available_migrations()[:version]:
        await conn.execute(m.sql)
        await conn.execute("INSERT INTO banditd_schema (version, name) VALUES ($1, $2)",
                           m.version, m.name)


ARMS = tuple(f"arm-{i}" for i in range(5))


async def make_experiment(url: str, experiment_id: str = "exp", *, start: bool = True, **overrides):
    """Create (and start) an experiment directly in the database."""
    fields = {"arms": ARMS, "policies": ("thompson", "ucb", "egreedy", "control")}
    fields.update(overrides)
    spec = ExperimentSpec(id=experiment_id, name=f"test {experiment_id}", **fields)
    conn = await connect(url)
    try:
        experiment = await create_experiment(conn, spec, actor="test")
        if start:
            experiment = await change_status(conn, experiment_id, "start", actor="test")
        return experiment
    finally:
        await conn.close()


class RunningServer:
    """An in-process BanditServer and a channel/stub to it."""

    def __init__(self, server: BanditServer) -> None:
        self.server = server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = decision_pb2_grpc.DecisionServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop()


@pytest.fixture
async def start_server(migrated_db_url):
    """Factory: ``await start_server(**ServeConfig overrides)`` -> RunningServer."""
    running: list[RunningServer] = []

    async def start(**overrides) -> RunningServer:
        settings = {
            "database_url": migrated_db_url, "port": 0, "metrics_port": None,
            "grace_seconds": 2.0, "default_reward_interval": 0.2, "sync_interval": 0.2,
            "seed": 1234, **overrides,
        }
        config = ServeConfig(**settings)
        server = BanditServer(config)
        try:
            await server.start()
        except BaseException:
            await server.stop()
            raise
        handle = RunningServer(server)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``banditd serve`` as a real subprocess (for kill -9 and SIGTERM tests)."""

    def __init__(self, database_url: str | None, tmp_path: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_dir = tmp_path / "logs"
        cmd = [sys.executable, "-m", "banditd.server.main", "serve", "--port", str(self.port),
               "--metrics-port", "0", "--log-dir", str(self.log_dir), "--grace", "5", *extra]
        if database_url:
            cmd += ["--database-url", database_url]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.stderr_path = tmp_path / f"server-{self.port}.err"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stderr=self._stderr, stdout=subprocess.DEVNULL, env=env)
        self.address = f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 60.0) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.stderr_path.read_text()[-2000:]}")
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.1)
        raise TimeoutError(f"server not SERVING after {timeout}s")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._stderr.close()

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._stderr.close()
        return code


@pytest.fixture
def server_process(tmp_path):
    started: list[ServerProcess] = []

    def start(database_url: str | None, *extra: str, env=None) -> ServerProcess:
        proc = ServerProcess(database_url, tmp_path, *extra, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.kill()


class RedisProcess:
    """A ``redis-server`` of the test's own on a free port, to stop and start again."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tmp_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_process(tmp_path):
    redis = RedisProcess(tmp_path)
    redis.start()
    yield redis
    redis.kill()


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02):
    """Await until ``predicate()`` is true (sync or async), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


# -- wheels ---------------------------------------------------------------------------
# Built once per session from one fresh copy of the checkout: the packaging tests and the
# container image's tests (tests/deploy) inspect and install the same files, and the
# Cython build, the slowest step, runs once.


@pytest.fixture(scope="session")
def fresh_checkout(tmp_path_factory) -> Path:
    """A copy of this working tree as a fresh clone has it (nothing built)."""
    from tests.checkout import copy_checkout

    return copy_checkout(tmp_path_factory.mktemp("packaging"), built=False)


@pytest.fixture(scope="session")
def server_wheel(fresh_checkout, tmp_path_factory) -> Path:
    """The banditd wheel built from :func:`fresh_checkout`."""
    from tests.checkout import build_wheel

    return build_wheel(fresh_checkout, tmp_path_factory.mktemp("server-wheel"))


@pytest.fixture(scope="session")
def client_wheel(fresh_checkout, tmp_path_factory) -> Path:
    """The banditd-client wheel built from :func:`fresh_checkout`'s clients/python."""
    from tests.checkout import build_wheel

    return build_wheel(fresh_checkout / "clients" / "python",
                       tmp_path_factory.mktemp("client-wheel"))
