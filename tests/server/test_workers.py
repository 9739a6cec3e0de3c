"""``banditd serve --workers N``: one address, N processes, one server to the outside."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import urllib.request

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from banditd.server.database import connect
from banditd.server.worker_metrics import merge
from banditd.server.workers import parse_workers, usable_cores
from banditd.v1 import decision_pb2 as pb
from banditd.v1 import decision_pb2_grpc
from tests.conftest import free_port, make_experiment


def test_worker_counts():
    assert parse_workers("auto") == usable_cores() >= 1
    assert parse_workers("3") == 3
    for bad, message in (("0", "must be >= 1"), ("two", "a number >= 1 or 'auto'")):
        with pytest.raises(ValueError, match=message):
            parse_workers(bad)


def _families(decisions: float, buffer: float, latencies: list[float]):
    registry = CollectorRegistry()
    Counter("banditd_rewards", "r", ("status",), registry=registry).labels("applied").inc(
        decisions)
    Gauge("banditd_decision_buffer_records", "b", registry=registry).set(buffer)
    histogram = Histogram("banditd_flush_seconds", "f", buckets=(0.1, 1.0), registry=registry)
    for value in latencies:
        histogram.observe(value)
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def test_merge_sums_counters_and_histograms_and_labels_gauges_by_worker():
    merged = {f.name: f for f in merge([(0, _families(3, 10, [0.05, 2.0])),
                                        (1, _families(4, 20, [0.5]))])}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in merged.values() for s in family.samples}
    assert values[("banditd_rewards_total", (("status", "applied"),))] == 7
    assert values[("banditd_decision_buffer_records", (("worker", "0"),))] == 10
    assert values[("banditd_decision_buffer_records", (("worker", "1"),))] == 20
    assert values[("banditd_flush_seconds_bucket", (("le", "0.1"),))] == 1
    assert values[("banditd_flush_seconds_bucket", (("le", "1.0"),))] == 2
    assert values[("banditd_flush_seconds_bucket", (("le", "+Inf"),))] == 3
    assert values[("banditd_flush_seconds_count", ())] == 3
    assert values[("banditd_flush_seconds_sum", ())] == pytest.approx(2.55)


async def _heartbeats(url: str) -> dict[str, str]:
    conn = await connect(url)
    try:
        return {r["server_id"]: r["state"]
                for r in await conn.fetch("SELECT server_id, state FROM server_heartbeats")}
    finally:
        await conn.close()


async def _until(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await predicate():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout} s")


def _scrape(port: int) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.slow
async def test_two_workers_serve_one_port_and_restart_and_drain(migrated_db_url,
                                                                server_process):
    await make_experiment(migrated_db_url)
    metrics_port = free_port()
    proc = server_process(migrated_db_url, "--workers", "2", "--metrics-port", str(metrics_port))
    proc.wait_serving()
    workers = await _until(lambda: _serving(migrated_db_url, 2), 30)

    # Many connections: the kernel spreads them over both workers' sockets.
    calls = 0
    for i in range(20):
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            for j in range(5):
                await stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}-{j}"))
                calls += 1
    samples = _scrape(metrics_port)
    decided = sum(v for (name, _labels), v in samples.items()
                  if name == "banditd_decisions_total")
    assert decided == calls
    assert {dict(labels)["worker"] for (name, labels) in samples
            if name == "banditd_experiments_loaded"} == {"0", "1"}
    # Both workers served: each logs its decisions under its own server_id.
    servers = await _until(lambda: _logged_servers(migrated_db_url, calls), 30)
    assert servers == set(workers)

    # A worker killed outright is restarted (a new process, a new heartbeat row).
    victim = workers[0]
    os.kill(int(victim.rsplit(":", 1)[1]), signal.SIGKILL)
    after = await _until(lambda: _serving(migrated_db_url, 2, exclude={victim}), 60)
    assert workers[1] in after and victim not in after
    assert "restarting in" in proc.stderr_path.read_text()

    assert proc.terminate() == 0
    states = await _heartbeats(migrated_db_url)
    assert [states[w] for w in after] == ["stopped", "stopped"]


async def _logged_servers(url: str, calls: int) -> set[str] | None:
    """The server ids in the decision log once all ``calls`` decisions are flushed."""
    conn = await connect(url)
    try:
        rows = await conn.fetch("SELECT server_id FROM decisions")
    finally:
        await conn.close()
    return {r[0] for r in rows} if len(rows) == calls else None


async def _serving(url: str, count: int, exclude: set[str] = frozenset()) -> list[str] | None:
    """The ids of the serving workers once ``count`` of them are (dead ones excluded)."""
    serving = [s for s, state in (await _heartbeats(url)).items()
               if state == "serving" and s not in exclude and _alive(s)]
    return sorted(serving) if len(serving) == count else None


def _alive(server_id: str) -> bool:
    try:
        os.kill(int(server_id.rsplit(":", 1)[1]), 0)
    except ProcessLookupError:
        return False
    return True


async def test_workers_that_cannot_reach_the_database_stop_the_server(server_process):
    proc = server_process("postgresql://nobody@127.0.0.1:1/none", "--workers", "2",
                          "--database-wait", "0")
    assert proc.proc.wait(60) == 5
    said = proc.stderr_path.read_text()
    assert "error: " in said and "PostgreSQL at" in said and "127.0.0.1:1" in said


async def test_a_taken_metrics_port_stops_the_server_before_any_worker(migrated_db_url,
                                                                       server_process):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = server_process(migrated_db_url, "--workers", "2", "--metrics-port", str(port))
        assert proc.proc.wait(60) == 1
    said = proc.stderr_path.read_text()
    assert "error: cannot start" in said and "worker 0 started" not in said
