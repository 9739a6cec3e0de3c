"""Small MovieLens-shaped fixtures, generated here in each real file format.

Never a copy of MovieLens data: the movies and ratings are made up, and the
writers reproduce only the layouts (GroupLens ml-100k ``u.data``/``u.item``,
``ratings.csv``/``movies.csv``, RecBole ``.inter``/``.item``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from banditd.admin_cli.offline.movielens import ML100K_GENRES


@dataclass(frozen=True)
class FixtureMovie:
    movie_id: int
    title: str  # without year
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True)
class FixtureData:
    movies: tuple[FixtureMovie, ...]
    ratings: tuple[tuple[int, int, float, int], ...]  # user, movie, rating, timestamp


def make_fixture(
    n_users: int = 25, n_movies: int = 10, density: float = 0.6, seed: int = 7,
    half_stars: bool = False,
) -> FixtureData:
    """Made-up ratings: movie ``m`` is rated by about ``density`` of the users; ratings
    1..5 (or 0.5..5 in half stars); the first movie's title has a comma and a
    non-ASCII letter so quoting and encodings are exercised."""
    rng = np.random.default_rng(seed)
    genre_pool = ML100K_GENRES[1:]
    movies = []
    for m in range(1, n_movies + 1):
        title = "Café, The" if m == 1 else f"Movie {m}"
        genres = tuple(sorted(set(rng.choice(genre_pool, size=1 + m % 3).tolist()),
                              key=genre_pool.index))
        movies.append(FixtureMovie(m, title, 1990 + m, genres))
    ratings = []
    for u in range(1, n_users + 1):
        for m in range(1, n_movies + 1):
            if rng.random() < density:
                stars = rng.integers(1, 11) / 2 if half_stars else float(rng.integers(1, 6))
                ratings.append((u, m, float(stars), 880_000_000 + int(rng.integers(0, 10**7))))
    return FixtureData(tuple(movies), tuple(ratings))


def write_ml100k(directory: Path, data: FixtureData) -> Path:
    """``u.data`` (tab-separated, no header) and ``u.item`` (pipe-separated, latin-1)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "u.data").open("w", encoding="latin-1", newline="\n") as f:
        for u, m, r, t in data.ratings:
            f.write(f"{u}\t{m}\t{int(r)}\t{t}\n")
    with (directory / "u.item").open("w", encoding="latin-1", newline="\n") as f:
        for movie in data.movies:
            flags = ["1" if g in movie.genres else "0" for g in ML100K_GENRES]
            title = f"{movie.title} ({movie.year})"
            date = f"01-Jan-{movie.year}"
            url = f"http://us.imdb.com/M/title-exact?{movie.title.replace(' ', '%20')}"
            f.write("|".join([str(movie.movie_id), title, date, "", url, *flags]) + "\n")
    return directory


def write_csv(directory: Path, data: FixtureData) -> Path:
    """``ratings.csv`` and ``movies.csv`` with headers, titles quoted where needed."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "ratings.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for u, m, r, t in data.ratings:
            writer.writerow([u, m, f"{r:.1f}", t])
    with (directory / "movies.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        for movie in data.movies:
            genres = "|".join(movie.genres) or "(no genres listed)"
            writer.writerow([movie.movie_id, f"{movie.title} ({movie.year})", genres])
    return directory


def write_recbole(directory: Path, data: FixtureData, name: str = "ml-fixture",
                  shuffle_columns: bool = False) -> Path:
    """``<name>.inter`` / ``<name>.item`` with typed headers; optionally columns reordered
    (readers must find columns by name)."""
    directory.mkdir(parents=True, exist_ok=True)
    inter_cols = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    order = [3, 1, 0, 2] if shuffle_columns else [0, 1, 2, 3]
    with (directory / f"{name}.inter").open("w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(inter_cols[i] for i in order) + "\n")
        for row in data.ratings:
            values = [str(row[0]), str(row[1]), f"{row[2]:g}", str(row[3])]
            f.write("\t".join(values[i] for i in order) + "\n")
    item_cols = ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"]
    with (directory / f"{name}.item").open("w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(item_cols) + "\n")
        for movie in data.movies:
            year = "" if movie.year is None else str(movie.year)
            f.write(f"{movie.movie_id}\t{movie.title}\t{year}\t{' '.join(movie.genres)}\n")
    return directory


WRITERS = {"grouplens-100k": write_ml100k, "movielens-csv": write_csv, "recbole": write_recbole}
