"""Committed arm statistics, adopted into memory by whichever path brings them first.

A *cell* is one ``arm_stats`` row as a committed transaction left it:
``(experiment_key, policy, arm, pulls, reward_sum, ...)``. Memory learns only from
cells — its own group commits (the statement returns the rows it wrote), other
replicas' commits through Redis, and the PostgreSQL poll — and takes a cell only when
it counts more rewards than memory does (``PolicyBase.adopt``). Because every committed
reward adds exactly one pull, the cell with more pulls holds every reward of the other,
so the order in which the three paths deliver, a repeat or a loss never double-counts or
moves memory backwards. (Adding a commit's own deltas instead would double-count
whenever another path delivered a cell that already held them first.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from banditd.server.registry import Registry

Cell = Sequence  # (experiment_key, policy, arm, pulls, reward_sum, ...)


def adopt_cells(
    registry: Registry, cells: Iterable[Cell], on_adopted: Callable[[Cell], None] | None = None
) -> int:
    """Adopt every cell that is ahead of memory; how many were. ``on_adopted`` sees each
    adopted cell (for the lag metric). Cells of experiments, policies or arms this
    server does not hold (deleted, or not loaded yet: the change feed loads them with
    their statistics) are skipped."""
    adopted = 0
    lookups: dict[tuple[int, str], tuple] = {}
    for cell in cells:
        key, policy_name = cell[0], cell[1]
        found = lookups.get((key, policy_name))
        if found is None:
            found = lookups[(key, policy_name)] = _policy_of(registry, key, policy_name)
        arm_index, kernel = found
        if kernel is None:
            continue
        index = arm_index.get(cell[2])
        if index is not None and kernel.adopt(index, cell[3], cell[4]):
            adopted += 1
            if on_adopted is not None:
                on_adopted(cell)
    return adopted


def _policy_of(registry: Registry, key: int, policy_name: str) -> tuple:
    """``(arm name -> index, kernel)`` of one policy under test, or ``({}, None)``."""
    runtime = registry.by_key(key)
    if runtime is not None:
        for policy in runtime.policies:
            if policy.name == policy_name:
                return runtime.arm_index, policy.kernel
    return {}, None
