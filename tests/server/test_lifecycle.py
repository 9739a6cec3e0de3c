"""Start-up, restart, graceful shutdown and crashes of real server processes."""

import asyncio
import random

import grpc
import numpy as np
import pytest

from banditd.server.database import connect
from banditd.v1 import decision_pb2 as pb
from banditd.v1 import decision_pb2_grpc
from tests.conftest import make_experiment


async def test_restart_keeps_assignments_and_statistics(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    first = await start_server()
    users = [f"user-{i}" for i in range(30)]
    before = [await first.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=u))
              for u in users]
    for reply in before[:20]:
        await first.stub.Reward(pb.RewardRequest(decision_id=reply.decision_id, value=1.0))
    runtime = first.server.registry.get("exp")
    learned = {p.name: (p.pulls.copy(), p.reward_sum.copy()) for p in runtime.policies}
    await first.close()

    second = await start_server()
    after = [await second.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=u))
             for u in users]
    assert [r.policy for r in after] == [r.policy for r in before]
    runtime = second.server.registry.get("exp")
    for policy in runtime.policies:
        np.testing.assert_array_equal(policy.pulls, learned[policy.name][0])
        np.testing.assert_array_equal(policy.reward_sum, learned[policy.name][1])
    # Rewards for decisions made before the restart are still attributed.
    reply = await second.stub.Reward(pb.RewardRequest(decision_id=before[25].decision_id, value=1))
    assert reply.status == pb.APPLIED


async def test_health_is_serving_only_once_state_is_loaded(migrated_db_url, server_process):
    await make_experiment(migrated_db_url)
    # The database comes from the environment, as in a container deployment.
    proc = server_process(None, env={"BANDITD_DATABASE_URL": migrated_db_url})
    proc.wait_serving()
    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        reply = await stub.Select(pb.SelectRequest(experiment_id="exp", user_id="first-call"))
    assert reply.arm  # the first call after SERVING already sees the experiment
    assert proc.terminate() == 0


async def test_sigterm_drains_and_flushes_the_decision_log(migrated_db_url, server_process):
    await make_experiment(migrated_db_url)
    proc = server_process(migrated_db_url)
    proc.wait_serving()
    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        replies = await asyncio.gather(*(
            stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}")) for i in range(200)
        ))
    assert proc.terminate() == 0
    conn = await connect(migrated_db_url)
    try:
        logged = {r[0] for r in await conn.fetch("SELECT decision_id FROM decisions")}
    finally:
        await conn.close()
    assert logged == {r.decision_id for r in replies}
    assert "decision log flushed" in proc.stderr_path.read_text()


async def test_server_refuses_an_unmigrated_database(database_url, server_process):
    proc = server_process(database_url)
    assert proc.proc.wait(60) == 5  # database unreachable or not migrated
    assert "run `banditctl migrate`" in proc.stderr_path.read_text()


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_no_acknowledged_reward(
    migrated_db_url, server_process, record_property
):
    """Send rewards from 16 concurrent clients, SIGKILL the server mid-stream, restart it.

    Every acknowledged reward must be in the database; a reward whose ack was lost may or
    may not be, so clients retry the unacknowledged ones after the restart (as real
    clients do) and each retry must say APPLIED or DUPLICATE. Finally the aggregates must
    equal exactly one count per decision."""
    await make_experiment(migrated_db_url)
    proc = server_process(migrated_db_url)
    proc.wait_serving()
    rng = random.Random(7)
    acknowledged: dict[str, float] = {}
    sent: dict[str, float] = {}
    decisions: list[pb.SelectResponse] = []

    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        for start in range(0, 3000, 500):
            batch = await stub.SelectBatch(pb.SelectBatchRequest(requests=[
                pb.SelectRequest(experiment_id="exp", user_id=f"u{i}")
                for i in range(start, start + 500)
            ]))
            decisions.extend(batch.responses)

        async def client(chunk):
            for decision in chunk:
                value = float(rng.random() < 0.3)
                sent[decision.decision_id] = value
                try:
                    reply = await stub.Reward(
                        pb.RewardRequest(decision_id=decision.decision_id, value=value), timeout=5
                    )
                except grpc.aio.AioRpcError:
                    return
                if reply.status == pb.APPLIED:
                    acknowledged[decision.decision_id] = value

        clients = [asyncio.create_task(client(decisions[i::16])) for i in range(16)]
        while len(acknowledged) < 1000:
            await asyncio.sleep(0.005)
        proc.kill()
        await asyncio.gather(*clients)

    conn = await connect(migrated_db_url)
    try:
        committed = dict(await conn.fetch("SELECT decision_id, value FROM rewards"))
    finally:
        await conn.close()
    assert set(acknowledged) <= set(committed)
    assert all(committed[d] == v for d, v in acknowledged.items())

    restarted = server_process(migrated_db_url)
    restarted.wait_serving()
    retried = 0
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        for decision_id, value in sent.items():
            if decision_id in acknowledged:
                continue
            reply = await stub.Reward(pb.RewardRequest(decision_id=decision_id, value=value))
            assert reply.status in (pb.APPLIED, pb.DUPLICATE)
            retried += 1
    assert restarted.terminate() == 0

    conn = await connect(migrated_db_url)
    try:
        pulls = await conn.fetchval("SELECT sum(pulls) FROM arm_stats")
        reward_sum = await conn.fetchval("SELECT sum(reward_sum) FROM arm_stats")
        n_rewards = await conn.fetchval("SELECT count(*) FROM rewards")
    finally:
        await conn.close()
    assert n_rewards == len(sent)
    assert pulls == len(sent)
    assert reward_sum == pytest.approx(sum(sent.values()))
    record_property("crash_figures", {
        "decisions": len(decisions), "rewards_sent_before_kill": len(sent),
        "acknowledged_before_kill": len(acknowledged),
        "committed_at_kill": len(committed), "retried_after_restart": retried,
        "rewards_after_restart": n_rewards,
    })
    print(f"crash figures: sent={len(sent)} acknowledged={len(acknowledged)} "
          f"committed_at_kill={len(committed)} retried={retried} final={n_rewards}")


async def test_a_serving_process_freezes_what_start_up_left_alive(migrated_db_url):
    """``serve`` starts with ``freeze_gc``: everything alive at SERVING leaves the cyclic
    collector's generations (full collections no longer traverse it); a plain start,
    as in tests that start many servers in one process, freezes nothing."""
    import gc

    from banditd.server.app import BanditServer, ServeConfig

    config = ServeConfig(database_url=migrated_db_url, port=0, metrics_port=None)
    gc.unfreeze()
    plain, serving = BanditServer(config), BanditServer(config)
    try:
        await plain.start()
        assert gc.get_freeze_count() == 0
        await serving.start(freeze_gc=True)
        assert gc.get_freeze_count() > 1000  # the modules, the registry, the servers
    finally:
        gc.unfreeze()
        await serving.stop()
        await plain.stop()


async def _health(address: str):
    """The server's overall health status, or None when nothing answers."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return None
        return reply.status


async def _forward(reader, writer, target_port: int) -> None:
    """Copy bytes both ways between a client and PostgreSQL on ``target_port``."""
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)

    async def pipe(source, sink):
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer),
                         return_exceptions=True)


async def test_a_server_waits_for_a_database_that_comes_up_later(migrated_db_url,
                                                                 server_process):
    """The database's port opens seconds after the server starts (a deployment where
    both start together): the server answers NOT_SERVING meanwhile, logs where it
    connects, then serves."""
    from urllib.parse import urlsplit

    from grpc_health.v1 import health_pb2

    from tests.conftest import free_port

    db_port = free_port()
    real = urlsplit(migrated_db_url)
    late_url = real._replace(netloc=f"{real.username}@127.0.0.1:{db_port}").geturl()
    proc = server_process(late_url, "--database-wait", "60")
    deadline = asyncio.get_running_loop().time() + 30
    while await _health(proc.address) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert proc.proc.poll() is None, proc.stderr_path.read_text()
        assert asyncio.get_running_loop().time() < deadline, "no NOT_SERVING while waiting"
        await asyncio.sleep(0.1)
    assert f"waiting for PostgreSQL at {late_url}: attempt 1 failed" in (
        proc.stderr_path.read_text())
    proxy = await asyncio.start_server(lambda r, w: _forward(r, w, real.port or 5432),
                                       "127.0.0.1", db_port)
    try:
        while await _health(proc.address) != health_pb2.HealthCheckResponse.SERVING:
            assert proc.proc.poll() is None, proc.stderr_path.read_text()
            assert asyncio.get_running_loop().time() < deadline + 30, "never SERVING"
            await asyncio.sleep(0.1)
        # in a thread: the drain's last commits go through the proxy on this loop
        assert await asyncio.to_thread(proc.terminate) == 0
    finally:
        proxy.close()
    assert "Traceback" not in proc.stderr_path.read_text()


def test_a_database_that_never_comes_up_is_one_line_and_exit_5(server_process):
    from tests.conftest import free_port

    url = f"postgresql://banditd:hunter2@127.0.0.1:{free_port()}/banditd"
    proc = server_process(url, "--database-wait", "1")
    assert proc.proc.wait(60) == 5
    stderr = proc.stderr_path.read_text()
    assert "Traceback" not in stderr and "hunter2" not in stderr
    assert stderr.rstrip().splitlines()[-1].startswith(
        "error: PostgreSQL at postgresql://banditd:***@127.0.0.1:")
    assert "did not accept connections within 1 s" in stderr


async def test_an_old_connection_is_asked_to_go_and_the_client_reconnects_unharmed(
    migrated_db_url, start_server
):
    """--max-connection-age: the server sends GOAWAY, the channel leaves READY and
    connects again (re-resolving its target), and no call fails meanwhile."""
    await make_experiment(migrated_db_url)
    running = await start_server(max_connection_age=1.0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.port}") as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        await stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u0"))
        states = []

        async def watch() -> None:
            state = channel.get_state()
            while True:
                await channel.wait_for_state_change(state)
                state = channel.get_state()
                states.append(state)

        watcher = asyncio.create_task(watch())
        try:
            for i in range(60):  # 3 s: past the age and its ±10 % jitter twice over
                reply = await stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
                assert reply.decision_id
                await asyncio.sleep(0.05)
        finally:
            watcher.cancel()
    left_ready = [s for s in states if s != grpc.ChannelConnectivity.READY]
    assert left_ready, states
    assert states.count(grpc.ChannelConnectivity.READY) >= 1, states


async def test_connections_live_on_without_a_maximum_age(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    running = await start_server()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.port}") as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        await stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u0"))
        for i in range(30):
            await stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
            await asyncio.sleep(0.05)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(channel.wait_for_state_change(
                grpc.ChannelConnectivity.READY), 1.0)
