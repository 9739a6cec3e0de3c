"""The day partitions of the decision log and the rewards (migration 0008).

Both tables are range-partitioned by ``decided_at``, one partition per UTC day,
named ``decisions_YYYYMMDD`` and ``rewards_YYYYMMDD``. A row whose day has no
partition cannot be written, so partitions are created ahead of time: by
``banditctl migrate``, by every server when it starts and every hour while it
runs, and by the scheduler; each call creates what is missing through
``banditd_ensure_log_partitions`` (idempotent, serialised by an advisory lock). A
week ahead means a deployment whose servers and scheduler are all down for six
days still starts writing without a gap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

DAYS_AHEAD = 7
LOG_TABLES = ("decisions", "rewards")
_PARTITION = re.compile(r"^(decisions|rewards)_(\d{8})$")


def utc_today() -> date:
    return datetime.now(UTC).date()


async def ensure_partitions(
    conn: asyncpg.Connection, first_day: date | None = None, last_day: date | None = None
) -> int:
    """Create the missing partitions of ``first_day`` .. ``last_day`` (default: today
    to ``DAYS_AHEAD`` days ahead, UTC); returns how many were created."""
    first_day = first_day or utc_today()
    last_day = last_day or utc_today() + timedelta(days=DAYS_AHEAD)
    return await conn.fetchval(
        "SELECT banditd_ensure_log_partitions($1, $2)", first_day, last_day
    )


@dataclass(frozen=True, slots=True, order=True)
class LogPartition:
    """One day's partition of one log table."""

    day: date
    table: str

    @property
    def name(self) -> str:
        return f"{self.table}_{self.day:%Y%m%d}"


async def log_partitions(conn: asyncpg.Connection) -> list[LogPartition]:
    """Every attached day partition of the log tables, oldest first."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = ANY($1::text[])""",
        list(LOG_TABLES),
    )
    partitions = []
    for row in rows:
        match = _PARTITION.match(row["relname"])
        if match:
            day = datetime.strptime(match.group(2), "%Y%m%d").date()
            partitions.append(LogPartition(day, match.group(1)))
    return sorted(partitions)
