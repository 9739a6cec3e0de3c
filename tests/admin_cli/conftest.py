"""CLI fixtures: a migrated database for commands run through click's CliRunner."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from banditd.admin_cli.main import main
from tests.conftest import create_database, drop_database


@pytest.fixture
def cli_db():
    """URL of a fresh migrated database, created without an event loop of the test's own."""
    url = asyncio.run(create_database())
    result = CliRunner().invoke(main, ["migrate", "--database-url", url])
    assert result.exit_code == 0, result.output
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture
def banditctl(cli_db):
    """``banditctl(*args)`` -> click Result, against ``cli_db``."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [*args, "--database-url", cli_db])

    return invoke
