"""``banditctl retention ...``: how long the raw log is kept, and dropping what is due."""

from __future__ import annotations

from pathlib import Path

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
from banditd.admin_cli.retention import (
    FOREVER,
    apply_retention,
    clear_retention,
    describe_days,
    export_hook,
    parse_days,
    plan_retention,
    read_policy,
    set_retention,
)


def _days_option(table: str):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return parse_days(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from exc

    return click.option(
        f"--{table}", f"{table}_days", callback=parse, metavar="DAYS",
        help=f"Keep {table} this long: whole days or weeks (30d, 4w) or {FOREVER!r}.")


def _export_dir_option(func):
    return click.option(
        "--export-before-drop", "export_dir",
        type=click.Path(file_okay=False, writable=True, path_type=Path),
        help="Export each day as Parquet under DIR before its partitions are dropped; "
             "a day whose export fails is kept.")(func)


def check_export_dir(export_dir: Path | None) -> None:
    """Fail before anything is dropped when ``--export-before-drop`` cannot work here."""
    if export_dir is None:
        return
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--export-before-drop {export_dir}: {exc}", EXIT_USAGE) from exc


@click.group("retention")
def retention_group() -> None:
    """How long the raw decision log and rewards are kept (whole UTC days: partitions).

    Without a retention everything is kept forever. Aggregates (what summary, decide
    and the guardrails read) are kept forever either way."""


@retention_group.command("set")
@_days_option("decisions")
@_days_option("rewards")
@click.option("--experiment", "experiment_id", metavar="ID",
              help="Override the deployment's retention for this experiment only.")
@database_options
@json_option
def set_command(decisions_days, rewards_days, experiment_id, db, as_json) -> None:
    """Set the deployment's retention (or, with --experiment, an override).

    A table not given keeps its value. Refused (exit 4) when shorter than the longest
    reward window it governs plus one day."""
    changes = {}
    ctx = click.get_current_context()
    for table, days in (("decisions", decisions_days), ("rewards", rewards_days)):
        # None is both "not given" and "forever": only the option's source tells them apart
        if ctx.get_parameter_source(f"{table}_days") is not click.core.ParameterSource.DEFAULT:
            changes[table] = days
    if not changes:
        raise click.UsageError("nothing to set: give --decisions and/or --rewards "
                               "(e.g. --decisions 30d --rewards 30d)")

    async def change():
        async with db.connection() as conn:
            return await set_retention(conn, experiment_id, **changes)

    retention = run(change())
    if as_json:
        print_json({"experiment_id": experiment_id, **retention.to_dict()})
        return
    where = f"experiment {experiment_id}" if experiment_id else "deployment"
    click.echo(f"{where}: decisions {describe_days(retention.decisions_days)}, "
               f"rewards {describe_days(retention.rewards_days)}")


@retention_group.command("clear")
@click.option("--experiment", "experiment_id", metavar="ID",
              help="Remove this experiment's override (it follows the deployment's again).")
@click.option("--deployment", is_flag=True,
              help="Remove the deployment's retention: keep forever what has no override.")
@database_options
@json_option
def clear_command(experiment_id, deployment, db, as_json) -> None:
    """Remove an experiment's override, or the deployment's retention."""
    if bool(experiment_id) == deployment:
        raise click.UsageError("give exactly one of --experiment ID or --deployment")

    async def clear():
        async with db.connection() as conn:
            return await clear_retention(conn, experiment_id)

    removed = run(clear())
    where = f"experiment {experiment_id}'s override" if experiment_id else "deployment retention"
    if as_json:
        print_json({"experiment_id": experiment_id, "removed": removed})
    else:
        click.echo(f"{where}: {'removed' if removed else 'there was none'}")


@retention_group.command("show")
@database_options
@json_option
def show_command(db, as_json) -> None:
    """The deployment's retention, the overrides, and every day partition with its
    rows, size and the day retention drops it."""

    async def fetch():
        async with db.connection() as conn:
            policy = await read_policy(conn)
            today, plans = await plan_retention(conn)
            return policy, today, plans

    policy, today, plans = run(fetch())
    if as_json:
        print_json({"today": today, "deployment": policy.default.to_dict(),
                    "deployment_setting": policy.deployment,
                    "overrides": list(policy.overrides.values()),
                    "partitions": [p.to_dict() for p in plans]})
        return
    default = policy.default
    click.echo(f"deployment: decisions {describe_days(default.decisions_days)}, rewards "
               f"{describe_days(default.rewards_days)}"
               + ("" if policy.deployment else " (nothing set: keep forever)"))
    if policy.overrides:
        print_table("overrides", ("experiment", "decisions", "rewards", "by", "at"),
                    ((s.experiment_id, describe_days(s.retention.decisions_days),
                      describe_days(s.retention.rewards_days), s.updated_by,
                      f"{s.updated_at:%Y-%m-%d %H:%M}") for s in policy.overrides.values()))
    print_table(f"partitions (today {today}, UTC)",
                ("table", "day", "rows", "size", "drops on", "set by", "state"),
                ((p.table, p.day, p.rows, _size(p.bytes), p.drop_on or "never",
                  p.kept_by or "deployment", p.state) for p in plans))


@retention_group.command("apply")
@click.option("--dry-run", is_flag=True, help="Show what would be dropped; drop nothing.")
@_export_dir_option
@click.option("--log-dir", envvar="BANDITD_LOG_DIR", default="logs", show_default=True,
              help="Where workers.log records each dropped partition.")
@database_options
@json_option
def apply_command(dry_run, export_dir, log_dir, db, as_json) -> None:
    """Drop every partition retention lets go now (what the scheduler does hourly).

    Exits 1 when a partition could not be dropped or its export failed (it is kept)."""
    from banditd.server import logs

    check_export_dir(export_dir)
    logs.configure(log_dir, console=False)

    async def apply():
        async with db.connection() as conn:
            hook = export_hook(conn, export_dir) if export_dir and not dry_run else None
            return await apply_retention(conn, dry_run=dry_run, before_drop=hook)

    report = run(apply())
    if as_json:
        print_json(report.to_dict())
    else:
        verb = "would drop" if dry_run else "dropped"
        for plan in report.dropped:
            click.echo(f"{verb} {plan.name}: {plan.rows} rows, {_size(plan.bytes)}")
        for plan, why in report.failed:
            click.echo(f"error: kept {plan.name}: {why}", err=True)
        click.echo(report.summary())
    if report.failed:
        raise SystemExit(EXIT_FAILED)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
