"""Operator façade over the kernels, and the validated policy parameters.

The parameter dataclasses are what experiment configs are validated against (the
server imports them); ``get_policy`` is the runbook's debug command::

    >>> from core_ext.policies import get_policy
    >>> policy = get_policy("thompson", {"alpha0": 1.0, "beta0": 1.0}, seed=7)
    >>> decision = policy.select({}, ["arm1", "arm2"])
    >>> policy.update(decision.arm, 1.0)

Arms are registered by name on first sight; the statistics arrays grow (doubling) and
the kernel is rebuilt over them when they do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeAlias, get_args

import numpy as np

from core_ext import (
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


def _check_name(name: str) -> None:
    if name not in PARAMS_TYPES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


def params_from_dict(name: str, params: Mapping[str, Any] | None = None) -> PolicyParams:
    """Validated parameter object for policy ``name``; ValueError on unknown names/keys."""
    _check_name(name)
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
    _check_name(name)
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


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision: the arm's name and the probability the policy had of choosing it."""

    arm: str
    propensity: float


class Policy:
    """A policy over named arms, for operators and tests (not the server's hot path)."""

    __slots__ = ("_arms", "_index", "_kernel", "_pulls", "_rng", "_sums", "name", "params")

    def __init__(self, name: str, params: PolicyParams, rng: Rng) -> None:
        self.name = name
        self.params = params
        self._rng = rng
        self._arms: list[str] = []
        self._index: dict[str, int] = {}
        self._pulls = np.zeros(4, dtype=np.float64)
        self._sums = np.zeros(4, dtype=np.float64)
        self._kernel: PolicyBase | None = None

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(self._arms)

    @property
    def kernel(self) -> PolicyBase | None:
        """The compiled policy over the registered arms (None before the first arm)."""
        return self._kernel

    def stats(self) -> dict[str, tuple[float, float]]:
        """``{arm: (pulls, reward_sum)}``."""
        return {a: (float(self._pulls[i]), float(self._sums[i])) for a, i in self._index.items()}

    def _register(self, arms: Sequence[str]) -> None:
        new = [a for a in dict.fromkeys(arms) if a not in self._index]
        if not new:
            return
        for arm in new:
            if not isinstance(arm, str) or not arm:
                raise ValueError(f"arm names must be non-empty strings, got {arm!r}")
        k = len(self._arms) + len(new)
        if k > self._pulls.shape[0]:
            cap = max(k, 2 * self._pulls.shape[0])
            self._pulls = np.concatenate([self._pulls, np.zeros(cap - self._pulls.shape[0])])
            self._sums = np.concatenate([self._sums, np.zeros(cap - self._sums.shape[0])])
        for arm in new:
            self._index[arm] = len(self._arms)
            self._arms.append(arm)
        self._kernel = make_kernel(
            self.name, self.params, self._pulls[:k], self._sums[:k], self._rng, self._arms
        )

    def select(self, context: Mapping[str, Any] | None, arms: Sequence[str]) -> Decision:
        """Choose one of ``arms`` (names; new ones are registered). ``context`` is accepted
        for the runbook's signature; these policies are not contextual and ignore it."""
        if context is not None and not isinstance(context, Mapping):
            raise ValueError(f"context must be a dict or None, got {type(context).__name__}")
        if isinstance(arms, str) or not arms:
            raise ValueError("arms must be a non-empty list of arm names")
        if len(set(arms)) != len(arms):
            dup = next(a for a in arms if list(arms).count(a) > 1)
            raise ValueError(f"arm {dup!r} appears more than once in arms")
        self._register(arms)
        kernel = self._kernel
        assert kernel is not None
        if len(arms) == kernel.n_arms:      # every registered arm: the cached fast path
            if isinstance(kernel, ThompsonPolicy):
                kernel.refresh_propensities()
            index, propensity = kernel.select(None)
        else:
            candidates = np.fromiter((self._index[a] for a in arms), np.intp, len(arms))
            index, propensity = kernel.select(candidates)
        return Decision(self._arms[index], float(propensity))

    def update(self, arm: str, reward: float) -> None:
        """Record ``reward`` (in [0, 1]) for ``arm`` (registered if new)."""
        if not isinstance(arm, str) or not arm:
            raise ValueError(f"arm must be a non-empty arm name, got {arm!r}")
        if isinstance(reward, bool) or not isinstance(reward, int | float):
            raise ValueError(f"reward must be a number in [0, 1], got {reward!r}")
        if not 0.0 <= reward <= 1.0:  # also rejects NaN; checked before registering
            raise ValueError(f"reward must be a finite number in [0, 1], got {reward!r}")
        self._register([arm])
        assert self._kernel is not None
        self._kernel.update(self._index[arm], float(reward))

    def __repr__(self) -> str:
        return f"<Policy {self.name} {self.params} arms={len(self._arms)}>"


def get_policy(
    name: str,
    params: Mapping[str, Any] | PolicyParams | None = None,
    seed: int | None = None,
) -> Policy:
    """A policy by name with validated ``params`` (a dict or a params object); ``seed``
    None draws OS entropy, an int makes the decisions reproducible."""
    _check_name(name)
    if params is None or isinstance(params, Mapping):
        params = params_from_dict(name, params)
    return Policy(name, params, Rng(seed))


__all__ = [
    "PARAMS_TYPES",
    "POLICY_CODES",
    "POLICY_NAMES",
    "ControlParams",
    "Decision",
    "EpsilonGreedyParams",
    "Policy",
    "PolicyName",
    "PolicyParams",
    "ThompsonParams",
    "UCBParams",
    "finite_number",
    "get_policy",
    "make_kernel",
    "params_from_dict",
]
