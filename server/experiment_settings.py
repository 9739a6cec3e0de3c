"""An experiment's operating settings: guardrail thresholds and verdict criteria.

They are experiment configuration (the ``guardrails`` and ``verdict_criteria`` JSON
columns), validated where a spec is written, so they live beside the experiment model
and import nothing of the statistics stack: the server validates them without SciPy.
The checks that use them are in ``banditd.admin_cli.stats.guardrail_rules`` and the verdict
engine in ``banditd.admin_cli.stats.verdict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from banditd.core_ext.policies import finite_number

CheckName = Literal["error_rate", "p95_latency_ms", "arm_share", "reward_drop"]
Status = Literal["ok", "warn", "critical", "insufficient_data"]
Correction = Literal["bonferroni", "none"]
CHECK_NAMES: tuple[CheckName, ...] = get_args(CheckName)

# Allowed range of each check's thresholds (inclusive).
_RANGES: dict[CheckName, tuple[float, float]] = {
    "error_rate": (0.0, 1.0),
    "p95_latency_ms": (0.0, math.inf),
    "arm_share": (0.0, 1.0),
    "reward_drop": (0.0, 1.0),
}


@dataclass(frozen=True, slots=True)
class Threshold:
    """Warning and critical levels of one check: breach when value > level."""

    warning: float
    critical: float

    def __post_init__(self) -> None:
        finite_number("warning threshold", self.warning)
        finite_number("critical threshold", self.critical)
        if self.warning > self.critical:
            raise ValueError(
                f"warning threshold {self.warning} must be <= critical threshold {self.critical}"
            )

    def classify(self, value: float | None) -> Status:
        """Status of ``value``: > critical → critical; > warning → warn; else ok.

        ``None`` or ``nan`` → insufficient_data. Equal to a threshold is not a breach.
        """
        if value is None or math.isnan(value):
            return "insufficient_data"
        if value > self.critical:
            return "critical"
        if value > self.warning:
            return "warn"
        return "ok"

    def to_dict(self) -> dict[str, float]:
        return {"warning": self.warning, "critical": self.critical}


@dataclass(frozen=True, slots=True)
class RewardDropTest:
    """How the reward-drop check decides a drop is real.

    Attributes:
        alpha: one-sided error rate per run, split over the compared policies
            (Bonferroni); the bound judged is the (1 − alpha/k) lower confidence bound.
        min_samples_per_arm: a policy (and control) needs at least this many reward
            observations to be judged.
    """

    alpha: float = 0.01
    min_samples_per_arm: int = 1000

    def __post_init__(self) -> None:
        if not 0 < finite_number("reward_drop_test.alpha", self.alpha) < 0.5:
            raise ValueError(f"reward_drop_test.alpha must be in (0, 0.5), got {self.alpha!r}")
        if isinstance(self.min_samples_per_arm, bool) or not isinstance(
            self.min_samples_per_arm, int
        ):
            raise ValueError(
                f"reward_drop_test.min_samples_per_arm must be an integer, "
                f"got {self.min_samples_per_arm!r}"
            )
        if self.min_samples_per_arm < 2:
            raise ValueError(
                f"reward_drop_test.min_samples_per_arm must be >= 2, got {self.min_samples_per_arm}"
            )

    def to_dict(self) -> dict[str, float | int]:
        return {"alpha": self.alpha, "min_samples_per_arm": self.min_samples_per_arm}


@dataclass(frozen=True, slots=True)
class GuardrailThresholds:
    """Per-experiment guardrail configuration (runbook defaults).

    JSON form (every key optional; missing keys keep the default)::

        {"error_rate": {"warning": 0.005, "critical": 0.01},
         "p95_latency_ms": {"warning": 100, "critical": 120},
         "arm_share": {"warning": 0.4, "critical": 0.5},
         "reward_drop": {"warning": 0.03, "critical": 0.05},
         "reward_drop_test": {"alpha": 0.01, "min_samples_per_arm": 1000}}
    """

    error_rate: Threshold = field(default_factory=lambda: Threshold(0.005, 0.01))
    p95_latency_ms: Threshold = field(default_factory=lambda: Threshold(100.0, 120.0))
    arm_share: Threshold = field(default_factory=lambda: Threshold(0.40, 0.50))
    reward_drop: Threshold = field(default_factory=lambda: Threshold(0.03, 0.05))
    reward_drop_test: RewardDropTest = field(default_factory=RewardDropTest)

    def __post_init__(self) -> None:
        for name in CHECK_NAMES:
            threshold = getattr(self, name)
            if not isinstance(threshold, Threshold):
                raise ValueError(f"{name} must be a Threshold, got {threshold!r}")
            lo, hi = _RANGES[name]
            for level in ("warning", "critical"):
                value = getattr(threshold, level)
                if not lo <= value <= hi:
                    raise ValueError(f"{name}.{level} must be in [{lo}, {hi}], got {value!r}")

    def for_check(self, name: CheckName) -> Threshold:
        if name not in CHECK_NAMES:
            raise ValueError(f"unknown check {name!r}; expected one of {', '.join(CHECK_NAMES)}")
        return getattr(self, name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GuardrailThresholds:
        """Defaults overridden by ``data`` (the experiment's ``guardrails`` JSON).

        Raises ``ValueError`` naming the offending key on unknown keys, non-numbers,
        out-of-range values or warning > critical.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"guardrail thresholds must be a JSON object, got {data!r}")
        defaults = cls()
        unknown = sorted(set(data) - {*CHECK_NAMES, "reward_drop_test"})
        if unknown:
            raise ValueError(
                f"unknown guardrail keys: {', '.join(unknown)}; expected "
                f"{', '.join((*CHECK_NAMES, 'reward_drop_test'))}"
            )
        kwargs: dict[str, Any] = {}
        for name in CHECK_NAMES:
            if name not in data:
                continue
            override = data[name]
            if not isinstance(override, Mapping):
                raise ValueError(
                    f"{name} must be an object with warning/critical, got {override!r}"
                )
            bad = sorted(set(override) - {"warning", "critical"})
            if bad:
                raise ValueError(f"unknown keys in {name}: {', '.join(bad)}")
            base = defaults.for_check(name)
            kwargs[name] = Threshold(
                finite_number(f"{name}.warning", override.get("warning", base.warning)),
                finite_number(f"{name}.critical", override.get("critical", base.critical)),
            )
        if "reward_drop_test" in data:
            override = data["reward_drop_test"]
            if not isinstance(override, Mapping):
                raise ValueError(f"reward_drop_test must be an object, got {override!r}")
            bad = sorted(set(override) - {"alpha", "min_samples_per_arm"})
            if bad:
                raise ValueError(f"unknown keys in reward_drop_test: {', '.join(bad)}")
            base_test = defaults.reward_drop_test
            kwargs["reward_drop_test"] = RewardDropTest(
                override.get("alpha", base_test.alpha),
                override.get("min_samples_per_arm", base_test.min_samples_per_arm),
            )
        return cls(**kwargs)

    def to_dict(self) -> dict[str, dict[str, float | int]]:
        out: dict[str, dict[str, float | int]] = {
            name: self.for_check(name).to_dict() for name in CHECK_NAMES
        }
        out["reward_drop_test"] = self.reward_drop_test.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class VerdictCriteria:
    """Per-experiment verdict criteria (the ``verdict_criteria`` JSON column).

    Attributes:
        alpha: family-wise false-positive rate of the always-valid test.
        mde_relative: minimum detectable (worth detecting) relative effect; sets the
            mSPRT mixing variance τ² = (mde · x̄_C)² and the days-needed estimate.
        min_users_per_policy: no ship/kill on significance before P and control each
            have this many users (the plug-in variance and the delta method need it).
        srm_p_threshold: SRM flag when the χ² p-value is below this.
        power: power targeted by the additional-days estimate.
        correction: multiple-comparison correction over the bandit policies.
    """

    alpha: float = 0.05
    mde_relative: float = 0.05
    min_users_per_policy: int = 1000
    srm_p_threshold: float = 0.001
    power: float = 0.8
    correction: Correction = "bonferroni"

    def __post_init__(self) -> None:
        for name in ("alpha", "mde_relative", "srm_p_threshold", "power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha!r}")
        if not 0 < self.mde_relative <= 10:
            raise ValueError(f"mde_relative must be in (0, 10], got {self.mde_relative!r}")
        if not 0 < self.srm_p_threshold < 1:
            raise ValueError(f"srm_p_threshold must be in (0, 1), got {self.srm_p_threshold!r}")
        if not 0.5 <= self.power < 1:
            raise ValueError(f"power must be in [0.5, 1), got {self.power!r}")
        if isinstance(self.min_users_per_policy, bool) or not isinstance(
            self.min_users_per_policy, int
        ):
            raise ValueError(
                f"min_users_per_policy must be an integer, got {self.min_users_per_policy!r}"
            )
        if self.min_users_per_policy < 2:
            raise ValueError(
                f"min_users_per_policy must be >= 2, got {self.min_users_per_policy!r}"
            )
        if self.correction not in get_args(Correction):
            raise ValueError(
                f"correction must be one of {get_args(Correction)}, got {self.correction!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> VerdictCriteria:
        """Defaults overridden by ``data``; unknown keys and bad values raise ``ValueError``."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"verdict criteria must be a JSON object, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown verdict criteria: {', '.join(unknown)}; "
                f"expected {', '.join(sorted(known))}"
            )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
