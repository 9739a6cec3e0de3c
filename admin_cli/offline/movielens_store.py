"""MovieLens data in PostgreSQL: load a dataset (idempotently) and read it back.

Tables (``server/migrations/0002_movielens.sql``): ``movielens_datasets`` (one row per
named dataset), ``movielens_movies`` and ``movielens_ratings`` (keyed by dataset).

:func:`load_dataset` replaces a dataset in ONE transaction: it takes an advisory
lock on the name, deletes the old rows, and writes the new ones with ``COPY``
(asyncpg ``copy_records_to_table``). Any failure rolls everything back, so a
dataset is either its previous version or the complete new one, never half-loaded.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from banditd.admin_cli.offline.bandit_problem import ArmCounts, ArmKind
from banditd.admin_cli.offline.movielens import MovieLensData

DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Rows per COPY call: each call is one progress step; all run in the same transaction.
COPY_CHUNK_ROWS = 50_000

# Called as on_progress(rows_written, rows_total) while a dataset is written.
LoadProgress = Callable[[int, int], None]

_RATING_COLUMNS = ("dataset", "user_id", "movie_id", "rating", "rated_at")
_MOVIE_COLUMNS = ("dataset", "movie_id", "title", "year", "genres")


class DatasetNotFoundError(LookupError):
    """No MovieLens dataset of that name is loaded."""


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """One row of ``movielens_datasets``."""

    name: str
    source_format: str
    source_path: str
    n_ratings: int
    n_users: int
    n_movies: int
    has_movies: bool
    loaded_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source_format": self.source_format,
            "source_path": self.source_path,
            "n_ratings": self.n_ratings,
            "n_users": self.n_users,
            "n_movies": self.n_movies,
            "has_movies": self.has_movies,
            "loaded_at": self.loaded_at.isoformat() if self.loaded_at else None,
        }


def validate_dataset_name(name: str) -> str:
    """``name`` if it is a valid dataset name, else ``ValueError`` saying what is allowed."""
    if not DATASET_NAME.match(name):
        raise ValueError(
            f"dataset name {name!r} must be 1-64 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def default_dataset_name(path: Path | str) -> str:
    """The dataset name for a source path: the directory's name (``ml-100k``)."""
    path = Path(path).resolve()
    base = path.name if path.is_dir() else path.parent.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:64]
    return name or "movielens"


async def load_dataset(
    conn: asyncpg.Connection,
    name: str,
    data: MovieLensData,
    *,
    on_progress: LoadProgress | None = None,
    chunk_rows: int = COPY_CHUNK_ROWS,
) -> DatasetInfo:
    """Replace dataset ``name`` with ``data`` in one transaction and return its summary."""
    validate_dataset_name(name)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    movies = data.movies or ()
    info = DatasetInfo(
        name=name,
        source_format=data.source_format,
        source_path=str(data.source.ratings),
        n_ratings=len(data.ratings),
        n_users=data.n_users,
        n_movies=data.n_movies,
        has_movies=data.movies is not None,
    )
    total = len(movies) + info.n_ratings
    async with conn.transaction():
        # Serialise concurrent loads of one name; released at commit or rollback.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "ml:" + name)
        for table in ("movielens_ratings", "movielens_movies"):
            await conn.execute(f"DELETE FROM {table} WHERE dataset = $1", name)
        await conn.execute("DELETE FROM movielens_datasets WHERE name = $1", name)
        loaded_at = await conn.fetchval(
            """INSERT INTO movielens_datasets
                   (name, source_format, source_path, n_ratings, n_users, n_movies, has_movies)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING loaded_at""",
            info.name,
            info.source_format,
            info.source_path,
            info.n_ratings,
            info.n_users,
            info.n_movies,
            info.has_movies,
        )
        done = 0
        if movies:
            await conn.copy_records_to_table(
                "movielens_movies",
                records=[(name, m.movie_id, m.title, m.year, list(m.genres)) for m in movies],
                columns=_MOVIE_COLUMNS,
            )
            done += len(movies)
            if on_progress is not None:
                on_progress(done, total)
        for start in range(0, info.n_ratings, chunk_rows):
            stop = min(start + chunk_rows, info.n_ratings)
            await conn.copy_records_to_table(
                "movielens_ratings",
                records=_rating_records(name, data, start, stop),
                columns=_RATING_COLUMNS,
            )
            done += stop - start
            if on_progress is not None:
                on_progress(done, total)
    return DatasetInfo(**{**info.to_json(), "loaded_at": loaded_at})


def _rating_records(name: str, data: MovieLensData, start: int, stop: int) -> Iterator[tuple]:
    r = data.ratings
    users = r.user_id[start:stop].tolist()
    movies = r.movie_id[start:stop].tolist()
    ratings = r.rating[start:stop].tolist()
    if r.timestamp is None:
        rated_at: Any = repeat(None)
    else:
        utc = dt.UTC
        rated_at = (dt.datetime.fromtimestamp(t, utc) for t in r.timestamp[start:stop].tolist())
    return zip(repeat(name), users, movies, ratings, rated_at, strict=False)


def _info_from_row(row: asyncpg.Record) -> DatasetInfo:
    return DatasetInfo(**dict(row))


async def list_datasets(conn: asyncpg.Connection) -> list[DatasetInfo]:
    """Every loaded dataset, by name."""
    rows = await conn.fetch(
        """SELECT name, source_format, source_path, n_ratings, n_users, n_movies, has_movies,
                  loaded_at
             FROM movielens_datasets ORDER BY name"""
    )
    return [_info_from_row(row) for row in rows]


async def get_dataset(conn: asyncpg.Connection, name: str) -> DatasetInfo:
    """The summary of dataset ``name``; :class:`DatasetNotFoundError` when it is not loaded."""
    row = await conn.fetchrow(
        """SELECT name, source_format, source_path, n_ratings, n_users, n_movies, has_movies,
                  loaded_at
             FROM movielens_datasets WHERE name = $1""",
        name,
    )
    if row is None:
        known = [d.name for d in await list_datasets(conn)]
        hint = f"loaded: {', '.join(known)}" if known else "none is loaded"
        raise DatasetNotFoundError(
            f"no MovieLens dataset named {name!r} ({hint}); run `banditctl load-movielens PATH`"
        )
    return _info_from_row(row)


async def fetch_arm_counts(
    conn: asyncpg.Connection, name: str, kind: ArmKind, threshold: float
) -> ArmCounts:
    """Per candidate arm (movie or genre): ratings and ratings ``>= threshold``, in SQL.

    Only the aggregates leave the database, so this is cheap for ml-25m too.
    """
    info = await get_dataset(conn, name)
    if kind == "movie":
        rows = await conn.fetch(
            """SELECT r.movie_id::text AS arm_id,
                      coalesce(m.title || coalesce(' (' || m.year || ')', ''),
                               'movie ' || r.movie_id) AS label,
                      r.n, r.positive
                 FROM (SELECT movie_id, count(*) AS n,
                              count(*) FILTER (WHERE rating >= $2) AS positive
                         FROM movielens_ratings WHERE dataset = $1 GROUP BY movie_id) r
                 LEFT JOIN movielens_movies m ON m.dataset = $1 AND m.movie_id = r.movie_id""",
            name,
            threshold,
        )
    else:
        if not info.has_movies:
            raise ValueError(
                f"dataset {name!r} was loaded without a movie file, so it has no genres; "
                "use movie arms or reload it with its movie file"
            )
        rows = await conn.fetch(
            """SELECT g AS arm_id, g AS label, count(*) AS n,
                      count(*) FILTER (WHERE r.rating >= $2) AS positive
                 FROM movielens_ratings r
                 JOIN movielens_movies m ON m.dataset = r.dataset AND m.movie_id = r.movie_id
                 CROSS JOIN LATERAL unnest(m.genres) AS g
                WHERE r.dataset = $1
                GROUP BY g""",
            name,
            threshold,
        )
    return ArmCounts(
        kind=kind,
        ids=tuple(row["arm_id"] for row in rows),
        labels=tuple(row["label"] for row in rows),
        n_ratings=np.array([row["n"] for row in rows], dtype=np.int64),
        n_positive=np.array([row["positive"] for row in rows], dtype=np.int64),
        threshold=threshold,
    )
