"""Experiment operations end to end: guardrails roll back a running server's experiment,
summary/set/status/decide/scheduler read and write the real database."""

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from banditd.admin_cli.cli_support import EXIT_STATE
from banditd.admin_cli.guardrails import (
    RollbackFailed,
    check_guardrails,
    rollback_with_retry,
    run_guardrail_job,
)
from banditd.admin_cli.scheduler import Schedule, claim, ensure_jobs
from banditd.admin_cli.summary import experiment_summary
from banditd.admin_cli.verdict_engine import run_verdict
from banditd.server.database import connect
from banditd.server.experiment_store import events, get_experiment, update_settings
from banditd.v1 import decision_pb2 as pb
from tests.conftest import make_experiment, wait_for


async def insert_decisions(conn, key, rows):
    """rows: (policy, arm, served_by, latency_us, user_id) decided now."""
    now = datetime.now(UTC)
    await conn.copy_records_to_table(
        "decisions",
        records=[(f"test-{key}-{i}", key, user, policy, arm, 0.25, served_by, now, latency, None,
                  "test") for i, (policy, arm, served_by, latency, user) in enumerate(rows)],
        columns=("decision_id", "experiment_key", "user_id", "policy", "arm", "propensity",
                 "served_by", "decided_at", "latency_us", "context", "server_id"),
    )


async def insert_calls(conn, key, code, calls):
    await conn.execute(
        """INSERT INTO rpc_counts (experiment_key, minute, server_id, method, code, calls)
           VALUES ($1, date_trunc('minute', now()), 'test', 'Select', $2, $3)""",
        key, code, calls,
    )


async def test_error_rate_breach_rolls_back_and_servers_follow_within_a_second(
    migrated_db_url, start_server, tmp_path
):
    from banditd.server import logs

    experiment = await make_experiment(migrated_db_url)
    running = await start_server(sync_interval=30.0)  # only NOTIFY can make it in time
    await asyncio.sleep(0.2)
    conn = await connect(migrated_db_url)
    try:
        await insert_calls(conn, experiment.key, "OK", 980)
        await insert_calls(conn, experiment.key, "INTERNAL", 20)  # 2 % > 1 % critical
    finally:
        await conn.close()
    logs.configure(tmp_path, console=False)
    try:
        report = await run_guardrail_job(migrated_db_url, "exp")
        logs.flush()
        log_text = (tmp_path / "guardrails.log").read_text()
    finally:
        logs.configure(None, console=False)
    rolled_back_at = asyncio.get_running_loop().time()
    assert report.rolled_back
    assert "error_rate" in report.decision.reasons[0]
    assert "GUARDRAIL FAIL exp error_rate value=0.02 threshold=0.01" in log_text

    async def everyone_on_control():
        replies = await asyncio.gather(*(
            running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
            for i in range(20)
        ))
        return all(r.served_by == pb.ROLLED_BACK and r.policy == "control" for r in replies)

    await wait_for(everyone_on_control, timeout=1.0)
    assert asyncio.get_running_loop().time() - rolled_back_at < 1.0
    conn = await connect(migrated_db_url)
    try:
        stored = await get_experiment(conn, "exp")
        trail = await events(conn, "exp")
        run = await conn.fetchrow("SELECT status, rolled_back, reasons FROM guardrail_runs")
    finally:
        await conn.close()
    assert stored.status == "rolled_back" and stored.end_at is not None
    assert trail[-1]["actor"] == "guardrails"
    assert trail[-1]["reason"].startswith("automatic rollback: error_rate value=0.02")
    assert (run["status"], run["rolled_back"]) == ("critical", True)


async def test_latency_and_arm_share_are_read_from_the_decision_log(db_conn):
    experiment = await make_experiment_on(db_conn)
    # 100 decisions, all on arm-0 (share 1.0 > 0.5), latency 150 ms (> 120 ms critical).
    await insert_decisions(db_conn, experiment.key,
                           [("ucb", "arm-0", "POLICY", 150_000, f"u{i}") for i in range(100)])
    report = await check_guardrails(db_conn, "exp")
    by_name = {c.name: c for c in report.checks}
    # the histogram's bucket edge: never below the exact 150 ms, at most 2^(1/16) above
    assert 150.0 <= by_name["p95_latency_ms"].value <= 150.0 * 2 ** (1 / 16)
    assert by_name["p95_latency_ms"].status == "critical"
    assert (by_name["arm_share"].value, by_name["arm_share"].status) == (1.0, "critical")
    assert by_name["error_rate"].status == "insufficient_data"
    assert report.decision.should_roll_back


async def test_one_check_critical_three_runs_in_a_row_rolls_back(db_conn):
    experiment = await make_experiment_on(db_conn)
    await insert_decisions(db_conn, experiment.key, [
        ("ucb", "arm-0" if i < 60 else "arm-1", "POLICY", 1000, f"u{i}") for i in range(100)
    ])  # arm share 0.6: critical, but alone and not error/latency
    verdicts = [(await check_guardrails(db_conn, "exp")).decision.should_roll_back
                for _ in range(3)]
    assert verdicts == [False, False, True]


async def test_failing_rollback_is_retried_then_reported(caplog):
    unreachable = "postgresql://postgres@127.0.0.1:1/nowhere"
    caplog.set_level(logging.WARNING, logger="banditd.guardrails")
    with pytest.raises(RollbackFailed, match="after 3 attempts"):
        await rollback_with_retry(unreachable, "exp", "test", attempts=3, base_delay=0.01)
    retries = [r for r in caplog.records
               if r.levelname == "WARNING" and "attempt" in r.getMessage()]
    assert len(retries) == 3
    assert caplog.records[-1].levelname == "CRITICAL"
    assert "ROLLBACK FAILED exp after 3 attempts" in caplog.records[-1].getMessage()


async def test_summary_reports_split_users_rates_and_time_left(db_conn):
    experiment = await make_experiment_on(db_conn, duration_days=14)
    rows = [("thompson", "arm-0", "POLICY", 500, f"t{i}") for i in range(30)]
    rows += [("control", "arm-1", "CONTROL", 500, f"c{i}") for i in range(10)]
    rows += [("control", "arm-2", "OUTSIDE_TRAFFIC", 500, f"o{i}") for i in range(5)]
    await insert_decisions(db_conn, experiment.key, rows)
    await db_conn.execute(
        """INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value, source,
               decided_at) SELECT decision_id, experiment_key, policy, arm, served_by,
               (row_number() OVER (ORDER BY decision_id) % 2)::float8, 'client', decided_at
           FROM decisions WHERE policy = 'thompson'"""
    )
    summary = (await experiment_summary(db_conn, "exp")).to_dict()
    by_policy = {p["policy"]: p for p in summary["policies"]}
    assert by_policy["thompson"]["users"] == 30
    assert by_policy["thompson"]["actual_share"] == pytest.approx(0.75)
    assert by_policy["thompson"]["reward_rate"] == pytest.approx(0.5)
    lower, upper = by_policy["thompson"]["reward_ci"]["ci"]
    assert lower < 0.5 < upper
    assert by_policy["control"]["rewarded"] == 0
    assert summary["outside_traffic_users"] == 5
    assert 13.9 * 86400 < summary["time_left_seconds"] <= 14 * 86400


async def test_set_changes_settings_with_an_audit_trail(db_conn):
    await make_experiment_on(db_conn)
    updated = await update_settings(
        db_conn, "exp", traffic_pct=0.5, guardrails={"error_rate": {"critical": 0.02}},
        verdict_criteria={"alpha": 0.01}, actor="alice", reason="calmer",
    )
    assert updated.spec.traffic_pct == 0.5
    assert updated.spec.guardrails == {"error_rate": {"critical": 0.02}}
    trail = [(e["action"], e["actor"], e["old_value"], e["new_value"])
             for e in await events(db_conn, "exp")]
    assert ("set traffic_pct", "alice", {"traffic_pct": 1.0}, {"traffic_pct": 0.5}) in trail
    with pytest.raises(ValueError, match=r"warning threshold 0\.03 must be <= critical"):
        await update_settings(db_conn, "exp", guardrails={"error_rate": {"warning": 0.03}})
    assert (await get_experiment(db_conn, "exp")).spec.guardrails == {
        "error_rate": {"critical": 0.02}}


async def test_decide_recommends_ship_for_a_clearly_better_policy(db_conn):
    """Thompson 60 % vs control 40 % over 1,500 users each: the always-valid interval
    excludes 0 by a wide margin (z ≈ 11), SRM is fine (equal split), and a healthy
    guardrail run exists, so the verdict is ship."""
    experiment = await make_experiment_on(db_conn, policies=("thompson", "control"))
    await db_conn.execute(
        "UPDATE experiments SET start_at = now() - interval '2 days' WHERE key = $1",
        experiment.key,
    )
    rows = [("thompson", "arm-0", "POLICY", 500, f"t{i}") for i in range(1500)]
    rows += [("control", "arm-1", "CONTROL", 500, f"c{i}") for i in range(1500)]
    await insert_decisions(db_conn, experiment.key, rows)
    await db_conn.execute(
        """INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value, source,
               decided_at)
           SELECT decision_id, experiment_key, policy, arm, served_by,
                  CASE WHEN substr(user_id, 2)::int % 10
                            < CASE policy WHEN 'thompson' THEN 6 ELSE 4 END
                       THEN 1.0 ELSE 0.0 END, 'client', decided_at
           FROM decisions"""
    )
    await db_conn.execute(
        """INSERT INTO guardrail_runs (experiment_id, window_seconds, status, results)
           VALUES ('exp', 300, 'ok', '[]')"""
    )
    report = await run_verdict(db_conn, "exp")
    verdict = report.verdicts[0]
    assert verdict.recommendation == "ship", verdict.reasons
    stored = await db_conn.fetchrow("SELECT recommendation, result FROM verdict_runs")
    assert stored["recommendation"] == "ship"
    assert stored["result"]["policies"][0]["recommendation"] == "ship"


async def test_decide_takes_a_reward_whose_square_underflows(db_conn):
    """A per-user total of 1e-170 is a valid reward (inside [0, 1]) whose square
    underflows float8 multiplication (PostgreSQL raises on it): the verdict's sum of
    squares goes through banditd_square, as every other sum of squares does."""
    experiment = await make_experiment_on(db_conn, policies=("thompson", "control"))
    await insert_decisions(db_conn, experiment.key, [
        ("thompson", "arm-0", "POLICY", 5, "t1"), ("control", "arm-1", "CONTROL", 5, "c1")])
    await db_conn.execute(
        """INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value, source,
               decided_at)
           SELECT decision_id, experiment_key, policy, arm, served_by, 1e-170, 'client',
                  decided_at FROM decisions"""
    )
    report = await run_verdict(db_conn, "exp")
    assert [v.recommendation for v in report.verdicts] == ["iterate"]


async def test_two_schedulers_never_claim_the_same_run(migrated_db_url):
    schedule = Schedule()
    first, second = await connect(migrated_db_url), await connect(migrated_db_url)
    try:
        await ensure_jobs(first, schedule)
        later = datetime.now(UTC) + timedelta(minutes=5)
        claims = await asyncio.gather(
            claim(first, "guardrails", later, "a"), claim(second, "guardrails", later, "b")
        )
        assert sorted(claims) == [False, True]
        assert not await claim(first, "guardrails", later, "a")  # not due again yet
    finally:
        await first.close()
        await second.close()


async def make_experiment_on(conn, **overrides):
    from banditd.server.experiment import ExperimentSpec
    from banditd.server.experiment_store import change_status, create_experiment
    from tests.conftest import ARMS

    fields = {"arms": ARMS, "policies": ("thompson", "ucb", "egreedy", "control"), **overrides}
    await create_experiment(conn, ExperimentSpec(id="exp", name="ops test", **fields), actor="t")
    return await change_status(conn, "exp", "start", actor="t")


def test_cli_guardrails_check_prints_a_table_and_exits_1_when_critical(banditctl, cli_db):
    created = banditctl("launch", "--name", "g", "--arms", "a,b", "--json")
    experiment = json.loads(created.output)

    async def breach():
        conn = await connect(cli_db)
        try:
            await insert_calls(conn, experiment["key"], "UNAVAILABLE", 5)
        finally:
            await conn.close()

    asyncio.run(breach())
    result = banditctl("guardrails", "check", experiment["id"], "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["error_rate"]["status"] == "critical"
    table = banditctl("guardrails", "check", experiment["id"])
    assert "error_rate" in table.output and "FAIL" in table.output


def test_cli_rollback_and_status(banditctl):
    experiment_id = banditctl("launch", "--name", "r", "--arms", "a,b").output.strip()
    rolled = banditctl("rollback", experiment_id, "--reason", "bad metrics", "--json")
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.output)["status"] == "rolled_back"
    again = banditctl("rollback", experiment_id, "--reason", "twice")
    assert again.exit_code == EXIT_STATE
    assert "it is rolled_back" in again.output

    status = banditctl("status", "--json")
    checks = {c["check"]: c for c in json.loads(status.output)["checks"]}
    assert checks["database"]["status"] == "OK"
    assert checks["schema"]["status"] == "OK"
    assert checks["servers"]["status"] == "FAIL"  # no banditd is running in this test
    assert status.exit_code == 1


def test_cli_status_sees_a_live_server_and_redis(cli_db, server_process):
    from click.testing import CliRunner

    from banditd.admin_cli.main import main

    proc = server_process(cli_db)
    proc.wait_serving()
    result = CliRunner().invoke(main, ["status", "--json", "--database-url", cli_db,
                                       "--redis-url", "redis://127.0.0.1:6379/0"])
    checks = {c["check"]: c for c in json.loads(result.output)["checks"]}
    assert checks["servers"]["status"] == "OK"
    assert f"127.0.0.1:{proc.port}" in checks["servers"]["detail"]
    assert checks["redis"]["status"] == "OK"
    assert checks["scheduler"]["status"] == "WARN"
    assert result.exit_code == 0
    assert proc.terminate() == 0
