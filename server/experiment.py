"""What an experiment is: its validated configuration and its life-cycle state.

``ExperimentSpec`` is everything an operator chooses at creation (arms, policies
and their traffic split, traffic share, policy parameters, reward definition,
guardrail thresholds, duration); it validates itself so that a bad configuration
never reaches the database or a server. ``Experiment`` adds what the database
assigns (numeric key, status, start/end times).
"""

from __future__ import annotations

import math
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from banditd.core_ext.policies import POLICY_NAMES, params_from_dict
from banditd.server.experiment_settings import GuardrailThresholds, VerdictCriteria

Status = Literal["draft", "running", "stopped", "rolled_back", "completed"]
STATUSES: tuple[Status, ...] = ("draft", "running", "stopped", "rolled_back", "completed")

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_ARM_LENGTH = 256
MAX_ARMS = 65_535
DEFAULT_POLICY = "control"
_SPLIT_TOLERANCE = 1e-6


class ExperimentConfigError(ValueError):
    """An experiment configuration is invalid; the message names the field and the fix."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ExperimentConfigError(message)


def validate_arm_name(arm: str) -> None:
    _require(isinstance(arm, str) and arm != "", "arm names must be non-empty strings")
    _require(len(arm) <= MAX_ARM_LENGTH, f"arm name {arm[:40]!r}... exceeds {MAX_ARM_LENGTH} chars")
    _require(arm.isprintable(), f"arm name {arm!r} contains control characters")


def new_salt() -> str:
    """A fresh hashing salt: 128 random bits, hex."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """An experiment as configured by its owner (validated on construction)."""

    id: str
    name: str
    arms: tuple[str, ...]
    policies: tuple[str, ...] = ("thompson", "egreedy", "ucb", "control")
    policy_split: tuple[float, ...] | None = None
    traffic_pct: float = 1.0
    default_policy: str = DEFAULT_POLICY
    policy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    reward_min: float = 0.0
    reward_max: float = 1.0
    reward_window_seconds: float = 86_400.0
    default_reward: float = 0.0
    guardrails: dict[str, Any] = field(default_factory=dict)
    verdict_criteria: dict[str, Any] = field(default_factory=dict)
    duration_days: float | None = None
    salt: str = field(default_factory=new_salt)
    notes: str = ""

    def __post_init__(self) -> None:
        _require(
            isinstance(self.id, str) and bool(ID_PATTERN.match(self.id)),
            f"experiment id {self.id!r} must be 1-128 chars of letters, digits, '.', '_', ':' "
            "or '-', starting with a letter or digit",
        )
        _require(bool(self.name and self.name.strip()), "experiment name must not be empty")
        _require(self.name.isprintable(), "experiment name contains control characters")
        object.__setattr__(self, "arms", tuple(self.arms))
        _require(len(self.arms) >= 1, "an experiment needs at least one arm")
        _require(len(self.arms) <= MAX_ARMS, f"at most {MAX_ARMS} arms per experiment")
        for arm in self.arms:
            validate_arm_name(arm)
        duplicates = sorted(arm for arm, n in Counter(self.arms).items() if n > 1)
        _require(not duplicates, f"duplicate arms: {', '.join(duplicates)}")
        self._validate_policies()
        _require(
            _finite(self.traffic_pct) and 0.0 <= self.traffic_pct <= 1.0,
            f"traffic must be a share in (0, 1], got {self.traffic_pct}",
        )
        self._validate_reward()
        _require(
            self.duration_days is None
            or (_finite(self.duration_days) and self.duration_days > 0),
            f"duration must be > 0 days, got {self.duration_days}",
        )
        _require(bool(re.fullmatch(r"[0-9a-f]{8,64}", self.salt)), "salt must be 8-64 hex chars")

    def _validate_policies(self) -> None:
        policies = tuple(self.policies)
        object.__setattr__(self, "policies", policies)
        _require(len(policies) >= 1, "an experiment needs at least one policy")
        for name in policies:
            _require(
                name in POLICY_NAMES,
                f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}",
            )
        _require(len(set(policies)) == len(policies), "each policy may appear only once")
        _require(
            self.default_policy == DEFAULT_POLICY,
            f"default_policy must be {DEFAULT_POLICY!r} (what users get outside the experiment)",
        )
        if self.policy_split is None:
            split = tuple(1.0 / len(policies) for _ in policies)
        else:
            split = tuple(float(s) for s in self.policy_split)
        object.__setattr__(self, "policy_split", split)
        _require(
            len(split) == len(policies),
            f"policy split has {len(split)} shares for {len(policies)} policies",
        )
        _require(all(_finite(s) and s >= 0 for s in split), "policy shares must be >= 0")
        _require(
            abs(sum(split) - 1.0) <= _SPLIT_TOLERANCE,
            f"policy shares must sum to 1, got {sum(split):.6f} "
            f"({', '.join(f'{p}={v:g}' for p, v in zip(policies, split, strict=False))})",
        )
        unknown = set(self.policy_params) - set(policies) - {DEFAULT_POLICY}
        _require(not unknown, f"parameters given for policies not in the experiment: {unknown}")
        for name in (*policies, DEFAULT_POLICY):
            self.kernel_params(name)  # raises ValueError on bad parameters

    def _validate_reward(self) -> None:
        lo, hi = self.reward_min, self.reward_max
        _require(_finite(lo) and _finite(hi) and hi > lo, f"reward range [{lo}, {hi}] is empty")
        _require(
            _finite(self.reward_window_seconds) and self.reward_window_seconds > 0,
            "reward window must be > 0 seconds",
        )
        _require(
            _finite(self.default_reward) and lo <= self.default_reward <= hi,
            f"default reward {self.default_reward} is outside the reward range [{lo}, {hi}]",
        )

    def validate_for_write(self) -> None:
        """The rules a spec must also meet where it is written (create, launch, set).

        A stored spec is loaded as it is (a server must not refuse an experiment it
        served yesterday); a new or changed one must be an experiment worth running:
        at least two arms to choose between, a control policy (the verdict engine,
        the reward guardrail and off-policy evaluation all compare with it), every
        policy with a positive share, some traffic, and guardrail thresholds and
        verdict criteria that parse.
        """
        _require(
            len(self.arms) >= 2,
            f"an experiment needs at least 2 arms to choose between, got {len(self.arms)}: "
            "give --arms a,b[,...]",
        )
        _require(
            DEFAULT_POLICY in self.policies,
            f"policies {','.join(self.policies)} have no {DEFAULT_POLICY!r}: add it (e.g. "
            f"--policies {','.join((*self.policies, DEFAULT_POLICY))}); every policy is "
            "judged against control",
        )
        zero = [p for p, share in zip(self.policies, self.policy_split, strict=True)
                if share <= 0]
        _require(not zero, f"policy {', '.join(zero)} has a share of 0 in the split and "
                 "would serve nobody: give it a share or leave it out of --policies")
        _require(
            self.traffic_pct > 0,
            "traffic must be in (0, 1], got 0: an experiment without traffic serves nobody "
            "(`banditctl experiment stop` takes users out of a running one)",
        )
        for what, parse, value in (
            ("guardrail thresholds", GuardrailThresholds.from_dict, self.guardrails),
            ("verdict criteria", VerdictCriteria.from_dict, self.verdict_criteria),
        ):
            try:
                parse(value)
            except (TypeError, ValueError) as exc:
                raise ExperimentConfigError(f"{what}: {exc}") from exc

    def kernel_params(self, policy: str) -> Any:
        """The validated kernel parameter object for ``policy`` (arm names resolved)."""
        raw = dict(self.policy_params.get(policy, {}))
        if policy == "control" and raw.get("default_arm") is not None:
            _require(
                raw["default_arm"] in self.arms,
                f"control default_arm {raw['default_arm']!r} is not one of the arms",
            )
        try:
            return params_from_dict(policy, raw)
        except ValueError as exc:
            raise ExperimentConfigError(f"{policy} parameters: {exc}") from exc

    def normalise_reward(self, value: float) -> float:
        """Map a reward in [reward_min, reward_max] onto the kernels' [0, 1]."""
        return (value - self.reward_min) / (self.reward_max - self.reward_min)


@dataclass(frozen=True, slots=True)
class Experiment:
    """An experiment as stored: its spec plus what the database assigns."""

    key: int
    spec: ExperimentSpec
    status: Status
    start_at: datetime | None
    end_at: datetime | None
    updated_at: datetime
    status_reason: str | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    def to_dict(self) -> dict[str, Any]:
        """The experiment as operators see it (``banditctl ... --json``); the hashing
        salt is left out: with it anyone could compute every user's assignment."""
        spec = {f.name: getattr(self.spec, f.name) for f in fields(self.spec) if f.name != "salt"}
        return {
            "id": spec.pop("id"), "key": self.key, "name": spec.pop("name"),
            "status": self.status,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()},
            "start_at": self.start_at, "end_at": self.end_at,
            "status_reason": self.status_reason,
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
