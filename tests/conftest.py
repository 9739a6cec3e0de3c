"""Shared fixtures: real PostgreSQL databases created and dropped per test.

The tests talk to a real PostgreSQL server: ``BANDITD_TEST_PG_URL`` (default the
local one, ``postgresql://postgres@127.0.0.1:5432/postgres``). Each database
fixture creates a fresh ``banditd_test_<random>`` database and drops it
afterwards, so tests never see each other's data.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ADMIN_URL = os.environ.get("BANDITD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database() -> str:
    name = f"banditd_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(ADMIN_URL, name)


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url():
    """URL of a fresh, empty database (dropped after the test)."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def migrated_db_url(database_url):
    """URL of a fresh database with every banditd migration applied."""
    from server.database import connect
    from server.migrate import migrate

    conn = await connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return database_url


@pytest.fixture
async def db_conn(migrated_db_url):
    """A connection (with banditd's codecs) to a fresh migrated database."""
    from server.database import connect

    conn = await connect(migrated_db_url)
    try:
        yield conn
    finally:
        await conn.close()
