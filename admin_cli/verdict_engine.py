"""``banditctl decide``: load an experiment's data and run the verdict engine.

The unit of analysis is the user (observations are then independent even when
users return): each user's outcome is the sum of the rewards of their
decisions, and a user belongs to the day of their first decision. Day 0 is the
experiment's start day; the cumulative days are the looks of the sequential
test (``banditd.admin_cli.stats.verdict``). Users are counted per policy for the
sample-ratio-mismatch test. All of it is read from the user
rollup (``banditd.server.rollups``, exact: one row per user, summed per day as users
arrive and their totals grow), so a run costs what the experiment's days and policies
cost, not its decisions.

The guardrail state fed to the engine comes from the stored guardrail runs:
``failing`` when each of the last three runs had a critical check, ``degraded``
when the latest had a warning or a critical check, ``healthy`` when it had
neither, ``unknown`` without runs.
"""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from banditd.admin_cli.stats.sufficient import SampleStats
from banditd.admin_cli.stats.verdict import (
    PolicyData,
    VerdictCriteria,
    VerdictReport,
    reach_verdict,
)
from banditd.server.experiment_store import get_experiment
from banditd.server.rollups import catch_up

_FAILING_RUNS = 3

# The per-user sufficient statistics per policy and day, from the user rollup
# (``rollup_user_days``: users by the experiment day of their first decision; n the
# users with a reward, s and ss the sum and sum of squares of their totals).
_PER_USER = """
SELECT policy, day, sum(users)::float8 AS users, sum(n)::float8 AS n,
       sum(s)::float8 AS s, sum(ss)::float8 AS ss
FROM rollup_user_days
WHERE experiment_key = $1 AND cohort = 'experiment'
GROUP BY policy, day HAVING sum(users) > 0
ORDER BY day
"""


async def guardrail_state(conn: asyncpg.Connection, experiment_id: str) -> str:
    runs = await conn.fetch(
        """SELECT status FROM guardrail_runs WHERE experiment_id = $1
           ORDER BY at DESC, id DESC LIMIT $2""",
        experiment_id, _FAILING_RUNS,
    )
    if not runs:
        return "unknown"
    if len(runs) == _FAILING_RUNS and all(r["status"] == "critical" for r in runs):
        return "failing"
    return "degraded" if runs[0]["status"] in ("warn", "critical") else "healthy"


async def load_policy_data(conn: asyncpg.Connection, experiment) -> list[PolicyData]:
    start = experiment.start_at
    if start is None:
        return [PolicyData(name, SampleStats.empty(), 0.0) for name in experiment.spec.policies]
    await catch_up(conn)
    rows = await conn.fetch(_PER_USER, experiment.key)
    days = max((r["day"] for r in rows), default=-1) + 1
    daily: dict[str, list[SampleStats]] = defaultdict(lambda: [SampleStats.empty()] * days)
    daily_users: dict[str, list[float]] = defaultdict(lambda: [0.0] * days)
    for r in rows:
        daily[r["policy"]][r["day"]] = SampleStats(r["n"], r["s"], r["ss"])
        daily_users[r["policy"]][r["day"]] = r["users"]
    data = []
    for name in experiment.spec.policies:
        series = daily[name]
        total = SampleStats.empty()
        for day in series:
            total = total + day
        data.append(PolicyData(name, total, sum(daily_users[name]), tuple(series),
                               tuple(daily_users[name])))
    return data


async def run_verdict(
    conn: asyncpg.Connection, experiment_id: str, *, record: bool = True
) -> VerdictReport:
    """Analyse every bandit policy against control; store the run."""
    experiment = await get_experiment(conn, experiment_id)
    spec = experiment.spec
    if "control" not in spec.policies:
        raise ValueError(
            f"experiment {experiment_id!r} has no control policy to compare against"
        )
    report = reach_verdict(
        await load_policy_data(conn, experiment),
        control="control",
        split=dict(zip(spec.policies, spec.policy_split, strict=True)),
        criteria=VerdictCriteria.from_dict(spec.verdict_criteria),
        guardrails=await guardrail_state(conn, experiment_id),
    )
    if record:
        await conn.execute(
            """INSERT INTO verdict_runs (experiment_id, recommendation, result)
               VALUES ($1, $2, $3)""",
            experiment_id, overall_recommendation(report), report.to_dict(),
        )
    return report


def overall_recommendation(report: VerdictReport) -> str:
    """One word for the experiment: ship if any policy ships, kill if all are killed."""
    verdicts = [v.recommendation for v in report.verdicts]
    if "ship" in verdicts:
        return "ship"
    if verdicts and all(v == "kill" for v in verdicts):
        return "kill"
    return "iterate"
