"""The ``demo`` experiment that ``make serve`` creates on a fresh database."""

from __future__ import annotations

from banditd.server.experiment import ExperimentSpec
from banditd.server.experiment_store import (
    ExperimentNotFound,
    change_status,
    create_experiment,
    get_experiment,
)

DEMO_ID = "demo"

DEMO_SPEC = ExperimentSpec(
    id=DEMO_ID,
    name="Demo: which movie to recommend",
    arms=tuple(f"movie-{i:02d}" for i in range(1, 11)),
    policies=("thompson", "egreedy", "ucb", "control"),
    traffic_pct=1.0,
    reward_window_seconds=3600.0,
    salt="64656d6f64656d6f64656d6f64656d6f",
    notes="created by `banditd serve --create-demo`",
)


async def ensure_demo(conn) -> bool:
    """Create and start the demo experiment unless it exists; True when created."""
    try:
        await get_experiment(conn, DEMO_ID)
        return False
    except ExperimentNotFound:
        pass
    await create_experiment(conn, DEMO_SPEC, actor="banditd")
    await change_status(conn, DEMO_ID, "start", actor="banditd")
    return True
