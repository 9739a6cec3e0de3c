"""Every query the server runs on the partitioned log is served by an index and reads
only the partitions of its days.

Plans are taken with sequential scans disabled: on a test-sized table the planner
rightly prefers a scan, and the question here is whether an index *can* serve the
query. A query without a usable index still shows a ``Seq Scan`` then.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from banditd.server.default_rewards import _DUE
from banditd.server.log_partitions import ensure_partitions


@pytest.fixture
async def log_conn(db_conn):
    today = datetime.now(UTC).date()
    await ensure_partitions(db_conn, today - timedelta(days=10), today + timedelta(days=7))
    await db_conn.execute("SET enable_seqscan = off")
    return db_conn


async def plan(conn, sql: str, *args, analyze: bool = False) -> str:
    rows = await conn.fetch(f"EXPLAIN {'(ANALYZE) ' if analyze else ''}{sql}", *args)
    return "\n".join(r[0] for r in rows)


async def test_the_default_rewards_scan_reads_the_window_by_primary_key(log_conn):
    now = datetime.now(UTC)
    text = await plan(log_conn, _DUE, [1], [now - timedelta(days=2)], [3600.0], now, 5000,
                      analyze=True)
    assert "Seq Scan" not in text
    day = f"{now:%Y%m%d}"
    assert f"decisions_{day}_pkey" in text and f"rewards_{day}_pkey" in text
    # the watermark comes with each experiment's row, so partitions are pruned as the
    # scan runs: the days before it are never read
    old = f"decisions_{(now - timedelta(days=5)):%Y%m%d}"
    old_scan = next(line for line in text.splitlines() if f"on {old} " in line)
    assert "never executed" in old_scan


async def test_a_reward_is_found_by_its_key(log_conn):
    text = await plan(
        log_conn,
        """SELECT source FROM rewards WHERE experiment_key = $1 AND decided_at = $2
           AND decision_id = $3""",
        1, datetime.now(UTC), "d-x",
    )
    assert "Index Scan" in text and "pkey" in text and "Seq Scan" not in text


async def test_the_rollup_reads_new_rows_through_the_xid_index(log_conn):
    for table in ("decisions", "rewards"):
        text = await plan(
            log_conn, f"SELECT * FROM {table} WHERE written_xid >= $1 AND written_xid < $2",
            1000, 2000)
        assert "written_xid_idx" in text and "Seq Scan" not in text


async def test_the_xid_index_of_every_partition_is_a_btree(log_conn):
    """A BRIN index would answer an empty xid range by reading every range summary and
    rechecking the unsummarized pages: a cost that grows with the log."""
    methods = await log_conn.fetch(
        """SELECT am.amname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_index x ON x.indrelid = c.oid
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (x.indkey)
           JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_am am ON am.oid = ic.relam
           WHERE i.inhparent IN ('decisions'::regclass, 'rewards'::regclass)
             AND a.attname = 'written_xid'""")
    partitions = await log_conn.fetchval(
        """SELECT count(*) FROM pg_inherits
           WHERE inhparent IN ('decisions'::regclass, 'rewards'::regclass)""")
    assert len(methods) == partitions > 0
    assert {m["amname"] for m in methods} == {"btree"}


async def test_the_guardrail_window_is_a_range_of_the_minute_rollups(log_conn):
    since = datetime.now(UTC) - timedelta(minutes=5)
    for table in ("rollup_decision_minutes", "rollup_latency_minutes",
                  "rollup_reward_minutes"):
        text = await plan(
            log_conn, f"SELECT * FROM {table} WHERE experiment_key = $1 AND minute >= $2",
            1, since)
        assert f"{table}_pkey" in text and "Seq Scan" not in text
