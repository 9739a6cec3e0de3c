"""``banditctl export`` and ``export_day`` (admin_cli/export.py), and ``evaluate
--from-parquet`` on what they wrote, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from banditd.admin_cli.cli_support import EXIT_DATABASE, EXIT_NOT_FOUND, EXIT_USAGE
from banditd.admin_cli.commands_offline import evaluate_command, export_command
from banditd.admin_cli.export import METADATA_KEY, SCHEMA, export_day
from banditd.server.database import connect
from tests.admin_cli.offline.logged_fixtures import (
    write_logged_experiment,
    write_subset_logged_experiment,
)

STEP = timedelta(seconds=53)  # 3,608 decisions over 2026-01-01 .. 2026-01-03
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")


def invoke(command, *args: str):
    return CliRunner().invoke(command, list(args), catch_exceptions=False)


async def _with_conn(url: str, work):
    conn = await connect(url)
    try:
        return await work(conn)
    finally:
        await conn.close()


@pytest.fixture
def logged_db(cli_db):
    """``cli_db`` with exp-ope (pending rewards, an unknown arm) and exp-subsets
    (candidate subsets), both over three UTC days, and a context on one decision."""
    async def write(conn):
        await write_logged_experiment(conn, "exp-ope", step=STEP)
        await write_subset_logged_experiment(conn, "exp-subsets", n=3000, step=timedelta(
            seconds=90))
        await conn.execute("""UPDATE decisions SET context = '{"genre": "noir", "n": 2}'
                              WHERE decision_id = 'exp-ope-5'""")

    asyncio.run(_with_conn(cli_db, write))
    return cli_db


def _export(url: str, out: Path, experiment: str = "exp-ope", *extra: str):
    return invoke(export_command, "--experiment", experiment, "--since", "2025-12-31",
                  "--until", "2026-01-05", "--out", str(out), "--json", "--database-url", url,
                  *extra)


def test_export_writes_one_file_per_day_with_the_documented_schema(logged_db, tmp_path):
    result = _export(logged_db, tmp_path / "x")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [d["date"] for d in payload["days"]] == list(DAYS)
    assert payload["rows"] == 3000 + 600 + 7 + 1
    files = sorted((tmp_path / "x").rglob("*"))
    parquet = [f for f in files if f.is_file()]
    assert [f.relative_to(tmp_path / "x").as_posix() for f in parquet] == [
        f"experiment=exp-ope/date={d}/part-0.parquet" for d in DAYS]
    table = pa.concat_tables(pq.read_table(f) for f in parquet)
    assert table.schema.remove_metadata() == SCHEMA
    meta = json.loads(pq.read_schema(parquet[0]).metadata[METADATA_KEY])
    assert meta["arms"] == ["a", "b", "c"] and meta["reward_max"] == 10.0
    assert "salt" not in meta
    rows = table.to_pylist()
    assert [r["decision_id"] for r in rows] == sorted(
        (r["decision_id"] for r in rows), key=lambda d: int(d.rsplit("-", 1)[1]))
    first = rows[0]
    assert first["decided_at"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert (first["policy"], first["propensity"], first["served_by"]) == (
        "control", 1 / 3, "CONTROL")
    assert first["candidates"] is None and first["latency_us"] == 100
    assert first["reward"] in (0.0, 10.0) and first["reward_source"] == "client"
    assert first["reward_committed_at"] is not None and first["reward_event_time"] is None
    assert json.loads(rows[5]["context"]) == {"genre": "noir", "n": 2}
    pending = [r for r in rows if r["reward"] is None]
    assert len(pending) == 7 and all(r["reward_source"] is None for r in pending)
    by_day = {d["date"]: d["rows"] for d in payload["days"]}
    for day in DAYS:
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        in_day = [r for r in rows if start <= r["decided_at"] < start + timedelta(days=1)]
        assert len(in_day) == by_day[day]


def test_candidates_survive_the_export(logged_db, tmp_path):
    assert _export(logged_db, tmp_path, "exp-subsets").exit_code == 0
    table = pq.read_table(tmp_path / "experiment=exp-subsets")
    candidates = table.column("candidates").to_pylist()
    assert any(c is None for c in candidates)
    assert all(c is None or 2 <= len(c) <= 4 for c in candidates)


@pytest.mark.parametrize("experiment", ["exp-ope", "exp-subsets"])
def test_evaluate_gives_the_same_estimates_from_the_export(logged_db, tmp_path, experiment):
    assert _export(logged_db, tmp_path, experiment).exit_code == 0
    args = (experiment, "--policies", "thompson,egreedy,control,greedy,uniform", "--json")
    live = invoke(evaluate_command, *args, "--database-url", logged_db)
    exported = invoke(evaluate_command, *args, "--from-parquet", str(tmp_path),
                      "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert live.exit_code == 0, live.output
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout) == json.loads(live.stdout)
    assert json.loads(live.stdout)["decisions_used"] > 2000


def test_a_rerun_replaces_each_day_whole(logged_db, tmp_path):
    assert _export(logged_db, tmp_path).exit_code == 0

    async def change(conn):
        await conn.execute("DELETE FROM rewards WHERE decision_id LIKE 'exp-ope-%'")
        await conn.execute("DELETE FROM decisions WHERE decided_at >= '2026-01-03'")

    asyncio.run(_with_conn(logged_db, change))
    again = _export(logged_db, tmp_path)
    assert again.exit_code == 0, again.output
    assert [d["date"] for d in json.loads(again.stdout)["days"]] == list(DAYS[:2])
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert sorted(f.parent.name for f in files) == [f"date={d}" for d in DAYS[:2]]
    table = pq.read_table(tmp_path / "experiment=exp-ope")
    assert table.column("reward").null_count == table.num_rows


def test_export_day_writes_every_experiment(logged_db, tmp_path):
    rows = asyncio.run(_with_conn(logged_db, lambda c: export_day(c, date(2026, 1, 2), tmp_path)))
    written = {f.relative_to(tmp_path).parts[0]: pq.read_metadata(f).num_rows
               for f in tmp_path.rglob("*.parquet")}
    assert set(written) == {"experiment=exp-ope", "experiment=exp-subsets"}
    assert sum(written.values()) == rows > 0
    for f in tmp_path.rglob("*.parquet"):
        assert f.parent.name == "date=2026-01-02"
        decided = pq.read_table(f).column("decided_at").to_pylist()
        assert all(d.date() == date(2026, 1, 2) for d in decided)
    assert asyncio.run(_with_conn(logged_db, lambda c: export_day(c, date(2030, 1, 1),
                                                                  tmp_path))) == 0


def test_bad_input_exits_with_a_meaningful_code(logged_db, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    db = ["--database-url", logged_db]
    cases = [
        (["--since", "2026-01-03", "--until", "2026-01-01", "--out", str(tmp_path)],
         EXIT_USAGE, "--since 2026-01-03 is after --until 2026-01-01"),
        (["--since", "2026-13-01", "--until", "2026-01-01", "--out", str(tmp_path)],
         EXIT_USAGE, "'2026-13-01' does not match the format '%Y-%m-%d'"),
        (["--since", "2026-01-01", "--until", "2026-01-01", "--out", str(blocker / "sub")],
         EXIT_USAGE, "cannot write to --out"),
        (["--since", "2026-01-01", "--until", "2026-01-01", "--out", str(blocker)],
         EXIT_USAGE, "is a file"),
    ]
    for args, code, message in cases:
        result = invoke(export_command, "--experiment", "exp-ope", *args, *db)
        assert result.exit_code == code, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
    unknown = invoke(export_command, "--experiment", "nope", "--since", "2026-01-01",
                     "--until", "2026-01-02", "--out", str(tmp_path / "o"), *db)
    assert unknown.exit_code == EXIT_NOT_FOUND and "nope" in unknown.output
    unreachable = invoke(export_command, "--experiment", "exp-ope", "--since", "2026-01-01",
                         "--until", "2026-01-02", "--out", str(tmp_path / "o"),
                         "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert unreachable.exit_code == EXIT_DATABASE


def test_evaluate_from_an_export_that_is_not_there(tmp_path):
    missing = invoke(evaluate_command, "exp-ope", "--from-parquet", str(tmp_path))
    assert missing.exit_code == EXIT_NOT_FOUND
    assert "no export of experiment 'exp-ope'" in " ".join(missing.output.split())
    day = tmp_path / "experiment=exp-ope" / "date=2026-01-01"
    day.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), day / "part-0.parquet")
    foreign = invoke(evaluate_command, "exp-ope", "--from-parquet", str(tmp_path))
    assert foreign.exit_code == EXIT_USAGE
    assert "not written by banditctl export" in " ".join(foreign.output.split())
