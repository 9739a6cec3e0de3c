"""Experiments in PostgreSQL: create, read, and life-cycle changes with an audit trail.

Every change is one transaction that updates the row, appends to
``experiment_events`` (who, when, old -> new, why) and sends
``NOTIFY banditd_experiments, '<id>'``; PostgreSQL delivers the notification at
commit, and every running server reloads that experiment within a second (the
servers also poll, in case a notification is missed).
"""

from __future__ import annotations

import dataclasses
import getpass
import math
from datetime import timedelta
from typing import Any

import asyncpg

from banditd.server.experiment import Experiment, ExperimentSpec, Status, utcnow

CHANNEL = "banditd_experiments"

# The experiment <-> row mapping: every ExperimentSpec field is the column of its name
# (tuples as arrays), the state fields are the columns the database keeps.
_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(ExperimentSpec))
_STATE_FIELDS = ("key", "status", "start_at", "end_at", "updated_at", "status_reason")
_COLUMNS = ", ".join((*_STATE_FIELDS, *_SPEC_FIELDS))


class ExperimentNotFound(LookupError):
    """No experiment with that id (or it was deleted)."""

    def __init__(self, experiment_id: str) -> None:
        super().__init__(
            f"experiment {experiment_id!r} not found; `banditctl experiment list` shows the ids"
        )
        self.experiment_id = experiment_id


class InvalidTransition(ValueError):
    """The requested life-cycle change is not allowed from the current status."""


class RetentionConflict(InvalidTransition):
    """A retention of the raw log shorter than a reward window it governs needs."""


def min_retention_days(reward_window_seconds: float) -> int:
    """The shortest retention, in days, that may govern an experiment with this reward
    window: the window in whole days, rounded up, plus one day (the partition
    granularity and the default-reward job's margin). ``banditd.admin_cli.retention``
    explains why exactly-once needs it."""
    return math.ceil(reward_window_seconds / 86_400) + 1


async def lock_retention(conn: asyncpg.Connection) -> None:
    """Serialise retention changes and experiment creation (inside the caller's
    transaction): each checks the rule against what the other may be changing."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('banditd_log_retention'))")


async def _check_retention_allows(conn: asyncpg.Connection, spec: ExperimentSpec) -> None:
    """Refuse a new experiment whose reward window the deployment's retention (which
    governs it: a new experiment has no override) is too short for."""
    await lock_retention(conn)
    row = await conn.fetchrow(
        "SELECT decisions_days, rewards_days FROM log_retention WHERE experiment_id IS NULL")
    if row is None:
        return
    needed = min_retention_days(spec.reward_window_seconds)
    for table in ("decisions", "rewards"):
        days = row[f"{table}_days"]
        if days is not None and days < needed:
            raise RetentionConflict(
                f"a reward window of {spec.reward_window_seconds:g} s needs the raw log kept "
                f"at least {needed} days (the window in whole days plus one), but the "
                f"deployment keeps {table} {days} days: shorten --reward-window, or first "
                f"`banditctl retention set --{table} {needed}d`"
            )


def current_actor() -> str:
    """Who is making a change: $BANDITD_ACTOR, else the OS user."""
    import os

    return os.environ.get("BANDITD_ACTOR") or getpass.getuser()


def experiment_from_row(row: asyncpg.Record) -> Experiment:
    spec = ExperimentSpec(**{name: row[name] for name in _SPEC_FIELDS})
    return Experiment(spec=spec, **{name: row[name] for name in _STATE_FIELDS})


def _spec_values(spec: ExperimentSpec) -> list[Any]:
    """The spec's column values, in ``_SPEC_FIELDS`` order (tuples as lists: arrays)."""
    values = (getattr(spec, name) for name in _SPEC_FIELDS)
    return [list(v) if isinstance(v, tuple) else v for v in values]


async def record_event(
    conn: asyncpg.Connection,
    experiment_id: str,
    action: str,
    *,
    actor: str,
    old: Any = None,
    new: Any = None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO experiment_events
               (experiment_id, actor, action, old_value, new_value, reason)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        experiment_id, actor, action, old, new, reason,
    )


async def notify_change(conn: asyncpg.Connection, experiment_id: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, experiment_id)


async def create_experiment(
    conn: asyncpg.Connection, spec: ExperimentSpec, *, actor: str | None = None
) -> Experiment:
    """Insert a draft experiment; raises ``ValueError`` if the id is taken and
    ``RetentionConflict`` if the deployment's retention is too short for its reward
    window."""
    actor = actor or current_actor()
    spec.validate_for_write()
    async with conn.transaction():
        await _check_retention_allows(conn, spec)
        try:
            placeholders = ", ".join(f"${i}" for i in range(1, len(_SPEC_FIELDS) + 1))
            row = await conn.fetchrow(
                f"""INSERT INTO experiments ({", ".join(_SPEC_FIELDS)}) VALUES ({placeholders})
                    RETURNING {_COLUMNS}""",
                *_spec_values(spec),
            )
        except asyncpg.UniqueViolationError as exc:
            raise ValueError(f"experiment id {spec.id!r} already exists") from exc
        await record_event(conn, spec.id, "create", actor=actor, new={"status": "draft"})
        await notify_change(conn, spec.id)
    return experiment_from_row(row)


async def get_experiment(conn: asyncpg.Connection, experiment_id: str) -> Experiment:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM experiments WHERE id = $1 AND deleted_at IS NULL", experiment_id
    )
    if row is None:
        raise ExperimentNotFound(experiment_id)
    return experiment_from_row(row)


async def list_experiments(conn: asyncpg.Connection) -> list[Experiment]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM experiments WHERE deleted_at IS NULL ORDER BY created_at, id"
    )
    return [experiment_from_row(r) for r in rows]


async def load_changed_since(conn: asyncpg.Connection, since) -> tuple[list[Experiment], list[str]]:
    """Experiments changed after ``since`` (all when None): (live ones, deleted ids)."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS}, deleted_at IS NOT NULL AS deleted FROM experiments
            WHERE $1::timestamptz IS NULL OR updated_at > $1""",
        since,
    )
    live = [experiment_from_row(r) for r in rows if not r["deleted"]]
    deleted = [r["id"] for r in rows if r["deleted"]]
    return live, deleted


async def events(conn: asyncpg.Connection, experiment_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT at, actor, action, old_value, new_value, reason FROM experiment_events
           WHERE experiment_id = $1 ORDER BY at, id""",
        experiment_id,
    )


async def _lock(conn: asyncpg.Connection, experiment_id: str) -> Experiment:
    """Read an experiment for update (inside the caller's transaction)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM experiments WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        experiment_id,
    )
    if row is None:
        raise ExperimentNotFound(experiment_id)
    return experiment_from_row(row)


_TRANSITIONS: dict[str, tuple[tuple[Status, ...], Status]] = {
    "start": (("draft",), "running"),
    "stop": (("running",), "stopped"),
    "rollback": (("running", "stopped", "draft"), "rolled_back"),
    "complete": (("running",), "completed"),
}


async def change_status(
    conn: asyncpg.Connection,
    experiment_id: str,
    action: str,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> Experiment:
    """Apply a life-cycle ``action`` (start, stop, rollback, complete) atomically.

    ``start`` sets ``start_at`` = now and ``end_at`` = now + duration; ``stop``,
    ``rollback`` and ``complete`` set ``end_at`` = now. Servers move the
    experiment's users to control as soon as the notification arrives.
    """
    allowed_from, target = _TRANSITIONS[action]
    actor = actor or current_actor()
    async with conn.transaction():
        experiment = await _lock(conn, experiment_id)
        if experiment.status not in allowed_from:
            raise InvalidTransition(
                f"cannot {action} experiment {experiment_id!r}: it is {experiment.status} "
                f"(allowed from: {', '.join(allowed_from)})"
            )
        now = utcnow()
        if action == "start":
            start_at = now
            days = experiment.spec.duration_days
            end_at = now + timedelta(days=days) if days else None
        else:
            start_at, end_at = experiment.start_at, now
        row = await conn.fetchrow(
            f"""UPDATE experiments SET status = $2, start_at = $3, end_at = $4,
                    status_reason = $5, status_changed_by = $6, updated_at = clock_timestamp()
                WHERE id = $1 RETURNING {_COLUMNS}""",
            experiment_id, target, start_at, end_at, reason, actor,
        )
        await record_event(
            conn, experiment_id, action, actor=actor,
            old={"status": experiment.status}, new={"status": target}, reason=reason,
        )
        await notify_change(conn, experiment_id)
    return experiment_from_row(row)


async def update_settings(
    conn: asyncpg.Connection,
    experiment_id: str,
    *,
    traffic_pct: float | None = None,
    guardrails: dict[str, Any] | None = None,
    verdict_criteria: dict[str, Any] | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> Experiment:
    """Change a live experiment's traffic share, guardrail thresholds or verdict criteria.

    ``guardrails`` and ``verdict_criteria`` are merged into the current JSON. The new
    configuration is validated as a whole before anything is written; the audit trail
    keeps old -> new for every changed setting.
    """
    actor = actor or current_actor()
    async with conn.transaction():
        locked = await _lock(conn, experiment_id)
        current = locked.spec
        changes: dict[str, tuple[Any, Any]] = {}
        if traffic_pct is not None and traffic_pct != current.traffic_pct:
            changes["traffic_pct"] = (current.traffic_pct, traffic_pct)
        for name, update in (("guardrails", guardrails), ("verdict_criteria", verdict_criteria)):
            if update:
                old = getattr(current, name)
                merged = _merge(old, update)
                if merged != old:
                    changes[name] = (old, merged)
        if not changes:
            return locked
        spec = dataclasses.replace(current, **{k: new for k, (_, new) in changes.items()})
        spec.validate_for_write()
        row = await conn.fetchrow(
            f"""UPDATE experiments SET traffic_pct = $2, guardrails = $3, verdict_criteria = $4,
                    updated_at = clock_timestamp()
                WHERE id = $1 RETURNING {_COLUMNS}""",
            experiment_id, spec.traffic_pct, spec.guardrails, spec.verdict_criteria,
        )
        for name, (old, new) in changes.items():
            await record_event(conn, experiment_id, f"set {name}", actor=actor,
                               old={name: old}, new={name: new}, reason=reason)
        await notify_change(conn, experiment_id)
    return experiment_from_row(row)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``update`` wins, nested objects merge."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
