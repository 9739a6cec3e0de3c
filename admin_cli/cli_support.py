"""What every banditctl command shares: the database option, exit codes, output.

Exit codes (also in the README):
  0 success
  1 the operation failed at run time (e.g. a rollback that could not be applied)
  2 bad input (usage, invalid values) — click's own convention
  3 not found (unknown experiment id)
  4 not allowed in the experiment's current state
  5 database unreachable or not migrated
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from banditd.admin_cli.stats.serialise import json_float

EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_STATE, EXIT_DATABASE = 1, 2, 3, 4, 5

# Where commands write their files (plots, reports) unless told otherwise: one
# directory, relative to where banditctl runs, that a checkout ignores.
RESULTS_DIR = "banditd-results"

# When the output is a pipe or a file, rich would wrap and cut tables at 80 columns;
# scripts and logs want every id whole, so only a terminal sets the width.
_PIPE_WIDTH = 10_000


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else _PIPE_WIDTH)


console = _console(stderr=False)
err_console = _console(stderr=True)


class CliError(click.ClickException):
    """An error with a message for the operator and a meaningful exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Database:
    """Where banditctl finds PostgreSQL: --database-url, or the embedded data dir."""

    def __init__(self, url: str | None, data_dir: str) -> None:
        self._url = url
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        """The URL of an existing database (exit code 5 when there is none)."""
        return self.resolve(create=False)

    def resolve(self, *, create: bool) -> str:
        """The URL; ``create`` lets the embedded default initialise a new cluster."""
        from banditd.server.database import DatabaseConfigError, resolve_database_url

        try:
            return resolve_database_url(self._url, self.data_dir, create=create)
        except DatabaseConfigError as exc:
            raise CliError(str(exc), EXIT_DATABASE) from exc

    @asynccontextmanager
    async def connection(self, *, check_schema: bool = True, create: bool = False):
        """A connection; fails with exit code 5 when unreachable or not migrated."""
        import asyncpg

        from banditd.server.database import connect, redacted
        from banditd.server.migrate import SchemaMismatchError
        from banditd.server.migrate import check_schema as check

        url = self.resolve(create=create)
        try:
            conn = await connect(url, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise CliError(f"cannot reach PostgreSQL at {redacted(url)} ({exc}); check "
                           "--database-url and that the server is up", EXIT_DATABASE) from exc
        try:
            if check_schema:
                try:
                    await check(conn)
                except SchemaMismatchError as exc:
                    raise CliError(str(exc), EXIT_DATABASE) from exc
            yield conn
        finally:
            await conn.close()


def database_options(func: Callable) -> Callable:
    """Adds --database-url / --data-dir (env BANDITD_DATABASE_URL / BANDITD_DATA_DIR)."""

    @click.option("--database-url", envvar="BANDITD_DATABASE_URL", default=None,
                  help="PostgreSQL URL; without it the embedded PostgreSQL under --data-dir.")
    @click.option("--data-dir", envvar="BANDITD_DATA_DIR", default=".banditd",
                  show_default=True, help="Data dir of the embedded PostgreSQL.")
    @functools.wraps(func)
    def wrapper(*args, database_url: str | None, data_dir: str, **kwargs):
        return func(*args, db=Database(database_url, data_dir), **kwargs)

    return wrapper


def json_option(func: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def run(coro: Coroutine) -> Any:
    """Run a command's coroutine, turning known failures into exit codes."""
    from banditd.server.experiment import ExperimentConfigError
    from banditd.server.experiment_store import ExperimentNotFound, InvalidTransition

    try:
        return asyncio.run(coro)
    except ExperimentNotFound as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from exc
    except InvalidTransition as exc:
        raise CliError(str(exc), EXIT_STATE) from exc
    except ExperimentConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


def to_jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: datetimes as ISO 8601, objects through their
    ``to_dict()``, numpy scalars as Python numbers, NaN and ±inf as ``None`` (strict
    JSON has neither, and scripts parse banditctl's output with strict parsers)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if isinstance(value, bool | str | None):
        return value
    if isinstance(value, float | np.floating):
        return json_float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def json_text(value: Any) -> str:
    """``value`` as strict, indented JSON text."""
    return json.dumps(to_jsonable(value), indent=2, allow_nan=False)


def print_json(value: Any) -> None:
    click.echo(json_text(value))


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def parse_list(value: str | None, what: str) -> tuple[str, ...]:
    """'a,b,c' -> ('a', 'b', 'c'); empty items are an error."""
    if value is None:
        return ()
    items = tuple(item.strip() for item in value.split(","))
    if any(not item for item in items):
        raise click.BadParameter(f"empty item in {what} list {value!r}")
    return items


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")
