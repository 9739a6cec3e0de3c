"""Versioned, idempotent schema migrations.

Migrations are the numbered SQL files in ``server/migrations`` (``0001_core.sql``,
...). ``migrate`` applies the ones a database lacks, each in its own transaction
together with its row in ``banditd_schema``, under an advisory lock so two
concurrent ``banditctl migrate`` runs cannot both apply one. Running it again is a
no-op. The server refuses to start unless the database is at exactly
``SCHEMA_VERSION``. Each run also creates the decision log's partitions for the week
ahead (``banditd.server.log_partitions``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from banditd.server.log_partitions import ensure_partitions

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Arbitrary constant key for pg_advisory_xact_lock: "banditd migrate".
_MIGRATION_LOCK = 0x62616E6D


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def available_migrations() -> list[Migration]:
    """Every migration shipped with this build, in version order."""
    migrations = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migration versions must be 1..N without gaps, found {versions}")
    return migrations


SCHEMA_VERSION = len(available_migrations())


class SchemaMismatchError(RuntimeError):
    """The database schema is not the one this build knows."""


async def current_version(conn: asyncpg.Connection) -> int:
    """The schema version of the database (0 when banditd never migrated it)."""
    exists = await conn.fetchval("SELECT to_regclass('banditd_schema') IS NOT NULL")
    if not exists:
        return 0
    return await conn.fetchval("SELECT coalesce(max(version), 0) FROM banditd_schema")


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply missing migrations; return the ones applied (empty when up to date)."""
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS banditd_schema (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    applied = []
    for migration in available_migrations():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            done = await conn.fetchval(
                "SELECT 1 FROM banditd_schema WHERE version = $1", migration.version
            )
            if done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO banditd_schema (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration)
    await ensure_signing_key(conn)
    await ensure_partitions(conn)
    return applied


async def ensure_signing_key(conn: asyncpg.Connection) -> None:
    """Create the decision-id signing key (key 1) once, from the OS's entropy."""
    await conn.execute(
        "INSERT INTO signing_keys (key_id, secret) VALUES (1, $1) ON CONFLICT (key_id) DO NOTHING",
        os.urandom(32),
    )


async def check_schema(conn: asyncpg.Connection) -> int:
    """Raise unless the database is at exactly ``SCHEMA_VERSION``; return the version."""
    version = await current_version(conn)
    if version < SCHEMA_VERSION:
        raise SchemaMismatchError(
            f"database schema is at version {version}, this banditd needs {SCHEMA_VERSION}: "
            "run `banditctl migrate` (same --database-url / --data-dir)"
        )
    if version > SCHEMA_VERSION:
        raise SchemaMismatchError(
            f"database schema is at version {version}, newer than this banditd knows "
            f"({SCHEMA_VERSION}): upgrade banditd before serving from this database"
        )
    return version
