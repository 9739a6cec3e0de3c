"""Rewards are durable and exactly-once; default rewards close the window once."""

import asyncio
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from banditd.server.database import connect
from banditd.server.metrics import METRICS
from banditd.v1 import decision_pb2 as pb
from tests.conftest import make_experiment, wait_for


async def _stats(url):
    conn = await connect(url)
    try:
        rows = await conn.fetch("SELECT policy, arm, pulls, reward_sum FROM arm_stats")
        return {(r["policy"], r["arm"]): (r["pulls"], r["reward_sum"]) for r in rows}
    finally:
        await conn.close()


def _memory(running, policy_name, arm):
    runtime = running.server.registry.get("exp")
    policy = next(p for p in runtime.policies if p.name == policy_name)
    index = runtime.arm_index[arm]
    return policy.pulls[index], policy.reward_sum[index]


def _rewards_counted(status: str) -> float:
    return METRICS.registry.get_sample_value(
        "banditd_rewards_total", {"status": status, "source": "client"}) or 0.0


async def test_fifty_concurrent_copies_count_once(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    running = await start_server()
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    applied, duplicates = _rewards_counted("applied"), _rewards_counted("duplicate")
    replies = await asyncio.gather(*(
        running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1.0))
        for _ in range(50)
    ))
    statuses = [r.status for r in replies]
    assert statuses.count(pb.APPLIED) == 1
    assert statuses.count(pb.DUPLICATE) == 49
    assert _rewards_counted("applied") - applied == 1
    assert _rewards_counted("duplicate") - duplicates == 49
    assert await _stats(migrated_db_url) == {(decision.policy, decision.arm): (1.0, 1.0)}
    assert _memory(running, decision.policy, decision.arm) == (1.0, 1.0)


async def test_reward_row_keeps_every_field_exactly(migrated_db_url, start_server):
    """The rewards row of a group commit: names, the decision's time (the id's ms), the
    client's event time to the microsecond and the raw value, for every reward of a group."""
    await make_experiment(migrated_db_url)
    running = await start_server()
    decisions = [await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
                 for i in range(12)]
    event_time = Timestamp(seconds=1_764_000_000, nanos=123_456_000)
    # Not short decimals, and the extremes of a double in [0, 1] (the smallest
    # subnormal and normal, the largest below 1): the group travels as jsonb, whose
    # numbers are exact decimals, and must come back bit for bit.
    values = [i / 13 for i in range(8)] + [5e-324, 2.2250738585072014e-308, 1e-300,
                                           0.9999999999999999]
    await asyncio.gather(*(
        running.stub.Reward(pb.RewardRequest(decision_id=d.decision_id, value=v,
                                             event_time=event_time if i % 2 else None))
        for i, (d, v) in enumerate(zip(decisions, values, strict=True))
    ))
    conn = await connect(migrated_db_url)
    try:
        rows = {r["decision_id"]: r for r in await conn.fetch("SELECT * FROM rewards")}
    finally:
        await conn.close()
    codec = running.server.servicer._codec
    for i, (d, value) in enumerate(zip(decisions, values, strict=True)):
        row = rows[d.decision_id]
        assert (row["policy"], row["arm"], row["served_by"], row["source"]) == (
            d.policy, d.arm, pb.ServedBy.Name(d.served_by), "client")
        assert row["value"] == value  # bit for bit
        decided_ms = codec.decode(d.decision_id).decided_at_ms
        assert row["decided_at"] == datetime.fromtimestamp(decided_ms / 1000, UTC)
        assert row["event_time"] == (event_time.ToDatetime(tzinfo=UTC) if i % 2 else None)


async def test_duplicate_sent_to_another_replica_counts_nothing(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    first = await start_server()
    second = await start_server()
    decision = await first.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    reply_a = await first.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1))
    reply_b = await second.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1))
    assert (reply_a.status, reply_b.status) == (pb.APPLIED, pb.DUPLICATE)
    assert await _stats(migrated_db_url) == {(decision.policy, decision.arm): (1.0, 1.0)}


async def test_reward_before_the_decision_row_is_flushed(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    running = await start_server()
    running.server.decision_log.interval = 3600
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    request = pb.RewardRequest(decision_id=decision.decision_id, value=0.25)
    reply = await running.stub.Reward(request)
    assert reply.status == pb.APPLIED
    assert await _stats(migrated_db_url) == {(decision.policy, decision.arm): (1.0, 0.25)}


async def test_rewards_are_normalised_into_the_statistics(migrated_db_url, start_server):
    await make_experiment(migrated_db_url, reward_min=0.0, reward_max=10.0)
    running = await start_server()
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=7.5))
    assert await _stats(migrated_db_url) == {(decision.policy, decision.arm): (1.0, 0.75)}


async def test_outside_traffic_rewards_are_stored_but_teach_no_policy(
    migrated_db_url, start_server
):
    await make_experiment(migrated_db_url, traffic_pct=0.5)
    running = await start_server()
    decisions = [await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
                 for i in range(40)]
    decision = next(d for d in decisions if d.served_by == pb.OUTSIDE_TRAFFIC)
    reply = await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1))
    assert reply.status == pb.APPLIED
    assert await _stats(migrated_db_url) == {}


async def test_default_reward_once_when_the_window_closes(migrated_db_url, start_server, tmp_path):
    from banditd.server import logs

    await make_experiment(migrated_db_url, reward_window_seconds=0.5, default_reward=0.0)
    running = await start_server()
    logs.configure(tmp_path, console=False)
    try:
        decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
        await running.server.decision_log.flush()

        async def defaulted():
            return await _stats(migrated_db_url) == {(decision.policy, decision.arm): (1.0, 0.0)}

        await wait_for(defaulted, timeout=5.0)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "reward window" in err.value.details()
        await asyncio.sleep(0.5)  # more worker rounds: still applied once
        assert await _stats(migrated_db_url) == {(decision.policy, decision.arm): (1.0, 0.0)}
        logs.flush()
        log_text = (tmp_path / "workers.log").read_text()
    finally:
        logs.configure(None, console=False)
    assert f"Reward {decision.decision_id} computed: default value=0" in log_text
    assert log_text.count(f"Reward {decision.decision_id} computed") == 1


async def test_database_down_for_a_reward_answers_unavailable_and_loses_nothing(
    migrated_db_url, start_server
):
    await make_experiment(migrated_db_url)
    running = await start_server()
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    name = migrated_db_url.rsplit("/", 1)[1]
    admin = await connect(migrated_db_url.rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", name,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _memory(running, decision.policy, decision.arm) == (0.0, 0.0)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert await _stats(migrated_db_url) == {}
    retry = await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1))
    assert retry.status == pb.APPLIED
    assert await _stats(migrated_db_url) == {(decision.policy, decision.arm): (1.0, 1.0)}


def _lag_samples() -> tuple[float, float]:
    """(count, sum) of ``banditd_replica_sync_lag_seconds{path="postgres"}`` so far."""
    def sample(suffix: str) -> float:
        return METRICS.registry.get_sample_value(
            f"banditd_replica_sync_lag_seconds_{suffix}", {"path": "postgres"}) or 0.0

    return sample("count"), sample("sum")


async def test_replicas_converge_on_each_others_rewards(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    first = await start_server()
    second = await start_server()
    count0, sum0 = _lag_samples()
    decisions = [await first.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
                 for i in range(10)]
    for decision in decisions:
        await first.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1.0))

    def totals(running):
        runtime = running.server.registry.get("exp")
        return sum(p.pulls.sum() for p in runtime.policies)

    assert totals(first) == 10
    await wait_for(lambda: totals(second) == 10, timeout=5.0)
    for a, b in zip(first.server.registry.get("exp").policies,
                    second.server.registry.get("exp").policies, strict=True):
        assert a.pulls.tolist() == b.pulls.tolist()
        assert a.reward_sum.tolist() == b.reward_sum.tolist()
    # Each adoption is observed: at least once per cell the second server learnt, at
    # most once per reward (an adoption needs a newer pulls); the first server adopts
    # nothing of its own. The lag is bounded by the sync interval (0.2 s) plus a poll.
    count, total = _lag_samples()
    cells = sum(int((p.pulls > 0).sum()) for p in second.server.registry.get("exp").policies)
    assert cells <= count - count0 <= len(decisions)
    assert 0 <= (total - sum0) / (count - count0) < 0.2 + 1.0


async def test_a_decision_row_written_late_still_gets_its_default_reward(
    migrated_db_url, start_server
):
    """The worker's watermark trails by a margin, so a decision the log wrote after the
    worker had already scanned its time range (e.g. after a database outage) is found."""
    await make_experiment(migrated_db_url, reward_window_seconds=0.5, default_reward=0.0)
    running = await start_server()
    running.server.decision_log.interval = 3600  # hold the row back ...
    await asyncio.sleep(0.2)  # ... once the flusher's current 0.1 s wait has run out
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    await asyncio.sleep(1.0)  # the window closes while the row is still unwritten ...
    await running.server.default_rewards.run_once()  # ... and a round passes over that range
    assert await _stats(migrated_db_url) == {}
    await running.server.decision_log.flush()  # now the row arrives

    async def defaulted():
        return await _stats(migrated_db_url) == {(decision.policy, decision.arm): (1.0, 0.0)}

    await wait_for(defaulted, timeout=5.0)


async def test_group_commit_stops_waiting_when_rewards_stop_arriving(
    migrated_db_url, start_server
):
    """Under load a group waits for more rewards, but only while they keep coming: a
    reward that follows a group is not held for the whole ``commit_delay`` (a minute
    here) once no others arrive."""
    await make_experiment(migrated_db_url)
    running = await start_server()
    committer = running.server.committer
    committer.commit_delay = 60.0
    committer.commit_siblings = 1  # every group after the first may wait
    decisions = [await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
                 for i in range(11)]
    burst = await asyncio.gather(*(
        running.stub.Reward(pb.RewardRequest(decision_id=d.decision_id, value=1.0))
        for d in decisions[:10]
    ))
    assert {r.status for r in burst} == {pb.APPLIED}
    lone = running.stub.Reward(pb.RewardRequest(decision_id=decisions[10].decision_id, value=1))
    assert (await asyncio.wait_for(lone, timeout=20)).status == pb.APPLIED
