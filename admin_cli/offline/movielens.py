"""Readers for the MovieLens file formats.

Three editions of the same data are read, each by its own documented layout
(F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context",
ACM TiiS 5(4), 2015):

``grouplens-100k``
    GroupLens ml-100k: ``u.data`` (tab-separated ``user id, item id, rating,
    timestamp``, no header) and ``u.item`` (``|``-separated, latin-1: ``movie id |
    title | release date | video release date | IMDb URL`` then 19 genre flags in
    the order of :data:`ML100K_GENRES`).
``movielens-csv``
    ml-latest, ml-latest-small, ml-20m, ml-25m, ml-32m: ``ratings.csv`` (header
    ``userId,movieId,rating,timestamp``) and ``movies.csv`` (header
    ``movieId,title,genres``; titles quoted when they contain commas; genres
    ``|``-separated, ``(no genres listed)`` for none).
``recbole``
    RecBole atomic files: ``<name>.inter`` and ``<name>.item``, tab-separated with a
    typed header (``user_id:token  item_id:token  rating:float  timestamp:float``).
    Columns are found by header name, never by position.

:func:`read_movielens` takes a directory or a ratings file and detects the edition
(:func:`detect_format`). The movie file is optional: without it only the ratings
load. Malformed input raises :class:`MovieLensFormatError` naming the file, the
line and what was expected. Titles lose their trailing ``(year)``, which becomes
:attr:`Movie.year`, so all three editions yield the same movie rows.
"""

from __future__ import annotations

import array
import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

SourceFormat = Literal["grouplens-100k", "movielens-csv", "recbole"]
SOURCE_FORMATS: tuple[SourceFormat, ...] = ("grouplens-100k", "movielens-csv", "recbole")

# The 19 genre flags of ml-100k's u.item, in file order (ml-100k README, "u.genre").
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

# MovieLens ratings are 1..5 stars (ml-100k) or 0.5..5 in half stars (ml-latest, ml-25m).
RATING_MIN = 0.5
RATING_MAX = 5.0

# Called as on_progress(file, bytes_read, bytes_total) while a file is read.
ProgressCallback = Callable[[Path, int, int], None]

_PROGRESS_EVERY = 1 << 16  # lines between progress callbacks
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)\s*$")
_NO_GENRES = "(no genres listed)"


class MovieLensFormatError(ValueError):
    """A MovieLens file is not in the expected format.

    ``path`` is the offending file, ``line`` its 1-based line number (``None`` for
    problems with the file as a whole), ``expected`` what should have been there.
    """

    def __init__(self, path: Path | str, line: int | None, expected: str, got: str | None = None):
        self.path = Path(path)
        self.line = line
        self.expected = expected
        self.got = got
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        message = f"{where}: expected {expected}"
        if got is not None:
            message += f", got {_shorten(got)!r}"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Movie:
    """One movie: its id in the source, title without the year, year and genres."""

    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True)
class Ratings:
    """Rating events as parallel arrays of shape ``(n,)``.

    ``timestamp`` holds Unix seconds, or is ``None`` when the source has no
    timestamp column (RecBole files may omit it).
    """

    user_id: np.ndarray  # int64
    movie_id: np.ndarray  # int64
    rating: np.ndarray  # float64, in [RATING_MIN, RATING_MAX]
    timestamp: np.ndarray | None  # int64 Unix seconds

    def __len__(self) -> int:
        return int(self.user_id.shape[0])


@dataclass(frozen=True)
class SourceFiles:
    """The files one MovieLens edition is read from."""

    source_format: SourceFormat
    ratings: Path
    movies: Path | None


@dataclass(frozen=True)
class MovieLensData:
    """Everything read from one MovieLens source."""

    source: SourceFiles
    ratings: Ratings
    movies: tuple[Movie, ...] | None  # None when the source has no movie file

    @property
    def source_format(self) -> SourceFormat:
        return self.source.source_format

    @property
    def n_users(self) -> int:
        return int(np.unique(self.ratings.user_id).shape[0])

    @property
    def n_movies(self) -> int:
        """Movies in the movie file, or distinct rated movies when there is none."""
        if self.movies is not None:
            return len(self.movies)
        return int(np.unique(self.ratings.movie_id).shape[0])


# --------------------------------------------------------------------------- detection


def detect_format(path: Path | str) -> SourceFiles:
    """Which edition ``path`` (a directory or a ratings file) holds, and its files."""
    path = Path(path)
    if not path.exists():
        raise MovieLensFormatError(path, None, "an existing MovieLens directory or ratings file")
    if path.is_dir():
        if (path / "u.data").is_file():
            return SourceFiles("grouplens-100k", path / "u.data", _optional(path / "u.item"))
        if (path / "ratings.csv").is_file():
            movies = _optional(path / "movies.csv")
            return SourceFiles("movielens-csv", path / "ratings.csv", movies)
        inters = sorted(path.glob("*.inter"))
        if len(inters) == 1:
            return SourceFiles("recbole", inters[0], _optional(inters[0].with_suffix(".item")))
        if len(inters) > 1:
            names = ", ".join(p.name for p in inters)
            raise MovieLensFormatError(
                path, None, f"one RecBole .inter file, found several ({names}); pass one of them"
            )
        raise MovieLensFormatError(
            path,
            None,
            "a MovieLens directory holding u.data (GroupLens ml-100k), ratings.csv "
            "(ml-latest, ml-25m) or one RecBole *.inter file",
        )
    name = path.name
    if name == "u.data":
        return SourceFiles("grouplens-100k", path, _optional(path.with_name("u.item")))
    if name in ("u.item", "movies.csv") or path.suffix == ".item":
        raise MovieLensFormatError(
            path, None, "the ratings file (u.data, ratings.csv or *.inter) or its directory, "
            "not the movie file"
        )
    if path.suffix == ".csv":
        return SourceFiles("movielens-csv", path, _optional(path.with_name("movies.csv")))
    if path.suffix == ".inter":
        return SourceFiles("recbole", path, _optional(path.with_suffix(".item")))
    raise MovieLensFormatError(
        path, None, "a MovieLens ratings file: u.data, ratings.csv or a RecBole *.inter file"
    )


def read_movielens(
    path: Path | str, on_progress: ProgressCallback | None = None
) -> MovieLensData:
    """Read the MovieLens edition at ``path`` (directory or ratings file).

    Raises :class:`MovieLensFormatError` on anything malformed: a bad field count,
    a non-numeric id, a rating outside [0.5, 5], a duplicate (user, movie) rating,
    a rating of a movie the movie file does not list, a missing header column.
    """
    source = detect_format(path)
    movies: tuple[Movie, ...] | None = None
    if source.movies is not None:
        movie_reader = _MOVIE_READERS[source.source_format]
        movies = movie_reader(source.movies, on_progress)
    ratings, first_line = _RATING_READERS[source.source_format](source.ratings, on_progress)
    _validate_ratings(source.ratings, first_line, ratings)
    if movies is not None and source.movies is not None:
        _check_movies_known(source.ratings, first_line, ratings, movies, source.movies)
    return MovieLensData(source=source, ratings=ratings, movies=movies)


# --------------------------------------------------------------------------- line access


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lines(
    path: Path, encoding: str, on_progress: ProgressCallback | None
) -> Iterator[tuple[int, str]]:
    """``(line number, text without the newline)``; a blank line is allowed only at the end."""
    total = path.stat().st_size
    done = 0
    blank_at: int | None = None
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            done += len(raw)
            if on_progress is not None and lineno % _PROGRESS_EVERY == 0:
                on_progress(path, done, total)
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                got = f"undecodable byte at column {exc.start + 1}"
                raise MovieLensFormatError(path, lineno, f"text in {encoding}", got) from None
            text = text.rstrip("\r\n")
            if not text.strip():
                blank_at = blank_at or lineno
                continue
            if blank_at is not None:
                raise MovieLensFormatError(path, blank_at, "a data line", "an empty line")
            yield lineno, text
    if on_progress is not None:
        on_progress(path, total, total)


def _parse_int(path: Path, lineno: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise MovieLensFormatError(path, lineno, f"an integer {what}", text) from None


def _parse_float(path: Path, lineno: int, text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MovieLensFormatError(path, lineno, f"a number for {what}", text) from None


def _split_title(title: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` → ``("Toy Story", 1995)``; no trailing year → ``(title, None)``."""
    match = _TITLE_YEAR.match(title)
    if match is None or not match.group("title"):
        return title.strip(), None
    return match.group("title"), int(match.group("year"))


class _RatingColumns:
    """Growing typed columns for rating events (compact while the file is read)."""

    __slots__ = ("movies", "ratings", "timestamps", "users")

    def __init__(self) -> None:
        self.users = array.array("q")
        self.movies = array.array("q")
        self.ratings = array.array("d")
        self.timestamps = array.array("q")

    def finish(self, has_timestamp: bool) -> Ratings:
        return Ratings(
            user_id=np.array(self.users, dtype=np.int64),
            movie_id=np.array(self.movies, dtype=np.int64),
            rating=np.array(self.ratings, dtype=np.float64),
            timestamp=np.array(self.timestamps, dtype=np.int64) if has_timestamp else None,
        )


# -------------------------------------------------------------------------- GroupLens ml-100k


def _read_u_data(path: Path, on_progress: ProgressCallback | None) -> tuple[Ratings, int]:
    cols = _RatingColumns()
    expected = "4 tab-separated fields (user id, item id, rating, timestamp)"
    first_line = 1
    for lineno, line in _lines(path, "latin-1", on_progress):
        fields = line.split("\t")
        if len(fields) != 4:
            raise MovieLensFormatError(path, lineno, f"{expected}, found {len(fields)}", line)
        try:
            cols.users.append(int(fields[0]))
            cols.movies.append(int(fields[1]))
            cols.ratings.append(float(fields[2]))
            cols.timestamps.append(int(fields[3]))
        except (ValueError, OverflowError):
            _parse_int(path, lineno, fields[0], "user id")
            _parse_int(path, lineno, fields[1], "item id")
            _parse_float(path, lineno, fields[2], "the rating")
            _parse_int(path, lineno, fields[3], "timestamp (Unix seconds)")
            raise MovieLensFormatError(path, lineno, expected, line) from None
    return cols.finish(has_timestamp=True), first_line


def _read_u_item(path: Path, on_progress: ProgressCallback | None) -> tuple[Movie, ...]:
    n_fields = 5 + len(ML100K_GENRES)
    movies: list[Movie] = []
    seen: dict[int, int] = {}
    for lineno, line in _lines(path, "latin-1", on_progress):
        fields = line.split("|")
        if len(fields) != n_fields:
            raise MovieLensFormatError(
                path,
                lineno,
                f"{n_fields} '|'-separated fields (movie id, title, release date, video release "
                f"date, IMDb URL and {len(ML100K_GENRES)} genre flags), found {len(fields)}",
                line,
            )
        movie_id = _parse_int(path, lineno, fields[0], "movie id")
        _check_new_movie(path, lineno, movie_id, seen)
        title, year = _split_title(fields[1])
        release = fields[2].strip()
        if year is None and release:
            # Release dates look like 01-Jan-1995.
            year = _parse_int(path, lineno, release[-4:], "release year (dd-Mon-yyyy)")
        genres = []
        for genre, flag in zip(ML100K_GENRES, fields[5:], strict=True):
            if flag == "1":
                genres.append(genre)
            elif flag != "0":
                raise MovieLensFormatError(path, lineno, f"genre flag 0 or 1 for {genre!r}", flag)
        movies.append(Movie(movie_id, title, year, tuple(genres)))
    return tuple(movies)


# ------------------------------------------------------------------ ratings.csv / movies.csv


def _csv_rows(
    path: Path, on_progress: ProgressCallback | None
) -> tuple[dict[str, int], int, Iterator[tuple[int, list[str]]]]:
    """Header columns by name, the header's line, and ``(line, fields)`` for each data row."""
    lines = _lines(path, "utf-8", on_progress)
    # Line numbers read for the current row. Lines reach csv without their newline and
    # strict mode rejects a quote left open at the end of one, so a row is one line.
    consumed: list[int] = []

    def texts() -> Iterable[str]:
        for lineno, text in lines:
            consumed.append(lineno)
            yield text

    reader = csv.reader(texts(), strict=True)

    def next_row(what: str) -> tuple[int, list[str]] | None:
        consumed.clear()
        try:
            fields = next(reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise MovieLensFormatError(path, consumed[0] if consumed else None, what,
                                       str(exc)) from None
        return consumed[0], fields

    first = next_row("a CSV header line")
    if first is None:
        raise MovieLensFormatError(path, 1, "a CSV header line", "an empty file")
    header_line, header = first
    columns = {name.strip().lstrip("\ufeff"): i for i, name in enumerate(header)}

    def rows() -> Iterator[tuple[int, list[str]]]:
        while (row := next_row("a well-formed CSV row")) is not None:
            lineno, fields = row
            if len(fields) != len(header):
                raise MovieLensFormatError(
                    path,
                    lineno,
                    f"{len(header)} comma-separated fields ({','.join(header)}), "
                    f"found {len(fields)}",
                    ",".join(fields),
                )
            yield lineno, fields

    return columns, header_line, rows()


def _require_columns(
    path: Path, line: int, columns: dict[str, int], required: tuple[str, ...]
) -> list[int]:
    missing = [name for name in required if name not in columns]
    if missing:
        raise MovieLensFormatError(
            path,
            line,
            f"a header with column(s) {', '.join(missing)}",
            ",".join(columns),
        )
    return [columns[name] for name in required]


def _read_ratings_csv(path: Path, on_progress: ProgressCallback | None) -> tuple[Ratings, int]:
    columns, header_line, rows = _csv_rows(path, on_progress)
    iu, im, ir, it = _require_columns(
        path, header_line, columns, ("userId", "movieId", "rating", "timestamp")
    )
    cols = _RatingColumns()
    for lineno, fields in rows:
        try:
            cols.users.append(int(fields[iu]))
            cols.movies.append(int(fields[im]))
            cols.ratings.append(float(fields[ir]))
            cols.timestamps.append(int(fields[it]))
        except (ValueError, OverflowError):
            _parse_int(path, lineno, fields[iu], "userId")
            _parse_int(path, lineno, fields[im], "movieId")
            _parse_float(path, lineno, fields[ir], "rating")
            _parse_int(path, lineno, fields[it], "timestamp (Unix seconds)")
            raise MovieLensFormatError(path, lineno, "userId,movieId,rating,timestamp") from None
    return cols.finish(has_timestamp=True), header_line + 1


def _read_movies_csv(path: Path, on_progress: ProgressCallback | None) -> tuple[Movie, ...]:
    columns, header_line, rows = _csv_rows(path, on_progress)
    im, it, ig = _require_columns(path, header_line, columns, ("movieId", "title", "genres"))
    movies: list[Movie] = []
    seen: dict[int, int] = {}
    for lineno, fields in rows:
        movie_id = _parse_int(path, lineno, fields[im], "movieId")
        _check_new_movie(path, lineno, movie_id, seen)
        title, year = _split_title(fields[it])
        raw_genres = fields[ig].strip()
        genres = () if raw_genres in ("", _NO_GENRES) else tuple(raw_genres.split("|"))
        movies.append(Movie(movie_id, title, year, genres))
    return tuple(movies)


# ----------------------------------------------------------------------- RecBole atomic files


def _recbole_header(
    path: Path, lines: Iterator[tuple[int, str]]
) -> tuple[int, dict[str, int], int]:
    """``(header line, {field name: column}, number of columns)`` of an atomic file."""
    try:
        lineno, header = next(lines)
    except StopIteration:
        raise MovieLensFormatError(
            path, 1, "a typed header line (name:type fields, tab-separated)", "an empty file"
        ) from None
    columns: dict[str, int] = {}
    fields = header.split("\t")
    for i, field in enumerate(fields):
        name, sep, ftype = field.partition(":")
        if not sep or not name or not ftype:
            raise MovieLensFormatError(
                path, lineno, "a typed header of tab-separated name:type fields", field
            )
        columns[name.strip()] = i
    return lineno, columns, len(fields)


def _recbole_fields(
    path: Path, lineno: int, line: str, n_columns: int, header: dict[str, int]
) -> list[str]:
    fields = line.split("\t")
    if len(fields) != n_columns:
        raise MovieLensFormatError(
            path,
            lineno,
            f"{n_columns} tab-separated fields ({', '.join(header)}), found {len(fields)}",
            line,
        )
    return fields


def _read_recbole_inter(path: Path, on_progress: ProgressCallback | None) -> tuple[Ratings, int]:
    lines = _lines(path, "utf-8", on_progress)
    header_line, columns, n_columns = _recbole_header(path, lines)
    iu, im, ir = _require_columns(path, header_line, columns, ("user_id", "item_id", "rating"))
    it = columns.get("timestamp")
    cols = _RatingColumns()
    for lineno, line in lines:
        fields = _recbole_fields(path, lineno, line, n_columns, columns)
        try:
            cols.users.append(int(fields[iu]))
            cols.movies.append(int(fields[im]))
            cols.ratings.append(float(fields[ir]))
            if it is not None:
                ts = float(fields[it])
                if not ts == ts or ts in (float("inf"), float("-inf")):
                    raise ValueError(fields[it])
                cols.timestamps.append(int(ts))
        except (ValueError, OverflowError):
            _parse_int(path, lineno, fields[iu], "user_id")
            _parse_int(path, lineno, fields[im], "item_id")
            _parse_float(path, lineno, fields[ir], "rating")
            raise MovieLensFormatError(
                path, lineno, "a finite number for timestamp (Unix seconds)", fields[it or 0]
            ) from None
    return cols.finish(has_timestamp=it is not None), header_line + 1


def _read_recbole_item(path: Path, on_progress: ProgressCallback | None) -> tuple[Movie, ...]:
    lines = _lines(path, "utf-8", on_progress)
    header_line, columns, n_columns = _recbole_header(path, lines)
    (im,) = _require_columns(path, header_line, columns, ("item_id",))
    i_title = columns.get("movie_title")
    i_year = columns.get("release_year")
    i_genres = columns.get("class", columns.get("genre"))
    movies: list[Movie] = []
    seen: dict[int, int] = {}
    for lineno, line in lines:
        fields = _recbole_fields(path, lineno, line, n_columns, columns)
        movie_id = _parse_int(path, lineno, fields[im], "item_id")
        _check_new_movie(path, lineno, movie_id, seen)
        title, year = _split_title(fields[i_title]) if i_title is not None else ("", None)
        if i_year is not None:
            # release_year is a RecBole *token*: RecBole's ml-100k has 'unkonwn' and 'V'
            # there, so anything but a 4-digit year means "not known".
            raw_year = fields[i_year].strip()
            if raw_year.isascii() and raw_year.isdigit() and len(raw_year) == 4:
                year = int(raw_year)
        genres = tuple(fields[i_genres].split()) if i_genres is not None else ()
        movies.append(Movie(movie_id, title or f"movie {movie_id}", year, genres))
    return tuple(movies)


# --------------------------------------------------------------------------- validation


def _check_new_movie(path: Path, lineno: int, movie_id: int, seen: dict[int, int]) -> None:
    first = seen.setdefault(movie_id, lineno)
    if first != lineno:
        raise MovieLensFormatError(
            path, lineno, f"a new movie id (movie {movie_id} is already on line {first})"
        )


def _validate_ratings(path: Path, first_line: int, ratings: Ratings) -> None:
    """Whole-column checks. The n-th event sits on line ``first_line + n``: blank lines
    inside the data are rejected while reading, so the mapping is exact."""
    n = len(ratings)
    if n == 0:
        raise MovieLensFormatError(path, None, "at least one rating", "no data lines")
    for values, what in ((ratings.user_id, "user id"), (ratings.movie_id, "movie id")):
        bad = np.flatnonzero(values <= 0)
        if bad.size:
            i = int(bad[0])
            raise MovieLensFormatError(
                path, first_line + i, f"a positive integer {what}", str(values[i])
            )
    r = ratings.rating
    bad = np.flatnonzero(~((r >= RATING_MIN) & (r <= RATING_MAX)))  # also catches NaN
    if bad.size:
        i = int(bad[0])
        raise MovieLensFormatError(
            path, first_line + i, f"a rating between {RATING_MIN} and {RATING_MAX}", str(r[i])
        )
    if ratings.timestamp is not None:
        bad = np.flatnonzero(ratings.timestamp < 0)
        if bad.size:
            i = int(bad[0])
            raise MovieLensFormatError(
                path, first_line + i, "a non-negative Unix timestamp", str(ratings.timestamp[i])
            )
    order = np.lexsort((np.arange(n), ratings.movie_id, ratings.user_id))
    u, m = ratings.user_id[order], ratings.movie_id[order]
    dup = np.flatnonzero((u[1:] == u[:-1]) & (m[1:] == m[:-1]))
    if dup.size:
        # The pair whose second occurrence comes first in the file.
        seconds = order[dup + 1]
        k = int(np.argmin(seconds))
        first, second = int(order[dup[k]]), int(seconds[k])
        raise MovieLensFormatError(
            path,
            first_line + second,
            f"one rating per (user, movie): user {u[dup[k]]} already rated movie {m[dup[k]]} "
            f"on line {first_line + first}",
        )


def _check_movies_known(
    path: Path, first_line: int, ratings: Ratings, movies: tuple[Movie, ...], movies_path: Path
) -> None:
    known = np.fromiter((m.movie_id for m in movies), dtype=np.int64, count=len(movies))
    unknown = np.flatnonzero(~np.isin(ratings.movie_id, known))
    if unknown.size:
        i = int(unknown[0])
        raise MovieLensFormatError(
            path,
            first_line + i,
            f"a movie id listed in {movies_path.name}",
            str(ratings.movie_id[i]),
        )


_RATING_READERS: dict[SourceFormat, Callable[..., tuple[Ratings, int]]] = {
    "grouplens-100k": _read_u_data,
    "movielens-csv": _read_ratings_csv,
    "recbole": _read_recbole_inter,
}
_MOVIE_READERS: dict[SourceFormat, Callable[..., tuple[Movie, ...]]] = {
    "grouplens-100k": _read_u_item,
    "movielens-csv": _read_movies_csv,
    "recbole": _read_recbole_item,
}
