"""Every banditctl read command, with and without --json, on an experiment with
traffic (decisions, rewards, a guardrail run, a verdict) and on one without: exit 0,
no traceback, strict JSON, and the human form says what the runbook step needs."""

from __future__ import annotations

import json
import random

import grpc
import pytest
from click.testing import CliRunner

from banditd.admin_cli.main import main
from banditd.v1 import decision_pb2 as pb
from banditd.v1 import decision_pb2_grpc

READ_COMMANDS = (
    ("experiment", "list"),
    ("experiment", "show", "{id}"),
    ("experiment", "summary", "{id}"),
    ("guardrails", "check", "{id}"),
    ("decide", "{id}"),
    ("status",),
    ("evaluate", "{id}"),
    ("migrate",),
)
POLICIES = ("thompson", "ucb", "egreedy", "control")


def strict_json(text: str):
    """``json.loads`` that refuses NaN and ±Infinity, as any strict parser does."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def _drive(address: str, experiment_id: str, users: int, seed: int) -> int:
    """Selects for ``users`` users (two each) and a 0/1 reward for most; the decisions."""
    rng = random.Random(seed)
    decisions = 0
    with grpc.insecure_channel(address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        for user in range(users):
            for _ in range(2):
                d = stub.Select(pb.SelectRequest(experiment_id=experiment_id,
                                                 user_id=f"user-{user}"), timeout=5)
                decisions += 1
                if rng.random() < 0.9:
                    value = float(rng.random() < (0.6 if d.arm == "a" else 0.4))
                    stub.Reward(pb.RewardRequest(decision_id=d.decision_id, value=value),
                                timeout=5)
    return decisions


@pytest.fixture
def experiments(cli_db, server_process):
    """``full`` (traffic, rewards, a guardrail run, a verdict) and ``empty`` (running,
    no traffic), served by a real server; yields the invoke function."""
    runner = CliRunner()

    def banditctl(*args: str):
        return runner.invoke(main, [*args, "--database-url", cli_db])

    for experiment_id in ("full", "empty"):
        created = banditctl("experiment", "create", experiment_id, "--name", experiment_id,
                            "--arms", "a,b,c,d", "--policies", ",".join(POLICIES), "--start")
        assert created.exit_code == 0, created.output
    # A learning bandit concentrates on its best arm; this test is not about that alarm.
    relaxed = banditctl("experiment", "set", "full", "--guardrail", "arm_share.warning=1",
                        "--guardrail", "arm_share.critical=1")
    assert relaxed.exit_code == 0, relaxed.output
    server = server_process(cli_db)
    server.wait_serving()
    assert _drive(server.address, "full", users=150, seed=1) == 300
    yield banditctl
    assert server.terminate() == 0  # flushes the decision log before the next test


def _ok(result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_read_command_answers_on_full_and_empty_experiments(experiments):
    banditctl = experiments
    import time

    time.sleep(0.5)  # the decision log is written every 100 ms
    assert _ok(banditctl("guardrails", "check", "full"))
    assert _ok(banditctl("decide", "full"))
    for experiment_id in ("full", "empty"):
        for command in READ_COMMANDS:
            args = [a.format(id=experiment_id) for a in command]
            human = _ok(banditctl(*args))
            assert human.strip(), args
            strict_json(_ok(banditctl(*args, "--json")))


def test_decide_shows_the_verdict_each_lift_with_its_interval_and_the_reasons(experiments):
    banditctl = experiments
    import time

    time.sleep(0.5)
    out = _ok(banditctl("decide", "full"))
    verdict = strict_json(_ok(banditctl("decide", "full", "--json")))
    head = out.splitlines()[0]
    assert head.startswith(f"full: {verdict['recommendation'].upper()} ")
    for policy in verdict["policies"]:
        name, rel = policy["policy"], policy["relative_lift"]
        row = next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
        assert f"{rel['estimate']:+.2%}" in row  # the relative lift ...
        low = "-∞" if rel["ci"][0] is None else f"{rel['ci'][0]:+.2%}"
        assert f"[{low}, " in row  # ... with its always-valid interval
        assert f"{name}: {policy['recommendation']}" in out
        for reason in policy["reasons"]:
            assert f"  - {reason}" in out
    assert "sample-ratio mismatch:" in out


def test_decide_on_an_experiment_without_traffic_says_so(experiments):
    out = _ok(experiments("decide", "empty"))
    assert out.startswith("empty: ITERATE ")
    assert "not enough users" in out
