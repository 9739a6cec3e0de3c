"""banditctl experiment create/list/show/start/stop and launch, with their exit codes."""

import json

import pytest

from banditd.admin_cli.cli_support import EXIT_NOT_FOUND, EXIT_STATE, EXIT_USAGE


def test_migrate_is_idempotent(banditctl):
    result = banditctl("migrate", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["applied"] == []


def test_create_start_stop_show_round_trip(banditctl):
    created = banditctl("experiment", "create", "exp-1", "--name", "Movies", "--arms", "a,b,c",
                        "--policies", "thompson,control", "--split", "0.7,0.3", "--traffic",
                        "0.8", "--param", "thompson.alpha0=2", "--duration", "14", "--json")
    assert created.exit_code == 0, created.output
    config = json.loads(created.output)
    assert (config["status"], config["arms"], config["policy_split"]) == (
        "draft", ["a", "b", "c"], [0.7, 0.3])
    assert config["policy_params"] == {"thompson": {"alpha0": 2.0}}

    assert banditctl("experiment", "start", "exp-1").output.strip() == "exp-1: running"
    stopped = banditctl("experiment", "stop", "exp-1", "--reason", "enough data", "--json")
    assert json.loads(stopped.output)["status"] == "stopped"

    shown = json.loads(banditctl("experiment", "show", "exp-1", "--json").output)
    assert shown["end_at"] is not None
    assert [(e["action"], e["reason"]) for e in shown["audit"]] == [
        ("create", None), ("start", None), ("stop", "enough data")]
    assert shown["audit"][1]["old_value"] == {"status": "draft"}

    listed = json.loads(banditctl("experiment", "list", "--json").output)
    assert [(e["id"], e["status"]) for e in listed] == [("exp-1", "stopped")]
    table = banditctl("experiment", "list")
    assert "exp-1" in table.output and "stopped" in table.output


def test_launch_creates_and_starts_in_one_step(banditctl):
    result = banditctl("launch", "--name", "Bandit Test v1", "--duration", "14", "--traffic",
                       "0.8", "--policies", "thompson,egreedy,ucb,control", "--arms", "x,y")
    assert result.exit_code == 0, result.output
    experiment_id = result.output.strip()
    assert experiment_id.startswith("bandit-test-v1-")
    shown = json.loads(banditctl("experiment", "show", experiment_id, "--json").output)
    assert shown["status"] == "running"
    assert shown["traffic_pct"] == 0.8


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("experiment", "show", "nope"), EXIT_NOT_FOUND, "experiment 'nope' not found"),
        (("experiment", "stop", "nope"), EXIT_NOT_FOUND, "not found"),
        (("launch", "--name", "x", "--arms", "a,b", "--traffic", "1.5"), EXIT_USAGE, "traffic"),
        (("launch", "--name", "x", "--arms", "a,b", "--policies", "thompson,magic"),
         EXIT_USAGE, "unknown policy 'magic'"),
        (("launch", "--name", "x", "--arms", "a,a"), EXIT_USAGE, "duplicate arms: a"),
        (("launch", "--name", "x", "--arms", "a,b", "--duration", "0"), EXIT_USAGE,
         "duration must be > 0"),
        (("launch", "--name", "x"), EXIT_USAGE, "needs arms"),
        (("launch", "--name", "x", "--arms", "a,,b"), EXIT_USAGE, "empty item"),
        (("launch", "--name", "x", "--arms", "a", "--param", "thompson.alpha0=-1"), EXIT_USAGE,
         "thompson parameters"),
        (("launch", "--name", "x", "--arms", "a", "--param", "bogus"), EXIT_USAGE,
         "POLICY.NAME=VALUE"),
    ],
)
def test_bad_input_exits_with_a_meaningful_code(banditctl, args, code, message):
    result = banditctl(*args)
    assert result.exit_code == code, result.output
    assert message in result.output


def test_invalid_transitions_exit_with_the_state_code(banditctl):
    banditctl("experiment", "create", "e", "--name", "E", "--arms", "a,b")
    result = banditctl("experiment", "stop", "e")
    assert result.exit_code == EXIT_STATE
    assert "cannot stop experiment 'e': it is draft" in result.output
    banditctl("experiment", "create", "dup", "--name", "E", "--arms", "a,b")
    again = banditctl("experiment", "create", "dup", "--name", "E", "--arms", "a,b")
    assert again.exit_code == EXIT_USAGE
    assert "already exists" in again.output


def test_unreachable_database_exits_with_the_database_code():
    from click.testing import CliRunner

    from banditd.admin_cli.cli_support import EXIT_DATABASE
    from banditd.admin_cli.main import main

    result = CliRunner().invoke(
        main, ["experiment", "list", "--database-url", "postgresql://postgres@127.0.0.1:1/x"])
    assert result.exit_code == EXIT_DATABASE
    assert "cannot reach PostgreSQL" in result.output


CARELESS = [
    (("--arms", "a"), "at least 2 arms to choose between, got 1"),
    (("--arms", "a,b", "--policies", ""), "empty item in policies list"),
    (("--arms", "a,b", "--policies", "thompson"), "have no 'control': add it"),
    (("--arms", "a,b", "--traffic", "0"), r"traffic must be in (0, 1], got 0"),
    (("--arms", "a,b", "--traffic", "1.5"), "traffic must be a share in (0, 1], got 1.5"),
    (("--arms", "a,b", "--policies", "ucb,control", "--split", "0.5,0.6"),
     "policy shares must sum to 1, got 1.100000 (ucb=0.5, control=0.6)"),
    (("--arms", "a,b", "--policies", "ucb,control", "--split", "1,0"),
     "policy control has a share of 0"),
    (("--arms", "a,b", "--param", "egreedy.epsilon=1.5"), "egreedy parameters"),
    (("--arms", "a,b", "--param", "ucb.c=-1"), "ucb parameters"),
]


@pytest.mark.parametrize("command", ["launch", "create"])
@pytest.mark.parametrize(("args", "message"), CARELESS)
def test_careless_input_is_refused_before_anything_is_created(banditctl, command, args,
                                                              message):
    """`launch` and `experiment create` share one validator: exit 2, the fix in the
    message, and no experiment written."""
    prefix = ("launch", "--name", "T") if command == "launch" else (
        "experiment", "create", "t", "--name", "T")
    result = banditctl(*prefix, *args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.output
    listed = banditctl("experiment", "list", "--json")
    assert json.loads(listed.stdout) == []


def test_traffic_set_to_zero_is_refused_and_changes_nothing(banditctl):
    banditctl("experiment", "create", "t", "--name", "T", "--arms", "a,b", "--traffic", "0.4")
    result = banditctl("experiment", "set", "t", "--traffic", "0")
    assert result.exit_code == EXIT_USAGE
    assert "traffic must be in (0, 1]" in result.output
    shown = json.loads(banditctl("experiment", "show", "t", "--json").stdout)
    assert shown["traffic_pct"] == 0.4


def test_a_command_run_where_there_is_no_database_creates_none(tmp_path, monkeypatch):
    """banditctl from the wrong directory says where it looked and how to point it at
    the right database, instead of starting an empty embedded PostgreSQL there."""
    from click.testing import CliRunner

    from banditd.admin_cli.cli_support import EXIT_DATABASE
    from banditd.admin_cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BANDITD_DATABASE_URL", raising=False)
    monkeypatch.delenv("BANDITD_DATA_DIR", raising=False)
    for args in (("experiment", "list"), ("decide", "demo"), ("status",),
                 ("launch", "--name", "T", "--arms", "a,b")):
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == EXIT_DATABASE, (args, result.output)
        assert f"no banditd database under {tmp_path / '.banditd'}" in result.output
        assert "--data-dir DIR or --database-url URL" in result.output
        assert list(tmp_path.iterdir()) == []


def test_tables_keep_long_ids_whole_when_piped(banditctl):
    """Not a terminal (a pipe, a file, this test): rich must not cut ids at 80 columns."""
    long_id = "a-rather-long-experiment-id-that-would-be-cut-at-eighty-columns-" + "x" * 40
    created = banditctl("experiment", "create", long_id, "--name", "Long", "--arms", "a,b")
    assert created.exit_code == 0, created.output
    assert long_id in banditctl("experiment", "list").stdout
