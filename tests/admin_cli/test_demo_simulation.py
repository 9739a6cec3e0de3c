"""banditctl demo against a real server process, on a MovieLens fixture."""

import json

from click.testing import CliRunner

from banditd.admin_cli.demo_simulation import build_users, top_movie_arms
from banditd.admin_cli.main import main
from banditd.admin_cli.offline.movielens import read_movielens
from tests.admin_cli.offline.movielens_fixtures import make_fixture, write_ml100k


def test_users_are_offered_only_movies_they_rated(tmp_path):
    data = read_movielens(write_ml100k(tmp_path / "ml", make_fixture(n_users=30, n_movies=8)))
    users = build_users(data, top_movie_arms(data, 5), threshold=4.0)
    assert len(users.arms) == 5
    for user in users.users:
        assert len(users.rated[user]) >= 2
        assert set(users.rated[user]) <= set(users.arms)
        for arm in users.rated[user]:
            assert users.liked[(user, arm)] in (0.0, 1.0)


def test_demo_drives_the_servers_demo_experiment_and_writes_its_plot(
    cli_db, server_process, tmp_path
):
    """`make serve & make demo`: the demo waits for the server, then drives the `demo`
    experiment the server created (its arms stand for the most-rated movies)."""
    from banditd.server.demo_experiment import DEMO_SPEC

    path = write_ml100k(tmp_path / "ml", make_fixture(n_users=40, n_movies=12))
    proc = server_process(cli_db, "--create-demo")
    out = tmp_path / "demo.png"
    result = CliRunner().invoke(main, [
        "demo", "--address", proc.address, "--seconds", "2", "--movielens", str(path),
        "--out", str(out), "--json", "--seed", "3", "--database-url", cli_db,
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["errors"] == 0
    assert summary["decisions"] > 50
    assert set(summary["arm_shares"]) <= set(DEMO_SPEC.arms)
    assert sum(p["decisions"] for p in summary["policies"].values()) == summary["decisions"]
    assert out.stat().st_size > 10_000
    assert proc.terminate() == 0


def test_demo_without_a_server_fails_clearly(cli_db, tmp_path):
    path = write_ml100k(tmp_path / "ml", make_fixture(n_users=40, n_movies=8))
    result = CliRunner().invoke(main, [
        "demo", "--address", "127.0.0.1:1", "--seconds", "1", "--movielens", str(path),
        "--arms", "6", "--out", str(tmp_path / "x.png"), "--wait", "1", "--database-url", cli_db,
    ])
    assert result.exit_code == 1
    assert "no banditd is serving at 127.0.0.1:1 after 1 s: is `make serve` running?" in (
        result.output)
    assert "demo summary" not in result.output and "reward rate" not in result.output
