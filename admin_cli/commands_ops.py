"""Operations commands: summary, set, rollback, guardrails, decide, status, scheduler."""

from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import click

from banditd.admin_cli.cli_support import (
    EXIT_FAILED,
    EXIT_USAGE,
    CliError,
    database_options,
    json_option,
    print_json,
    print_table,
    run,
)
from banditd.admin_cli.commands_experiment import experiment_group

STATUS_ICONS = {"ok": "OK", "warn": "WARN", "critical": "FAIL", "insufficient_data": "n/a"}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


# -- experiment summary / set ------------------------------------------------------------


@experiment_group.command("summary")
@click.argument("experiment_id")
@database_options
@json_option
def summary_command(experiment_id: str, db, as_json: bool) -> None:
    """Traffic split, users, reward rate with CI per policy, guardrails, time left."""
    from banditd.admin_cli.summary import experiment_summary

    async def fetch():
        async with db.connection() as conn:
            return await experiment_summary(conn, experiment_id)

    summary = run(fetch())
    if as_json:
        print_json(summary.to_dict())
        return
    data = summary.to_dict()
    left = data["time_left_seconds"]
    click.echo(f"{data['id']} ({data['name']}): {data['status']}, traffic "
               f"{data['traffic_pct']:.0%}, time left "
               f"{'-' if left is None else timedelta(seconds=round(left))}, "
               f"outside-traffic users {data['outside_traffic_users']}")
    rows = []
    for p in data["policies"]:
        ci = p["reward_ci"]["ci"] if p["reward_ci"] else None
        rows.append((
            p["policy"], f"{p['configured_share']:.1%}",
            "-" if p["actual_share"] is None else f"{p['actual_share']:.1%}",
            p["users"], p["decisions"], _fmt(p["reward_rate"]),
            "-" if ci is None else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]",
            _fmt(p["cumulative_reward"], 6),
        ))
    print_table(None, ("policy", "configured", "actual", "users", "decisions", "reward rate",
                       "95% CI", "cumulative reward"), rows)
    latest = data["latest_guardrails"]
    click.echo("guardrails: " + ("never checked" if latest is None else
                                 f"{latest['status']} at {latest['at']}"))


def _parse_setting(item: str, what: str) -> tuple[list[str], Any]:
    match = re.fullmatch(r"([a-z_0-9.]+)=(.+)", item)
    if not match:
        raise click.BadParameter(f"{item!r} is not KEY=VALUE for {what}")
    path, raw = match.groups()
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path.split("."), value


def _nest(items: tuple[str, ...], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        path, value = _parse_setting(item, what)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


@experiment_group.command("set")
@click.argument("experiment_id")
@click.option("--traffic", type=float, help="New share of users inside the experiment.")
@click.option("--guardrail", "guardrails", multiple=True,
              help="Threshold CHECK.LEVEL=VALUE, e.g. error_rate.critical=0.02 (repeatable).")
@click.option("--criterion", "criteria", multiple=True,
              help="Verdict criterion NAME=VALUE, e.g. alpha=0.01 (repeatable).")
@click.option("--reason", help="Why (kept in the audit trail).")
@database_options
@json_option
def set_command(experiment_id, traffic, guardrails, criteria, reason, db, as_json) -> None:
    """Change traffic, guardrail thresholds or verdict criteria (audited)."""
    from banditd.server.experiment_store import update_settings

    if traffic is None and not guardrails and not criteria:
        raise click.UsageError("nothing to change: give --traffic, --guardrail or --criterion")

    async def change():
        async with db.connection() as conn:
            return await update_settings(
                conn, experiment_id, traffic_pct=traffic,
                guardrails=_nest(guardrails, "--guardrail") or None,
                verdict_criteria=_nest(criteria, "--criterion") or None, reason=reason,
            )

    experiment = run(change())
    if as_json:
        print_json(experiment.to_dict())
    else:
        click.echo(f"{experiment.id}: updated (see `banditctl experiment show {experiment.id}`)")


# -- rollback -----------------------------------------------------------------------------


@click.command("rollback")
@click.argument("experiment_id")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@click.option("--attempts", default=5, show_default=True, type=click.IntRange(1, 100),
              help="Tries before giving up when PostgreSQL is unreachable.")
@database_options
@json_option
def rollback_command(experiment_id, reason, attempts, db, as_json) -> None:
    """Roll back now: every server moves the experiment's users to control within 1 s."""
    from banditd.admin_cli.guardrails import RollbackFailed, rollback_with_retry

    try:
        experiment = run(rollback_with_retry(db.url, experiment_id, reason, attempts=attempts))
    except RollbackFailed as exc:
        raise CliError(str(exc), EXIT_FAILED) from exc
    if as_json:
        print_json({"id": experiment.id, "status": experiment.status,
                    "end_at": experiment.end_at, "reason": reason})
    else:
        click.echo(f"{experiment.id}: rolled back at {experiment.end_at:%Y-%m-%d %H:%M:%S} UTC")


# -- guardrails ---------------------------------------------------------------------------


@click.group("guardrails")
def guardrails_group() -> None:
    """Guardrail checks: error rate, P95 latency, arm concentration, reward vs control."""


@guardrails_group.command("check")
@click.argument("experiment_id")
@click.option("--window", default=300.0, show_default=True, type=click.FloatRange(1, 86_400),
              help="Sliding window in seconds.")
@click.option("--rollback/--no-rollback", default=False,
              help="Roll back when the automatic-rollback rule fires.")
@click.option("--log-dir", envvar="BANDITD_LOG_DIR", default="logs", show_default=True,
              help="Where guardrails.log is appended.")
@database_options
@json_option
def guardrails_check(experiment_id, window, rollback, log_dir, db, as_json) -> None:
    """Run the four checks now, record the run, print value/threshold/status per check.

    Exits 1 when a check is critical (or a rollback failed)."""
    from banditd.admin_cli.guardrails import RollbackFailed, run_guardrail_job
    from banditd.server import logs

    logs.configure(log_dir, console=False)
    try:
        report = run(run_guardrail_job(db.url, experiment_id, window_seconds=window,
                                       auto_rollback=rollback))
    except RollbackFailed as exc:
        raise CliError(str(exc), EXIT_FAILED) from exc
    if as_json:
        print_json(report.to_dict())
    else:
        print_table(
            f"guardrails {experiment_id} (last {window:g}s): {report.status}",
            ("check", "value", "warning", "critical", "status", "detail"),
            ((c.name, _fmt(c.value), _fmt(c.warning), _fmt(c.critical),
              STATUS_ICONS[c.status], c.detail) for c in report.checks),
        )
        if report.decision.should_roll_back:
            verb = "rolled back" if report.rolled_back else "rollback rule fired"
            click.echo(f"{verb}: " + "; ".join(report.decision.reasons))
    if report.status == "critical":
        raise SystemExit(EXIT_FAILED)


# -- decide -------------------------------------------------------------------------------


@click.command("decide")
@click.argument("experiment_id")
@database_options
@json_option
def decide_command(experiment_id, db, as_json) -> None:
    """Ship / iterate / kill per bandit policy vs control, with always-valid statistics."""
    from banditd.admin_cli.verdict_engine import overall_recommendation, run_verdict

    async def analyse():
        async with db.connection() as conn:
            return await run_verdict(conn, experiment_id)

    try:
        report = run(analyse())
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    if as_json:
        print_json({"experiment_id": experiment_id,
                    "recommendation": overall_recommendation(report), **report.to_dict()})
        return
    _print_verdict(experiment_id, overall_recommendation(report), report.to_dict())


def _print_verdict(experiment_id: str, recommendation: str, data: dict) -> None:
    """The human form of ``decide``: the verdict, each policy's lift, then the reasons."""
    control = data["control"]
    click.echo(f"{experiment_id}: {recommendation.upper()} "
               f"(day {data['days']}, guardrails {data['guardrails']}, "
               f"control {control['users']:.0f} users, mean {_fmt_mean(control)})")
    rows = []
    for p in data["policies"]:
        rel = p["relative_lift"]
        level = f"{rel['level']:.1%}"
        rows.append((p["policy"], f"{p['users']:.0f}", _fmt_mean(p),
                     _fmt_pct(rel["estimate"]), _fmt_ci(rel["ci"], pct=True),
                     _fmt(p["p_value"], 3), level, p["recommendation"]))
    print_table(None, ("policy", "users", "reward mean [CI]", "relative lift",
                       "always-valid CI", "p", "level", "verdict"), rows)
    for p in data["policies"]:
        click.echo(f"{p['policy']}: {p['recommendation']}")
        for reason in p["reasons"]:
            click.echo(f"  - {reason}")
    srm = data["srm"]
    click.echo(f"sample-ratio mismatch: {'MISMATCH' if srm['flagged'] else 'none'} "
               f"(χ² p = {_fmt(srm['p_value'], 3)}, threshold {srm['threshold']:g})")


def _fmt_mean(summary: dict) -> str:
    """A policy's reward mean with its interval; "-" before its first reward."""
    if not summary["observations"]:
        return "-"
    return f"{_fmt(summary['mean'])} {_fmt_ci(summary['mean_ci']['ci'])}"


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


def _fmt_ci(ci, *, pct: bool = False) -> str:
    """``[low, high]``; an unbounded end (``None`` in the JSON) shows as ∓∞."""
    if not ci or ci == [None, None]:
        return "-"
    show = _fmt_pct if pct else _fmt
    low = "-∞" if ci[0] is None else show(ci[0])
    high = "+∞" if ci[1] is None else show(ci[1])
    return f"[{low}, {high}]"


# -- status -------------------------------------------------------------------------------


@click.command("status")
@click.option("--redis-url", envvar="BANDITD_REDIS_URL", default=None,
              help="Check Redis too (when configured).")
@click.option("--stale-after", default=30.0, show_default=True, type=float,
              help="Seconds after which a server heartbeat counts as lost.")
@database_options
@json_option
def status_command(redis_url, stale_after, db, as_json) -> None:
    """Pre-launch system checks: database, schema, servers, scheduler, Redis."""
    checks = asyncio.run(_status_checks(db, redis_url, stale_after))
    if as_json:
        print_json({"checks": checks, "ok": all(c["status"] != "FAIL" for c in checks)})
    else:
        print_table("banditd status", ("check", "status", "detail"),
                    ((c["check"], c["status"], c["detail"]) for c in checks))
    if any(c["status"] == "FAIL" for c in checks):
        raise SystemExit(EXIT_FAILED)


async def _status_checks(db, redis_url: str | None, stale_after: float) -> list[dict]:
    from banditd.server.database import connect
    from banditd.server.migrate import SCHEMA_VERSION, current_version

    checks: list[dict] = []

    def add(check: str, status: str, detail: str) -> None:
        checks.append({"check": check, "status": status, "detail": detail})

    url = db.url  # no database here at all: exit code 5, like every other command
    try:
        conn = await connect(url, timeout=5)
    except Exception as exc:  # any failure to connect is what this check reports
        add("database", "FAIL", f"unreachable: {exc}")
        return checks
    try:
        add("database", "OK", await conn.fetchval("SELECT version()"))
        version = await current_version(conn)
        if version != SCHEMA_VERSION:
            add("schema", "FAIL",
                f"version {version}, this banditctl needs {SCHEMA_VERSION}: run banditctl migrate")
            return checks
        add("schema", "OK", f"version {version}")
        now = datetime.now(UTC)
        servers = await conn.fetch("SELECT * FROM server_heartbeats ORDER BY server_id")
        live = [s for s in servers
                if s["state"] == "serving" and (now - s["last_seen"]).total_seconds() < stale_after]
        add("servers", "OK" if live else "FAIL",
            ", ".join(f"{s['address']} v{s['version']} ({s['experiments']} experiments)"
                      for s in live) or "no server has sent a heartbeat recently")
        for s in servers:
            age = (now - s["last_seen"]).total_seconds()
            if s not in live and s["state"] == "serving" and age < 24 * 3600:
                add(f"server {s['server_id']}", "WARN", f"last heartbeat {age:.0f}s ago")
        jobs = await conn.fetch("SELECT * FROM scheduler_jobs ORDER BY job")
        if not jobs:
            add("scheduler", "WARN", "no scheduler has run yet: start `banditctl scheduler`")
        for job in jobs:
            overdue = job["next_run_at"] and (now - job["next_run_at"]).total_seconds() > 600
            status = "FAIL" if job["last_status"] == "failed" else "WARN" if overdue else "OK"
            add(f"job {job['job']}", status,
                f"{job['schedule']}; last {job['last_run_at'] or 'never'} "
                f"({job['last_status'] or '-'}); next {job['next_run_at']}")
    finally:
        await conn.close()
    if redis_url:
        import redis.asyncio as redis

        client = redis.from_url(redis_url, socket_timeout=2)
        try:
            await client.ping()
            add("redis", "OK", redis_url)
        except Exception as exc:
            add("redis", "FAIL", f"{redis_url}: {exc}")
        finally:
            await client.aclose()
    else:
        add("redis", "OK", "not configured (optional)")
    return checks


# -- scheduler ----------------------------------------------------------------------------


@click.command("scheduler")
@click.option("--guardrail-every", default=300.0, show_default=True,
              type=click.FloatRange(1, 86_400), help="Seconds between guardrail runs.")
@click.option("--verdict-at", default="09:00", show_default=True,
              help="UTC time of the daily verdict run (HH:MM).")
@click.option("--window", default=300.0, show_default=True, type=click.FloatRange(1, 86_400),
              help="Guardrail window in seconds.")
@click.option("--retention-every", default=3600.0, show_default=True,
              type=click.FloatRange(60, 86_400),
              help="Seconds between retention runs (partitions ahead, due ones dropped).")
@click.option("--export-before-drop", "export_dir",
              type=click.Path(file_okay=False, writable=True, path_type=Path),
              help="Export each day as Parquet under DIR before retention drops it.")
@click.option("--log-dir", envvar="BANDITD_LOG_DIR", default="logs", show_default=True)
@database_options
def scheduler_command(guardrail_every, verdict_at, window, retention_every, export_dir,
                      log_dir, db) -> None:
    """Run the guardrail job, the daily verdict engine and retention until SIGTERM."""
    from banditd.admin_cli.commands_retention import check_export_dir
    from banditd.admin_cli.scheduler import Schedule, run_scheduler
    from banditd.server import logs

    try:
        at = time.fromisoformat(verdict_at)
    except ValueError as exc:
        raise click.BadParameter(f"--verdict-at must be HH:MM, got {verdict_at!r}") from exc
    check_export_dir(export_dir)
    logs.configure(log_dir)
    schedule = Schedule(timedelta(seconds=guardrail_every), at, window,
                        timedelta(seconds=retention_every), export_dir)
    click.echo(f"scheduler (pid {os.getpid()}): guardrails {schedule.describe('guardrails')}, "
               f"verdict {schedule.describe('verdict')}, "
               f"retention {schedule.describe('retention')}", err=True)
    run(run_scheduler(db.url, schedule))
