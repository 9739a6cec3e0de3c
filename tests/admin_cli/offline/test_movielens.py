"""MovieLens readers (admin_cli/offline/movielens.py): three formats, detection, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from banditd.admin_cli.offline.movielens import (
    Movie,
    MovieLensFormatError,
    detect_format,
    read_movielens,
)
from tests.admin_cli.offline.movielens_fixtures import (
    WRITERS,
    FixtureData,
    make_fixture,
    write_csv,
    write_ml100k,
    write_recbole,
)

FORMATS = tuple(WRITERS)


def _expected_movies(data: FixtureData) -> tuple[Movie, ...]:
    return tuple(Movie(m.movie_id, m.title, m.year, m.genres) for m in data.movies)


def _sorted_ratings(ratings) -> list[tuple[int, int, float, int]]:
    r = ratings
    rows = zip(r.user_id.tolist(), r.movie_id.tolist(), r.rating.tolist(), r.timestamp.tolist(),
               strict=True)
    return sorted(rows)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_the_same_ratings_and_movies(tmp_path: Path, fmt: str):
    data = make_fixture()
    directory = WRITERS[fmt](tmp_path / fmt, data)
    read = read_movielens(directory)
    assert read.source_format == fmt
    assert _sorted_ratings(read.ratings) == sorted(data.ratings)
    assert read.movies == _expected_movies(data)
    assert read.n_users == len({r[0] for r in data.ratings})
    assert read.n_movies == len(data.movies)


def test_half_star_ratings_and_quoted_titles_in_csv(tmp_path: Path):
    data = make_fixture(half_stars=True)
    read = read_movielens(write_csv(tmp_path, data))
    assert set(read.ratings.rating.tolist()) <= {x / 2 for x in range(1, 11)}
    assert read.movies is not None and read.movies[0].title == "Café, The"


def test_no_genres_listed_and_titles_without_year(tmp_path: Path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,100\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"Untitled, Draft",(no genres listed)\n'
    )
    read = read_movielens(tmp_path)
    assert read.movies == (Movie(1, "Untitled, Draft", None, ()),)


def test_recbole_columns_are_read_by_header_name(tmp_path: Path):
    data = make_fixture()
    read = read_movielens(write_recbole(tmp_path, data, shuffle_columns=True))
    assert _sorted_ratings(read.ratings) == sorted(data.ratings)


def test_recbole_without_timestamp_and_token_years(tmp_path: Path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\trating:float\n1\t7\t4\n")
    (tmp_path / "x.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "7\tunkonwn\tunkonwn\tunknown\n"  # as in RecBole's own ml-100k.item
    )
    read = read_movielens(tmp_path / "x.inter")
    assert read.ratings.timestamp is None
    assert read.movies == (Movie(7, "unkonwn", None, ("unknown",)),)


def test_movie_file_is_optional(tmp_path: Path):
    data = make_fixture()
    write_ml100k(tmp_path, data)
    (tmp_path / "u.item").unlink()
    read = read_movielens(tmp_path)
    assert read.movies is None
    assert read.n_movies == len({r[1] for r in data.ratings})


@pytest.mark.parametrize(
    ("layout", "target", "fmt"),
    [
        ("ml100k", "", "grouplens-100k"),
        ("ml100k", "u.data", "grouplens-100k"),
        ("csv", "", "movielens-csv"),
        ("csv", "ratings.csv", "movielens-csv"),
        ("recbole", "", "recbole"),
        ("recbole", "ml-fixture.inter", "recbole"),
    ],
)
def test_detect_format_from_directory_or_ratings_file(tmp_path, layout, target, fmt):
    writer = {"ml100k": write_ml100k, "csv": write_csv, "recbole": write_recbole}[layout]
    writer(tmp_path, make_fixture(n_users=2, n_movies=2))
    source = detect_format(tmp_path / target if target else tmp_path)
    assert source.source_format == fmt
    assert source.movies is not None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "u.data (GroupLens ml-100k), ratings.csv"),
        (lambda d: [(d / f"{n}.inter").write_text("") for n in ("a", "b")], "found several"),
    ],
)
def test_detect_format_rejects_unknown_directories(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(MovieLensFormatError, match=re.escape(message)):
        detect_format(tmp_path)


@pytest.mark.parametrize("name", ["u.item", "movies.csv", "x.item", "notes.txt"])
def test_detect_format_rejects_non_ratings_files(tmp_path, name):
    (tmp_path / name).write_text("x\n")
    with pytest.raises(MovieLensFormatError) as info:
        detect_format(tmp_path / name)
    assert info.value.path == tmp_path / name and info.value.line is None


def _edit(path: Path, lineno: int, new: str | None, *, insert: bool = False,
          encoding: str = "utf-8") -> None:
    lines = path.read_text(encoding=encoding).split("\n")
    if insert:
        lines.insert(lineno - 1, new or "")
    elif new is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = new
    path.write_text("\n".join(lines), encoding=encoding)


def _first_fields(path: Path, lineno: int, sep: str, encoding: str = "utf-8") -> list[str]:
    return path.read_text(encoding=encoding).split("\n")[lineno - 1].split(sep)


# (writer, file, line, edit(path, line), expected message fragment)
MALFORMED = [
    ("ml100k", "u.data", 3, lambda p, n: _edit(p, n, "1\t2\t3", encoding="latin-1"),
     "expected 4 tab-separated fields"),
    ("ml100k", "u.data", 5, lambda p, n: _edit(p, n, "abc\t1\t3\t100", encoding="latin-1"),
     "expected an integer user id, got 'abc'"),
    ("ml100k", "u.data", 2, lambda p, n: _edit(p, n, "1\t1\t7\t100", encoding="latin-1"),
     "expected a rating between 0.5 and 5.0, got '7.0'"),
    ("ml100k", "u.data", 4, lambda p, n: _edit(p, n, "", insert=True, encoding="latin-1"),
     "expected a data line, got 'an empty line'"),
    ("ml100k", "u.data", 6, lambda p, n: _edit(p, n, "1\t999\t3\t100", encoding="latin-1"),
     "expected a movie id listed in u.item, got '999'"),
    ("ml100k", "u.item", 2,
     lambda p, n: _edit(p, n, "|".join([*_first_fields(p, n, "|", "latin-1")[:5], "2",
                                        *["0"] * 18]), encoding="latin-1"),
     "expected genre flag 0 or 1 for 'unknown', got '2'"),
    ("ml100k", "u.item", 3, lambda p, n: _edit(p, n, "3|Short line", encoding="latin-1"),
     "expected 24 '|'-separated fields"),
    ("ml100k", "u.item", 4,
     lambda p, n: _edit(p, n, "|".join(["1", *_first_fields(p, n, "|", "latin-1")[1:]]),
                        encoding="latin-1"),
     "expected a new movie id (movie 1 is already on line 1)"),
    ("csv", "ratings.csv", 1, lambda p, n: _edit(p, n, "userId,movieId,rating"),
     "expected a header with column(s) timestamp"),
    ("csv", "ratings.csv", 4, lambda p, n: _edit(p, n, "1,2,3"),
     "expected 4 comma-separated fields (userId,movieId,rating,timestamp), found 3"),
    ("csv", "ratings.csv", 5, lambda p, n: _edit(p, n, "1,2,four,100"),
     "expected a number for rating, got 'four'"),
    ("csv", "movies.csv", 3, lambda p, n: _edit(p, n, '3,"Unterminated (1993),Drama'),
     "expected a well-formed CSV row, got 'unexpected end of data'"),
    ("recbole", "ml-fixture.inter", 1,
     lambda p, n: _edit(p, n, "user_id\titem_id\trating\ttimestamp"),
     "expected a typed header of tab-separated name:type fields, got 'user_id'"),
    ("recbole", "ml-fixture.inter", 1,
     lambda p, n: _edit(p, n, "user_id:token\titem_id:token\tscore:float\ttimestamp:float"),
     "expected a header with column(s) rating"),
    ("recbole", "ml-fixture.inter", 7, lambda p, n: _edit(p, n, "1\t2\t3"),
     "expected 4 tab-separated fields"),
    ("recbole", "ml-fixture.inter", 8, lambda p, n: _edit(p, n, "1\t2\t3\tsoon"),
     "expected a finite number for timestamp (Unix seconds), got 'soon'"),
    ("recbole", "ml-fixture.item", 2, lambda p, n: _edit(p, n, "x1\tTitle\t1990\tDrama"),
     "expected an integer item_id, got 'x1'"),
]


@pytest.mark.parametrize(("layout", "name", "line", "edit", "message"), MALFORMED)
def test_malformed_input_names_file_line_and_expectation(tmp_path, layout, name, line, edit,
                                                         message):
    writer = {"ml100k": write_ml100k, "csv": write_csv, "recbole": write_recbole}[layout]
    writer(tmp_path, make_fixture())
    edit(tmp_path / name, line)
    with pytest.raises(MovieLensFormatError) as info:
        read_movielens(tmp_path)
    err = info.value
    assert (err.path, err.line) == (tmp_path / name, line)
    assert message in str(err)
    assert str(err).startswith(f"{tmp_path / name}, line {line}: ")


def test_duplicate_rating_points_at_both_lines(tmp_path: Path):
    write_csv(tmp_path, make_fixture())
    lines = (tmp_path / "ratings.csv").read_text().splitlines()
    lines.insert(9, lines[2])  # a copy of the rating on line 3 becomes line 10
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(MovieLensFormatError, match=r"line 10: expected one rating per "
                       r"\(user, movie\): .* on line 3"):
        read_movielens(tmp_path)


def test_undecodable_bytes_are_reported_with_their_line(tmp_path: Path):
    write_csv(tmp_path, make_fixture())
    path = tmp_path / "ratings.csv"
    raw = path.read_bytes().split(b"\n")
    raw[3] = b"1,2,3,\xff\xfe"
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(MovieLensFormatError, match=r"line 4: expected text in utf-8"):
        read_movielens(tmp_path)


@pytest.mark.parametrize(("layout", "name"), [("csv", "ratings.csv"),
                                              ("recbole", "ml-fixture.inter")])
def test_empty_files_are_rejected(tmp_path, layout, name):
    writer = {"csv": write_csv, "recbole": write_recbole}[layout]
    writer(tmp_path, make_fixture())
    (tmp_path / name).write_text("")
    with pytest.raises(MovieLensFormatError, match="header"):
        read_movielens(tmp_path)


def test_header_only_file_has_no_ratings(tmp_path: Path):
    write_csv(tmp_path, make_fixture())
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(MovieLensFormatError, match="at least one rating"):
        read_movielens(tmp_path)


def test_trailing_blank_lines_are_fine(tmp_path: Path):
    data = make_fixture()
    write_ml100k(tmp_path, data)
    with (tmp_path / "u.data").open("a") as f:
        f.write("\n\n")
    assert len(read_movielens(tmp_path).ratings) == len(data.ratings)


def test_progress_reaches_every_file_size(tmp_path: Path):
    write_ml100k(tmp_path, make_fixture())
    seen: dict[Path, tuple[int, int]] = {}
    read_movielens(tmp_path, lambda path, done, total: seen.__setitem__(path, (done, total)))
    assert set(seen) == {tmp_path / "u.data", tmp_path / "u.item"}
    assert all(done == total == p.stat().st_size for p, (done, total) in seen.items())


def test_ratings_arrays_have_numpy_dtypes(tmp_path: Path):
    read = read_movielens(write_ml100k(tmp_path, make_fixture()))
    r = read.ratings
    assert (r.user_id.dtype, r.movie_id.dtype, r.rating.dtype) == (np.int64, np.int64,
                                                                   np.float64)
    assert r.timestamp is not None and r.timestamp.dtype == np.int64
