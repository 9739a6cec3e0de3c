"""The rollups (migration 0009) equal what the raw log says, exactly once, however the
rows arrive; and migration 0008 converts a populated log without losing a row.

The oracle is the raw-log SQL the commands ran before the rollups existed, applied to
the same rows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from banditd.admin_cli.guardrails import gather_inputs
from banditd.admin_cli.stats.sufficient import SampleStats
from banditd.admin_cli.stats.verdict import PolicyData, VerdictCriteria, reach_verdict
from banditd.admin_cli.summary import experiment_summary
from banditd.admin_cli.verdict_engine import load_policy_data
from banditd.server.database import connect
from banditd.server.experiment import ExperimentSpec
from banditd.server.experiment_store import change_status, create_experiment, get_experiment
from banditd.server.log_partitions import ensure_partitions
from banditd.server.migrate import migrate
from banditd.server.rollups import catch_up
from tests.conftest import migrate_to

DECISION_COLUMNS = ("decision_id", "experiment_key", "user_id", "policy", "arm", "propensity",
                    "served_by", "decided_at", "latency_us", "server_id")
REWARD_COLUMNS = ("decision_id", "experiment_key", "policy", "arm", "served_by", "value",
                  "source", "decided_at")

# The decision engine's per-user query over the raw log.
RAW_PER_USER = """
WITH per_user AS (
    SELECT d.policy, d.user_id, min(d.decided_at) AS first_at,
           count(r.decision_id) AS rewarded, coalesce(sum(r.value), 0) AS total
    FROM decisions d LEFT JOIN rewards r USING (experiment_key, decided_at, decision_id)
    WHERE d.experiment_key = $1 AND d.served_by IN ('POLICY', 'CONTROL')
    GROUP BY d.policy, d.user_id
)
SELECT policy,
       greatest(0, floor(extract(epoch FROM first_at - $2) / 86400))::int AS day,
       count(*)::float8 AS users,
       count(*) FILTER (WHERE rewarded > 0)::float8 AS n,
       coalesce(sum(total) FILTER (WHERE rewarded > 0), 0)::float8 AS s,
       coalesce(sum(banditd_square(total)) FILTER (WHERE rewarded > 0), 0)::float8 AS ss
FROM per_user GROUP BY policy, day ORDER BY policy, day
"""


async def raw_policy_data(conn, experiment) -> list[PolicyData]:
    rows = await conn.fetch(RAW_PER_USER, experiment.key, experiment.start_at)
    days = max(r["day"] for r in rows) + 1
    data = []
    for name in experiment.spec.policies:
        series = [SampleStats.empty()] * days
        users = [0.0] * days
        for r in rows:
            if r["policy"] == name:
                series[r["day"]] = SampleStats(r["n"], r["s"], r["ss"])
                users[r["day"]] = r["users"]
        total = SampleStats.empty()
        for day in series:
            total = total + day
        data.append(PolicyData(name, total, sum(users), tuple(series), tuple(users)))
    return data


def assert_same_policy_data(got: list[PolicyData], want: list[PolicyData]) -> None:
    assert [p.name for p in got] == [p.name for p in want]
    for g, w in zip(got, want, strict=True):
        assert g.users == w.users
        assert len(g.daily) == len(w.daily)
        for gd, wd in zip((g.rewards, *g.daily), (w.rewards, *w.daily), strict=True):
            assert gd.n == wd.n  # counts are exact
            # sums of totals added and removed as users move: equal to rounding
            assert gd.sum == pytest.approx(wd.sum, rel=1e-12, abs=1e-9)
            assert gd.sum_sq == pytest.approx(wd.sum_sq, rel=1e-12, abs=1e-9)
        assert g.daily_users == w.daily_users


async def started_experiment(conn, start: datetime):
    spec = ExperimentSpec(id="exp", name="rollups", arms=("a", "b", "c", "d"),
                          policies=("thompson", "control"), reward_min=0.0, reward_max=5.0)
    await create_experiment(conn, spec, actor="test")
    await change_status(conn, "exp", "start", actor="test")
    await conn.execute("UPDATE experiments SET start_at = $1 WHERE id = 'exp'", start)
    return await get_experiment(conn, "exp")


def generated_log(key: int, start: datetime, n: int, seed: int):
    """``n`` decisions over three days by returning users (a few outside the traffic),
    and rewards for about 60 % of them: 0/1 for control, real values for thompson."""
    rng = np.random.default_rng(seed)
    decisions, rewards = [], []
    for i in range(n):
        number = int(rng.zipf(1.6)) % 400
        user = f"user-{number}"
        outside = number % 10 == 7
        policy = "control" if number % 2 else "thompson"
        served_by = "OUTSIDE_TRAFFIC" if outside else ("CONTROL" if policy == "control"
                                                       else "POLICY")
        at = start + timedelta(seconds=float(rng.uniform(0, 3 * 86400)))
        at = at.replace(microsecond=at.microsecond // 1000 * 1000)
        arm = "abcd"[int(rng.integers(4))]
        decision = (f"d{i:06d}", key, user, policy, arm, 0.25, served_by, at,
                    int(rng.lognormal(6, 1)) + 1, "test")
        decisions.append(decision)
        if rng.random() < 0.6:
            value = (float(rng.random() < 0.3) if policy == "control"
                     else round(float(rng.uniform(0, 5)), 3))
            rewards.append((f"d{i:06d}", key, policy, arm, served_by, value, "client", at))
    return decisions, rewards


async def test_rollups_equal_the_raw_log_however_the_rows_arrive(db_conn):
    """Rows written in batches in a shuffled order — rewards before their decisions,
    decisions older than users' known first decisions (which moves users to an earlier
    day) — with the rollup run between batches: per-user statistics, summary and
    verdict equal the raw log's."""
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=3, hours=5)
    await ensure_partitions(db_conn, start.date(), (start + timedelta(days=4)).date())
    experiment = await started_experiment(db_conn, start)
    decisions, rewards = generated_log(experiment.key, start, 3000, seed=7)
    rng = np.random.default_rng(8)
    writes = [("decisions", d) for d in decisions] + [("rewards", r) for r in rewards]
    order = rng.permutation(len(writes))
    batches = np.array_split(order, 12)
    for batch in batches:
        for table in ("decisions", "rewards"):
            records = [writes[i][1] for i in batch if writes[i][0] == table]
            await db_conn.copy_records_to_table(
                table, records=records,
                columns=DECISION_COLUMNS if table == "decisions" else REWARD_COLUMNS)
        await catch_up(db_conn)
    pending = await db_conn.fetchval("SELECT count(*) FROM rollup_pending_rewards")
    assert pending == 0  # every reward found its decision once it arrived

    experiment = await get_experiment(db_conn, "exp")
    got = await load_policy_data(db_conn, experiment)
    want = await raw_policy_data(db_conn, experiment)
    assert_same_policy_data(got, want)
    assert len(want[0].daily) >= 3 and want[0].rewards.n > 50  # the test has substance
    split = {"thompson": 0.5, "control": 0.5}
    verdict_rollups = reach_verdict(got, control="control", split=split,
                                    criteria=VerdictCriteria(), guardrails="healthy")
    verdict_raw = reach_verdict(want, control="control", split=split,
                                criteria=VerdictCriteria(), guardrails="healthy")
    assert [(v.policy, v.recommendation) for v in verdict_rollups.verdicts] == [
        (v.policy, v.recommendation) for v in verdict_raw.verdicts]

    summary = await experiment_summary(db_conn, "exp")
    raw_usage = {r["policy"]: (r["users"], r["decisions"]) for r in await db_conn.fetch(
        """SELECT policy, count(DISTINCT user_id) AS users, count(*) AS decisions
           FROM decisions WHERE served_by IN ('POLICY', 'CONTROL') GROUP BY policy""")}
    raw_rewards = {r["policy"]: r for r in await db_conn.fetch(
        """SELECT policy, count(*)::float8 AS n, sum(value) AS s FROM rewards
           WHERE served_by IN ('POLICY', 'CONTROL') GROUP BY policy""")}
    for p in summary.policies:
        assert (p.users, p.decisions) == raw_usage[p.policy]
        assert p.rewards.n == raw_rewards[p.policy]["n"]
        assert p.rewards.sum == pytest.approx(raw_rewards[p.policy]["s"], rel=1e-12)
    assert summary.outside_traffic_users == await db_conn.fetchval(
        "SELECT count(DISTINCT user_id) FROM decisions WHERE served_by = 'OUTSIDE_TRAFFIC'")
    assert summary.outside_traffic_users > 0

    # Nothing new: another run changes nothing.
    before = await db_conn.fetch("SELECT * FROM rollup_user_days ORDER BY 1, 2, 3, 4")
    assert await catch_up(db_conn) == (0, 0)
    assert await db_conn.fetch("SELECT * FROM rollup_user_days ORDER BY 1, 2, 3, 4") == before


async def test_rows_of_an_open_transaction_are_rolled_up_once_it_commits(migrated_db_url):
    """The horizon stops at the oldest running writer: its rows are rolled up after it
    commits — even though a later transaction committed first — and only once."""
    conn = await connect(migrated_db_url)
    writer = await connect(migrated_db_url)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        experiment = await started_experiment(conn, now - timedelta(hours=1))
        decisions, _ = generated_log(experiment.key, now - timedelta(minutes=30), 40, seed=1)
        decisions = [(*d[:7], now - timedelta(minutes=i), *d[8:]) for i, d in enumerate(decisions)]
        early, late = decisions[:20], decisions[20:]
        transaction = writer.transaction()
        await transaction.start()
        await writer.copy_records_to_table("decisions", records=early, columns=DECISION_COLUMNS)
        await conn.copy_records_to_table("decisions", records=late, columns=DECISION_COLUMNS)
        first = await catch_up(conn)
        assert first.decisions == 0  # the open writer is older than the committed rows
        await transaction.commit()
        second = await catch_up(conn)
        assert second.decisions == 40
        assert await catch_up(conn) == (0, 0)
        counted = await conn.fetchval("SELECT sum(decisions) FROM rollup_arm_days")
        assert counted == 40
    finally:
        await writer.close()
        await conn.close()


async def test_a_long_transaction_in_another_database_does_not_hold_rollups_back(
        migrated_db_url):
    """Only this database's writers bound the horizon (the tests connect as a superuser,
    who can see every session)."""
    from tests.conftest import create_database, drop_database

    other_url = await create_database()
    other = await connect(other_url)
    conn = await connect(migrated_db_url)
    try:
        await other.execute("CREATE TABLE t (x int)")
        transaction = other.transaction()
        await transaction.start()
        await other.execute("INSERT INTO t VALUES (1)")  # holds an xid, open
        now = datetime.now(UTC).replace(microsecond=0)
        experiment = await started_experiment(conn, now - timedelta(hours=1))
        decisions, _ = generated_log(experiment.key, now - timedelta(minutes=30), 10, seed=2)
        decisions = [(*d[:7], now, *d[8:]) for d in decisions]
        await conn.copy_records_to_table("decisions", records=decisions, columns=DECISION_COLUMNS)
        assert (await catch_up(conn)).decisions == 10
        await transaction.rollback()
    finally:
        await other.close()
        await conn.close()
        await drop_database(other_url)


async def test_a_server_rolls_the_log_up_by_itself(migrated_db_url, start_server):
    """Without any command running, a server keeps the rollups current."""
    from banditd.v1 import decision_pb2 as pb
    from tests.conftest import make_experiment, wait_for

    await make_experiment(migrated_db_url)
    running = await start_server()
    for i in range(30):
        await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i % 7}"))
    conn = await connect(migrated_db_url)
    try:
        async def rolled_up():
            return await conn.fetchval(
                "SELECT coalesce(sum(decisions), 0) FROM rollup_arm_days") == 30
        await wait_for(rolled_up, timeout=10.0, interval=0.2)
        assert await conn.fetchval(
            "SELECT sum(users) FROM rollup_user_days WHERE cohort = 'experiment'") == 7
    finally:
        await conn.close()


async def test_guardrail_latency_is_the_exact_percentile_rounded_up_to_its_bucket(db_conn):
    now = datetime.now(UTC)
    experiment = await started_experiment(db_conn, now - timedelta(hours=1))
    rng = np.random.default_rng(3)
    latencies = rng.lognormal(8, 1.2, 2000).astype(int) + 1
    await db_conn.copy_records_to_table("decisions", columns=DECISION_COLUMNS, records=[
        (f"d{i}", experiment.key, f"u{i}", "thompson", "a", 0.25, "POLICY",
         now - timedelta(seconds=i % 120), int(lat), "test") for i, lat in enumerate(latencies)])
    exact = await db_conn.fetchval(
        "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_us) FROM decisions")
    inputs = await gather_inputs(db_conn, experiment, 300.0)
    assert inputs.decisions == 2000
    assert exact / 1000 <= inputs.p95_latency_ms <= exact / 1000 * 2 ** (1 / 16)
    assert inputs.arm_counts == {"a": 2000.0}


async def test_migration_converts_a_populated_log_in_place(database_url):
    """A log written under schema 7 (unpartitioned, decisions at the server's
    microsecond, rewards at their id's millisecond) is copied into the day partitions:
    every row kept, every reward keyed like its decision, and rolled up."""
    conn = await connect(database_url)
    try:
        await migrate_to(conn, 7)
        start = datetime(2026, 3, 1, 22, tzinfo=UTC)
        key = await conn.fetchval(  # as schema 7 knows experiments
            """INSERT INTO experiments (id, name, arms, policies, policy_split, traffic_pct,
                                        salt, status, start_at)
               VALUES ('exp', 'rollups', '{a,b,c,d}', '{thompson,control}', '{0.5,0.5}', 1,
                       'abcdef12', 'running', $1) RETURNING key""", start)
        decisions, rewards = generated_log(key, start, 500, seed=5)
        # as schema 7 logged them: decisions to the microsecond, rewards to the millisecond
        decisions = [(*d[:7], d[7] + timedelta(microseconds=417), *d[8:]) for d in decisions]
        await conn.copy_records_to_table("decisions", records=decisions,
                                         columns=DECISION_COLUMNS)
        await conn.copy_records_to_table("rewards", records=rewards, columns=REWARD_COLUMNS)

        await migrate(conn)

        assert await conn.fetchval("SELECT count(*) FROM decisions") == len(decisions)
        assert await conn.fetchval("SELECT count(*) FROM rewards") == len(rewards)
        joined = await conn.fetchval(
            "SELECT count(*) FROM rewards JOIN decisions USING (experiment_key, decided_at, "
            "decision_id)")
        assert joined == len(rewards)
        days = await conn.fetchval(
            "SELECT count(DISTINCT tableoid) FROM decisions")
        assert days == 4  # 22:00 on March 1st plus three days
        assert await conn.fetchval("SELECT to_regclass('decisions_unpartitioned')") is None
        assert await conn.fetchval("SELECT sum(decisions) FROM rollup_arm_days") == len(
            decisions)
        experiment = await get_experiment(conn, "exp")
        assert_same_policy_data(await load_policy_data(conn, experiment),
                                await raw_policy_data(conn, experiment))
    finally:
        await conn.close()


async def test_a_waiting_catch_up_runs_after_the_one_holding_the_lock(migrated_db_url):
    holder = await connect(migrated_db_url)
    waiter = await connect(migrated_db_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT banditd_rollup()")
            assert await catch_up(waiter, wait=False) == (0, 0)  # skipped: lock held
            blocked = asyncio.ensure_future(catch_up(waiter))
            await asyncio.sleep(0.2)
            assert not blocked.done()
        await asyncio.wait_for(blocked, 5.0)
    finally:
        await holder.close()
        await waiter.close()
