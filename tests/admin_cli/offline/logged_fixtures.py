"""Synthetic logged decisions of an experiment, written into a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from server.experiment import ExperimentSpec
from server.experiment_store import create_experiment

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
    decisions, rewards = [], []

    def add(i: int, policy: str, arm: str, propensity: float, rewarded: bool) -> None:
        decision_id = f"{experiment_id}-{i}"
        at = t0 + timedelta(seconds=i)
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
