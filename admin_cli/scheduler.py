"""``banditctl scheduler``: the guardrail job every 5 minutes, the verdict engine daily,
retention of the raw log hourly.

Jobs are rows of ``scheduler_jobs`` with their next run time. A scheduler claims
a due job with one atomic ``UPDATE ... WHERE next_run_at <= now() RETURNING``
under a PostgreSQL advisory lock, so two schedulers (on one host or many) never
run the same occurrence twice; the winner runs it and records the outcome.
The guardrail job checks every running experiment (rolling back when the rule
fires) and completes experiments whose ``end_at`` has passed; the verdict job
analyses every running experiment; the retention job creates the log's partitions
ahead and drops those retention lets go (``banditd.admin_cli.retention``), exporting
each day first when ``export_dir`` is set. The retention job runs beside the loop on
a connection of its own: exporting a day of a busy log takes minutes, and the
guardrail job, whose rollback is the safety net, must not wait for it. SIGTERM/SIGINT
stop the loop between jobs and cancel a retention run, which the next run resumes (a
partition left pending detach is finalised, an unfinished export is redone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import asyncpg

from banditd.admin_cli.guardrails import run_guardrail_job
from banditd.admin_cli.verdict_engine import run_verdict
from banditd.server.database import connect
from banditd.server.experiment_store import change_status, current_actor

log = logging.getLogger("banditd.workers")

# Arbitrary constant advisory-lock namespace for scheduler jobs ("bdsc").
_LOCK_NAMESPACE = 0x62647363


@dataclass(frozen=True, slots=True)
class Schedule:
    guardrail_every: timedelta = timedelta(minutes=5)
    verdict_at: time = time(9, 0)  # UTC
    window_seconds: float = 300.0
    retention_every: timedelta = timedelta(hours=1)
    # where the retention job exports each day before dropping it (None: no export)
    export_dir: Path | None = None

    def next_verdict(self, now: datetime) -> datetime:
        today = datetime.combine(now.date(), self.verdict_at, tzinfo=UTC)
        return today if today > now else today + timedelta(days=1)

    def next_run(self, job: str, now: datetime) -> datetime:
        if job == "guardrails":
            return now + self.guardrail_every
        if job == "retention":
            return now + self.retention_every
        return self.next_verdict(now + timedelta(seconds=1))

    def describe(self, job: str) -> str:
        if job == "guardrails":
            return f"every {self.guardrail_every.total_seconds():g}s"
        if job == "retention":
            return (f"every {self.retention_every.total_seconds():g}s"
                    + (f", exporting to {self.export_dir}" if self.export_dir else ""))
        return f"daily at {self.verdict_at.strftime('%H:%M')} UTC"


JOBS = ("guardrails", "verdict", "retention")
# Jobs run beside the loop, on a connection of their own (see the module docstring).
BACKGROUND_JOBS = frozenset({"retention"})


async def ensure_jobs(conn: asyncpg.Connection, schedule: Schedule) -> None:
    now = datetime.now(UTC)
    for job, first in (("guardrails", now), ("verdict", schedule.next_verdict(now)),
                       ("retention", now)):
        await conn.execute(
            """INSERT INTO scheduler_jobs (job, schedule, next_run_at) VALUES ($1, $2, $3)
               ON CONFLICT (job) DO UPDATE SET schedule = EXCLUDED.schedule,
                   next_run_at = LEAST(scheduler_jobs.next_run_at, EXCLUDED.next_run_at)""",
            job, schedule.describe(job), first,
        )


async def claim(conn: asyncpg.Connection, job: str, next_run: datetime, owner: str) -> bool:
    """Atomically take the due occurrence of ``job``; False when not due or taken."""
    async with conn.transaction():
        locked = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _LOCK_NAMESPACE, job
        )
        if not locked:
            return False
        row = await conn.fetchrow(
            """UPDATE scheduler_jobs SET next_run_at = $2, owner = $3, updated_at = now()
               WHERE job = $1 AND next_run_at <= now() RETURNING job""",
            job, next_run, owner,
        )
        return row is not None


async def record(conn: asyncpg.Connection, job: str, status: str, detail: str) -> None:
    await conn.execute(
        """UPDATE scheduler_jobs SET last_run_at = now(), last_status = $2, last_detail = $3,
               updated_at = now() WHERE job = $1""",
        job, status, detail[:2000],
    )


async def running_experiments(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT id FROM experiments WHERE status = 'running' AND deleted_at IS NULL ORDER BY id"
    )
    return [r["id"] for r in rows]


async def guardrail_job(url: str, conn: asyncpg.Connection, schedule: Schedule) -> str:
    expired = await conn.fetch(
        """SELECT id FROM experiments WHERE status = 'running' AND deleted_at IS NULL
           AND end_at IS NOT NULL AND end_at <= now()"""
    )
    for row in expired:
        await change_status(conn, row["id"], "complete", actor="scheduler",
                            reason="duration elapsed")
    parts = [f"completed {row['id']}" for row in expired]
    for experiment_id in await running_experiments(conn):
        report = await run_guardrail_job(url, experiment_id, window_seconds=schedule.window_seconds)
        parts.append(f"{experiment_id}: {report.status}"
                     + (" (rolled back)" if report.rolled_back else ""))
    return "; ".join(parts) or "no running experiments"


async def verdict_job(conn: asyncpg.Connection) -> str:
    from banditd.admin_cli.verdict_engine import overall_recommendation

    parts = []
    for experiment_id in await running_experiments(conn):
        report = await run_verdict(conn, experiment_id)
        parts.append(f"{experiment_id}: {overall_recommendation(report)}")
    return "; ".join(parts) or "no running experiments"


async def retention_job(conn: asyncpg.Connection, schedule: Schedule) -> str:
    from banditd.admin_cli.retention import apply_retention, export_hook

    hook = export_hook(conn, schedule.export_dir) if schedule.export_dir else None
    report = await apply_retention(conn, before_drop=hook)
    if report.failed:
        raise RuntimeError(report.summary())
    return report.summary()


async def _run_job(url: str, conn: asyncpg.Connection, job: str, schedule: Schedule) -> None:
    """Run one claimed occurrence of ``job`` and record its outcome."""
    try:
        if job == "guardrails":
            detail = await guardrail_job(url, conn, schedule)
        elif job == "retention":
            detail = await retention_job(conn, schedule)
        else:
            detail = await verdict_job(conn)
        await record(conn, job, "ok", detail)
        log.info("scheduler job %s: %s", job, detail)
    except Exception as exc:
        await record(conn, job, "failed", str(exc))
        log.error("ERROR scheduler job %s failed: %s", job, exc)


async def _run_on_own_connection(url: str, job: str, schedule: Schedule) -> None:
    conn = await connect(url)
    try:
        await _run_job(url, conn, job, schedule)
    finally:
        await asyncio.shield(conn.close())


async def run_scheduler(
    url: str, schedule: Schedule, *, stop: asyncio.Event | None = None, tick: float = 1.0,
) -> None:
    """Run due jobs until ``stop`` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(RuntimeError, ValueError):  # not the main thread (tests)
            loop.add_signal_handler(signum, stop.set)
    owner = f"scheduler:{current_actor()}"
    background: dict[str, asyncio.Task] = {}
    conn = await connect(url)
    try:
        await ensure_jobs(conn, schedule)
        while not stop.is_set():
            now = datetime.now(UTC)
            for job in JOBS:
                running = background.get(job)
                if stop.is_set() or (running is not None and not running.done()):
                    continue
                if not await claim(conn, job, schedule.next_run(job, now), owner):
                    continue
                if job in BACKGROUND_JOBS:
                    background[job] = asyncio.create_task(
                        _run_on_own_connection(url, job, schedule), name=f"scheduler-{job}")
                else:
                    await _run_job(url, conn, job, schedule)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
    finally:
        for task in background.values():
            task.cancel()
        await asyncio.gather(*background.values(), return_exceptions=True)
        await conn.close()
