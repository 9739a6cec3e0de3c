"""``banditctl experiment summary``: how an experiment is doing, from PostgreSQL.

Everything is read from the rollups (``banditd.server.rollups``), brought up to date
first: the cost grows with the experiment's days and arms, not with its decisions,
and the users are counted exactly (one rollup row per user).

Per policy: configured vs actual share of users, users and decisions, reward
rate with a 95 % confidence interval (Wilson for 0/1 rewards, t otherwise;
``banditd.admin_cli.stats.intervals``), cumulative reward; plus the latest guardrail
run and the time left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from banditd.admin_cli.stats.intervals import Interval, reward_interval
from banditd.admin_cli.stats.sufficient import SampleStats
from banditd.server.experiment import Experiment, utcnow
from banditd.server.experiment_store import get_experiment
from banditd.server.rollups import catch_up


@dataclass(frozen=True, slots=True)
class PolicySummary:
    policy: str
    configured_share: float
    actual_share: float | None
    users: int
    decisions: int
    rewards: SampleStats
    reward_ci: Interval | None

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "configured_share": self.configured_share,
            "actual_share": self.actual_share,
            "users": self.users,
            "decisions": self.decisions,
            "rewarded": self.rewards.n,
            "reward_rate": self.rewards.mean if self.rewards.n else None,
            "reward_ci": self.reward_ci.to_dict() if self.reward_ci else None,
            "cumulative_reward": self.rewards.sum,
        }


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    experiment: Experiment
    policies: list[PolicySummary]
    outside_traffic_users: int
    latest_guardrails: dict | None
    time_left_seconds: float | None

    def to_dict(self) -> dict:
        e = self.experiment
        return {
            "id": e.id, "name": e.spec.name, "status": e.status,
            "traffic_pct": e.spec.traffic_pct, "start_at": e.start_at, "end_at": e.end_at,
            "time_left_seconds": self.time_left_seconds,
            "outside_traffic_users": self.outside_traffic_users,
            "policies": [p.to_dict() for p in self.policies],
            "latest_guardrails": self.latest_guardrails,
        }


async def experiment_summary(conn: asyncpg.Connection, experiment_id: str) -> ExperimentSummary:
    experiment = await get_experiment(conn, experiment_id)
    key = experiment.key
    await catch_up(conn)
    usage = {
        r["policy"]: (r["users"], r["decisions"])
        for r in await conn.fetch(
            """SELECT policy, sum(users)::bigint AS users,
                      (SELECT coalesce(sum(decisions), 0) FROM rollup_arm_days a
                       WHERE a.experiment_key = u.experiment_key AND a.policy = u.policy
                         AND a.served_by IN ('POLICY', 'CONTROL'))::bigint AS decisions
               FROM rollup_user_days u WHERE experiment_key = $1 AND cohort = 'experiment'
               GROUP BY experiment_key, policy""",
            key,
        )
    }
    outside = await conn.fetchval(
        """SELECT coalesce(sum(users), 0)::bigint FROM rollup_user_days
           WHERE experiment_key = $1 AND cohort = 'outside'""",
        key,
    )
    rewards = {
        r["policy"]: SampleStats(r["n"], r["s"], r["ss"])
        for r in await conn.fetch(
            """SELECT policy, sum(rewards) AS n, sum(reward_sum) AS s,
                      sum(reward_sum_sq) AS ss
               FROM rollup_arm_days
               WHERE experiment_key = $1 AND served_by IN ('POLICY', 'CONTROL')
               GROUP BY policy HAVING sum(rewards) > 0""",
            key,
        )
    }
    total_users = sum(u for u, _ in usage.values())
    policies = []
    for name, share in zip(experiment.spec.policies, experiment.spec.policy_split, strict=True):
        users, decisions = usage.get(name, (0, 0))
        sample = rewards.get(name, SampleStats(0.0, 0.0, 0.0))
        ci = None
        if sample.n > 0:
            ci = reward_interval(sample)
        policies.append(PolicySummary(
            name, share, users / total_users if total_users else None, users, decisions,
            sample, ci,
        ))
    latest = await conn.fetchrow(
        """SELECT at, status, results, rolled_back FROM guardrail_runs
           WHERE experiment_id = $1 ORDER BY at DESC, id DESC LIMIT 1""",
        experiment_id,
    )
    return ExperimentSummary(
        experiment, policies, outside, dict(latest) if latest else None,
        _time_left(experiment, utcnow()),
    )


def _time_left(experiment: Experiment, now: datetime) -> float | None:
    if experiment.status != "running" or experiment.end_at is None:
        return None
    return max(0.0, (experiment.end_at - now).total_seconds())
