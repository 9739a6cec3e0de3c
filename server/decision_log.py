"""The decision log: a bounded in-memory buffer written to PostgreSQL off the hot path.

``Select`` appends one tuple per decision (no I/O, no allocation beyond the
tuple); a flusher task swaps the buffer out every ``interval`` seconds (or as
soon as ``batch_size`` records wait) and writes it with one ``COPY``. When the
database is unreachable, records stay buffered and the flush is retried with
backoff; once the buffer holds ``capacity`` records, ``has_room()`` is false and
Select answers RESOURCE_EXHAUSTED rather than lose decisions silently.

The same flush also adds the per-experiment call counters (method x status
code) into ``rpc_counts``, which the error-rate guardrail reads. Successful Selects
are not counted call by call: each one logs exactly one decision (a SelectBatch
item counts as one Select), so the flush counts them from the records it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime

from server.metrics import METRICS

log = logging.getLogger("banditd.workers")

_DECISION_COLUMNS = (
    "decision_id", "experiment_key", "user_id", "policy", "arm", "propensity", "served_by",
    "decided_at", "latency_us", "context", "server_id", "candidates",
)

# A ``decisions`` row in _DECISION_COLUMNS order, as Select builds it, so that a flush
# hands the buffer to COPY as it is: (decision_id, experiment_key, user_id, policy,
# arm, propensity, served_by, decided_at (aware datetime), latency_us, context dict or
# None, server_id, candidate arm names offered (a list) or None when every arm was).
DecisionRecord = tuple


class DecisionLog:
    """Bounded buffer of decision records plus per-experiment call counters."""

    __slots__ = (
        "_backoff",
        "_buffer",
        "_counts",
        "_pool",
        "_wakeup",
        "batch_size",
        "capacity",
        "interval",
        "server_id",
    )

    def __init__(
        self,
        pool,
        server_id: str,
        *,
        capacity: int = 200_000,
        batch_size: int = 5_000,
        interval: float = 0.1,
    ) -> None:
        self._pool = pool
        self.server_id = server_id
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self._buffer: list[DecisionRecord] = []
        self._counts: Counter[tuple[int, str, str]] = Counter()
        self._wakeup = asyncio.Event()
        self._backoff = 0.0

    def __len__(self) -> int:
        return len(self._buffer)

    def has_room(self, n: int = 1) -> bool:
        return len(self._buffer) + n <= self.capacity

    def append(self, record: DecisionRecord) -> None:
        buffer = self._buffer
        buffer.append(record)
        if len(buffer) >= self.batch_size:
            self._wakeup.set()

    def count_call(self, experiment_key: int, method: str, code: str, n: int = 1) -> None:
        """Count calls other than successful Selects (those are counted from records)."""
        self._counts[(experiment_key, method, code)] += n

    async def run(self) -> None:
        """Flush forever (until cancelled)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.interval + self._backoff)
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write everything buffered now; True on success (records kept on failure)."""
        records, self._buffer = self._buffer, []
        counts, self._counts = self._counts, Counter()
        METRICS.decision_buffer.set(len(self._buffer))
        if not records and not counts:
            return True
        started = time.perf_counter()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if records:
                    await conn.copy_records_to_table(
                        "decisions", records=records, columns=_DECISION_COLUMNS
                    )
                selects = Counter(record[1] for record in records)
                calls = counts + Counter({(key, "Select", "OK"): n for key, n in selects.items()})
                if calls:
                    await self._write_counts(conn, calls)
        except Exception as exc:  # any failure: keep the records and retry with backoff
            self._buffer[:0] = records
            self._counts.update(counts)
            self._backoff = min(5.0, max(0.2, self._backoff * 2))
            METRICS.flush_failures.inc()
            log.error("ERROR decision log flush failed (%d records kept, retry in %.1fs): %s",
                      len(self._buffer), self._backoff, exc)
            return False
        self._backoff = 0.0
        METRICS.flush_seconds.observe(time.perf_counter() - started)
        METRICS.decision_buffer.set(len(self._buffer))
        return True

    async def _write_counts(self, conn, counts: Counter) -> None:
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        await conn.executemany(
            """INSERT INTO rpc_counts (experiment_key, minute, server_id, method, code, calls)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (experiment_key, minute, server_id, method, code)
               DO UPDATE SET calls = rpc_counts.calls + EXCLUDED.calls""",
            [(key, minute, self.server_id, method, code, n)
             for (key, method, code), n in counts.items()],
        )
