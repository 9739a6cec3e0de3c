"""Rollups of the decision log: what ``summary``, ``decide`` and the guardrails read.

The tables and the function that maintains them are in migration 0009
(``server/migrations/0009_rollups.sql``, where the exactly-once argument is):
``banditd_rollup()`` adds every committed log row not yet rolled up to per-day,
per-minute and per-user aggregates, under an advisory lock. Servers run it every
few seconds without waiting for the lock (``banditd.server.log_maintenance``); a
command runs it waiting, just before it reads, so it sees every row committed
before it started. A run finds its rows through the B-tree on ``written_xid`` of every
partition (migration 0010), so a run with nothing new costs one index descent per
partition, whatever the log's size.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg


class RollupRun(NamedTuple):
    decisions: int
    rewards: int


async def catch_up(conn: asyncpg.Connection, *, wait: bool = True) -> RollupRun:
    """Roll the log up to now. With ``wait`` false, return (0, 0) at once when another
    run holds the lock."""
    row = await conn.fetchrow("SELECT * FROM banditd_rollup($1)", wait)
    return RollupRun(row["rolled_decisions"], row["rolled_rewards"])
