"""banditd's Cython decision kernels.

Policies work on caller-owned per-arm statistics (``pulls``, ``reward_sum``: float64,
C-contiguous, length K) and return ``(arm_index, propensity)`` from ``select``::

    from core_ext import Rng, ThompsonPolicy
    pulls, reward_sum = np.zeros(3), np.zeros(3)
    policy = ThompsonPolicy(pulls, reward_sum, Rng(seed=7))
    arm, propensity = policy.select()           # or select(np.array([0, 2], dtype=np.intp))
    policy.update(arm, 1.0)

There is no pure-Python fallback: a missing extension is a build problem and fails
loudly with the command that fixes it.
"""

from __future__ import annotations

import importlib

_MODULES = (
    "_rng", "_arms", "_thompson", "_ucb", "_egreedy", "_control", "_hashing", "_signing",
    "_decision_rows", "_decide", "_wire",
)


def _load(name: str):
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        raise ImportError(
            f"banditd's compiled kernels are missing (core_ext.{name}); "
            "build them with `pip install -e .` (or `make test`)"
        ) from exc


(_rng, _arms, _thompson, _ucb, _egreedy, _control, _hashing, _signing, _decision_rows,
 _decide, _wire) = (_load(m) for m in _MODULES)

Rng = _rng.Rng
PolicyBase = _arms.PolicyBase
ThompsonPolicy = _thompson.ThompsonPolicy
UCB1Policy = _ucb.UCB1Policy
EpsilonGreedyPolicy = _egreedy.EpsilonGreedyPolicy
ControlPolicy = _control.ControlPolicy
hash64 = _hashing.hash64
assignment_bucket = _hashing.assignment_bucket
BUCKETS: int = _hashing.BUCKETS
DecisionSigner = _signing.DecisionSigner
decision_key_id = _signing.key_id_of
DECISION_ID_LENGTH: int = _signing.ENCODED_LENGTH
Decider = _decide.Decider
DecisionRows = _decision_rows.DecisionRows
DECISION_COLUMNS: tuple[str, ...] = _decision_rows.COLUMNS
COPY_HEADER: bytes = _decision_rows.COPY_HEADER
COPY_TRAILER: bytes = _decision_rows.COPY_TRAILER
WireFormatError = _wire.WireFormatError
parse_select_request = _wire.parse_select_request
parse_reward_request = _wire.parse_reward_request
select_response = _wire.select_response

__all__ = [
    "BUCKETS",
    "COPY_HEADER",
    "COPY_TRAILER",
    "DECISION_COLUMNS",
    "DECISION_ID_LENGTH",
    "ControlPolicy",
    "Decider",
    "DecisionRows",
    "DecisionSigner",
    "EpsilonGreedyPolicy",
    "PolicyBase",
    "Rng",
    "ThompsonPolicy",
    "UCB1Policy",
    "WireFormatError",
    "assignment_bucket",
    "decision_key_id",
    "hash64",
    "parse_reward_request",
    "parse_select_request",
    "select_response",
]
