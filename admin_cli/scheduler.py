"""``banditctl scheduler``: the guardrail job every 5 minutes, the verdict engine daily.

Jobs are rows of ``scheduler_jobs`` with their next run time. A scheduler claims
a due job with one atomic ``UPDATE ... WHERE next_run_at <= now() RETURNING``
under a PostgreSQL advisory lock, so two schedulers (on one host or many) never
run the same occurrence twice; the winner runs it and records the outcome.
The guardrail job checks every running experiment (rolling back when the rule
fires) and completes experiments whose ``end_at`` has passed; the verdict job
analyses every running experiment. SIGTERM/SIGINT stop the loop between jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

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

    def next_guardrail(self, now: datetime) -> datetime:
        return now + self.guardrail_every

    def next_verdict(self, now: datetime) -> datetime:
        today = datetime.combine(now.date(), self.verdict_at, tzinfo=UTC)
        return today if today > now else today + timedelta(days=1)

    def describe(self, job: str) -> str:
        if job == "guardrails":
            return f"every {self.guardrail_every.total_seconds():g}s"
        return f"daily at {self.verdict_at.strftime('%H:%M')} UTC"


JOBS = ("guardrails", "verdict")


async def ensure_jobs(conn: asyncpg.Connection, schedule: Schedule) -> None:
    now = datetime.now(UTC)
    for job, first in (("guardrails", now), ("verdict", schedule.next_verdict(now))):
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
    conn = await connect(url)
    try:
        await ensure_jobs(conn, schedule)
        while not stop.is_set():
            now = datetime.now(UTC)
            for job in JOBS:
                next_run = (schedule.next_guardrail(now) if job == "guardrails"
                            else schedule.next_verdict(now + timedelta(seconds=1)))
                if stop.is_set() or not await claim(conn, job, next_run, owner):
                    continue
                try:
                    detail = (await guardrail_job(url, conn, schedule) if job == "guardrails"
                              else await verdict_job(conn))
                    await record(conn, job, "ok", detail)
                    log.info("scheduler job %s: %s", job, detail)
                except Exception as exc:
                    await record(conn, job, "failed", str(exc))
                    log.error("ERROR scheduler job %s failed: %s", job, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
    finally:
        await conn.close()
