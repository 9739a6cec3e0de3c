"""The runbook's Python entry points, called as plain functions (as from a prompt)."""

import asyncio

import pytest

from banditd.admin_cli import runbook
from banditd.server.database import connect
from banditd.server.experiment_store import ExperimentNotFound, get_experiment
from tests.conftest import make_experiment


def test_status_guardrails_decision_and_rollback(cli_db):
    asyncio.run(make_experiment(cli_db, policies=("thompson", "control")))

    status = runbook.get_experiment_status(cli_db, "exp")
    assert status["status"] == "running"
    assert [p["policy"] for p in status["policies"]] == ["thompson", "control"]

    guardrails = runbook.check_experiment_guardrails(cli_db, "exp")
    assert [c["name"] for c in guardrails["checks"]] == [
        "error_rate", "p95_latency_ms", "arm_share", "reward_drop"]
    assert guardrails["status"] == "insufficient_data"  # no traffic yet

    verdict = runbook.analyze_experiment_decision(cli_db, "exp")
    assert verdict["policies"][0]["recommendation"] == "iterate"

    result = runbook.rollback_experiment(cli_db, "exp", reason="runbook drill")
    assert result["status"] == "rolled_back"

    async def stored():
        conn = await connect(cli_db)
        try:
            return await get_experiment(conn, "exp")
        finally:
            await conn.close()

    experiment = asyncio.run(stored())
    assert (experiment.status, experiment.status_reason) == ("rolled_back", "runbook drill")


def test_unknown_experiment_raises_not_found(cli_db):
    with pytest.raises(ExperimentNotFound):
        runbook.get_experiment_status(cli_db, "missing")
