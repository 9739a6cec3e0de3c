"""Each replica tells PostgreSQL it is alive: ``server_heartbeats`` (for ``banditctl status``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from banditd.server import __version__

log = logging.getLogger("banditd.app")

_UPSERT = """
INSERT INTO server_heartbeats (server_id, address, version, started_at, last_seen, state,
                               experiments)
VALUES ($1, $2, $3, $4, now(), $5, $6)
ON CONFLICT (server_id) DO UPDATE SET last_seen = now(), state = EXCLUDED.state,
    experiments = EXCLUDED.experiments, address = EXCLUDED.address
"""


class Heartbeat:
    def __init__(self, pool, server_id: str, address: str, *, interval: float = 5.0) -> None:
        self._pool = pool
        self.server_id = server_id
        self.address = address
        self.interval = interval
        self.started_at = datetime.now(UTC)
        self.experiments = 0

    async def beat(self, state: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(_UPSERT, self.server_id, self.address, __version__,
                               self.started_at, state, self.experiments)

    async def run(self, count_experiments) -> None:
        while True:
            self.experiments = count_experiments()
            try:
                await self.beat("serving")
            except Exception as exc:  # the next beat retries
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.interval)
