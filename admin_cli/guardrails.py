"""The guardrail job: read a sliding window from PostgreSQL, judge, record, roll back.

What each check reads (window = the last ``window_seconds``, default 5 minutes):

- error rate: ``rpc_counts`` of the experiment; errors are the calls that failed on
  the server's side (INTERNAL, UNKNOWN, UNAVAILABLE, RESOURCE_EXHAUSTED,
  DEADLINE_EXCEEDED, DATA_LOSS); requests are all calls. A client's bad request
  (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION) is answered correctly and is
  not a server error.
- P95 latency: the 95th percentile of the server-side latency of the experiment's
  decisions in the window, from the latency histogram (``_P95_LATENCY``).
- arm share: decisions per arm among the decisions served by the experiment's
  policies (``POLICY``/``CONTROL``) in the window.
- reward drop: reward statistics per policy over rewards committed in the window.

The window is whole minutes (it starts at the minute ``window_seconds`` ago), and
everything but the error rate is read from the per-minute rollups
(``banditd.server.rollups``, brought up to date first), so a check costs the same
whatever the traffic.

The pure judgement (thresholds, confidence bounds, the rollback rule) is in
``banditd.admin_cli.stats.guardrail_rules``. Every run is stored in ``guardrail_runs``;
every critical check appends ``GUARDRAIL FAIL <experiment> <check> value=...
threshold=...`` to ``guardrails.log`` (warnings: ``GUARDRAIL WARN ...``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg

from banditd.admin_cli.stats.guardrail_rules import (
    CheckResult,
    GuardrailInputs,
    GuardrailThresholds,
    RollbackDecision,
    rollback_decision,
    run_checks,
)
from banditd.admin_cli.stats.sufficient import SampleStats
from banditd.server.database import connect
from banditd.server.experiment import Experiment
from banditd.server.experiment_store import InvalidTransition, change_status, get_experiment
from banditd.server.rollups import catch_up

log = logging.getLogger("banditd.guardrails")

DEFAULT_WINDOW_SECONDS = 300.0
SERVER_ERROR_CODES = (
    "INTERNAL", "UNKNOWN", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "DATA_LOSS",
)


class RollbackFailed(RuntimeError):
    """An automatic or manual rollback could not be applied after every retry."""


@dataclass(frozen=True, slots=True)
class GuardrailReport:
    experiment_id: str
    window_seconds: float
    checks: list[CheckResult]
    decision: RollbackDecision
    rolled_back: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        for level in ("critical", "warn", "ok"):
            if level in statuses:
                return level
        return "insufficient_data"

    def to_dict(self) -> dict:
        return {
            "experiment_id": self.experiment_id,
            "window_seconds": self.window_seconds,
            "status": self.status,
            "checks": [c.to_dict() for c in self.checks],
            "rollback": self.decision.to_dict(),
            "rolled_back": self.rolled_back,
            "notes": self.notes,
        }


# The 95th percentile of the window's latencies from the latency rollup: the upper edge
# of the histogram bucket holding the sample that percentile_cont would reach last
# (rank ceil(0.95 (n - 1)), 0-based), so the value is never below the exact percentile
# and, buckets being 2^(1/16) wide, at most 4.4 % above that sample. $2: the window's
# first minute (whole minutes, as the error rate's counters).
_P95_LATENCY = """
WITH buckets AS (
    SELECT bucket, sum(decisions) AS n FROM rollup_latency_minutes
    WHERE experiment_key = $1 AND minute >= $2 GROUP BY bucket
),
cumulative AS (
    SELECT bucket, sum(n) OVER (ORDER BY bucket) AS below, sum(n) OVER () AS total
    FROM buckets
)
SELECT (SELECT power(2.0, (bucket + 1) / 16.0) FROM cumulative
        WHERE below >= ceil(0.95 * (total - 1)) + 1 ORDER BY bucket LIMIT 1)::float8,
       coalesce((SELECT max(total) FROM cumulative), 0)::float8
"""


async def gather_inputs(
    conn: asyncpg.Connection, experiment: Experiment, window_seconds: float
) -> GuardrailInputs:
    """Read the window's numbers for the four checks."""
    key = experiment.key
    await catch_up(conn)
    since = await conn.fetchval(
        "SELECT date_trunc('minute', now() - make_interval(secs => $1))", window_seconds)
    errors, requests = await conn.fetchrow(
        """SELECT coalesce(sum(calls) FILTER (WHERE code = ANY($3)), 0)::float8,
                  coalesce(sum(calls), 0)::float8
           FROM rpc_counts WHERE experiment_key = $1 AND minute >= $2""",
        key, since, list(SERVER_ERROR_CODES),
    )
    p95_us, decisions = await conn.fetchrow(_P95_LATENCY, key, since)
    arm_rows = await conn.fetch(
        """SELECT arm, sum(decisions)::float8 AS n FROM rollup_decision_minutes
           WHERE experiment_key = $1 AND minute >= $2 AND served_by IN ('POLICY', 'CONTROL')
           GROUP BY arm""",
        key, since,
    )
    reward_rows = await conn.fetch(
        """SELECT policy, sum(rewards) AS n, sum(reward_sum) AS s, sum(reward_sum_sq) AS ss
           FROM rollup_reward_minutes
           WHERE experiment_key = $1 AND minute >= $2 AND served_by IN ('POLICY', 'CONTROL')
           GROUP BY policy""",
        key, since,
    )
    return GuardrailInputs(
        errors=errors,
        requests=requests,
        p95_latency_ms=None if p95_us is None else p95_us / 1000.0,
        decisions=decisions,
        arm_counts={r["arm"]: r["n"] for r in arm_rows},
        rewards={
            # Every policy is present (empty when it has no rewards in the window), and
            # control too, so an experiment without control reads "insufficient data".
            **{name: SampleStats.empty() for name in (*experiment.spec.policies, "control")},
            **{r["policy"]: SampleStats(r["n"], r["s"], r["ss"]) for r in reward_rows},
        },
        control="control",
    )


async def check_guardrails(
    conn: asyncpg.Connection,
    experiment_id: str,
    *,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    consecutive: int = 3,
    record: bool = True,
) -> GuardrailReport:
    """Run the four checks on one experiment, store the run, log failures.

    Returns the report with the rollback decision; applying it is the caller's
    choice (``run_guardrail_job`` applies it).
    """
    experiment = await get_experiment(conn, experiment_id)
    thresholds = GuardrailThresholds.from_dict(experiment.spec.guardrails)
    inputs = await gather_inputs(conn, experiment, window_seconds)
    checks = run_checks(inputs, thresholds)
    previous = await conn.fetch(
        """SELECT results FROM guardrail_runs WHERE experiment_id = $1
           ORDER BY at DESC, id DESC LIMIT $2""",
        experiment_id, max(consecutive - 1, 0),
    )
    history = [[CheckResult(**c) for c in row["results"]] for row in reversed(previous)]
    decision = rollback_decision([*history, checks], consecutive=consecutive)
    report = GuardrailReport(experiment_id, window_seconds, checks, decision)
    if record:
        await conn.execute(
            """INSERT INTO guardrail_runs (experiment_id, window_seconds, status, results, reasons)
               VALUES ($1, $2, $3, $4, $5)""",
            experiment_id, window_seconds, report.status, [c.to_dict() for c in checks],
            decision.reasons,
        )
        for check in checks:
            if check.status in ("critical", "warn"):
                word, level = ("FAIL", logging.ERROR) if check.status == "critical" else (
                    "WARN", logging.WARNING)
                log.log(level, "GUARDRAIL %s %s %s value=%s threshold=%s %s", word,
                        experiment_id, check.name, _fmt(check.value),
                        _fmt(check.breached_threshold), check.detail)
    return report


async def rollback_with_retry(
    database_url: str,
    experiment_id: str,
    reason: str,
    *,
    actor: str | None = None,
    attempts: int = 5,
    base_delay: float = 0.5,
) -> Experiment:
    """Roll back, retrying with exponential backoff when PostgreSQL is unreachable.

    Each attempt opens a fresh connection, so a database that comes back is used at
    once. After ``attempts`` failures the rollback is logged CRITICAL and
    ``RollbackFailed`` is raised (``banditctl`` exits non-zero).
    """
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            conn = await connect(database_url, timeout=5)
            try:
                return await change_status(
                    conn, experiment_id, "rollback", actor=actor, reason=reason
                )
            finally:
                await conn.close()
        except InvalidTransition:
            raise
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            if isinstance(exc, asyncpg.PostgresError) and not _is_connection_error(exc):
                raise
            last_error = exc
            log.warning("rollback of %s failed (attempt %d/%d): %s",
                        experiment_id, attempt, attempts, exc)
            if attempt < attempts:
                await asyncio.sleep(base_delay * 2 ** (attempt - 1))
    log.critical("ROLLBACK FAILED %s after %d attempts: %s (reason: %s)",
                 experiment_id, attempts, last_error, reason)
    raise RollbackFailed(
        f"could not roll back {experiment_id} after {attempts} attempts: {last_error}"
    )


def _is_connection_error(exc: asyncpg.PostgresError) -> bool:
    sqlstate = getattr(exc, "sqlstate", "") or ""
    # Class 08: connection exception; 57P: operator intervention (shutdown, terminated).
    return sqlstate.startswith("08") or sqlstate.startswith("57P")


async def run_guardrail_job(
    database_url: str,
    experiment_id: str,
    *,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    consecutive: int = 3,
    auto_rollback: bool = True,
    attempts: int = 5,
    base_delay: float = 0.5,
) -> GuardrailReport:
    """Check one experiment and, when the rollback rule fires, roll it back."""
    conn = await connect(database_url)
    try:
        report = await check_guardrails(
            conn, experiment_id, window_seconds=window_seconds, consecutive=consecutive
        )
        experiment = await get_experiment(conn, experiment_id)
    finally:
        await conn.close()
    if not (auto_rollback and report.decision.should_roll_back):
        return report
    if experiment.status != "running":
        report.notes.append(f"rollback rule fired but experiment is {experiment.status}")
        return report
    reason = "automatic rollback: " + "; ".join(report.decision.reasons)
    await rollback_with_retry(
        database_url, experiment_id, reason, actor="guardrails", attempts=attempts,
        base_delay=base_delay,
    )
    conn = await connect(database_url)
    try:
        await conn.execute(
            """UPDATE guardrail_runs SET rolled_back = true
               WHERE id = (SELECT max(id) FROM guardrail_runs WHERE experiment_id = $1)""",
            experiment_id,
        )
    finally:
        await conn.close()
    return GuardrailReport(
        report.experiment_id, report.window_seconds, report.checks, report.decision,
        rolled_back=True, notes=report.notes,
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"
