"""Guardrail checks and the automatic-rollback rule, as pure functions.

The guardrail job (``banditctl guardrails check``, and the scheduler every 5 minutes)
reads a sliding window from PostgreSQL and hands the numbers to these functions; they
decide each check's status and whether to roll back. Nothing here touches the database.

Runbook defaults, per experiment overridable through the ``guardrails`` JSON column
(see :meth:`banditd.server.experiment_settings.GuardrailThresholds.from_dict`):

    check            warning    critical
    error_rate       > 0.005    > 0.01
    p95_latency_ms   > 100      > 120
    arm_share        > 0.40     > 0.50
    reward_drop      > 0.03     > 0.05

A value breaches a threshold only when it is strictly greater: equal is not a breach.

Reward drop. Each bandit policy P is compared with control C on the relative drop
d = 1 − μ_P/μ_C. A raw d̂ fires on noise (a few hundred users give SE(d̂) ≈ 0.2), so the
check judges the one-sided lower confidence bound

    d_L = d̂ − z_{1−α/k} · SE(d̂),   SE(d̂)² = s_P²/(n_P x̄_C²) + x̄_P² s_C²/(n_C x̄_C⁴)

(delta method, [Deng18]; see :func:`banditd.admin_cli.stats.intervals.relative_lift_variance`),
with a Bonferroni split of α over the k policies compared in the run. A policy with
fewer than ``min_samples_per_arm`` observations (or a control with fewer) is not judged
("insufficient_data"). Under a true drop of 0, one run fires a warning with probability
≤ α regardless of sample size (the bound must clear 0.03 + z·SE), so the default
α = 0.01 keeps noise well below the 3-consecutive-runs rollback rule.

Rollback rule, :func:`rollback_decision`: roll back when in the latest run
(1) two or more checks are critical, or (2) error_rate or p95_latency_ms is critical, or
(3) one check has been critical in each of the last N runs (default N = 3).

References:
    [Deng18] A. Deng, U. Knoblich, J. Lu (2018), "Applying the delta method in metric
        analytics: a practical guide with novel ideas", KDD 2018.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
from scipy import stats as sps

from banditd.admin_cli.stats.intervals import relative_lift_variance
from banditd.admin_cli.stats.serialise import json_float
from banditd.admin_cli.stats.sufficient import SampleStats
from banditd.server.experiment_settings import (
    CheckName,
    GuardrailThresholds,
    Status,
)

# Checks whose criticality alone triggers a rollback (rule 2).
_IMMEDIATE: frozenset[str] = frozenset({"error_rate", "p95_latency_ms"})


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One guardrail check in one run.

    Attributes:
        name: the check.
        value: the judged value (for reward_drop: the largest lower confidence bound of
            the relative drop); ``None`` when there is not enough data.
        warning, critical: the thresholds applied.
        status: ok / warn / critical / insufficient_data.
        detail: human-readable explanation (which arm, which policy, sample sizes).
    """

    name: CheckName
    value: float | None
    warning: float
    critical: float
    status: Status
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in get_args(Status):
            raise ValueError(f"unknown status {self.status!r}; expected one of {get_args(Status)}")

    @property
    def breached(self) -> bool:
        return self.status in ("warn", "critical")

    @property
    def breached_threshold(self) -> float | None:
        """The threshold the value exceeded (critical or warning), ``None`` if none."""
        return {"critical": self.critical, "warn": self.warning}.get(self.status)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": json_float(self.value),
            "warning": self.warning,
            "critical": self.critical,
            "status": self.status,
            "detail": self.detail,
        }


def _result(name: CheckName, value: float | None, thresholds: GuardrailThresholds,
            detail: str) -> CheckResult:
    threshold = thresholds.for_check(name)
    return CheckResult(
        name, value, threshold.warning, threshold.critical, threshold.classify(value), detail
    )


# -- the four checks ------------------------------------------------------------------


def check_error_rate(
    errors: float, requests: float, thresholds: GuardrailThresholds | None = None
) -> CheckResult:
    """Error rate = errors / requests over the window; no requests → insufficient_data."""
    thresholds = thresholds or GuardrailThresholds()
    if not 0 <= errors <= requests:
        raise ValueError(f"need 0 <= errors <= requests, got {errors}/{requests}")
    if requests == 0:
        return _result("error_rate", None, thresholds, "no requests in the window")
    rate = errors / requests
    return _result("error_rate", rate, thresholds, f"{errors:.0f} errors / {requests:.0f} requests")


def p95(latencies_ms: Iterable[float] | np.ndarray) -> float | None:
    """95th percentile with linear interpolation (PostgreSQL ``percentile_cont(0.95)``)."""
    values = np.asarray(list(latencies_ms) if not isinstance(latencies_ms, np.ndarray)
                        else latencies_ms, float)
    if values.size == 0:
        return None
    return float(np.percentile(values, 95, method="linear"))


def check_p95_latency(
    p95_ms: float | None, requests: float, thresholds: GuardrailThresholds | None = None
) -> CheckResult:
    """P95 server-side Select latency over the window (computed by the caller, e.g. :func:`p95`)."""
    thresholds = thresholds or GuardrailThresholds()
    if requests == 0 or p95_ms is None:
        return _result("p95_latency_ms", None, thresholds, "no decisions in the window")
    if not math.isfinite(p95_ms) or p95_ms < 0:
        raise ValueError(f"p95 latency must be finite and >= 0, got {p95_ms!r}")
    return _result("p95_latency_ms", float(p95_ms), thresholds, f"over {requests:.0f} decisions")


def check_arm_share(
    counts: Mapping[str, float], thresholds: GuardrailThresholds | None = None
) -> CheckResult:
    """Largest share of decisions on any single arm: maxₐ countₐ / Σ counts."""
    thresholds = thresholds or GuardrailThresholds()
    if any(c < 0 for c in counts.values()):
        raise ValueError(f"arm counts must be >= 0, got {dict(counts)!r}")
    total = sum(counts.values())
    if total == 0:
        return _result("arm_share", None, thresholds, "no decisions in the window")
    arm = max(counts, key=lambda a: counts[a])
    share = counts[arm] / total
    return _result(
        "arm_share", share, thresholds, f"arm {arm}: {counts[arm]:.0f} of {total:.0f} decisions"
    )


@dataclass(frozen=True, slots=True)
class PolicyDrop:
    """Reward drop of one policy against control.

    Attributes:
        policy: the policy compared with control.
        n: its number of reward observations.
        mean: its reward mean.
        drop: d̂ = 1 − x̄_P/x̄_C (``None`` when not judged).
        lower_bound: the one-sided lower confidence bound d_L that is judged.
        status: the status of ``lower_bound`` against the reward_drop thresholds.
        message: why it was not judged, when it was not.
    """

    policy: str
    n: float
    mean: float
    drop: float | None
    lower_bound: float | None
    status: Status
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "n": json_float(self.n),
            "mean": json_float(self.mean),
            "drop": json_float(self.drop),
            "lower_bound": json_float(self.lower_bound),
            "status": self.status,
            "message": self.message,
        }


def reward_drops(
    rewards: Mapping[str, SampleStats],
    control: str,
    thresholds: GuardrailThresholds | None = None,
) -> list[PolicyDrop]:
    """Per-policy reward drop vs control with its one-sided lower confidence bound.

        d̂ = 1 − x̄_P / x̄_C,   d_L = d̂ − z_{1−α/k} · √Var(d̂),
        Var(d̂) = Var(x̄_P/x̄_C) by the delta method [Deng18],

    k = number of policies with enough data (Bonferroni over the run).
    """
    thresholds = thresholds or GuardrailThresholds()
    if control not in rewards:
        raise ValueError(f"control policy {control!r} not in rewards ({', '.join(rewards)})")
    test = thresholds.reward_drop_test
    threshold = thresholds.reward_drop
    base = rewards[control]
    others = [p for p in rewards if p != control]

    def skipped(policy: str, message: str) -> PolicyDrop:
        stats = rewards[policy]
        return PolicyDrop(policy, stats.n, stats.mean, None, None, "insufficient_data", message)

    if base.n < test.min_samples_per_arm:
        msg = f"control has {base.n:.0f} < {test.min_samples_per_arm} observations"
        return [skipped(p, msg) for p in others]
    if base.mean <= 0:
        return [skipped(p, "control reward mean is 0: relative drop undefined") for p in others]
    judged = [p for p in others if rewards[p].n >= test.min_samples_per_arm]
    k = max(len(judged), 1)
    # One-sided bound with a Bonferroni split of α over the k compared policies.
    z = float(sps.norm.ppf(1 - test.alpha / k))
    out = []
    for policy in others:
        stats = rewards[policy]
        if policy not in judged:
            out.append(skipped(policy, f"{stats.n:.0f} < {test.min_samples_per_arm} observations"))
            continue
        drop = 1 - stats.mean / base.mean
        # Delta-method SE of the ratio x̄_P/x̄_C, Deng, Knoblich & Lu (2018).
        se = math.sqrt(relative_lift_variance(stats, base))
        lower = drop - z * se
        out.append(PolicyDrop(policy, stats.n, stats.mean, drop, lower, threshold.classify(lower)))
    return out


def check_reward_drop(
    rewards: Mapping[str, SampleStats],
    control: str,
    thresholds: GuardrailThresholds | None = None,
) -> CheckResult:
    """Worst policy's reward drop vs control, judged on its lower confidence bound.

    value = max over judged policies of d_L (see :func:`reward_drops`); insufficient_data
    when no policy (or not the control) has enough observations.
    """
    thresholds = thresholds or GuardrailThresholds()
    drops = reward_drops(rewards, control, thresholds)
    judged = [d for d in drops if d.lower_bound is not None]
    parts = []
    for d in drops:
        if d.lower_bound is None:
            parts.append(f"{d.policy}: not judged ({d.message})")
        else:
            parts.append(
                f"{d.policy}: drop {d.drop:+.4f}, lower bound {d.lower_bound:+.4f} (n={d.n:.0f})"
            )
    if not drops:
        return _result("reward_drop", None, thresholds, "no policy besides control")
    if not judged:
        return _result("reward_drop", None, thresholds, "; ".join(parts))
    worst = max(judged, key=lambda d: d.lower_bound)  # type: ignore[arg-type,return-value]
    return _result("reward_drop", worst.lower_bound, thresholds, "; ".join(parts))


@dataclass(frozen=True, slots=True)
class GuardrailInputs:
    """What one guardrail run reads from the window, for :func:`run_checks`.

    Attributes:
        errors, requests: failed and total RPCs of the experiment in the window.
        p95_latency_ms: P95 server-side Select latency (``None`` without decisions).
        decisions: decisions in the window (the latency check's sample size).
        arm_counts: decisions per arm in the window.
        rewards: reward statistics per policy (including control).
        control: the control policy's name.
    """

    errors: float
    requests: float
    p95_latency_ms: float | None
    decisions: float
    arm_counts: Mapping[str, float]
    rewards: Mapping[str, SampleStats]
    control: str = "control"


def run_checks(
    inputs: GuardrailInputs, thresholds: GuardrailThresholds | None = None
) -> list[CheckResult]:
    """All four checks, in the order of :data:`CHECK_NAMES`."""
    thresholds = thresholds or GuardrailThresholds()
    return [
        check_error_rate(inputs.errors, inputs.requests, thresholds),
        check_p95_latency(inputs.p95_latency_ms, inputs.decisions, thresholds),
        check_arm_share(inputs.arm_counts, thresholds),
        check_reward_drop(inputs.rewards, inputs.control, thresholds),
    ]


# -- automatic rollback ---------------------------------------------------------------

RollbackRule = Literal[
    "two_or_more_critical", "error_rate_or_latency_critical", "critical_for_n_runs"
]


@dataclass(frozen=True, slots=True)
class RollbackDecision:
    """Whether to roll back, and why.

    Attributes:
        should_roll_back: a rollback rule fired on the latest run.
        reasons: one line per failing check, ``"<check> value=<v> threshold=<t>: <rules>"``.
        rules: the rules that fired.
        watch: critical checks that did not (yet) trigger a rollback.
    """

    should_roll_back: bool
    reasons: list[str] = field(default_factory=list)
    rules: list[RollbackRule] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "should_roll_back": self.should_roll_back,
            "reasons": list(self.reasons),
            "rules": list(self.rules),
            "watch": list(self.watch),
        }


def _by_name(run: Sequence[CheckResult]) -> dict[str, CheckResult]:
    out: dict[str, CheckResult] = {}
    for check in run:
        if check.name in out:
            raise ValueError(f"check {check.name!r} appears twice in one run")
        out[check.name] = check
    return out


def rollback_decision(
    history: Sequence[Sequence[CheckResult]], consecutive: int = 3
) -> RollbackDecision:
    """Apply the rollback rule to the guardrail runs, oldest first (``history[-1]`` = now).

    Roll back when, in the latest run,
      1. two or more checks are critical, or
      2. error_rate or p95_latency_ms is critical, or
      3. one check has been critical in each of the last ``consecutive`` runs.
    """
    if isinstance(consecutive, bool) or not isinstance(consecutive, int) or consecutive < 1:
        raise ValueError(f"consecutive must be an integer >= 1, got {consecutive!r}")
    if not history:
        return RollbackDecision(False)
    runs = [_by_name(run) for run in history]
    critical_now = [c for c in runs[-1].values() if c.status == "critical"]
    rules_by_check: dict[str, list[str]] = {c.name: [] for c in critical_now}
    fired: list[RollbackRule] = []
    if len(critical_now) >= 2:
        fired.append("two_or_more_critical")
        for c in critical_now:
            rules_by_check[c.name].append(f"{len(critical_now)} checks critical")
    immediate = [c for c in critical_now if c.name in _IMMEDIATE]
    if immediate:
        fired.append("error_rate_or_latency_critical")
        for c in immediate:
            rules_by_check[c.name].append("error rate or latency critical")
    if len(runs) >= consecutive:
        persistent = [
            c for c in critical_now
            if all(run.get(c.name) is not None and run[c.name].status == "critical"
                   for run in runs[-consecutive:])
        ]
        if persistent:
            fired.append("critical_for_n_runs")
            for c in persistent:
                rules_by_check[c.name].append(f"critical for {consecutive} consecutive runs")
    reasons, watch = [], []
    for c in critical_now:
        value = "n/a" if c.value is None else f"{c.value:.6g}"
        line = f"{c.name} value={value} threshold={c.critical:.6g}"
        if rules_by_check[c.name]:
            reasons.append(f"{line}: {', '.join(rules_by_check[c.name])}")
        else:
            streak = 0
            for run in reversed(runs):
                if run.get(c.name) is None or run[c.name].status != "critical":
                    break
                streak += 1
            watch.append(f"{line}: critical for {streak} of {consecutive} consecutive runs")
    return RollbackDecision(bool(fired), reasons, fired, watch)
