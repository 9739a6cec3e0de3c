"""Exactly-once survives retention: an experiment whose reward window the retention
cannot cover is refused, and a Reward for a decision whose day was dropped is refused
as late by a running server, never applied again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from banditd.admin_cli.retention import apply_retention, set_retention
from banditd.core_ext.policies import POLICY_CODES
from banditd.server.decision_id import DecisionIdCodec
from banditd.server.experiment import ExperimentSpec
from banditd.server.experiment_store import RetentionConflict, create_experiment
from banditd.server.log_partitions import ensure_partitions, log_partitions
from banditd.server.registry import POLICY
from banditd.v1 import decision_pb2 as pb
from tests.admin_cli.test_retention import rolled_up
from tests.conftest import ARMS, make_experiment


def _spec(experiment_id: str, window_s: float) -> ExperimentSpec:
    return ExperimentSpec(id=experiment_id, name=experiment_id, arms=("a", "b"),
                          policies=("ucb", "control"), reward_window_seconds=window_s)


@pytest.mark.parametrize(("window_s", "allowed"), [
    (3 * 86_400, True),  # 3 days + 1 = the 4 days kept
    (3 * 86_400 + 1, False),  # a second more needs a fifth day
    (0.5, True),
])
async def test_create_refuses_a_window_the_deployment_retention_cannot_cover(
        db_conn, window_s, allowed):
    await set_retention(db_conn, decisions=30, rewards=4, actor="test")
    if allowed:
        await create_experiment(db_conn, _spec("e", window_s), actor="test")
    else:
        with pytest.raises(RetentionConflict, match=r"at least 5 days.*keeps rewards 4 days"):
            await create_experiment(db_conn, _spec("e", window_s), actor="test")
        assert await db_conn.fetchval("SELECT count(*) FROM experiments") == 0


async def test_without_retention_any_window_is_accepted(db_conn):
    await create_experiment(db_conn, _spec("e", 365 * 86_400), actor="test")


async def _arm_stats(conn):
    rows = await conn.fetch("SELECT policy, arm, pulls, reward_sum FROM arm_stats")
    return {(r["policy"], r["arm"]): (r["pulls"], r["reward_sum"]) for r in rows}


async def test_a_reward_for_a_dropped_day_is_refused_as_late_and_counts_nothing(
        migrated_db_url, db_conn, start_server):
    conn = db_conn
    experiment = await make_experiment(migrated_db_url, reward_window_seconds=86_400)
    today = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    old_day = today - timedelta(days=4)
    await conn.execute("UPDATE experiments SET created_at = $1",
                       datetime.combine(old_day, datetime.min.time(), tzinfo=UTC))
    keys = {r["key_id"]: bytes(r["secret"])
            for r in await conn.fetch("SELECT key_id, secret FROM signing_keys")}
    signer = DecisionIdCodec(keys, max(keys), server_nonce=0x5EED).signer()
    ucb, arm = POLICY_CODES["ucb"], 2

    def sign(at: datetime) -> str:
        return signer.sign(experiment.key, ucb, POLICY, arm, int(at.timestamp() * 1000))

    # a decision of four days ago, rewarded then: its day is in the log
    decided = datetime.combine(old_day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    old_id = sign(decided)
    await ensure_partitions(conn, old_day, old_day)
    await conn.execute(
        """INSERT INTO decisions (decision_id, experiment_key, user_id, policy, arm, propensity,
               served_by, decided_at, latency_us, server_id)
           VALUES ($1, $2, 'u', 'ucb', $3, 0.5, 'POLICY', $4, 100, 'test')""",
        old_id, experiment.key, ARMS[arm], decided)
    await conn.execute(
        """INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value,
               source, decided_at)
           VALUES ($1, $2, 'ucb', $3, 'POLICY', 1, 'client', $4)""",
        old_id, experiment.key, ARMS[arm], decided)
    await rolled_up(conn)
    await set_retention(conn, decisions=2, rewards=2, actor="test")
    report = await apply_retention(conn)
    assert {(p.table, p.day) for p in report.dropped} >= {("decisions", old_day),
                                                          ("rewards", old_day)}
    assert old_day not in {p.day for p in await log_partitions(conn)}

    running = await start_server()
    # the signer is the server's: an id of now is applied once, then a duplicate
    fresh_id = sign(datetime.now(UTC))
    replies = [await running.stub.Reward(pb.RewardRequest(decision_id=fresh_id, value=1.0))
               for _ in range(2)]
    assert [r.status for r in replies] == [pb.APPLIED, pb.DUPLICATE]
    before = await _arm_stats(conn)
    assert before == {("ucb", ARMS[arm]): (1.0, 1.0)}

    for _ in range(2):  # a retry is refused the same way
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.stub.Reward(pb.RewardRequest(decision_id=old_id, value=1.0))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "reward window of this decision closed" in err.value.details()
    await asyncio.sleep(0.3)  # a group commit, had one been started, would be done
    assert await _arm_stats(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM rewards WHERE decision_id = $1",
                               old_id) == 0
