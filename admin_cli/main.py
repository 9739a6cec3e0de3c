"""``banditctl``: the operator's command line for banditd."""

from __future__ import annotations

import click

from banditd.admin_cli.cli_support import database_options, print_json, run
from banditd.admin_cli.commands_demo import demo_command
from banditd.admin_cli.commands_experiment import experiment_group, launch_command
from banditd.admin_cli.commands_offline import OFFLINE_COMMANDS
from banditd.admin_cli.commands_ops import (
    decide_command,
    guardrails_group,
    rollback_command,
    scheduler_command,
    status_command,
)
from banditd.admin_cli.commands_retention import retention_group
from banditd.server import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="banditctl")
def main() -> None:
    """Operate banditd experiments: migrate, launch, inspect, stop, roll back, analyse."""


@main.command("migrate")
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def migrate_command(db, as_json: bool) -> None:
    """Apply pending schema migrations (idempotent).

    The one banditctl command that initialises a new embedded database under
    --data-dir when none is there."""
    from banditd.server.migrate import SCHEMA_VERSION, migrate

    async def apply():
        async with db.connection(check_schema=False, create=True) as conn:
            return await migrate(conn)

    applied = run(apply())
    if as_json:
        print_json({"applied": [f"{m.version:04d}_{m.name}" for m in applied],
                    "schema_version": SCHEMA_VERSION})
        return
    for migration in applied:
        click.echo(f"applied {migration.version:04d}_{migration.name}")
    click.echo(f"schema at version {SCHEMA_VERSION}")


main.add_command(experiment_group)
main.add_command(launch_command)
for _command in (rollback_command, guardrails_group, decide_command, status_command,
                 scheduler_command, demo_command, *OFFLINE_COMMANDS):
    main.add_command(_command)
main.add_command(retention_group)


if __name__ == "__main__":
    main()
