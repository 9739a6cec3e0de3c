"""Retention against real PostgreSQL: which day partitions go, which stay, and that a
run never loses an aggregate, a day's export, or today's partition."""

from __future__ import annotations

import asyncio
import logging
import time as clock
from datetime import UTC, date, datetime, time, timedelta

import pytest

from banditd.admin_cli.retention import (
    apply_retention,
    clear_retention,
    parse_days,
    plan_retention,
    read_policy,
    set_retention,
)
from banditd.admin_cli.scheduler import Schedule, run_scheduler
from banditd.server.database import connect
from banditd.server.experiment import ExperimentSpec
from banditd.server.experiment_store import RetentionConflict, create_experiment
from banditd.server.log_partitions import ensure_partitions, log_partitions
from tests.conftest import wait_for

DAY_S = 86_400


@pytest.mark.parametrize(("text", "days"), [
    ("30d", 30), ("4w", 28), ("1d", 1), (" 7D ", 7), ("forever", None), ("FOREVER", None),
])
def test_durations_are_whole_days(text, days):
    assert parse_days(text) == days


@pytest.mark.parametrize(("text", "message"), [
    ("0d", "1 to"), ("36526d", "1 to"), ("30", "whole days or weeks"),
    ("12h", "whole days or weeks"), ("1.5d", "whole days or weeks"), ("", "whole days"),
    ("-3d", "whole days"), ("30 d", "whole days"),
])
def test_bad_durations_are_refused_with_the_fix(text, message):
    with pytest.raises(ValueError, match=message):
        parse_days(text)


async def _today(conn) -> date:
    return await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")


def _noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


async def _experiment(conn, experiment_id: str, *, created: date, window_s: float = 3600.0,
                      ended: date | None = None) -> int:
    spec = ExperimentSpec(id=experiment_id, name=experiment_id, arms=("a", "b"),
                          policies=("ucb", "control"), reward_window_seconds=window_s)
    experiment = await create_experiment(conn, spec, actor="test")
    await conn.execute(
        """UPDATE experiments SET created_at = $2, start_at = $2,
               status = CASE WHEN $3::timestamptz IS NULL THEN 'running' ELSE 'stopped' END,
               end_at = $3 WHERE id = $1""",
        experiment_id, datetime.combine(created, time(), tzinfo=UTC),
        None if ended is None else _noon(ended))
    return experiment.key


async def _log(conn, key: int, days: list[date], per_day: int = 3) -> None:
    """``per_day`` decisions of experiment ``key`` on each day, the first one rewarded."""
    await ensure_partitions(conn, min(days), max(days))
    for day in days:
        for i in range(per_day):
            decision_id = f"d-{key}-{day:%Y%m%d}-{i}"
            at = _noon(day) + timedelta(seconds=i)
            await conn.execute(
                """INSERT INTO decisions (decision_id, experiment_key, user_id, policy, arm,
                       propensity, served_by, decided_at, latency_us, server_id)
                   VALUES ($1, $2, $3, 'ucb', 'a', 0.5, 'POLICY', $4, 100, 'test')""",
                decision_id, key, f"u{i}", at)
            if i == 0:
                await conn.execute(
                    """INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by,
                           value, source, decided_at)
                       VALUES ($1, $2, 'ucb', 'a', 'POLICY', 1, 'client', $3)""",
                    decision_id, key, at)
    await rolled_up(conn)


async def rolled_up(conn) -> None:
    """Wait until the rollup has counted every log row written so far. Its horizon is
    the cluster's oldest running transaction id, so a transaction in another database
    of the test server can hold it back for a while."""

    async def done() -> bool:
        await conn.fetchval("SELECT banditd_rollup()")
        return await conn.fetchval(
            """SELECT coalesce(greatest((SELECT max(written_xid) FROM decisions),
                                        (SELECT max(written_xid) FROM rewards)), 0)
                      < (SELECT horizon FROM rollup_horizon)""")

    await wait_for(done, timeout=120, interval=0.2)


async def _days(conn, table: str) -> set[date]:
    return {p.day for p in await log_partitions(conn) if p.table == table}


def _span(today: date, first: int, last: int) -> set[date]:
    """The days today-first .. today-last (first >= last)."""
    return {today - timedelta(days=n) for n in range(last, first + 1)}


async def test_partitions_older_than_the_retention_go_and_the_rest_stay(db_conn, caplog):
    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=10))
    past = sorted(_span(today, 10, 1))
    await _log(conn, key, past)
    await set_retention(conn, decisions=3, rewards=5, actor="test")
    ahead = await _days(conn, "decisions") - _span(today, 10, 1)

    with caplog.at_level(logging.INFO, logger="banditd.workers"):
        report = await apply_retention(conn)

    # every row is kept at least R days: day D goes on D + R + 1
    assert await _days(conn, "decisions") == _span(today, 3, 1) | ahead
    assert await _days(conn, "rewards") == _span(today, 5, 1) | ahead
    assert {today, today + timedelta(days=7)} <= ahead
    assert not report.failed
    dropped = {(p.table, p.day): p for p in report.dropped}
    assert set(dropped) == ({("decisions", d) for d in _span(today, 10, 4)}
                            | {("rewards", d) for d in _span(today, 10, 6)})
    assert {p.rows for p in report.dropped if p.table == "decisions"} == {3}
    assert {p.rows for p in report.dropped if p.table == "rewards"} == {1}
    assert all(p.bytes > 0 for p in report.dropped)
    # the aggregates, kept forever, still count every dropped row
    assert await conn.fetchval("SELECT sum(decisions) FROM rollup_arm_days") == 3 * len(past)
    assert await conn.fetchval("SELECT sum(rewards) FROM rollup_arm_days") == len(past)
    oldest = min(past)
    line = next(r.getMessage() for r in caplog.records
                if f"decisions_{oldest:%Y%m%d}" in r.getMessage())
    assert line.startswith(f"Retention dropped decisions_{oldest:%Y%m%d} (day {oldest}, 3 rows, ")
    assert "bytes" in line

    again = await apply_retention(conn)
    assert again.dropped == [] and again.failed == []


async def test_an_override_extends_retention_only_for_the_days_its_experiment_was_live(db_conn):
    conn = db_conn
    today = await _today(conn)
    long_key = await _experiment(conn, "long", created=today - timedelta(days=12),
                                 ended=today - timedelta(days=7))
    short_key = await _experiment(conn, "short", created=today - timedelta(days=12))
    await _log(conn, long_key, sorted(_span(today, 12, 7)))
    await _log(conn, short_key, sorted(_span(today, 12, 1)))
    await set_retention(conn, decisions=2, rewards=2, actor="test")
    await set_retention(conn, "long", decisions=9, rewards=None, actor="test")

    _, plans = await plan_retention(conn)
    kept_by = {(p.table, p.day): p.kept_by for p in plans}
    assert kept_by[("decisions", today - timedelta(days=8))] == "long"
    assert kept_by[("decisions", today - timedelta(days=5))] == "short"

    await apply_retention(conn)
    # days 12..7: both live, the longer retention (9 days) holds them; days 6..1: only
    # `short`, whose (the deployment's) 2 days apply; rewards of `long`'s days: forever
    assert await _days(conn, "decisions") >= _span(today, 9, 7) | _span(today, 2, 0)
    assert await _days(conn, "decisions") & (_span(today, 12, 10) | _span(today, 6, 3)) == set()
    assert await _days(conn, "rewards") & _span(today, 12, 1) == (
        _span(today, 12, 7) | _span(today, 2, 1))


async def test_dry_run_drops_nothing(db_conn):
    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=6))
    await _log(conn, key, sorted(_span(today, 6, 1)))
    await conn.execute("INSERT INTO rollup_pending_rewards VALUES ($1, $2, 'gone', 1)",
                       key, _noon(today - timedelta(days=6)))
    await set_retention(conn, decisions=2, rewards=2, actor="test")
    before = await log_partitions(conn)

    report = await apply_retention(conn, dry_run=True)

    assert {(p.table, p.day) for p in report.dropped} == {
        (t, d) for t in ("decisions", "rewards") for d in _span(today, 6, 3)}
    assert report.pending_rewards_deleted == 1
    assert await log_partitions(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM rollup_pending_rewards") == 1


async def test_pending_rewards_older_than_every_decisions_partition_are_forgotten(db_conn):
    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=6))
    await _log(conn, key, sorted(_span(today, 6, 1)))
    for name, day in (("old", 5), ("recent", 1)):
        await conn.execute("INSERT INTO rollup_pending_rewards VALUES ($1, $2, $3, 1)",
                           key, _noon(today - timedelta(days=day)), name)
    await set_retention(conn, decisions=3, rewards=3, actor="test")

    report = await apply_retention(conn)

    assert report.pending_rewards_deleted == 1
    assert await conn.fetchval("SELECT array_agg(decision_id) FROM rollup_pending_rewards") == [
        "recent"]


async def test_the_hook_runs_once_per_day_before_its_first_partition_goes(db_conn):
    """Decisions go before rewards here: a day is exported when its decisions go, with
    both of its tables there, and not again when its rewards follow."""
    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=8))
    await _log(conn, key, sorted(_span(today, 8, 1)))
    await set_retention(conn, decisions=2, rewards=5, actor="test")
    seen: list[tuple[date, int]] = []
    failing = today - timedelta(days=4)

    async def before_drop(day: date) -> int:
        if day == failing:
            raise OSError("disk full")
        still_there = await conn.fetchval(
            """SELECT count(*) FROM decisions d JOIN rewards r USING (experiment_key,
                   decided_at, decision_id)
               WHERE d.decided_at >= $1 AND d.decided_at < $1 + interval '1 day'""",
            datetime.combine(day, time(), tzinfo=UTC))
        seen.append((day, still_there))
        return still_there

    report = await apply_retention(conn, before_drop=before_drop)

    exported = _span(today, 8, 3) - {failing}
    assert sorted(seen) == sorted((day, 1) for day in exported)  # rows joined, not yet gone
    assert report.exported == dict.fromkeys(exported, 1)
    assert {(p.table, p.day) for p, _ in report.failed} == {("decisions", failing)}
    assert all("disk full" in why for _, why in report.failed)
    assert failing in await _days(conn, "decisions")
    assert failing in await _days(conn, "rewards")

    seen.clear()
    await set_retention(conn, rewards=2, actor="test")
    report = await apply_retention(conn, before_drop=before_drop)
    # only the day that failed is exported now: the others lost their decisions already
    assert [day for day, _ in seen] == []
    assert {(p.table, p.day) for p, _ in report.failed} == {
        ("decisions", failing), ("rewards", failing)}
    assert await _days(conn, "rewards") & _span(today, 8, 3) == {failing}


async def test_export_before_drop_writes_the_day_as_parquet_before_it_goes(db_conn, tmp_path):
    import pyarrow.dataset as ds

    from banditd.admin_cli.retention import export_hook

    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=6))
    await _log(conn, key, sorted(_span(today, 6, 1)))
    await set_retention(conn, decisions=3, rewards=3, actor="test")

    report = await apply_retention(conn, before_drop=export_hook(conn, tmp_path))

    gone = _span(today, 6, 4)  # days 6..4 ago: past three days and the day of margin
    assert set(report.exported) == gone
    assert not gone & await _days(conn, "decisions")
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 3 * len(gone)
    rewarded = [r for r in table.column("reward").to_pylist() if r is not None]
    assert len(rewarded) == len(gone)  # each day's one reward travelled with its decision


async def test_a_partition_with_rows_not_yet_rolled_up_is_kept(db_conn, migrated_db_url):
    """A writing transaction holds the rollup's horizon back; a row committed after it
    into an old day cannot be counted yet, so that day must stay until it can."""
    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=5))
    old = today - timedelta(days=5)
    await _log(conn, key, [old])
    await set_retention(conn, decisions=2, rewards=2, actor="test")
    holder = await connect(migrated_db_url)
    try:
        await conn.fetchval("SELECT banditd_rollup()")
        tx = holder.transaction()
        await tx.start()
        await holder.fetchval("SELECT pg_current_xact_id()")  # an xid, no table touched
        await conn.execute(
            """INSERT INTO decisions (decision_id, experiment_key, user_id, policy, arm,
                   propensity, served_by, decided_at, latency_us, server_id)
               VALUES ('late', $1, 'u9', 'ucb', 'a', 0.5, 'POLICY', $2, 100, 'test')""",
            key, _noon(old))
        report = await apply_retention(conn)
        assert ("decisions", old) in {(p.table, p.day) for p, _ in report.failed}
        assert old in await _days(conn, "decisions")
        assert "not counted yet" in dict((p.table, w) for p, w in report.failed)["decisions"]
        await tx.rollback()
    finally:
        await holder.close()
    await rolled_up(conn)
    report = await apply_retention(conn)
    assert old not in await _days(conn, "decisions")
    assert await conn.fetchval("SELECT sum(decisions) FROM rollup_arm_days") == 4


async def test_a_run_cut_short_between_detach_and_drop_is_finished(db_conn):
    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=5))
    old = today - timedelta(days=5)
    await _log(conn, key, [old])
    await conn.fetchval("SELECT banditd_rollup()")
    await conn.execute(f"ALTER TABLE decisions DETACH PARTITION decisions_{old:%Y%m%d}")
    await set_retention(conn, decisions=2, rewards=2, actor="test")
    _, plans = await plan_retention(conn)
    assert {p.name: p.state for p in plans}[f"decisions_{old:%Y%m%d}"] == "detached"

    report = await apply_retention(conn)

    assert f"decisions_{old:%Y%m%d}" in {p.name for p in report.dropped}
    assert await conn.fetchval("SELECT to_regclass($1)", f"decisions_{old:%Y%m%d}") is None


async def test_without_retention_everything_is_kept_forever(db_conn):
    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=400))
    await _log(conn, key, [today - timedelta(days=400)])
    report = await apply_retention(conn)
    assert report.dropped == [] and report.failed == []
    _, plans = await plan_retention(conn)
    assert {p.drop_on for p in plans} == {None}


async def test_a_second_run_at_once_is_refused(db_conn, migrated_db_url):
    from banditd.admin_cli.retention import RetentionBusy

    other = await connect(migrated_db_url)
    try:
        await other.fetchval("SELECT pg_advisory_lock(hashtext('banditd_retention_run'))")
        with pytest.raises(RetentionBusy, match="in progress"):
            await apply_retention(db_conn)
        assert (await apply_retention(db_conn, dry_run=True)).failed == []
    finally:
        await other.close()


# -- the rule ------------------------------------------------------------------------------


async def test_a_retention_shorter_than_a_governed_window_plus_a_day_is_refused(db_conn):
    conn = db_conn
    today = await _today(conn)
    await _experiment(conn, "week", created=today, window_s=7 * DAY_S)  # needs 8 days
    await _experiment(conn, "hour", created=today, window_s=3600)  # needs 2 days

    with pytest.raises(RetentionConflict, match=r"'week'.*at least 8 days"):
        await set_retention(conn, decisions=7, actor="test")
    with pytest.raises(RetentionConflict, match=r"rewards would be kept 7d"):
        await set_retention(conn, decisions=30, rewards=7, actor="test")
    assert (await read_policy(conn)).deployment is None  # nothing written

    await set_retention(conn, decisions=8, rewards=8, actor="test")
    # an override governs only its experiment, so the deployment may then go shorter
    with pytest.raises(RetentionConflict, match="'week'"):
        await set_retention(conn, "week", decisions=7, actor="test")
    await set_retention(conn, "week", decisions=8, actor="test")
    policy = await read_policy(conn)
    assert policy.overrides["week"].retention.rewards_days == 8  # started from the deployment's
    await set_retention(conn, decisions=2, rewards=2, actor="test")
    with pytest.raises(RetentionConflict, match="clear the override"):
        await clear_retention(conn, "week", actor="test")
    assert "week" in (await read_policy(conn)).overrides
    assert await clear_retention(conn, actor="test")  # the deployment's: back to forever
    assert await clear_retention(conn, "week", actor="test")
    assert await read_policy(conn) == type(policy)(None, {})


async def test_a_deleted_experiment_no_longer_holds_the_retention_up(db_conn):
    conn = db_conn
    await _experiment(conn, "week", created=await _today(conn), window_s=7 * DAY_S)
    with pytest.raises(RetentionConflict):
        await set_retention(conn, decisions=2, actor="test")
    await conn.execute("UPDATE experiments SET deleted_at = now() WHERE id = 'week'")
    assert (await set_retention(conn, decisions=2, actor="test")).decisions_days == 2


# -- the scheduler's job ---------------------------------------------------------------------


async def test_the_scheduler_runs_retention_and_records_what_it_dropped(db_conn, migrated_db_url):
    conn = db_conn
    today = await _today(conn)
    key = await _experiment(conn, "e", created=today - timedelta(days=5))
    await _log(conn, key, [today - timedelta(days=5)])
    await set_retention(conn, decisions=2, rewards=2, actor="test")
    await conn.execute(
        "DROP TABLE decisions_{0:%Y%m%d}, rewards_{0:%Y%m%d}".format(today + timedelta(days=7)))

    stop = asyncio.Event()
    task = asyncio.create_task(run_scheduler(migrated_db_url, Schedule(), stop=stop, tick=0.05))
    deadline = clock.monotonic() + 20
    job = None
    while clock.monotonic() < deadline:
        job = await conn.fetchrow("SELECT * FROM scheduler_jobs WHERE job = 'retention'")
        if job is not None and job["last_status"] is not None:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)

    assert job["last_status"] == "ok", job["last_detail"]
    assert f"decisions_{today - timedelta(days=5):%Y%m%d}" in job["last_detail"]
    assert "created 2 ahead" in job["last_detail"]
    assert job["next_run_at"] >= job["last_run_at"] + timedelta(minutes=59)
    assert today + timedelta(days=7) in await _days(conn, "decisions")
