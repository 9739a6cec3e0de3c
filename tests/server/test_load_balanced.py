"""Three servers behind one client channel, as a backend calls them behind DNS or a
headless Service: gRPC's ``round_robin`` over the three addresses, with the service
config every client should use (``banditd/client/service_config.json``). Without Redis
the servers converge through the PostgreSQL poll, within its interval + 1 s; with Redis
they poll only once a minute, so converging within a second shows Redis carried it."""

from __future__ import annotations

import asyncio
import base64
import random
from collections import Counter

import grpc
import pytest

from banditd.client.messages import channel_options
from banditd.server.database import connect
from banditd.server.experiment_store import change_status
from banditd.v1 import decision_pb2 as pb
from banditd.v1 import decision_pb2_grpc
from tests.conftest import REDIS_URL, make_experiment, wait_for

WITHOUT_REDIS = {"sync_interval": 0.5}
WITH_REDIS = {"sync_interval": 60.0, "redis_url": REDIS_URL}


async def _committed(url: str) -> dict[tuple[str, str], tuple[float, float]]:
    conn = await connect(url)
    try:
        rows = await conn.fetch("SELECT policy, arm, pulls, reward_sum FROM arm_stats")
    finally:
        await conn.close()
    return {(r["policy"], r["arm"]): (float(r["pulls"]), float(r["reward_sum"])) for r in rows}


def _in_memory(running) -> dict[tuple[str, str], tuple[float, float]]:
    runtime = running.server.registry.get("exp")
    return {(policy.name, arm): (float(policy.pulls[i]), float(policy.reward_sum[i]))
            for policy in runtime.policies for i, arm in enumerate(runtime.arms)
            if policy.pulls[i] > 0}


@pytest.mark.parametrize(("settings", "converge_within"), [
    (WITHOUT_REDIS, WITHOUT_REDIS["sync_interval"] + 1.0),
    (WITH_REDIS, 1.0),
], ids=["postgres-poll", "redis"])
async def test_three_servers_behind_round_robin_behave_as_one(
    migrated_db_url, start_server, settings, converge_within
):
    await make_experiment(migrated_db_url)
    servers = [await start_server(**settings) for _ in range(3)]
    if "redis_url" in settings:
        await wait_for(lambda: all(s.server.fanout.up for s in servers), timeout=5.0)
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.server.port}" for s in servers)
    rng = random.Random(7)
    async with grpc.aio.insecure_channel(target, options=channel_options(3)) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        choices = [await stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
                   for i in range(300)]
    # round_robin spread the Selects over the three servers: each signs with its own
    # server_nonce (bytes 18-21 of the id's payload, banditd.server.decision_id).
    signers = Counter(base64.urlsafe_b64decode(c.decision_id[1:])[18:22] for c in choices)
    assert len(signers) == 3 and min(signers.values()) >= 90, signers

    # Rewards land on random servers: an id is accepted by a server that did not sign it.
    rewarded = rng.sample(choices, 150)
    answers = await asyncio.gather(*(
        rng.choice(servers).stub.Reward(pb.RewardRequest(
            decision_id=c.decision_id, value=float(rng.random() < 0.3)))
        for c in rewarded))
    assert {a.status for a in answers} == {pb.APPLIED}

    # Soon every server holds the committed totals.
    committed = await _committed(migrated_db_url)
    assert sum(p for p, _ in committed.values()) == 150
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for(lambda: all(_in_memory(s) == committed for s in servers),
                   timeout=converge_within)
    assert loop.time() - started < converge_within

    # A rollback reaches all three within a second.
    conn = await connect(migrated_db_url)
    try:
        await change_status(conn, "exp", "rollback", actor="test", reason="test")
    finally:
        await conn.close()

    async def rolled_back() -> bool:
        replies = [await s.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="z"))
                   for s in servers]
        return all(r.served_by == pb.ROLLED_BACK for r in replies)

    await wait_for(rolled_back, timeout=1.0)
