"""Retention of the raw log: whole day partitions dropped, never rows deleted.

The policy. ``log_retention`` (migration 0008) holds how many days the decision log
and the rewards are kept: a deployment row (``experiment_id`` NULL) and optional
per-experiment overrides. An override replaces the deployment's values for its
experiment; a NULL number of days keeps that table forever, and with no row at all
everything is kept forever (the default). Retention counts whole UTC days, since a
partition is one day.

The rule. A retention can never be shorter than the longest reward window of the
experiments it governs plus one day: the deployment's governs every non-deleted
experiment without an override, an override its own experiment. Exactly-once of
rewards rests on the rewards' primary key: a retried Reward (or the default reward
racing a client's) conflicts with the row the first one wrote and counts nothing. If
a day's reward rows were gone while a decision of that day could still be rewarded,
nothing would remember that its reward was applied, and a retry would be applied
twice (it fails instead while the day has no partition, and succeeds again once one
is created for that day). If a day's decision rows were gone before its decisions'
windows closed, the default-reward job, which finds due decisions in that log,
would never apply their default reward. Keeping both at least the window plus one day
means the server's own check refuses every Reward for a dropped day as late
(FAILED_PRECONDITION) before it reaches the database, and the default-reward job has
a day after each window closes. ``retention set`` and ``clear`` enforce the rule here,
``experiment create`` in ``banditd.server.experiment_store`` (one lock serialises
them, so neither checks against a state the other is changing).

What is dropped. A table's partition of day D goes once D is older than every
retention that applies to an experiment live that day (created before D ended, not
ended or deleted before D began): with the longest of them R days, on day D + R + 1,
so every row is kept at least R days. A day on which no experiment was live follows
the deployment's value. Today's and future partitions are never dropped.

How. The job first creates the partitions ahead, then rolls the log up
(``banditd.server.rollups``) so that the aggregates, kept forever, hold every row a
partition takes with it; a partition that still has rows newer than the rollup's
horizon is kept for the next run. Each due partition is detached with ``ALTER TABLE
... DETACH PARTITION ... CONCURRENTLY`` (outside a transaction block: it waits for
the queries that use the table instead of blocking the writers) and then dropped. A
run cut short between the two steps leaves a partition pending detach or a detached
table; the next run finishes either. ``rollup_pending_rewards`` rows older than the
oldest remaining decisions partition can never meet their decision, and are deleted.

Export before drop. An optional async ``before_drop(day)`` hook (``export_hook``:
``--export-before-drop DIR`` wires ``banditd.admin_cli.export.export_day`` to it) runs
once per day, before the first of that day's two partitions is dropped, so the day's
decisions and rewards are exported together; the day's partitions are dropped only
after it succeeded, and a hook that fails keeps them for the next run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg

from banditd.admin_cli.export import export_day
from banditd.server.experiment_store import (
    InvalidTransition,
    RetentionConflict,
    current_actor,
    get_experiment,
    lock_retention,
    min_retention_days,
    record_event,
)
from banditd.server.log_partitions import LOG_TABLES, ensure_partitions
from banditd.server.rollups import catch_up

log = logging.getLogger("banditd.workers")

BeforeDrop = Callable[[date], Awaitable[Any]]

FOREVER = "forever"
_DURATION = re.compile(r"([0-9]{1,5})([dw])")
_UNIT_DAYS = {"d": 1, "w": 7}
# A century: a longer retention is "forever" in practice, and day + days stays a date.
MAX_DAYS = 36_525
# Serialises retention runs (session level: DETACH ... CONCURRENTLY cannot run in a
# transaction, so a transaction-level lock could not cover a run).
_RUN_LOCK = "SELECT pg_try_advisory_lock(hashtext('banditd_retention_run'))"
_RUN_UNLOCK = "SELECT pg_advisory_unlock(hashtext('banditd_retention_run'))"
_ENDED = ("stopped", "rolled_back", "completed")


class RetentionBusy(InvalidTransition):
    """Another retention run holds the lock."""


def parse_days(text: str) -> int | None:
    """'30d' -> 30, '4w' -> 28, 'forever' -> None (keep forever); ``ValueError`` else."""
    value = text.strip().lower()
    if value == FOREVER:
        return None
    match = _DURATION.fullmatch(value)
    if not match:
        raise ValueError(f"{text!r} is not a retention: give whole days or weeks, e.g. 30d or "
                         f"4w, or {FOREVER!r}")
    days = int(match.group(1)) * _UNIT_DAYS[match.group(2)]
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"{text!r}: a retention is 1 to {MAX_DAYS} days")
    return days


def describe_days(days: int | None) -> str:
    return FOREVER if days is None else f"{days}d"


# -- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each log table is kept (None: forever)."""

    decisions_days: int | None = None
    rewards_days: int | None = None

    def days(self, table: str) -> int | None:
        return self.decisions_days if table == "decisions" else self.rewards_days

    def to_dict(self) -> dict[str, int | None]:
        return {"decisions_days": self.decisions_days, "rewards_days": self.rewards_days}


@dataclass(frozen=True, slots=True)
class RetentionSetting:
    """One row of ``log_retention``: the deployment's (``experiment_id`` None) or an
    experiment's override."""

    experiment_id: str | None
    retention: Retention
    updated_by: str
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"experiment_id": self.experiment_id, **self.retention.to_dict(),
                "updated_by": self.updated_by, "updated_at": self.updated_at}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    deployment: RetentionSetting | None
    overrides: dict[str, RetentionSetting]

    @property
    def default(self) -> Retention:
        return self.deployment.retention if self.deployment else Retention()

    def governing(self, experiment_id: str) -> Retention:
        override = self.overrides.get(experiment_id)
        return override.retention if override else self.default


async def read_policy(conn: asyncpg.Connection) -> RetentionPolicy:
    rows = await conn.fetch(
        """SELECT experiment_id, decisions_days, rewards_days, updated_by, updated_at
           FROM log_retention ORDER BY experiment_id NULLS FIRST""")
    settings = [RetentionSetting(r["experiment_id"], Retention(r["decisions_days"],
                                                               r["rewards_days"]),
                                 r["updated_by"], r["updated_at"]) for r in rows]
    deployment = next((s for s in settings if s.experiment_id is None), None)
    return RetentionPolicy(deployment, {s.experiment_id: s for s in settings
                                        if s.experiment_id is not None})


async def _governed_windows(conn: asyncpg.Connection, experiment_id: str | None):
    """(id, reward window) of the experiments a setting governs, longest window first:
    the experiment's own, or for the deployment every non-deleted experiment without
    an override."""
    return await conn.fetch(
        """SELECT e.id, e.reward_window_seconds FROM experiments e
           WHERE e.deleted_at IS NULL
             AND CASE WHEN $1::text IS NULL
                      THEN NOT EXISTS (SELECT 1 FROM log_retention r
                                       WHERE r.experiment_id = e.id)
                      ELSE e.id = $1 END
           ORDER BY e.reward_window_seconds DESC, e.id LIMIT 1""",
        experiment_id)


async def _check_rule(conn: asyncpg.Connection, experiment_id: str | None,
                      retention: Retention, *, action: str) -> None:
    longest = await _governed_windows(conn, experiment_id)
    if not longest:
        return
    worst_id, window = longest[0]["id"], longest[0]["reward_window_seconds"]
    needed = min_retention_days(window)
    for table in LOG_TABLES:
        days = retention.days(table)
        if days is not None and days < needed:
            governs = (f"experiment {worst_id!r}" if experiment_id
                       else f"every experiment without an override, among them {worst_id!r}")
            advice = f"keep --{table} {needed}d or more" + (
                "" if experiment_id else
                ", or give that experiment an override (`banditctl retention set --experiment ID`)")
            raise RetentionConflict(
                f"cannot {action}: {table} would be kept {describe_days(days)}, but {governs} "
                f"has a reward window of {window:g} s, which needs at least {needed} days (the "
                "window in whole days plus one): a reward for a dropped day could be applied "
                f"twice, and a default reward missed; {advice}")


_UNCHANGED: Final = object()


async def set_retention(
    conn: asyncpg.Connection, experiment_id: str | None = None, *,
    decisions: Any = _UNCHANGED, rewards: Any = _UNCHANGED, actor: str | None = None,
) -> Retention:
    """Set the deployment's retention, or an experiment's override, and return it.

    ``decisions`` / ``rewards`` are days or None (forever); a table not given keeps its
    value, and a new override starts from the deployment's. Raises
    ``ExperimentNotFound`` and ``RetentionConflict`` (the rule in the module docstring).
    """
    actor = actor or current_actor()
    async with conn.transaction():
        await lock_retention(conn)
        if experiment_id is not None:
            await get_experiment(conn, experiment_id)
        policy = await read_policy(conn)
        old = (policy.default if experiment_id is None
               else policy.governing(experiment_id))
        new = Retention(
            old.decisions_days if decisions is _UNCHANGED else decisions,
            old.rewards_days if rewards is _UNCHANGED else rewards,
        )
        where = "the deployment" if experiment_id is None else f"experiment {experiment_id!r}"
        await _check_rule(conn, experiment_id, new, action=f"set the retention of {where}")
        conflict = ("((true)) WHERE experiment_id IS NULL" if experiment_id is None
                    else "(experiment_id)")
        await conn.execute(
            f"""INSERT INTO log_retention (experiment_id, decisions_days, rewards_days,
                                           updated_by)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT {conflict} DO UPDATE SET decisions_days = EXCLUDED.decisions_days,
                    rewards_days = EXCLUDED.rewards_days, updated_by = EXCLUDED.updated_by,
                    updated_at = now()""",
            experiment_id, new.decisions_days, new.rewards_days, actor)
        if experiment_id is not None:
            await record_event(conn, experiment_id, "set retention", actor=actor,
                               old=old.to_dict(), new=new.to_dict())
    return new


async def clear_retention(conn: asyncpg.Connection, experiment_id: str | None = None, *,
                          actor: str | None = None) -> bool:
    """Remove an experiment's override (it falls back to the deployment's retention,
    which must satisfy the rule for it) or the deployment's retention (everything
    without an override is kept forever). False when there was nothing to remove."""
    actor = actor or current_actor()
    async with conn.transaction():
        await lock_retention(conn)
        policy = await read_policy(conn)
        if experiment_id is None:
            removed = policy.deployment is not None
            await conn.execute("DELETE FROM log_retention WHERE experiment_id IS NULL")
            return removed
        await get_experiment(conn, experiment_id)
        override = policy.overrides.get(experiment_id)
        if override is None:
            return False
        await _check_rule(conn, experiment_id, policy.default,
                          action=f"clear the override of experiment {experiment_id!r}")
        await conn.execute("DELETE FROM log_retention WHERE experiment_id = $1", experiment_id)
        await record_event(conn, experiment_id, "clear retention", actor=actor,
                           old=override.retention.to_dict(), new=policy.default.to_dict())
    return True


# -- the partitions and when each goes -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """One day partition of one log table, and when retention lets it go.

    ``drop_on`` is the first UTC day on which it may be dropped (None: kept forever),
    ``kept_by`` the experiment whose retention sets that day (None: the deployment's,
    on a day no experiment was live). ``rows`` are the day's rolled-up rows of the
    table (exact once the rollup caught up), ``bytes`` its size with its indexes.
    ``state`` is ``attached``, ``detach pending`` or ``detached`` (the last two left
    by an interrupted run).
    """

    table: str
    day: date
    name: str
    state: str
    rows: int
    bytes: int
    drop_on: date | None
    kept_by: str | None

    def due(self, today: date) -> bool:
        return self.drop_on is not None and self.drop_on <= today and self.day < today

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "day": self.day, "name": self.name, "state": self.state,
                "rows": self.rows, "bytes": self.bytes, "drop_on": self.drop_on,
                "kept_by": self.kept_by}


@dataclass(frozen=True, slots=True)
class _Lifetime:
    """When an experiment could log: what "live on a day" is judged by."""

    id: str
    created_at: datetime
    ended_at: datetime | None
    deleted_at: datetime | None

    def live_on(self, day_start: datetime) -> bool:
        day_end = day_start + timedelta(days=1)
        return (self.created_at < day_end
                and (self.ended_at is None or self.ended_at >= day_start)
                and (self.deleted_at is None or self.deleted_at >= day_start))


def _drop_on(table: str, day: date, live: list[_Lifetime],
             policy: RetentionPolicy) -> tuple[date | None, str | None]:
    """The first day ``table``'s partition of ``day`` may go, and who sets it."""
    governing = [(e.id, policy.governing(e.id).days(table)) for e in live] or [
        (None, policy.default.days(table))]
    for who, days in governing:
        if days is None:
            return None, who
    who, days = max(governing, key=lambda g: g[1])
    return day + timedelta(days=days + 1), who


_PARTITIONS = """
SELECT c.relname AS name, substr(c.relname, 1, length(c.relname) - 9) AS parent,
       to_date(right(c.relname, 8), 'YYYYMMDD') AS day,
       CASE WHEN i.inhrelid IS NULL THEN 'detached'
            WHEN i.inhdetachpending THEN 'detach pending' ELSE 'attached' END AS state,
       pg_total_relation_size(c.oid) AS bytes
FROM pg_class c
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace
  AND c.relname ~ '^(decisions|rewards)_[0-9]{8}$'
ORDER BY day, parent
"""


async def plan_retention(conn: asyncpg.Connection) -> tuple[date, list[PartitionPlan]]:
    """Today (UTC, by the database's clock) and every day partition of the log with
    when it may be dropped, oldest first."""
    today = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    policy = await read_policy(conn)
    lifetimes = [
        _Lifetime(r["id"], r["created_at"], r["end_at"] if r["status"] in _ENDED else None,
                  r["deleted_at"])
        for r in await conn.fetch(
            "SELECT id, created_at, status, end_at, deleted_at FROM experiments")
    ]
    counts = {(r["day"], table): int(r[table])
              for r in await conn.fetch(
                  """SELECT day, sum(decisions) AS decisions, sum(rewards) AS rewards
                     FROM rollup_arm_days GROUP BY day""")
              for table in LOG_TABLES}
    plans = []
    for row in await conn.fetch(_PARTITIONS):
        day, table = row["day"], row["parent"]
        day_start = datetime.combine(day, time(), tzinfo=UTC)
        live = [e for e in lifetimes if e.live_on(day_start)]
        drop_on, kept_by = _drop_on(table, day, live, policy)
        plans.append(PartitionPlan(table, day, row["name"], row["state"],
                                   counts.get((day, table), 0), row["bytes"], drop_on, kept_by))
    return today, plans


# -- a run -----------------------------------------------------------------------------------


@dataclass(slots=True)
class RetentionRun:
    """What one run did (or, dry, would do)."""

    dry_run: bool
    today: date
    created: int = 0
    dropped: list[PartitionPlan] = field(default_factory=list)
    failed: list[tuple[PartitionPlan, str]] = field(default_factory=list)
    exported: dict[date, Any] = field(default_factory=dict)
    pending_rewards_deleted: int = 0
    kept: int = 0

    def summary(self) -> str:
        verb = "would drop" if self.dry_run else "dropped"
        parts = [f"{verb} {len(self.dropped)} partitions"
                 + (f" ({', '.join(p.name for p in self.dropped)})" if self.dropped else ""),
                 f"kept {self.kept}"]
        if self.created:
            parts.append(f"created {self.created} ahead")
        if self.exported:
            parts.append(f"exported {len(self.exported)} days")
        if self.pending_rewards_deleted:
            parts.append(f"{'would delete' if self.dry_run else 'deleted'} "
                         f"{self.pending_rewards_deleted} orphaned pending rewards")
        parts += [f"FAILED {p.name}: {why}" for p, why in self.failed]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "today": self.today, "created": self.created,
                "dropped": [p.to_dict() for p in self.dropped],
                "failed": [{**p.to_dict(), "error": why} for p, why in self.failed],
                "exported": {str(day): rows for day, rows in self.exported.items()},
                "pending_rewards_deleted": self.pending_rewards_deleted, "kept": self.kept}


async def apply_retention(conn: asyncpg.Connection, *, dry_run: bool = False,
                          before_drop: BeforeDrop | None = None) -> RetentionRun:
    """One retention run (see the module docstring); ``conn`` must not be inside a
    transaction. Raises ``RetentionBusy`` when another run holds the lock."""
    if not dry_run and not await conn.fetchval(_RUN_LOCK):
        raise RetentionBusy("another retention run (the scheduler's or a `banditctl "
                            "retention apply`) is in progress; try again when it is done")
    try:
        created = 0 if dry_run else await ensure_partitions(conn)
        await catch_up(conn)
        today, plans = await plan_retention(conn)
        report = RetentionRun(dry_run, today, created)
        due = [p for p in plans if p.due(today)]
        report.kept = len(plans) - len(due)
        attached = {(p.table, p.day) for p in plans if p.state == "attached"}
        for day in sorted({p.day for p in due}):
            todays = [p for p in due if p.day == day]
            if dry_run:
                report.dropped += todays
                continue
            if before_drop is not None and all((t, day) in attached for t in LOG_TABLES):
                try:
                    report.exported[day] = await before_drop(day)
                except Exception as exc:
                    log.error("ERROR retention kept day %s: its export before drop failed: %s",
                              day, exc)
                    report.failed += [(p, f"export before drop failed: {exc}") for p in todays]
                    continue
            for plan in todays:
                await _drop_one(conn, plan, report)
        report.pending_rewards_deleted = await _forget_orphaned_pending(
            conn, plans, report, dry_run=dry_run)
        return report
    finally:
        if not dry_run:
            await conn.fetchval(_RUN_UNLOCK)


async def _drop_one(conn: asyncpg.Connection, plan: PartitionPlan, report: RetentionRun) -> None:
    child = f'"{plan.name}"'
    try:
        horizon = await conn.fetchval("SELECT horizon FROM rollup_horizon")
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {child} WHERE written_xid >= $1)",
                               horizon):
            raise RuntimeError("it has rows the rollup has not counted yet (a writing "
                               "transaction holds the horizon back); kept for the next run")
        if plan.state == "attached":
            await conn.execute(f"ALTER TABLE {plan.table} DETACH PARTITION {child} CONCURRENTLY")
        elif plan.state == "detach pending":
            await conn.execute(f"ALTER TABLE {plan.table} DETACH PARTITION {child} FINALIZE")
        await conn.execute(f"DROP TABLE {child}")
    except (asyncpg.PostgresError, RuntimeError) as exc:
        log.error("ERROR retention could not drop %s: %s", plan.name, exc)
        report.failed.append((plan, str(exc)))
        return
    log.info("Retention dropped %s (day %s, %d rows, %d bytes, kept by %s until %s)",
             plan.name, plan.day, plan.rows, plan.bytes, plan.kept_by or "the deployment",
             plan.drop_on)
    report.dropped.append(plan)


async def _forget_orphaned_pending(conn: asyncpg.Connection, plans: list[PartitionPlan],
                                   report: RetentionRun, *, dry_run: bool) -> int:
    """Pending rewards (rewards rolled up before their decision row) older than every
    remaining decisions partition: their decision can never arrive now."""
    gone = {p.name for p in report.dropped}
    remaining = [p.day for p in plans if p.table == "decisions" and p.name not in gone
                 and p.state == "attached"]
    if not remaining:
        return 0
    oldest = datetime.combine(min(remaining), time(), tzinfo=UTC)
    if dry_run:
        return await conn.fetchval(
            "SELECT count(*) FROM rollup_pending_rewards WHERE decided_at < $1", oldest)
    status = await conn.execute("DELETE FROM rollup_pending_rewards WHERE decided_at < $1",
                                oldest)
    return int(status.split()[-1])


def export_hook(conn: asyncpg.Connection, out_dir: Path) -> BeforeDrop:
    """``before_drop`` that exports each day (every experiment's rows of that UTC day)
    as Parquet under ``out_dir``; returns the rows written."""
    async def export(day: date) -> int:
        return await export_day(conn, day, out_dir)

    return export
