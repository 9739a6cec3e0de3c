"""What every server does for the decision log besides writing it.

- Partitions: the day partitions of the week ahead are created when the server
  starts and every hour (``banditd.server.log_partitions``), so a deployment never
  depends on a single process to keep the log writable.
- Rollups: every ``rollup_interval`` seconds the log is rolled up to the current
  horizon (``banditd.server.rollups``). The rollup takes an advisory lock without
  waiting, so with many servers one of them does each round and the others skip it.

Failures are logged once until the next success, and retried on the next round;
serving never waits for either.
"""

from __future__ import annotations

import asyncio
import logging
import time

from banditd.server.log_partitions import ensure_partitions
from banditd.server.rollups import catch_up

log = logging.getLogger("banditd.workers")

PARTITION_INTERVAL_S = 3600.0


class LogMaintenance:
    """The server's partition and rollup rounds (see the module doc)."""

    def __init__(self, pool, *, rollup_interval: float = 2.0) -> None:
        self._pool = pool
        self.rollup_interval = rollup_interval
        self._partitions_due = 0.0
        self._failing: set[str] = set()

    async def run(self) -> None:
        """Forever (until cancelled)."""
        while True:
            if (time.monotonic() >= self._partitions_due
                    and await self._attempt("partitions", ensure_partitions)):
                self._partitions_due = time.monotonic() + PARTITION_INTERVAL_S
            await self._attempt("rollup", lambda conn: catch_up(conn, wait=False))
            await asyncio.sleep(self.rollup_interval)

    async def _attempt(self, what: str, step) -> bool:
        try:
            async with self._pool.acquire() as conn:
                await step(conn)
        except Exception as exc:
            if what not in self._failing:
                log.error("ERROR decision log %s failed (retrying): %s", what, exc)
                self._failing.add(what)
            return False
        if what in self._failing:
            log.info("decision log %s works again", what)
            self._failing.discard(what)
        return True
