"""banditctl load-movielens / replay / evaluate through click's CliRunner (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from banditd.admin_cli.cli_support import EXIT_NOT_FOUND, EXIT_USAGE
from banditd.admin_cli.commands_offline import (
    evaluate_command,
    load_movielens_command,
    replay_command,
)
from tests.admin_cli.offline.logged_fixtures import write_logged_experiment
from tests.admin_cli.offline.movielens_fixtures import make_fixture, write_csv, write_recbole

# Nothing listens on port 1: a command that touches the database fails with exit code 5.
NO_DATABASE = ["--database-url", "postgresql://nobody@127.0.0.1:1/none"]


def invoke(command, *args: str):
    return CliRunner().invoke(command, list(args), catch_exceptions=False)


async def _fetchval(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.fixture
def movielens_dir(tmp_path: Path) -> Path:
    """A made-up ml-latest-small-shaped directory: 120 users, 8 movies."""
    return write_csv(tmp_path / "ml-tiny", make_fixture(n_users=120, n_movies=8, density=0.7))


def test_load_then_replay_from_the_database(cli_db, movielens_dir, tmp_path):
    db = ["--database-url", cli_db]
    first = invoke(load_movielens_command, str(movielens_dir), "--json", *db)
    assert first.exit_code == 0, first.output
    info = json.loads(first.stdout)
    assert (info["name"], info["source_format"]) == ("ml-tiny", "movielens-csv")
    again = invoke(load_movielens_command, str(movielens_dir), "--json", *db)
    assert json.loads(again.stdout)["n_ratings"] == info["n_ratings"]
    rows = asyncio.run(_fetchval(cli_db, "SELECT count(*) FROM movielens_ratings"))
    assert rows == info["n_ratings"]  # reloaded, not doubled

    out = tmp_path / "out"
    result = invoke(replay_command, "--dataset", "ml-tiny", "--arms", "4", "--runs", "3",
                    "--policies", "thompson,control", "--out-dir", str(out), "--json", *db)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [p["policy"] for p in payload["policies"]] == ["thompson", "control"]
    assert payload["source"] == "dataset ml-tiny"
    assert len(payload["problem"]["arms"]) == 4
    assert (out / "replay.png").stat().st_size > 0
    assert json.loads((out / "replay.json").read_text())["config"]["runs"] == 3


def test_load_prints_a_table(cli_db, movielens_dir):
    result = invoke(load_movielens_command, str(movielens_dir), "--dataset", "small",
                    "--database-url", cli_db)
    assert result.exit_code == 0, result.output
    assert "small" in result.stdout and "movielens-csv" in result.stdout


def test_replay_from_files_needs_no_database(tmp_path):
    source = write_recbole(tmp_path / "rb", make_fixture(n_users=150, n_movies=6))
    result = invoke(replay_command, "--path", str(source), "--arms", "3", "--runs", "2",
                    "--out-dir", str(tmp_path / "out"), *NO_DATABASE)
    assert result.exit_code == 0, result.output
    for policy in ("thompson", "ucb", "egreedy", "control"):
        assert policy in result.stdout
    assert "lift vs control" in result.stdout
    assert (tmp_path / "out" / "replay.png").exists()


def test_replay_accepts_policy_parameters_and_genre_arms(tmp_path):
    source = write_csv(tmp_path / "ml", make_fixture(n_users=150, n_movies=8))
    result = invoke(replay_command, "--path", str(source), "--arm-kind", "genre", "--arms", "3",
                    "--runs", "2", "--policies", "egreedy,control", "--param",
                    "egreedy.epsilon=0.2", "--sampling", "bootstrap", "--events", "600",
                    "--out-dir", str(tmp_path / "out"), "--json", *NO_DATABASE)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["problem"]["arm_kind"] == "genre"
    assert payload["stream_events_mean"] == 600
    assert payload["config"]["sampling"] == "bootstrap"


def test_a_malformed_file_fails_and_loads_nothing(cli_db, movielens_dir):
    ratings = movielens_dir / "ratings.csv"
    lines = ratings.read_text().splitlines()
    lines[5] = "1,2,lots,100"
    ratings.write_text("\n".join(lines) + "\n")
    result = invoke(load_movielens_command, str(movielens_dir), "--database-url", cli_db)
    assert result.exit_code == EXIT_USAGE
    assert f"{ratings}, line 6: expected a number for rating, got 'lots'" in result.output
    assert asyncio.run(_fetchval(cli_db, "SELECT count(*) FROM movielens_datasets")) == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("replay",), EXIT_USAGE, "exactly one of --dataset NAME or --path PATH"),
        (("replay", "--dataset", "x", "--path", "{src}"), EXIT_USAGE, "exactly one of"),
        (("replay", "--path", "{src}", "--policies", "thompson,magic"), EXIT_USAGE,
         "unknown policy 'magic'"),
        (("replay", "--path", "{src}", "--policies", "ucb,,control"), EXIT_USAGE, "empty item"),
        (("replay", "--path", "{src}", "--policies", "ucb,ucb"), EXIT_USAGE, "listed twice"),
        (("replay", "--path", "{src}", "--arms", "1"), EXIT_USAGE, "1 is not in the range x>=2"),
        (("replay", "--path", "{src}", "--arms", "50"), EXIT_USAGE,
         "asked for 50 movie arms but the data has only 8"),
        (("replay", "--path", "{src}", "--runs", "0"), EXIT_USAGE, "--runs"),
        (("replay", "--path", "{src}", "--reward-threshold", "6"), EXIT_USAGE,
         "--reward-threshold"),
        (("replay", "--path", "{src}", "--param", "egreedy.epsilon=2"), EXIT_USAGE,
         "egreedy parameters: epsilon must be in [0, 1]"),
        (("replay", "--path", "{src}", "--param", "epsilon"), EXIT_USAGE, "POLICY.NAME=VALUE"),
        (("replay", "--path", "{src}", "--policies", "ucb", "--param", "thompson.alpha0=2"),
         EXIT_USAGE, "not among the policies"),
        (("replay", "--path", "/does/not/exist"), EXIT_USAGE, "does not exist"),
        (("load-movielens", "{src}", "--dataset", "bad name"), EXIT_USAGE, "dataset name"),
        (("load-movielens", "/does/not/exist"), EXIT_USAGE, "does not exist"),
        (("load-movielens", "{src}/movies.csv"), EXIT_USAGE, "not the movie file"),
        (("evaluate", "e", "--policies", "greedy,oracle"), EXIT_USAGE, "unknown policy 'oracle'"),
        (("evaluate", "e", "--confidence", "1.5"), EXIT_USAGE, "--confidence"),
    ],
)
def test_bad_input_exits_with_a_meaningful_code(movielens_dir, args, code, message):
    commands = {"replay": replay_command, "load-movielens": load_movielens_command,
                "evaluate": evaluate_command}
    name, *rest = args
    rest = [a.replace("{src}", str(movielens_dir)) for a in rest]
    result = invoke(commands[name], *rest, *NO_DATABASE)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())


def test_unknown_dataset_and_experiment_exit_with_not_found(cli_db):
    db = ["--database-url", cli_db]
    replay = invoke(replay_command, "--dataset", "nope", *db)
    assert replay.exit_code == EXIT_NOT_FOUND
    assert "no MovieLens dataset named 'nope'" in replay.output
    evaluate = invoke(evaluate_command, "nope", *db)
    assert evaluate.exit_code == EXIT_NOT_FOUND


async def _write_experiment(url: str) -> None:
    from banditd.server.database import connect

    conn = await connect(url)
    try:
        await write_logged_experiment(conn, "exp-cli", n_control=900, n_egreedy=300)
    finally:
        await conn.close()


def test_evaluate_an_experiment(cli_db):
    asyncio.run(_write_experiment(cli_db))
    db = ["--database-url", cli_db]
    result = invoke(evaluate_command, "exp-cli", "--json", *db)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [c["candidate"] for c in payload["candidates"]] == [
        "egreedy", "control", "uniform", "greedy"]
    assert set(payload["candidates"][0]["estimates"]) == {"ips", "snips", "dm", "dr"}
    assert payload["reward_range"] == [0.0, 10.0]
    assert any("no reward yet" in w for w in payload["warnings"])

    table = invoke(evaluate_command, "exp-cli", "--policies", "thompson,uniform",
                   *db)
    assert table.exit_code == 0, table.output
    assert "thompson" in table.stdout and "snips" in table.stdout and "ESS" in table.stdout
    assert "no reward yet" in table.output  # the warning, on stderr
