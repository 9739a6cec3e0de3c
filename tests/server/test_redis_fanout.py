"""Committed statistics through Redis: fast, order-free, and optional.

The servers here poll PostgreSQL only every ``SLOW_POLL`` seconds, so anything they
learn sooner came through Redis; the loss test polls fast, as the fallback must.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from banditd.server.app import BanditServer, ServeConfig
from banditd.server.metrics import METRICS
from banditd.server.redis_fanout import check_redis_url, deployment_channel
from banditd.v1 import decision_pb2 as pb
from tests.conftest import REDIS_URL, make_experiment, wait_for

SLOW_POLL = 60.0


def _memory(running) -> dict[tuple[str, str], tuple[float, float]]:
    runtime = running.server.registry.get("exp")
    return {(policy.name, arm): (float(policy.pulls[i]), float(policy.reward_sum[i]))
            for policy in runtime.policies for i, arm in enumerate(runtime.arms)
            if policy.pulls[i] > 0}


def _sample(name: str, **labels: str) -> float:
    return METRICS.registry.get_sample_value(name, labels) or 0.0


async def _select_and_reward(servers, n: int, rng: random.Random, tag: str) -> None:
    """``n`` decisions from random servers, each rewarded on a random server."""
    for i in range(n):
        decision = await rng.choice(servers).stub.Select(
            pb.SelectRequest(experiment_id="exp", user_id=f"{tag}{i}"))
        answer = await rng.choice(servers).stub.Reward(
            pb.RewardRequest(decision_id=decision.decision_id, value=float(rng.random() < 0.4)))
        assert answer.status == pb.APPLIED


async def test_redis_carries_every_commit_to_the_other_servers(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    servers = [await start_server(sync_interval=SLOW_POLL, redis_url=REDIS_URL)
               for _ in range(3)]
    await wait_for(lambda: all(s.server.fanout.up for s in servers), timeout=5.0)
    received0 = _sample("banditd_redis_messages_total", direction="received")
    lag0 = _sample("banditd_replica_sync_lag_seconds_count", path="redis")

    await _select_and_reward(servers, 60, random.Random(3), "u")
    await wait_for(lambda: len({repr(_memory(s)) for s in servers}) == 1
                   and sum(p for p, _ in _memory(servers[0]).values()) == 60, timeout=1.0)
    assert _sample("banditd_redis_messages_total", direction="received") > received0
    # Every adoption came through Redis (nothing was polled), and was observed.
    assert _sample("banditd_replica_sync_lag_seconds_count", path="redis") > lag0


async def test_a_server_keeps_serving_without_redis_and_resumes_when_it_returns(
    migrated_db_url, start_server, redis_process, tmp_path
):
    await make_experiment(migrated_db_url)
    servers = [await start_server(sync_interval=0.3, redis_url=redis_process.url)
               for _ in range(2)]
    await wait_for(lambda: all(s.server.fanout.up for s in servers), timeout=5.0)
    assert _sample("banditd_redis_up") == 1.0
    rng = random.Random(5)

    redis_process.kill()
    # Every call succeeds while Redis is gone; the poll carries the statistics.
    await _select_and_reward(servers, 30, rng, "a")
    await wait_for(lambda: not any(s.server.fanout.up for s in servers), timeout=5.0)
    assert _sample("banditd_redis_up") == 0.0
    await wait_for(lambda: _memory(servers[0]) == _memory(servers[1]), timeout=0.3 + 1.0)
    assert sum(p for p, _ in _memory(servers[1]).values()) == 30

    redis_process.start()
    # Back-off is at most 10 s between attempts, and the first retries come sooner.
    await wait_for(lambda: all(s.server.fanout.up for s in servers), timeout=12.0)
    assert _sample("banditd_redis_up") == 1.0
    received0 = _sample("banditd_redis_messages_total", direction="received")
    await _select_and_reward(servers, 20, rng, "b")
    await wait_for(lambda: _sample("banditd_redis_messages_total", direction="received")
                   > received0, timeout=2.0)
    await wait_for(lambda: _memory(servers[0]) == _memory(servers[1]), timeout=1.3)


async def test_the_outage_is_logged_once_per_loss_and_once_per_return(
    migrated_db_url, redis_process, tmp_path, caplog
):
    await make_experiment(migrated_db_url)
    server = BanditServer(ServeConfig(
        database_url=migrated_db_url, port=0, metrics_port=None, grace_seconds=1.0,
        redis_url=redis_process.url))
    caplog.set_level("INFO", logger="banditd.app")
    try:
        await server.start()
        await wait_for(lambda: server.fanout.up, timeout=5.0)
        redis_process.kill()
        await wait_for(lambda: not server.fanout.up, timeout=5.0)
        await asyncio.sleep(2.0)  # several reconnection attempts fail meanwhile
        redis_process.start()
        await wait_for(lambda: server.fanout.up, timeout=12.0)
    finally:
        await server.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "banditd.app"]
    assert sum("Redis unreachable" in m for m in messages) == 1, messages
    assert sum("Redis reachable again" in m for m in messages) == 1, messages


def test_the_channel_is_the_deployments_and_hides_its_key() -> None:
    key = bytes(range(32))
    channel = deployment_channel({1: key, 2: b"\x07" * 32})
    assert channel == deployment_channel({1: key})  # a newer key does not move it
    assert channel != deployment_channel({1: b"\x01" * 32})
    assert channel.startswith("banditd:") and channel.endswith(":arm_stats")
    assert key.hex()[:16] not in channel


@pytest.mark.parametrize("url", ["localhost:6379", "http://redis:6379", "postgresql://x/y", ""])
def test_a_redis_url_that_is_not_one_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="is not a Redis URL"):
        check_redis_url(url)


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h:6380/1", "unix:///tmp/r.sock"])
def test_redis_urls_are_accepted(url: str) -> None:
    check_redis_url(url)


def test_serve_refuses_a_bad_redis_url_with_usage_exit_code() -> None:
    from click.testing import CliRunner

    from banditd.server.main import main

    result = CliRunner().invoke(main, ["serve", "--redis-url", "localhost:6379"])
    assert result.exit_code == 2
    assert "--redis-url" in result.output and "redis://host:6379/0" in result.output
