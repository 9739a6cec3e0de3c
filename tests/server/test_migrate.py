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


async def test_verdict_rename_keeps_existing_rows(database_url):
    """Migration 0006 renames the verdict side's column, table and scheduler job on a
    database that already holds them: criteria, past runs and the job's clock survive,
    and new runs continue the id sequence."""
    from banditd.server.database import connect
    from tests.conftest import migrate_to

    conn = await connect(database_url)
    try:
        await migrate_to(conn, 5)
        await conn.execute(
            """INSERT INTO experiments (id, name, arms, policies, policy_split, traffic_pct,
                                        salt, decision_criteria)
               VALUES ('e', 'E', '{a,b}', '{thompson,control}', '{0.5,0.5}', 1, 'abcdef12',
                       '{"alpha": 0.01}')""")
        await conn.execute("""INSERT INTO decision_runs (experiment_id, recommendation, result)
                              VALUES ('e', 'iterate', '{"days": 3}')""")
        await conn.execute("""INSERT INTO scheduler_jobs (job, schedule, next_run_at)
                              VALUES ('decision', 'daily at 09:00 UTC', '2030-01-01Z')""")

        applied = await migrate(conn)

        assert [m.version for m in applied] == list(range(6, SCHEMA_VERSION + 1))
        assert await conn.fetchval("SELECT verdict_criteria FROM experiments") == {"alpha": 0.01}
        run = await conn.fetchrow("SELECT id, recommendation, result FROM verdict_runs")
        assert (run["id"], run["recommendation"], run["result"]) == (1, "iterate", {"days": 3})
        assert await conn.fetchval("""INSERT INTO verdict_runs (experiment_id, recommendation,
                                      result) VALUES ('e', 'ship', '{}') RETURNING id""") == 2
        jobs = await conn.fetch("SELECT job, next_run_at FROM scheduler_jobs")
        assert [(j["job"], j["next_run_at"].year) for j in jobs] == [("verdict", 2030)]
        leftovers = await conn.fetch(
            """SELECT relname AS name FROM pg_class WHERE relname LIKE 'decision\\_runs%'
               UNION ALL SELECT conname FROM pg_constraint WHERE conname LIKE 'decision\\_%'
               UNION ALL SELECT attname FROM pg_attribute
                         WHERE attrelid = 'experiments'::regclass AND attname LIKE 'decision%'""")
        assert [r["name"] for r in leftovers] == []
    finally:
        await conn.close()
