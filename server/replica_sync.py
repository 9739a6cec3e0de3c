"""Replicas converge: each server merges the rewards other replicas committed.

Every replica commits its rewards into ``arm_stats`` (and applies its own to
memory after the commit). This task reads the rows updated since its last poll
— with an overlap, because a row's ``updated_at`` is its transaction's time, not
its commit time — and adopts a row when the database counts more rewards for
that (experiment, policy, arm) than memory does. ``pulls`` only ever grows by
one per committed reward, so it orders the two views: memory never moves
backwards, a row that memory is already ahead of (a local commit newer than
the snapshot) is left alone, and the next poll catches up. A full resync runs
every ``full_every`` seconds as a safety net.

``banditd_replica_sync_lag_seconds`` observes, per adopted cell, the time from the
commit that wrote it (``arm_stats.updated_at``, the transaction's start: an upper bound
on the true lag by the commit's own duration) to its adoption here, on the database's
clock, so no two hosts' clocks are compared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import timedelta

import numpy as np

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
        by_policy: dict[tuple[int, str], list] = defaultdict(list)
        for row in rows:
            by_policy[(row[0], row[1])].append(row)
        changed = 0
        for (key, policy_name), cells in by_policy.items():
            changed += self._adopt(key, policy_name, cells)
        return changed

    def _adopt(self, key: int, policy_name: str, cells) -> int:
        runtime = self._registry.by_key(key)
        if runtime is None:
            return 0
        policy = next((p for p in runtime.policies if p.name == policy_name), None)
        if policy is None:
            return 0
        changed = 0
        for _key, _policy, arm, pulls, reward_sum, age in cells:
            index = runtime.arm_index.get(arm)
            if index is not None and pulls > policy.pulls[index]:
                policy.pulls[index] = pulls
                policy.reward_sum[index] = reward_sum
                METRICS.replica_sync_lag.observe(float(age))
                changed += 1
        if changed:
            # The statistics were written in place; an empty merge bumps the kernel's
            # version so cached propensities are recomputed.
            zeros = np.zeros(len(runtime.arms))
            policy.kernel.merge(zeros, zeros)
        return changed
