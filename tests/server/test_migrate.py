"""Migrations are versioned and idempotent; the server refuses unknown schemas."""

import pytest
from banditd.server.migrate import SCHEMA_VERSION, SchemaMismatchError, check_schema, migrate


async def test_migrate_applies_everything_once_then_nothing(db_conn):
    assert await check_schema(db_conn) == SCHEMA_VERSION
    assert await migrate(db_conn) == []
    versions = await db_conn.fetch("SELECT version FROM banditd_schema ORDER BY version")
    assert [r["version"] for r in versions] == list(range(1, SCHEMA_VERSION + 1))
    keys = await db_conn.fetch("SELECT key_id, octet_length(secret) AS n FROM signing_keys")
    assert [(r["key_id"], r["n"]) for r in keys] == [(1, 32)]


async def test_unmigrated_database_is_refused_with_the_fix(database_url):
    from banditd.server.database import connect

    conn = await connect(database_url)
    try:
        with pytest.raises(SchemaMismatchError, match="run `banditctl migrate`"):
            await check_schema(conn)
    finally:
        await conn.close()


async def test_newer_schema_is_refused(db_conn):
    await db_conn.execute(
        "INSERT INTO banditd_schema (version, name) VALUES ($1, 'from_the_future')",
        SCHEMA_VERSION + 1,
    )
    with pytest.raises(SchemaMismatchError, match="newer than this banditd knows"):
        await check_schema(db_conn)


async def test_banditd_square_never_underflows(db_conn):
    """Migration 0005: ``banditd_square`` is ``x * x`` bit for bit wherever PostgreSQL
    can multiply, and 0 where ``x * x`` raises its underflow error (|x| < 1.5e-162)."""
    import asyncpg

    with pytest.raises(asyncpg.DataError, match="underflow"):  # why the function exists
        await db_conn.fetchval("SELECT $1::float8 * $1::float8", 1e-170)
    for x in (0.0, 1.0, -3.0, 0.1, 1 / 3, 1e-100, 2e-160, 1e150):
        assert await db_conn.fetchval("SELECT banditd_square($1)", x) == x * x
    for x in (1e-170, -1e-161, 5e-324):
        assert await db_conn.fetchval("SELECT banditd_square($1)", x) == 0.0
    assert await db_conn.fetchval("SELECT banditd_square(NULL)") is None
    total = await db_conn.fetchval(
        "SELECT sum(banditd_square(x)) FROM unnest($1::float8[]) AS x", [1e-170, 3.0, 0.5])
    assert total == 9.25
