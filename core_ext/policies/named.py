"""A policy over named arms: the runbook's debug command, for operators and tests.

``get_policy`` is not the server's hot path (the server drives the kernels through the
Decider); it registers arms by name on first sight, growing the statistics arrays
(doubling) and rebuilding the kernel over them when they do::

    >>> from banditd.core_ext.policies import get_policy
    >>> policy = get_policy("thompson", {"alpha0": 1.0, "beta0": 1.0}, seed=7)
    >>> decision = policy.select({}, ["arm1", "arm2"])
    >>> policy.update(decision.arm, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from banditd.core_ext.policies.catalog import (
    PolicyParams,
    check_name,
    make_kernel,
    params_from_dict,
)
from banditd.core_ext.policies.kernels import PolicyBase, Rng, ThompsonPolicy


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
            if isinstance(kernel, ThompsonPolicy):  # exact subset propensities, as served
                kernel.refresh_propensities(subsets=True)
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
    check_name(name)
    if params is None or isinstance(params, Mapping):
        params = params_from_dict(name, params)
    return Policy(name, params, Rng(seed))


__all__ = ["Decision", "Policy", "get_policy"]
