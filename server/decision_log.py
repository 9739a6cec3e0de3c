"""The decision log: a bounded in-memory buffer written to PostgreSQL off the hot path.

``Select`` appends nothing itself: the ``banditd.core_ext.decider.Decider`` writes each decision's
``decisions`` row, in PostgreSQL's binary COPY format, into this log's
``banditd.core_ext.codecs.DecisionRows`` (no Python object per decision, nothing to encode at
flush). A flusher task takes the rows every ``interval`` seconds (or as soon as
``batch_size`` rows wait) and writes them with one binary ``COPY``. When the
database is unreachable, the rows stay buffered and the flush is retried with
backoff; once the buffer holds ``capacity`` rows, ``has_room()`` is false and
Select answers RESOURCE_EXHAUSTED rather than lose decisions silently.

The same flush also adds the per-experiment call counters (method x status
code) into ``rpc_counts``, which the error-rate guardrail reads per minute. While no
decisions wait (a Reward-only load), the counters alone are written at most every
``counts_interval`` seconds: one transaction a second instead of ten. Successful
Selects are not counted call by call: each one logs exactly one decision (a
SelectBatch item counts as one Select), so the flush counts them from the rows it
writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime

import numpy as np

from banditd.core_ext.codecs import COPY_HEADER, COPY_TRAILER, DECISION_COLUMNS, DecisionRows
from banditd.server.metrics import METRICS

log = logging.getLogger("banditd.workers")


class DecisionLog:
    """Bounded buffer of decision rows plus per-experiment call counters.

    ``rows`` is where the deciders write; ``_unwritten`` holds the chunks taken from it
    by flushes that failed, (row bytes, experiment key per row), oldest first.
    """

    __slots__ = (
        "_backoff",
        "_counts",
        "_counts_due",
        "_pool",
        "_unwritten",
        "_unwritten_rows",
        "_wakeup",
        "batch_size",
        "capacity",
        "counts_interval",
        "interval",
        "rows",
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
        counts_interval: float = 1.0,
    ) -> None:
        self._pool = pool
        self.server_id = server_id
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self.counts_interval = counts_interval
        self._counts_due = 0.0
        self.rows = DecisionRows(server_id)
        self._unwritten: list[tuple[bytes, np.ndarray]] = []
        self._unwritten_rows = 0
        self._counts: Counter[tuple[int, str, str]] = Counter()
        self._wakeup = asyncio.Event()
        self._backoff = 0.0

    def __len__(self) -> int:
        return len(self.rows) + self._unwritten_rows

    def has_room(self, n: int = 1) -> bool:
        return len(self) + n <= self.capacity

    def nudge(self) -> None:
        """Flush now if a batch is waiting (SelectBatch calls this; single Selects cannot
        outrun ``batch_size / interval``, 50,000 decisions/s by default)."""
        if len(self.rows) >= self.batch_size:
            self._wakeup.set()

    def count_call(self, experiment_key: int, method: str, code: str, n: int = 1) -> None:
        """Count calls other than successful Selects (those are counted from their rows)."""
        self._counts[(experiment_key, method, code)] += n

    async def run(self) -> None:
        """Flush forever (until cancelled)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.interval + self._backoff)
            self._wakeup.clear()
            if len(self) or time.monotonic() >= self._counts_due:
                await self.flush()

    async def flush(self) -> bool:
        """Write everything buffered now; True on success (rows kept on failure)."""
        chunks = [*self._unwritten, self.rows.take()]
        self._unwritten, self._unwritten_rows = [], 0
        counts, self._counts = self._counts, Counter()
        self._counts_due = time.monotonic() + self.counts_interval
        METRICS.decision_buffer.set(len(self))
        keys = np.concatenate([chunk_keys for _rows, chunk_keys in chunks])
        if not len(keys) and not counts:
            return True
        started = time.perf_counter()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if len(keys):
                    await conn.copy_to_table(
                        "decisions", source=_copy_stream(chunks), columns=DECISION_COLUMNS,
                        format="binary",
                    )
                experiment_keys, selects = np.unique(keys, return_counts=True)
                calls = counts + Counter({(int(key), "Select", "OK"): int(n)
                                          for key, n in zip(experiment_keys, selects,
                                                            strict=True)})
                if calls:
                    await self._write_counts(conn, calls)
        except Exception as exc:  # any failure: keep the rows and retry with backoff
            self._unwritten = [chunk for chunk in chunks if len(chunk[1])]
            self._unwritten_rows = len(keys)
            self._counts.update(counts)
            self._backoff = min(5.0, max(0.2, self._backoff * 2))
            METRICS.flush_failures.inc()
            log.error("ERROR decision log flush failed (%d records kept, retry in %.1fs): %s",
                      len(self), self._backoff, exc)
            return False
        self._backoff = 0.0
        METRICS.flush_seconds.observe(time.perf_counter() - started)
        METRICS.decision_buffer.set(len(self))
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


async def _copy_stream(chunks: list[tuple[bytes, np.ndarray]]):
    """The binary COPY stream of ``chunks``' rows (``DecisionRows.take()``)."""
    yield COPY_HEADER
    for rows, _keys in chunks:
        if rows:
            yield rows
    yield COPY_TRAILER
