"""The policy table: names, wire codes, validated parameters, and the kernel for each.

The parameter dataclasses are what experiment configs are validated against (the
server imports them); ``make_kernel`` builds the compiled policy that the server, the
replay and the off-policy evaluation all run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeAlias, get_args

import numpy as np

from banditd.core_ext.policies.kernels import (
    ControlPolicy,
    EpsilonGreedyPolicy,
    PolicyBase,
    Rng,
    ThompsonPolicy,
    UCB1Policy,
)

# The one list of policy names. Its order is each policy's wire code (the policy byte
# of a decision id, ``POLICY_CODES``): a new policy goes at the end, none is reordered.
PolicyName: TypeAlias = Literal["thompson", "ucb", "egreedy", "control"]
POLICY_NAMES: tuple[PolicyName, ...] = get_args(PolicyName)
POLICY_CODES: dict[str, int] = {name: code for code, name in enumerate(POLICY_NAMES)}


def finite_number(name: str, value: object) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is a finite number (a
    bool is not one). Shared by every parameter and threshold check."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ThompsonParams:
    """Beta(alpha0, beta0) prior of Beta–Bernoulli Thompson sampling; both > 0."""

    alpha0: float = 1.0
    beta0: float = 1.0

    def __post_init__(self) -> None:
        for name in ("alpha0", "beta0"):
            if finite_number(name, getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class UCBParams:
    """UCB1 exploration constant c >= 0 (sqrt(2) in Auer et al. 2002)."""

    c: float = math.sqrt(2.0)

    def __post_init__(self) -> None:
        if finite_number("c", self.c) < 0:
            raise ValueError(f"c must be >= 0, got {self.c!r}")


@dataclass(frozen=True, slots=True)
class EpsilonGreedyParams:
    """ε-greedy: eps_t = epsilon / (1 + decay * total_pulls); epsilon in [0, 1], decay >= 0."""

    epsilon: float = 0.1
    decay: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= finite_number("epsilon", self.epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if finite_number("decay", self.decay) < 0:
            raise ValueError(f"decay must be >= 0, got {self.decay!r}")


@dataclass(frozen=True, slots=True)
class ControlParams:
    """Control: a fixed default arm by name, or None for uniform over the candidates."""

    default_arm: str | None = None

    def __post_init__(self) -> None:
        if self.default_arm is not None and (
            not isinstance(self.default_arm, str) or not self.default_arm
        ):
            raise ValueError(
                f"default_arm must be a non-empty arm name or None, got {self.default_arm!r}"
            )


PolicyParams: TypeAlias = ThompsonParams | UCBParams | EpsilonGreedyParams | ControlParams

PARAMS_TYPES: dict[str, type] = dict(zip(
    POLICY_NAMES, (ThompsonParams, UCBParams, EpsilonGreedyParams, ControlParams), strict=True
))


def check_name(name: str) -> None:
    if name not in PARAMS_TYPES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


def params_from_dict(name: str, params: Mapping[str, Any] | None = None) -> PolicyParams:
    """Validated parameter object for policy ``name``; ValueError on unknown names/keys."""
    check_name(name)
    cls = PARAMS_TYPES[name]
    params = dict(params or {})
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for policy {name!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    return cls(**params)


def make_kernel(
    name: str,
    params: PolicyParams,
    pulls: np.ndarray,
    reward_sum: np.ndarray,
    rng: Rng,
    arms: Sequence[str] = (),
) -> PolicyBase:
    """Build the compiled policy for ``name`` over caller-owned statistics.

    ``arms`` (the arm names, index-aligned with the arrays) is only used to resolve
    ``ControlParams.default_arm``; a default arm that is not (yet) among them behaves
    as "not a candidate", i.e. uniform.
    """
    check_name(name)
    if not isinstance(params, PARAMS_TYPES[name]):
        raise ValueError(
            f"policy {name!r} takes {PARAMS_TYPES[name].__name__}, got {type(params).__name__}"
        )
    if isinstance(params, ThompsonParams):
        return ThompsonPolicy(pulls, reward_sum, rng, alpha0=params.alpha0, beta0=params.beta0)
    if isinstance(params, UCBParams):
        return UCB1Policy(pulls, reward_sum, rng, c=params.c)
    if isinstance(params, EpsilonGreedyParams):
        return EpsilonGreedyPolicy(
            pulls, reward_sum, rng, epsilon=params.epsilon, decay=params.decay
        )
    names = list(arms)
    default = names.index(params.default_arm) if params.default_arm in names else -1
    return ControlPolicy(pulls, reward_sum, rng, default_arm=default)


__all__ = [
    "PARAMS_TYPES",
    "POLICY_CODES",
    "POLICY_NAMES",
    "ControlParams",
    "EpsilonGreedyParams",
    "PolicyName",
    "PolicyParams",
    "ThompsonParams",
    "UCBParams",
    "check_name",
    "finite_number",
    "make_kernel",
    "params_from_dict",
]
