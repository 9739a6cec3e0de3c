"""Synthetic logged decisions of an experiment, written into a real database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from banditd.server.experiment import ExperimentSpec
from banditd.server.experiment_store import create_experiment
from banditd.server.log_partitions import ensure_partitions

ARMS = ("a", "b", "c")
MEANS = (0.2, 0.5, 0.8)  # P(reward = reward_max) per arm
REWARD_MAX = 10.0


async def write_logged_experiment(
    conn: asyncpg.Connection,
    experiment_id: str = "exp-ope",
    *,
    n_control: int = 3000,
    n_egreedy: int = 600,
    n_pending: int = 7,
    seed: int = 0,
    step: timedelta = timedelta(seconds=1),
) -> None:
    """An experiment with arms a, b, c and rewards 0 or 10 (P = 0.2, 0.5, 0.8).

    ``n_control`` decisions by uniform control (propensity 1/3), ``n_egreedy`` by an
    ε-greedy (ε = 0.3) that favours ``c`` (propensity 0.8 for c, 0.1 otherwise),
    ``n_pending`` more without a reward yet, and one decision naming an arm the
    experiment does not have.
    """
    spec = ExperimentSpec(
        id=experiment_id, name="OPE test", arms=ARMS, policies=("egreedy", "control"),
        policy_params={"egreedy": {"epsilon": 0.3}}, reward_min=0.0, reward_max=REWARD_MAX,
    )
    experiment = await create_experiment(conn, spec)
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    last = t0 + (n_control + n_egreedy + n_pending) * step
    await ensure_partitions(conn, t0.date(), last.date())
    decisions, rewards = [], []

    def add(i: int, policy: str, arm: str, propensity: float, rewarded: bool) -> None:
        decision_id = f"{experiment_id}-{i}"
        at = t0 + i * step
        served_by = "CONTROL" if policy == "control" else "POLICY"
        decisions.append((decision_id, experiment.key, f"user{i}", policy, arm, propensity,
                          served_by, at, 100, "test"))
        if rewarded:
            mean = MEANS[ARMS.index(arm)] if arm in ARMS else 0.5
            value = REWARD_MAX * float(rng.random() < mean)
            rewards.append((decision_id, experiment.key, policy, arm, served_by, value,
                            "client", at))

    i = 0
    for _ in range(n_control):
        add(i, "control", ARMS[rng.integers(3)], 1 / 3, True)
        i += 1
    for _ in range(n_egreedy):
        arm = "c" if rng.random() < 0.8 else ARMS[rng.integers(2)]
        add(i, "egreedy", arm, 0.8 if arm == "c" else 0.1, True)
        i += 1
    for _ in range(n_pending):
        add(i, "control", ARMS[rng.integers(3)], 1 / 3, False)
        i += 1
    add(i, "control", "retired-arm", 1 / 3, True)
    await conn.executemany(
        """INSERT INTO decisions (decision_id, experiment_key, user_id, policy, arm, propensity,
                                  served_by, decided_at, latency_us, server_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        decisions,
    )
    await conn.executemany(
        """INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value,
                                source, decided_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        rewards,
    )


# ----------------------------------------------------------------- candidate subsets

SUBSET_ARMS = ("m0", "m1", "m2", "m3", "m4", "m5")
SUBSET_MEANS = (0.10, 0.25, 0.40, 0.55, 0.70, 0.85)  # P(reward = 1) per arm
SUBSET_EPSILON = 0.3  # the experiment's (and the ε-greedy logger's) epsilon


@dataclass(frozen=True)
class SubsetLog:
    """What :func:`write_subset_logged_experiment` wrote, for computing true values.

    ``candidates[i]`` is the arm indices decision ``i`` chose from (all arms for a
    full-set request), in the order the decisions were written (= decided_at order).
    """

    candidates: tuple[tuple[int, ...], ...]
    n_full: int  # decisions written with candidates NULL

    def true_value(self, policy: str) -> float:
        """Mean over the logged requests of the policy's expected reward when it
        chooses among that request's candidates (the arm means are known)."""
        mu = np.asarray(SUBSET_MEANS)
        values = []
        for cand in self.candidates:
            m = mu[list(cand)]
            if policy in ("uniform", "control"):
                values.append(m.mean())
            elif policy == "greedy":
                values.append(m.max())
            elif policy == "egreedy":
                values.append((1 - SUBSET_EPSILON) * m.max() + SUBSET_EPSILON * m.mean())
            else:
                raise ValueError(policy)
        return float(np.mean(values))


async def write_subset_logged_experiment(
    conn: asyncpg.Connection,
    experiment_id: str = "exp-subsets",
    *,
    n: int = 6000,
    n_users: int = 60,
    full_share: float = 0.1,
    egreedy_share: float = 0.25,
    seed: int = 1,
    step: timedelta = timedelta(seconds=1),
) -> SubsetLog:
    """An experiment with 6 arms (P(reward = 1) = 0.10 ... 0.85, rewards 0 or 1)
    whose requests mostly offer a per-user candidate subset, as ``Select`` with
    ``candidate_arms`` does (the demo offers the movies a user rated).

    Each of ``n_users`` users has a fixed subset of 2 to 4 arms; each decision picks
    a user at random. A ``full_share`` of the requests offer every arm (candidates
    NULL). Decisions are served by uniform control (propensity ``1/|C|``) or, for an
    ``egreedy_share``, by an ε-greedy logger (ε = 0.3) over the candidates that
    exploits the truly best candidate (propensity ``0.3/|C| + 0.7 [a best]``): the
    logged propensity is always the probability *among the offered arms*. Decision
    ``i`` is made at 2026-01-01 + ``i * step``.
    """
    spec = ExperimentSpec(
        id=experiment_id, name="OPE subsets", arms=SUBSET_ARMS,
        policies=("egreedy", "control"), policy_params={"egreedy": {"epsilon": SUBSET_EPSILON}},
        reward_min=0.0, reward_max=1.0,
    )
    experiment = await create_experiment(conn, spec)
    rng = np.random.default_rng(seed)
    k = len(SUBSET_ARMS)
    user_sets = [
        tuple(sorted(rng.choice(k, size=int(rng.integers(2, 5)), replace=False).tolist()))
        for _ in range(n_users)
    ]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    await ensure_partitions(conn, t0.date(), (t0 + n * step).date())
    decisions, rewards, offered = [], [], []
    for i in range(n):
        user = int(rng.integers(n_users))
        full = rng.random() < full_share
        cand = tuple(range(k)) if full else user_sets[user]
        m = len(cand)
        best = max(cand, key=lambda a: SUBSET_MEANS[a])
        if rng.random() < egreedy_share:
            policy, served_by = "egreedy", "POLICY"
            arm = best if rng.random() >= SUBSET_EPSILON else cand[int(rng.integers(m))]
            propensity = SUBSET_EPSILON / m + (1 - SUBSET_EPSILON) * (arm == best)
        else:
            policy, served_by = "control", "CONTROL"
            arm = cand[int(rng.integers(m))]
            propensity = 1.0 / m
        decision_id = f"{experiment_id}-{i}"
        at = t0 + i * step
        names = None if full else [SUBSET_ARMS[a] for a in cand]
        decisions.append((decision_id, experiment.key, f"user{user}", policy, SUBSET_ARMS[arm],
                          propensity, served_by, at, 100, "test", names))
        value = float(rng.random() < SUBSET_MEANS[arm])
        rewards.append((decision_id, experiment.key, policy, SUBSET_ARMS[arm], served_by, value,
                        "client", at))
        offered.append(cand)
    await conn.executemany(
        """INSERT INTO decisions (decision_id, experiment_key, user_id, policy, arm, propensity,
                                  served_by, decided_at, latency_us, server_id, candidates)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        decisions,
    )
    await conn.executemany(
        """INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value,
                                source, decided_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        rewards,
    )
    return SubsetLog(tuple(offered), sum(len(c) == k for c in offered))
