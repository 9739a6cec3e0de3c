"""Replicas converge through PostgreSQL: each server polls the rows others committed.

Every replica commits its rewards into ``arm_stats``. This task reads the rows updated
since its last poll — with an overlap, because a row's ``updated_at`` is its
transaction's time, not its commit time — and adopts each as a cell
(``banditd.server.arm_cells``: taken only when it counts more rewards than memory, so a
row memory is already ahead of is left alone). A full resync runs every ``full_every``
seconds as a safety net. With Redis (``banditd.server.redis_fanout``) cells arrive
within milliseconds; this poll still runs, and carries everything while Redis is away.

``banditd_replica_sync_lag_seconds`` observes, per adopted cell, the time from the
commit that wrote it (``arm_stats.updated_at``, the transaction's start: an upper bound
on the true lag by the commit's own duration) to its adoption here, on the database's
clock, so no two hosts' clocks are compared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from banditd.server.arm_cells import adopt_cells
from banditd.server.metrics import METRICS
from banditd.server.registry import Registry

log = logging.getLogger("banditd.app")

_OVERLAP = timedelta(seconds=30)


class ReplicaSync:
    def __init__(
        self, pool, registry: Registry, *, interval: float = 1.0, full_every: float = 300.0
    ) -> None:
        self._pool = pool
        self._registry = registry
        self.interval = interval
        self.full_every = full_every
        self._watermark = None
        self._last_full = time.monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync_once()
            except Exception as exc:  # the next round retries
                log.warning("replica sync failed: %s", exc)

    async def sync_once(self) -> int:
        """Adopt newer rows; returns how many (experiment, policy, arm) cells changed."""
        full = time.monotonic() - self._last_full > self.full_every
        async with self._pool.acquire() as conn:
            polled_at = await conn.fetchval("SELECT now()")
            # The first poll starts from the start-up load (which read everything).
            since = None if full else (self._watermark or polled_at) - _OVERLAP
            if full:
                self._last_full = time.monotonic()
            rows = await conn.fetch(
                """SELECT experiment_key, policy, arm, pulls, reward_sum,
                          extract(epoch FROM clock_timestamp() - updated_at) AS age
                   FROM arm_stats WHERE $1::timestamptz IS NULL OR updated_at > $1""",
                since,
            )
        self._watermark = polled_at
        lag = METRICS.replica_sync_lag.labels("postgres")
        return adopt_cells(self._registry, rows, lambda row: lag.observe(float(row[5])))
