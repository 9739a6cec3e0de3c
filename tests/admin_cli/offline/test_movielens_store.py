"""Loading MovieLens into PostgreSQL (admin_cli/offline/movielens_store.py), real database."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from banditd.admin_cli.offline.bandit_problem import arm_counts_from_data
from banditd.admin_cli.offline.movielens import MovieLensData, read_movielens
from banditd.admin_cli.offline.movielens_store import (
    DatasetNotFoundError,
    default_dataset_name,
    fetch_arm_counts,
    get_dataset,
    list_datasets,
    load_dataset,
    validate_dataset_name,
)
from tests.admin_cli.offline.movielens_fixtures import WRITERS, make_fixture, write_csv


@pytest.fixture
async def conn(migrated_db_url):
    connection = await asyncpg.connect(migrated_db_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _table_counts(conn: asyncpg.Connection, name: str) -> tuple[int, int, int]:
    return (
        await conn.fetchval("SELECT count(*) FROM movielens_datasets WHERE name = $1", name),
        await conn.fetchval("SELECT count(*) FROM movielens_movies WHERE dataset = $1", name),
        await conn.fetchval("SELECT count(*) FROM movielens_ratings WHERE dataset = $1", name),
    )


@pytest.mark.parametrize("fmt", tuple(WRITERS))
async def test_load_round_trips_every_format(conn, tmp_path: Path, fmt: str):
    fixture = make_fixture()
    data = read_movielens(WRITERS[fmt](tmp_path, fixture))
    info = await load_dataset(conn, "fixture", data, chunk_rows=37)  # several COPY chunks
    assert (info.name, info.source_format, info.n_ratings) == ("fixture", fmt, len(fixture.ratings))
    assert info.loaded_at is not None
    rows = await conn.fetch(
        """SELECT user_id, movie_id, rating, extract(epoch FROM rated_at)::bigint AS ts
             FROM movielens_ratings WHERE dataset = 'fixture'"""
    )
    assert sorted((r["user_id"], r["movie_id"], r["rating"], r["ts"]) for r in rows) == sorted(
        fixture.ratings
    )
    movies = await conn.fetch(
        "SELECT movie_id, title, year, genres FROM movielens_movies WHERE dataset = 'fixture' "
        "ORDER BY movie_id"
    )
    assert [(m["movie_id"], m["title"], m["year"], tuple(m["genres"])) for m in movies] == [
        (m.movie_id, m.title, m.year, m.genres) for m in fixture.movies
    ]


async def test_reloading_a_name_replaces_it_and_leaves_others(conn, tmp_path: Path):
    small = read_movielens(write_csv(tmp_path / "a", make_fixture(n_users=5, seed=1)))
    large = read_movielens(write_csv(tmp_path / "b", make_fixture(n_users=20, seed=2)))
    await load_dataset(conn, "other", small)
    await load_dataset(conn, "ml", small)
    await load_dataset(conn, "ml", large)
    again = await load_dataset(conn, "ml", large)  # same input twice: same state
    assert await _table_counts(conn, "ml") == (1, len(large.movies or ()), len(large.ratings))
    assert await _table_counts(conn, "other") == (1, len(small.movies or ()), len(small.ratings))
    assert again.n_ratings == len(large.ratings)
    assert [d.name for d in await list_datasets(conn)] == ["ml", "other"]


def _with_duplicate_rating(data: MovieLensData) -> MovieLensData:
    """Bypass the reader's checks: the last rating repeats the first, which violates the
    primary key in the middle of the ratings COPY (after the dataset row and the movies)."""
    r = data.ratings

    def dup(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, a[:1]])

    ratings = dataclasses.replace(r, user_id=dup(r.user_id), movie_id=dup(r.movie_id),
                                  rating=dup(r.rating), timestamp=dup(r.timestamp))
    return dataclasses.replace(data, ratings=ratings)


async def test_a_failing_load_leaves_nothing_behind(conn, tmp_path: Path):
    data = read_movielens(write_csv(tmp_path, make_fixture()))
    with pytest.raises(asyncpg.UniqueViolationError):
        await load_dataset(conn, "broken", _with_duplicate_rating(data), chunk_rows=10)
    assert await _table_counts(conn, "broken") == (0, 0, 0)


async def test_a_failing_reload_keeps_the_previous_version(conn, tmp_path: Path):
    old = read_movielens(write_csv(tmp_path / "old", make_fixture(n_users=6, seed=3)))
    new = read_movielens(write_csv(tmp_path / "new", make_fixture(n_users=30, seed=4)))
    await load_dataset(conn, "ml", old)
    progress: list[tuple[int, int]] = []
    with pytest.raises(asyncpg.UniqueViolationError):
        await load_dataset(conn, "ml", _with_duplicate_rating(new), chunk_rows=10,
                           on_progress=lambda done, total: progress.append((done, total)))
    assert progress, "the failure came after some chunks were written"
    assert await _table_counts(conn, "ml") == (1, len(old.movies or ()), len(old.ratings))
    assert (await get_dataset(conn, "ml")).n_ratings == len(old.ratings)


async def test_progress_counts_every_row(conn, tmp_path: Path):
    data = read_movielens(write_csv(tmp_path, make_fixture()))
    seen: list[tuple[int, int]] = []
    await load_dataset(conn, "ml", data, chunk_rows=50,
                       on_progress=lambda done, total: seen.append((done, total)))
    total = len(data.ratings) + len(data.movies or ())
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("kind", ["movie", "genre"])
async def test_sql_arm_counts_match_the_in_memory_ones(conn, tmp_path: Path, kind):
    data = read_movielens(write_csv(tmp_path, make_fixture(half_stars=True)))
    await load_dataset(conn, "ml", data)
    from_sql = await fetch_arm_counts(conn, "ml", kind, 3.5)
    in_memory = arm_counts_from_data(data, kind, 3.5)

    def as_dict(c):
        rows = zip(c.ids, c.labels, c.n_ratings.tolist(), c.n_positive.tolist(), strict=True)
        return {i: (label, n, k) for i, label, n, k in rows}

    assert as_dict(from_sql) == as_dict(in_memory)


async def test_unknown_dataset_names_what_is_loaded(conn, tmp_path: Path):
    await load_dataset(conn, "ml-a", read_movielens(write_csv(tmp_path, make_fixture())))
    with pytest.raises(DatasetNotFoundError, match=r"'nope' \(loaded: ml-a\)"):
        await get_dataset(conn, "nope")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "naïve", "a;drop"])
def test_bad_dataset_names_are_rejected(name):
    with pytest.raises(ValueError, match="dataset name"):
        validate_dataset_name(name)


def test_default_name_is_the_directory(tmp_path: Path):
    directory = tmp_path / "ml-latest-small"
    write_csv(directory, make_fixture(n_users=2))
    assert default_dataset_name(directory) == "ml-latest-small"
    assert default_dataset_name(directory / "ratings.csv") == "ml-latest-small"
