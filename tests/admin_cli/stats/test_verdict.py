"""Verdict engine: recommendation table, A/A error control through ``reach_verdict`` itself,
agreement with the vectorised mSPRT core, the days-needed estimate, degenerate input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from banditd.admin_cli.stats.sequential import (
    difference_look,
    look_p_value,
    msprt_path,
    required_variance,
    running_p_value,
    tau2_from_mde,
)
from banditd.admin_cli.stats.sufficient import SampleStats, pool
from banditd.admin_cli.stats.verdict import PolicyData, VerdictCriteria, reach_verdict

SPLIT2 = {"control": 0.5, "thompson": 0.5}


def policy(rng: np.random.Generator, name: str, rate: float, days: int, per_day: int,
           users: float | None = None) -> PolicyData:
    daily = tuple(SampleStats.from_binary(int(rng.binomial(per_day, rate)), per_day)
                  for _ in range(days))
    total = pool(daily)
    return PolicyData(name, total, total.n if users is None else users, daily)


def pair(seed: int, rate_t: float, rate_c: float = 0.10, days: int = 14, per_day: int = 5000):
    rng = np.random.default_rng(seed)
    return [policy(rng, "control", rate_c, days, per_day),
            policy(rng, "thompson", rate_t, days, per_day)]


def strict_json(report) -> dict:
    return json.loads(json.dumps(report.to_dict(), allow_nan=False))


# -- recommendations ------------------------------------------------------------------


def test_ship_when_significantly_better_with_healthy_guardrails() -> None:
    report = reach_verdict(pair(1, 0.12), "control", SPLIT2, guardrails="healthy")
    (v,) = report.verdicts
    assert v.recommendation == "ship"
    assert v.absolute_lift.lower > 0 and v.absolute_lift.p_value <= 0.05
    assert v.relative_lift.estimate == pytest.approx(0.2, abs=0.05)
    assert "significantly better" in v.reasons[0]
    out = strict_json(report)
    assert out["policies"][0]["recommendation"] == "ship"
    assert out["srm"]["flagged"] is False


def test_kill_when_significantly_worse() -> None:
    (v,) = reach_verdict(pair(2, 0.08), "control", SPLIT2, guardrails="healthy").verdicts
    assert v.recommendation == "kill"
    assert v.absolute_lift.upper < 0
    assert "significantly worse" in v.reasons[0]


def test_kill_when_guardrails_keep_failing_even_if_better() -> None:
    (v,) = reach_verdict(pair(1, 0.12), "control", SPLIT2, guardrails="failing").verdicts
    assert v.recommendation == "kill"
    assert v.reasons == ["guardrails keep failing"]


@pytest.mark.parametrize("state", ["degraded", "unknown"])
def test_no_ship_without_healthy_guardrails(state: str) -> None:
    (v,) = reach_verdict(pair(1, 0.12), "control", SPLIT2, guardrails=state).verdicts
    assert v.recommendation == "iterate"
    assert any(f"guardrails are {state}" in r for r in v.reasons)


def test_no_ship_with_sample_ratio_mismatch() -> None:
    policies = pair(1, 0.12)
    # 70 000 vs 63 000 users under a 50/50 split: χ² ≈ 368, p ≈ 0.
    policies[1] = PolicyData("thompson", policies[1].rewards, 63_000, policies[1].daily)
    report = reach_verdict(policies, "control", SPLIT2, guardrails="healthy")
    assert report.srm.flagged
    (v,) = report.verdicts
    assert v.recommendation == "iterate"
    assert any("sample-ratio mismatch" in r for r in v.reasons)


def test_no_ship_before_the_users_floor() -> None:
    """Significantly better on 70 000 users per arm, but the floor is 100 000: iterate, and
    the users floor alone needs (100 000 − 70 000) / 5000 = 6 more days."""
    criteria = VerdictCriteria(min_users_per_policy=100_000)
    (v,) = reach_verdict(pair(1, 0.12), "control", SPLIT2, criteria, "healthy").verdicts
    assert v.absolute_lift.significant
    assert v.recommendation == "iterate"
    assert any("not enough users" in r for r in v.reasons)
    assert v.additional_days == pytest.approx(6.0)


def test_significantly_worse_below_the_users_floor_is_reported_not_killed() -> None:
    criteria = VerdictCriteria(min_users_per_policy=100_000)
    (v,) = reach_verdict(pair(2, 0.08), "control", SPLIT2, criteria, "healthy").verdicts
    assert v.recommendation == "iterate"
    assert v.reasons[0].startswith("significantly worse than control")
    assert any("not enough users" in r for r in v.reasons)


def test_iterate_with_days_needed() -> None:
    policies = pair(4, 0.102, days=3, per_day=2000)
    (v,) = reach_verdict(policies, "control", SPLIT2, guardrails="healthy").verdicts
    assert v.recommendation == "iterate"
    assert v.additional_days is not None and v.additional_days > 0
    assert any("more days needed" in r for r in v.reasons)


def test_days_needed_follows_the_stated_formula() -> None:
    """additional days = (N·V_now/V* − N)/r with V* from h(V*) + z_0.8 √V* = δ."""
    policies = pair(5, 0.10, days=4, per_day=3000)
    criteria = VerdictCriteria()
    (v,) = reach_verdict(policies, "control", SPLIT2, criteria, "healthy").verdicts
    c, t = policies[0].rewards, policies[1].rewards
    look = difference_look(t, c, criteria.mde_relative)
    assert not v.relative_lift.lies_within(-0.05, 0.05)  # else the engine reports 0 days
    delta = max(abs(look.estimate), 0.05 * c.mean)
    v_star = required_variance(delta, tau2_from_mde(0.05, c.mean), 0.05, 0.8)
    n_now = t.n + c.n
    expected = (n_now * look.variance / v_star - n_now) / 6000
    assert v.additional_days == pytest.approx(max(expected, 0.0), rel=1e-9)


def test_effect_bounded_within_mde_says_stop() -> None:
    """A/A with 60 000 users per arm per day for 14 days: relative CI ≈ ±2 %, inside ±5 %."""
    policies = pair(6, 0.10, days=14, per_day=60_000)
    (v,) = reach_verdict(policies, "control", SPLIT2, guardrails="healthy").verdicts
    assert v.recommendation == "iterate"
    assert v.additional_days == 0.0
    assert any("smaller than the MDE" in r for r in v.reasons)


def test_bonferroni_over_policies() -> None:
    rng = np.random.default_rng(7)
    policies = [policy(rng, name, 0.1, 3, 1000) for name in ("control", "a", "b", "c")]
    split = dict.fromkeys(("control", "a", "b", "c"), 1.0)
    report = reach_verdict(policies, "control", split)
    assert [v.alpha for v in report.verdicts] == pytest.approx([0.05 / 3] * 3)
    report = reach_verdict(policies, "control", split, VerdictCriteria(correction="none"))
    assert [v.alpha for v in report.verdicts] == [0.05] * 3


# -- error control through the engine ---------------------------------------------------


def test_aa_false_positive_rate_through_reach_verdict_matches_the_core() -> None:
    """400 A/A experiments, 14 daily looks, 2000 users/arm/day: ``reach_verdict`` flags the same
    experiments as the vectorised core, and at most α + 3 SE of them (SE = 0.011)."""
    rng = np.random.default_rng(14)
    experiments, days, per_day = 400, 14, 2000
    k = rng.binomial(per_day, 0.1, size=(experiments, 2, days))
    significant = []
    for e in range(experiments):
        policies = [
            PolicyData(name, pool(daily), per_day * days, daily)
            for name, daily in (
                (name, tuple(SampleStats.from_binary(int(x), per_day) for x in k[e, j]))
                for j, name in enumerate(("control", "thompson"))
            )
        ]
        (v,) = reach_verdict(policies, "control", SPLIT2, guardrails="healthy").verdicts
        significant.append(v.absolute_lift.significant)
        assert v.recommendation in ("ship", "kill") if v.absolute_lift.significant else True
    n = per_day * np.arange(1, days + 1)
    m_c, m_t = k[:, 0].cumsum(axis=1) / n, k[:, 1].cumsum(axis=1) / n
    var = m_t * (1 - m_t) / (n - 1) + m_c * (1 - m_c) / (n - 1)
    p = running_p_value(look_p_value(m_t - m_c, var, (0.05 * m_c) ** 2), axis=1)
    assert significant == list(p[:, -1] <= 0.05)
    assert np.mean(significant) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / experiments)


def test_each_day_is_a_look_and_partial_data_is_the_last() -> None:
    policies = pair(8, 0.11, days=5, per_day=3000)
    looks = [difference_look(pool(policies[1].daily[: d + 1]), pool(policies[0].daily[: d + 1]),
                             0.05) for d in range(5)]
    (v,) = reach_verdict(policies, "control", SPLIT2).verdicts
    assert v.absolute_lift.looks == 5
    assert v.absolute_lift.p_value == pytest.approx(msprt_path(looks)[-1].p_value, rel=1e-12)
    today = SampleStats.from_binary(40, 300)
    extended = [PolicyData(p.name, p.rewards + today, p.users + 300, p.daily) for p in policies]
    (v,) = reach_verdict(extended, "control", SPLIT2).verdicts
    assert v.absolute_lift.looks == 6


# -- degenerate input and validation ------------------------------------------------------


def test_all_zero_rewards_are_defined() -> None:
    zero = tuple(SampleStats.from_binary(0, 2000) for _ in range(5))
    policies = [PolicyData(n, pool(zero), 10_000, zero) for n in ("control", "thompson")]
    report = reach_verdict(policies, "control", SPLIT2, guardrails="healthy")
    (v,) = report.verdicts
    assert v.recommendation == "iterate" and v.absolute_lift.p_value == 1.0
    assert v.additional_days is None
    assert any("cannot estimate" in r for r in v.reasons)
    strict_json(report)


def test_no_data_at_all() -> None:
    policies = [PolicyData(n, SampleStats.empty(), 0) for n in ("control", "thompson")]
    report = reach_verdict(policies, "control", SPLIT2)
    (v,) = report.verdicts
    assert v.recommendation == "iterate"
    assert "no users" in report.srm.message
    assert strict_json(report)["policies"][0]["mean_ci"]["ci"] == [0.0, 1.0]


def test_only_control() -> None:
    p = pair(9, 0.1)[0]
    report = reach_verdict([p], "control", {"control": 1.0})
    assert report.verdicts == []
    strict_json(report)


def test_continuous_rewards_use_the_t_interval() -> None:
    rng = np.random.default_rng(10)
    daily = tuple(SampleStats.from_values(rng.uniform(0, 1, 1500)) for _ in range(3))
    p = PolicyData("control", pool(daily), 4500, daily)
    report = reach_verdict([p, PolicyData("thompson", pool(daily), 4500, daily)], "control", SPLIT2)
    assert report.control.mean_ci.method == "t"


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda p: reach_verdict([p[0], p[0]], "control", SPLIT2), "appears twice"),
        (lambda p: reach_verdict(p, "baseline", SPLIT2), "control policy 'baseline'"),
        (lambda p: reach_verdict(p, "control", {"control": 1}),
         "without a configured split: thompson"),
        (lambda p: reach_verdict(p, "control", SPLIT2, guardrails="fine"),
         "guardrails must be one of"),
        (lambda p: PolicyData("x", p[0].rewards, 1, p[0].daily, (1.0,)), "daily_users has 1"),
        (lambda p: PolicyData("x", SampleStats.empty(), 1, p[0].daily), "more observations"),
        (lambda p: PolicyData("x", p[0].rewards, -1), "users must be"),
        (lambda p: PolicyData("", p[0].rewards, 1), "name must not be empty"),
    ],
)
def test_invalid_input(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call(pair(11, 0.1, days=2, per_day=100))
