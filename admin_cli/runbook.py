"""The runbook's Python entry points, for use from a prompt.

Each is a plain function taking a database URL (``None``: the embedded
PostgreSQL under ``data_dir``) and an experiment id, and returning a dict::

    python -c "
    from banditd.admin_cli.runbook import rollback_experiment
    print(rollback_experiment('postgresql://db/banditd', 'bandit-test-v1-3f2a9c', reason='...'))
    "

They do exactly what the matching ``banditctl`` command does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from banditd.admin_cli.cli_support import to_jsonable
from banditd.admin_cli.guardrails import (
    DEFAULT_WINDOW_SECONDS,
    check_guardrails,
    rollback_with_retry,
)
from banditd.admin_cli.summary import experiment_summary
from banditd.server.database import connect, resolve_database_url
from banditd.server.experiment_store import current_actor


def _url(database_url: str | None, data_dir: str | None) -> str:
    return resolve_database_url(database_url, data_dir)


async def _with_conn(url: str, work):
    conn = await connect(url)
    try:
        return await work(conn)
    finally:
        await conn.close()


def get_experiment_status(
    database_url: str | None, experiment_id: str, *, data_dir: str | None = None
) -> dict[str, Any]:
    """The experiment's summary: split, users, reward rates with CIs, guardrails, time left."""
    url = _url(database_url, data_dir)
    summary = asyncio.run(_with_conn(url, lambda c: experiment_summary(c, experiment_id)))
    return to_jsonable(summary.to_dict())


def check_experiment_guardrails(
    database_url: str | None,
    experiment_id: str,
    *,
    data_dir: str | None = None,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> dict[str, Any]:
    """Run and record the four guardrail checks (without rolling back)."""
    url = _url(database_url, data_dir)
    report = asyncio.run(_with_conn(
        url, lambda c: check_guardrails(c, experiment_id, window_seconds=window_seconds)
    ))
    return to_jsonable(report.to_dict())


def analyze_experiment_decision(
    database_url: str | None, experiment_id: str, *, data_dir: str | None = None
) -> dict[str, Any]:
    """Ship / iterate / kill per bandit policy vs control, recorded like `banditctl decide`."""
    from banditd.admin_cli.verdict_engine import run_verdict

    url = _url(database_url, data_dir)
    report = asyncio.run(_with_conn(url, lambda c: run_verdict(c, experiment_id)))
    return to_jsonable(report.to_dict())


def rollback_experiment(
    database_url: str | None,
    experiment_id: str,
    *,
    reason: str = "emergency rollback from the runbook",
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Roll back now: end_at = now, every server moves the users to control within a second."""
    url = _url(database_url, data_dir)
    experiment = asyncio.run(rollback_with_retry(url, experiment_id, reason, actor=current_actor()))
    return {"id": experiment.id, "status": experiment.status,
            "end_at": experiment.end_at.isoformat(), "reason": reason}
