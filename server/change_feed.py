"""Experiment changes reach the server within a second: LISTEN/NOTIFY plus polling.

Every life-cycle change (``banditd.server.experiment_store``) sends ``NOTIFY
banditd_experiments, '<id>'`` at commit; the feed reloads that experiment into the
registry as soon as the notification arrives. Because a notification can be
missed (connection dropped, server restarted in between), the feed also polls
for rows whose ``updated_at`` moved since the last poll, with an overlap window
for transactions that committed late. Reloading keeps learned statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from banditd.server.database import connect
from banditd.server.experiment_store import CHANNEL, load_changed_since
from banditd.server.metrics import METRICS
from banditd.server.registry import Registry

log = logging.getLogger("banditd.app")

_POLL_OVERLAP = timedelta(seconds=5)


class ChangeFeed:
    """Keeps the registry in step with the experiments table."""

    def __init__(self, url: str, pool, registry: Registry, *, poll_interval: float = 1.0) -> None:
        self._url = url
        self._pool = pool
        self._registry = registry
        self.poll_interval = poll_interval
        self._watermark = None
        self._last_sync = time.monotonic()
        self._wakeup = asyncio.Event()

    async def load_all(self) -> None:
        """Initial load: every live experiment with its committed statistics."""
        await self.poll()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)
                self._wakeup.clear()
                try:
                    await self.poll()
                except Exception as exc:  # the next round retries
                    log.error("ERROR experiment sync failed: %s", exc)
                METRICS.sync_lag.set(time.monotonic() - self._last_sync)
        finally:
            listener.cancel()

    async def poll(self) -> None:
        """Apply every change since the last poll (minus an overlap)."""
        since = None if self._watermark is None else self._watermark - _POLL_OVERLAP
        async with self._pool.acquire() as conn:
            polled_at = await conn.fetchval("SELECT now()")
            live, deleted = await load_changed_since(conn, since)
            changed = [e for e in live if self._is_new(e)]
            stats = await conn.fetch(
                """SELECT experiment_key, policy, arm, pulls, reward_sum FROM arm_stats
                   WHERE experiment_key = ANY($1)""",
                [e.key for e in changed if self._registry.get(e.id) is None],
            )
        by_key: dict[int, list] = {}
        for row in stats:
            by_key.setdefault(row[0], []).append(tuple(row[1:]))
        for experiment in changed:
            fresh = self._registry.get(experiment.id) is None
            runtime = self._registry.upsert(experiment)
            if fresh:
                runtime.load_statistics(by_key.get(experiment.key, ()))
            log.info("experiment %s loaded (status %s)", experiment.id, experiment.status)
        for experiment_id in deleted:
            if self._registry.get(experiment_id) is not None:
                self._registry.remove(experiment_id)
                log.info("experiment %s removed (deleted)", experiment_id)
        self._watermark = polled_at
        self._last_sync = time.monotonic()
        METRICS.experiments.set(len(self._registry))

    def _is_new(self, experiment) -> bool:
        current = self._registry.get(experiment.id)
        return current is None or current.experiment.updated_at != experiment.updated_at

    async def _listen(self) -> None:
        """Wake the poller on every notification; reconnect with backoff."""
        backoff = 0.5
        while True:
            conn = None
            try:
                conn = await connect(self._url)
                await conn.add_listener(CHANNEL, self._on_notify)
                backoff = 0.5
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _conn, event=closed: event.set())
                await closed.wait()
            except asyncio.CancelledError:
                if conn is not None:
                    await asyncio.shield(conn.close())
                raise
            except Exception as exc:
                log.warning("experiment change listener lost (%s); polling meanwhile", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _on_notify(self, _conn, _pid, _channel, _payload: str) -> None:
        self._wakeup.set()

