"""The bandit policies: compiled kernels, the policy table, and named-arm policies.

See :mod:`.kernels` for the kernel API, :mod:`.catalog` for names, codes and
parameters, and :mod:`.named` for the operator's ``get_policy``.
"""

from __future__ import annotations

from banditd.core_ext.policies.catalog import (
    PARAMS_TYPES,
    POLICY_CODES,
    POLICY_NAMES,
    ControlParams,
    EpsilonGreedyParams,
    PolicyName,
    PolicyParams,
    ThompsonParams,
    UCBParams,
    finite_number,
    make_kernel,
    params_from_dict,
)
from banditd.core_ext.policies.kernels import (
    ControlPolicy,
    EpsilonGreedyPolicy,
    PolicyBase,
    Rng,
    ThompsonPolicy,
    UCB1Policy,
    set_subset_cache_budget,
    subset_cache_budget,
    subset_cache_bytes,
)
from banditd.core_ext.policies.named import Decision, Policy, get_policy

__all__ = [
    "PARAMS_TYPES",
    "POLICY_CODES",
    "POLICY_NAMES",
    "ControlParams",
    "ControlPolicy",
    "Decision",
    "EpsilonGreedyParams",
    "EpsilonGreedyPolicy",
    "Policy",
    "PolicyBase",
    "PolicyName",
    "PolicyParams",
    "Rng",
    "ThompsonParams",
    "ThompsonPolicy",
    "UCB1Policy",
    "UCBParams",
    "finite_number",
    "get_policy",
    "make_kernel",
    "params_from_dict",
    "set_subset_cache_budget",
    "subset_cache_budget",
    "subset_cache_bytes",
]
