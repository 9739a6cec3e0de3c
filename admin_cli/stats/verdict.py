"""The verdict engine: ship, iterate or kill each bandit policy against control.

``banditctl decide`` (and the scheduler, daily) loads, per policy, the reward
statistics, the assigned users and the per-day reward statistics, and calls
:func:`reach_verdict`. For each non-control policy P the engine reports

* users, reward mean with a fixed-horizon interval (Wilson for 0/1 rewards, t otherwise);
* absolute lift Δ = μ_P − μ_C and relative lift r = μ_P/μ_C − 1, each with an
  always-valid (1 − α) interval, and the always-valid p-value of H₀: Δ = 0 — mSPRT,
  :mod:`banditd.admin_cli.stats.sequential`. The looks are the cumulative data at the end of
  every day in the series (plus today's partial data), so running the engine every
  day is covered by the guarantee;
* the experiment's sample-ratio-mismatch test (:mod:`banditd.admin_cli.stats.srm`);
* the daily trend of the reward rate (:mod:`banditd.admin_cli.stats.trend`);
* a recommendation with its reasons:

  - **kill** when the guardrails keep failing (input), or when P is significantly
    worse (the always-valid interval of Δ lies below 0) with enough users;
  - **ship** when P is significantly better (interval above 0) with enough users,
    healthy guardrails and no SRM;
  - **iterate** otherwise, with the number of additional days needed.

Multiple policies. With m bandit policies compared with the same control, the
family-wise error is kept at α by testing each at α/m (Bonferroni, default
``correction="bonferroni"``).

Additional days (iterate). Let δ = max(|Δ̂|, δ_MDE) with δ_MDE = mde_relative · x̄_C —
the observed effect if it is larger than the smallest effect worth detecting, else the
MDE. Detection at a later look needs the variance of Δ̂ to fall to V* solving
h(V*) + z_power·√V* = δ (:func:`banditd.admin_cli.stats.sequential.required_variance`). With
traffic unchanged, V ∝ 1/N (N = observations of P and control together), so

    N* = N · V_now / V*,   additional days = max(0, (N* − N) / r),

r = mean daily observations of P and control over the last (up to) 7 days. The users
floor adds (min_users − users)/daily users for the arm that lags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from banditd.admin_cli.stats.intervals import Interval, reward_interval
from banditd.admin_cli.stats.sequential import (
    Look,
    SequentialResult,
    difference_look,
    msprt,
    relative_look,
    required_variance,
    tau2_from_mde,
)
from banditd.admin_cli.stats.serialise import json_float
from banditd.admin_cli.stats.srm import SRMResult, srm_test
from banditd.admin_cli.stats.sufficient import SampleStats, pool
from banditd.admin_cli.stats.trend import TrendResult, daily_trend
from banditd.server.experiment_settings import VerdictCriteria

Recommendation = Literal["ship", "iterate", "kill"]
GuardrailState = Literal["healthy", "degraded", "failing", "unknown"]

# Days of traffic averaged for the "additional days" estimate.
_TRAFFIC_WINDOW_DAYS = 7


@dataclass(frozen=True, slots=True)
class PolicyData:
    """What the engine needs about one policy (control included).

    Attributes:
        name: policy name.
        rewards: reward statistics over the whole experiment so far (per user when the
            caller aggregates rewards per user — recommended, observations are then
            independent; per decision otherwise, which understates the variance when
            users return).
        users: users assigned to the policy (for SRM and the users floor).
        daily: reward statistics per day, day 0 = launch day, one entry per day
            (``SampleStats.empty()`` for a day without data). Their cumulative sums are
            the looks of the sequential test; ``rewards`` minus their sum, if any, is
            today's partial data and makes the last look.
        daily_users: users assigned per day (same length as ``daily``); optional,
            ``daily[d].n`` stands in for the traffic rate when absent.
    """

    name: str
    rewards: SampleStats
    users: float
    daily: tuple[SampleStats, ...] = ()
    daily_users: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("policy name must not be empty")
        if not math.isfinite(self.users) or self.users < 0:
            raise ValueError(f"{self.name}: users must be finite and >= 0, got {self.users!r}")
        if self.daily_users and len(self.daily_users) != len(self.daily):
            raise ValueError(
                f"{self.name}: daily_users has {len(self.daily_users)} days, daily has "
                f"{len(self.daily)}"
            )
        if self.daily and pool(self.daily).n > self.rewards.n * (1 + 1e-9):
            raise ValueError(
                f"{self.name}: the daily series has more observations than the total"
            )

    def cumulative(self) -> list[SampleStats]:
        """The data at each look: cumulative daily sums, then the total if it adds data."""
        looks, running = [], SampleStats.empty()
        for day in self.daily:
            running = running + day
            looks.append(running)
        if not looks or self.rewards.n > running.n:
            looks.append(self.rewards)
        return looks

    def recent_daily(self, count: Literal["users", "observations"]) -> float | None:
        """Mean per day of users (``count="users"``) or observations over the last days."""
        if count == "users" and self.daily_users:
            series = list(self.daily_users)
        else:
            series = [day.n for day in self.daily]
        if not series:
            return None
        window = series[-_TRAFFIC_WINDOW_DAYS:]
        return float(sum(window) / len(window))


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """Descriptive statistics of one policy: users, reward mean and its interval, trend."""

    policy: str
    users: float
    observations: float
    mean: float
    mean_ci: Interval
    trend: TrendResult

    def to_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "users": json_float(self.users),
            "observations": json_float(self.observations),
            "mean": json_float(self.mean),
            "mean_ci": self.mean_ci.to_dict(),
            "trend": self.trend.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    """One bandit policy against control.

    Attributes:
        summary: the policy's descriptive statistics.
        absolute_lift: always-valid result for Δ = μ_P − μ_C (its p-value is the one
            reported).
        relative_lift: always-valid interval for r = μ_P/μ_C − 1 (delta-method scale).
        alpha: the per-comparison level used (after the correction).
        recommendation: ship / iterate / kill.
        reasons: why, one sentence each.
        additional_days: for iterate, estimated further days of traffic (``None`` when
            it cannot be estimated; 0 when more data is unlikely to change the answer).
    """

    summary: ArmSummary
    absolute_lift: SequentialResult
    relative_lift: SequentialResult
    alpha: float
    recommendation: Recommendation
    reasons: list[str] = field(default_factory=list)
    additional_days: float | None = None

    @property
    def policy(self) -> str:
        return self.summary.policy

    def to_dict(self) -> dict[str, object]:
        return {
            **self.summary.to_dict(),
            "absolute_lift": self.absolute_lift.to_dict(),
            "relative_lift": self.relative_lift.to_dict(),
            "p_value": json_float(self.absolute_lift.p_value),
            "alpha": self.alpha,
            "recommendation": self.recommendation,
            "reasons": list(self.reasons),
            "additional_days": json_float(self.additional_days),
        }


@dataclass(frozen=True, slots=True)
class VerdictReport:
    """The engine's output for one experiment and one run."""

    control: ArmSummary
    verdicts: list[PolicyVerdict]
    srm: SRMResult
    guardrails: GuardrailState
    criteria: VerdictCriteria
    days: int

    def to_dict(self) -> dict[str, object]:
        return {
            "control": self.control.to_dict(),
            "policies": [v.to_dict() for v in self.verdicts],
            "srm": self.srm.to_dict(),
            "guardrails": self.guardrails,
            "criteria": self.criteria.to_dict(),
            "days": self.days,
        }


def summarise(policy: PolicyData, level: float = 0.95) -> ArmSummary:
    """Users, mean with a fixed-horizon interval (Wilson for 0/1 rewards, else t), trend."""
    rewards = policy.rewards
    return ArmSummary(
        policy.name, policy.users, rewards.n, rewards.mean, reward_interval(rewards, level),
        daily_trend(policy.daily),
    )


def _aligned_looks(
    treatment: PolicyData, control: PolicyData
) -> list[tuple[SampleStats, SampleStats]]:
    """Pairs (treatment, control) of cumulative data at each common look."""
    t_looks, c_looks = treatment.cumulative(), control.cumulative()
    days = min(len(treatment.daily), len(control.daily))
    pairs = [(t_looks[d], c_looks[d]) for d in range(days)]
    final = (treatment.rewards, control.rewards)
    if not pairs or pairs[-1] != final:
        pairs.append(final)
    return pairs


def _additional_days(
    treatment: PolicyData,
    control: PolicyData,
    look: Look,
    alpha: float,
    criteria: VerdictCriteria,
) -> tuple[float | None, str]:
    """Estimated further days to detect δ = max(|Δ̂|, δ_MDE) (module docstring)."""
    base = control.rewards.mean
    if base == 0:
        return None, "control reward mean is 0: cannot scale the MDE"
    mde_abs = criteria.mde_relative * base
    delta = max(abs(look.estimate), mde_abs) if math.isfinite(look.estimate) else mde_abs
    tau2 = tau2_from_mde(criteria.mde_relative, base)
    rates = [p.recent_daily("observations") for p in (treatment, control)]
    if any(r is None or r <= 0 for r in rates):
        return None, "no recent daily traffic to extrapolate from"
    rate = float(sum(rates))  # type: ignore[arg-type]
    days_users = 0.0
    for p in (treatment, control):
        if p.users < criteria.min_users_per_policy:
            per_day = p.recent_daily("users")
            if not per_day:
                return None, f"{p.name} has no recent daily users to extrapolate from"
            days_users = max(days_users, (criteria.min_users_per_policy - p.users) / per_day)
    if not (look.variance > 0 and math.isfinite(look.variance)):
        return (days_users or None), "no variance estimate yet"
    # Solve h(V*) + z_power √V* = δ for the variance at which δ is detected (sequential.py).
    v_star = required_variance(delta, tau2, alpha, criteria.power)
    n_now = treatment.rewards.n + control.rewards.n
    # V ∝ 1/N at a constant allocation: N* = N · V_now / V*.
    n_star = n_now * look.variance / v_star
    days_power = max(0.0, (n_star - n_now) / rate)
    effect = "the observed effect" if delta > mde_abs else "the MDE"
    note = (
        f"{criteria.power:.0%} power to detect {effect} (Δ = {delta:.4g}) needs "
        f"{n_star:,.0f} observations of {treatment.name} + {control.name} "
        f"(now {n_now:,.0f}, {rate:,.0f}/day)"
    )
    if days_users > days_power:
        note = (
            f"reaching {criteria.min_users_per_policy:,} users per policy at the current "
            f"traffic takes longer than the {days_power:.1f} days that {note}"
        )
    return max(days_power, days_users), note


def _compare(
    treatment: PolicyData,
    control: PolicyData,
    alpha: float,
    criteria: VerdictCriteria,
    srm: SRMResult,
    guardrails: GuardrailState,
) -> PolicyVerdict:
    pairs = _aligned_looks(treatment, control)
    # mSPRT looks: cumulative data at the end of each day; the p-value is the running
    # minimum of 1/Λ over them (Johari et al. 2017).
    abs_looks = [difference_look(t, c, criteria.mde_relative) for t, c in pairs]
    rel_looks = [relative_look(t, c, criteria.mde_relative) for t, c in pairs]
    absolute = msprt(abs_looks, alpha)
    relative = msprt(rel_looks, alpha)
    summary = summarise(treatment, 1 - criteria.alpha)

    enough = min(treatment.users, control.users) >= criteria.min_users_per_policy
    direction = _direction(absolute)
    effect = (
        f"Δ = {absolute.estimate:+.4g} (always-valid {1 - alpha:.1%} CI "
        f"[{absolute.lower:+.4g}, {absolute.upper:+.4g}]), relative {relative.estimate:+.2%}, "
        f"p = {absolute.p_value:.3g} (α = {alpha:.3g})"
    )
    reasons: list[str] = []
    days: float | None = None
    if guardrails == "failing":
        recommendation: Recommendation = "kill"
        reasons.append("guardrails keep failing")
    elif enough and absolute.significant and direction < 0:
        recommendation = "kill"
        reasons.append(f"significantly worse than {control.name}: {effect}")
    elif (enough and absolute.significant and direction > 0
          and guardrails == "healthy" and not srm.flagged):
        recommendation = "ship"
        reasons.append(f"significantly better than {control.name}: {effect}")
        reasons.append("guardrails healthy, no sample-ratio mismatch")
    else:
        recommendation = "iterate"
        reasons, days = _iterate_reasons(treatment, control, absolute, relative, abs_looks[-1],
                                         effect, alpha, criteria, srm, guardrails)
    if srm.flagged and recommendation == "kill":
        reasons.append(f"note: sample-ratio mismatch (p = {srm.p_value:.3g})")
    return PolicyVerdict(summary, absolute, relative, alpha, recommendation, reasons, days)


def _direction(absolute: SequentialResult) -> int:
    """+1 when the always-valid interval of Δ lies above 0, -1 below, 0 when it holds 0."""
    if math.isnan(absolute.lower) and absolute.significant:  # empty intersection
        return 1 if absolute.estimate > 0 else -1
    if absolute.lower > 0:
        return 1
    return -1 if absolute.upper < 0 else 0


def _iterate_reasons(
    treatment: PolicyData,
    control: PolicyData,
    absolute: SequentialResult,
    relative: SequentialResult,
    last_look: Look,
    effect: str,
    alpha: float,
    criteria: VerdictCriteria,
    srm: SRMResult,
    guardrails: GuardrailState,
) -> tuple[list[str], float | None]:
    """Why a policy is neither shipped nor killed yet, and the further days estimated."""
    reasons: list[str] = []
    days: float | None = None
    direction = _direction(absolute)
    enough = min(treatment.users, control.users) >= criteria.min_users_per_policy
    if min(treatment.rewards.n, control.rewards.n) == 0:
        reasons.append(
            f"nothing to compare yet: {treatment.name} has {treatment.rewards.n:.0f} "
            f"rewarded users, {control.name} {control.rewards.n:.0f}"
        )
    elif absolute.significant and direction != 0:
        word = "better" if direction > 0 else "worse"
        reasons.append(f"significantly {word} than {control.name}: {effect}")
    else:
        reasons.append(f"no significant difference from {control.name} yet: {effect}")
    if not enough:
        reasons.append(
            f"not enough users: {treatment.name} {treatment.users:.0f}, {control.name} "
            f"{control.users:.0f} (minimum {criteria.min_users_per_policy})"
        )
    if srm.flagged:
        reasons.append(
            f"sample-ratio mismatch (p = {srm.p_value:.3g} < {srm.threshold:g}): "
            "assignment is broken, results are not trustworthy"
        )
    if guardrails != "healthy":
        reasons.append(f"guardrails are {guardrails}, not healthy")
    mde = criteria.mde_relative
    if relative.lies_within(-mde, mde):
        reasons.append(
            f"the effect is smaller than the MDE: relative lift CI "
            f"[{relative.lower:+.2%}, {relative.upper:+.2%}] lies within ±{mde:.0%}"
        )
        days = 0.0
    elif not (absolute.significant and direction > 0) or not enough:
        days, note = _additional_days(treatment, control, last_look, alpha, criteria)
        if days is not None:
            reasons.append(f"about {math.ceil(days)} more days needed: {note}")
        else:
            reasons.append(f"cannot estimate the days needed: {note}")
    return reasons, days


def reach_verdict(
    policies: Sequence[PolicyData],
    control: str,
    split: Mapping[str, float],
    criteria: VerdictCriteria | None = None,
    guardrails: GuardrailState = "unknown",
) -> VerdictReport:
    """Compare every policy in ``policies`` with ``control`` and recommend ship/iterate/kill.

    Args:
        policies: every policy of the experiment, control included.
        control: the control policy's name.
        split: configured traffic weight per policy (for the SRM test).
        criteria: verdict criteria (defaults if ``None``).
        guardrails: "failing" when the guardrails keep failing (→ kill), "healthy"
            when the latest run is all ok (required to ship), else "degraded"/"unknown".
    """
    criteria = criteria or VerdictCriteria()
    if guardrails not in get_args(GuardrailState):
        raise ValueError(
            f"guardrails must be one of {get_args(GuardrailState)}, got {guardrails!r}"
        )
    by_name: dict[str, PolicyData] = {}
    for p in policies:
        if p.name in by_name:
            raise ValueError(f"policy {p.name!r} appears twice")
        by_name[p.name] = p
    if control not in by_name:
        raise ValueError(f"control policy {control!r} not among {', '.join(by_name)}")
    missing = sorted(set(by_name) - set(split))
    if missing:
        raise ValueError(f"policies without a configured split: {', '.join(missing)}")
    srm = srm_test({p.name: p.users for p in policies}, split, criteria.srm_p_threshold)
    others = [p for p in policies if p.name != control]
    m = len(others) if criteria.correction == "bonferroni" else 1
    alpha = criteria.alpha / max(m, 1)  # Bonferroni over the m comparisons with control.
    base = by_name[control]
    verdicts = [_compare(p, base, alpha, criteria, srm, guardrails) for p in others]
    days = max((len(p.daily) for p in policies), default=0)
    control_summary = summarise(base, 1 - criteria.alpha)
    return VerdictReport(control_summary, verdicts, srm, guardrails, criteria, days)
