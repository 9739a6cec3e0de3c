"""The compiled policies, loaded loudly.

Policies work on caller-owned per-arm statistics (``pulls``, ``reward_sum``: float64,
C-contiguous, length K) and return ``(arm_index, propensity)`` from ``select``::

    from banditd.core_ext.policies import Rng, ThompsonPolicy
    pulls, reward_sum = np.zeros(3), np.zeros(3)
    policy = ThompsonPolicy(pulls, reward_sum, Rng(seed=7))
    arm, propensity = policy.select()           # or select(np.array([0, 2], dtype=np.intp))
    policy.update(arm, 1.0)
"""

from __future__ import annotations

from banditd.core_ext import load_compiled

_rng, _arms, _sample_ranks, _thompson, _ucb, _egreedy, _control = (
    load_compiled(f"banditd.core_ext.policies.{name}")
    for name in ("_rng", "_arms", "_sample_ranks", "_thompson", "_ucb", "_egreedy", "_control")
)

Rng = _rng.Rng
PolicyBase = _arms.PolicyBase
ThompsonPolicy = _thompson.ThompsonPolicy
UCB1Policy = _ucb.UCB1Policy
EpsilonGreedyPolicy = _egreedy.EpsilonGreedyPolicy
ControlPolicy = _control.ControlPolicy
# Thompson's subset caches share one process-wide memory budget (``_sample_ranks``).
subset_cache_bytes = _sample_ranks.bytes_in_use
subset_cache_budget = _sample_ranks.budget
set_subset_cache_budget = _sample_ranks.set_budget

__all__ = [
    "ControlPolicy",
    "EpsilonGreedyPolicy",
    "PolicyBase",
    "Rng",
    "ThompsonPolicy",
    "UCB1Policy",
    "set_subset_cache_budget",
    "subset_cache_budget",
    "subset_cache_bytes",
]
