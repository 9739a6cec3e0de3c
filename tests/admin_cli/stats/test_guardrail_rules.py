"""Guardrail checks: every threshold boundary, the reward-drop bound, configuration
validation, and the rollback rule table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from banditd.admin_cli.stats.guardrail_rules import (
    CheckResult,
    GuardrailInputs,
    check_arm_share,
    check_error_rate,
    check_p95_latency,
    check_reward_drop,
    p95,
    reward_drops,
    rollback_decision,
    run_checks,
)
from banditd.admin_cli.stats.sufficient import SampleStats
from banditd.server.experiment_settings import CHECK_NAMES, GuardrailThresholds

DEFAULTS = GuardrailThresholds()

# (value relative to the thresholds, expected status): just under / at / just over the
# warning and the critical level. "At" is not a breach.
BOUNDARY = [
    ("under_warning", "ok"),
    ("at_warning", "ok"),
    ("over_warning", "warn"),
    ("under_critical", "warn"),
    ("at_critical", "warn"),
    ("over_critical", "critical"),
]


ERRORS = {  # errors out of 10⁶ requests
    "under_warning": 4_999, "at_warning": 5_000, "over_warning": 5_001,
    "under_critical": 9_999, "at_critical": 10_000, "over_critical": 10_001,
}


@pytest.mark.parametrize(("case", "status"), BOUNDARY)
def test_error_rate_boundaries(case: str, status: str) -> None:
    # 5000/10⁶ and 10000/10⁶ round to the same doubles as the literals 0.005 and 0.01.
    assert 5_000 / 1_000_000 == 0.005 and 10_000 / 1_000_000 == 0.01
    result = check_error_rate(ERRORS[case], 1_000_000)
    assert result.status == status
    assert (result.warning, result.critical) == (0.005, 0.01)


LATENCY = {
    "under_warning": 99.999, "at_warning": 100.0, "over_warning": 100.001,
    "under_critical": 119.999, "at_critical": 120.0, "over_critical": 120.001,
}


@pytest.mark.parametrize(("case", "status"), BOUNDARY)
def test_p95_latency_boundaries(case: str, status: str) -> None:
    assert check_p95_latency(LATENCY[case], 5000).status == status


SHARE = {  # decisions on the busiest arm out of 10⁶
    "under_warning": 399_999, "at_warning": 400_000, "over_warning": 400_001,
    "under_critical": 499_999, "at_critical": 500_000, "over_critical": 500_001,
}


@pytest.mark.parametrize(("case", "status"), BOUNDARY)
def test_arm_share_boundaries(case: str, status: str) -> None:
    top = SHARE[case]
    rest = 1_000_000 - top
    result = check_arm_share({"top": top, "b": rest // 2, "c": rest - rest // 2})
    assert result.status == status
    assert result.value == top / 1_000_000
    assert "arm top" in result.detail


def _constant(value: float, n: int = 1024) -> SampleStats:
    """n equal rewards: with n a power of two, Σx, Σx² and the mean are exact and s² = 0,
    so the lower confidence bound of the drop equals the drop itself."""
    return SampleStats(n, value * n, value * value * n)


DROP = {
    "under_warning": 0.03 - 1e-6, "over_warning": 0.03 + 1e-6,
    "under_critical": 0.05 - 1e-6, "over_critical": 0.05 + 1e-6,
}


@pytest.mark.parametrize(("case", "status"), [b for b in BOUNDARY if not b[0].startswith("at")])
def test_reward_drop_boundaries_default_thresholds(case: str, status: str) -> None:
    rewards = {"control": _constant(1.0), "thompson": _constant(1.0 - DROP[case])}
    result = check_reward_drop(rewards, "control")
    assert result.value == pytest.approx(DROP[case], abs=1e-12)
    assert result.status == status


# A drop 1 − x̄_P/x̄_C is a multiple of 2⁻⁵³ and cannot equal the double nearest to 0.03,
# so the "at" cases use dyadic thresholds 1/32 and 1/16, which a drop can hit exactly.
DYADIC = GuardrailThresholds.from_dict({"reward_drop": {"warning": 1 / 32, "critical": 1 / 16}})
DYADIC_DROP = {
    "under_warning": 1 / 32 - 2**-20, "at_warning": 1 / 32, "over_warning": 1 / 32 + 2**-20,
    "under_critical": 1 / 16 - 2**-20, "at_critical": 1 / 16, "over_critical": 1 / 16 + 2**-20,
}


@pytest.mark.parametrize(("case", "status"), BOUNDARY)
def test_reward_drop_boundaries_exact(case: str, status: str) -> None:
    rewards = {"control": _constant(1.0), "ucb": _constant(1.0 - DYADIC_DROP[case])}
    result = check_reward_drop(rewards, "control", DYADIC)
    assert result.value == DYADIC_DROP[case]
    assert result.status == status


def test_reward_drop_lower_bound_formula() -> None:
    """d_L = d̂ − z_{1−α/k}·√(V_P/x̄_C² + x̄_P²·V_C/x̄_C⁴), k = 2 policies judged."""
    c, a, b = (SampleStats.from_binary(k, 20_000) for k in (2_000, 1_900, 2_050))
    drops = {d.policy: d for d in reward_drops({"control": c, "a": a, "b": b}, "control")}
    z = sps.norm.ppf(1 - 0.01 / 2)
    var = a.variance_of_mean / 0.1**2 + 0.095**2 * c.variance_of_mean / 0.1**4
    assert drops["a"].drop == pytest.approx(0.05)
    assert drops["a"].lower_bound == pytest.approx(0.05 - z * math.sqrt(var), rel=1e-9)
    result = check_reward_drop({"control": c, "a": a, "b": b}, "control")
    assert result.value == drops["a"].lower_bound  # the worst policy is reported


def test_reward_drop_insufficient_data_with_tiny_samples() -> None:
    tiny = {"control": SampleStats.from_binary(5, 50), "thompson": SampleStats.from_binary(0, 50)}
    result = check_reward_drop(tiny, "control")
    assert result.status == "insufficient_data" and result.value is None
    assert "50 < 1000" in result.detail
    # Enough policy data but a tiny control: still not judged.
    small_control = {"control": SampleStats.from_binary(5, 50),
                     "thompson": SampleStats.from_binary(0, 5000)}
    assert check_reward_drop(small_control, "control").status == "insufficient_data"


def test_reward_drop_judges_only_policies_with_enough_data() -> None:
    rewards = {
        "control": SampleStats.from_binary(1000, 10_000),
        "big": SampleStats.from_binary(1000, 10_000),
        "small": SampleStats.from_binary(0, 20),
    }
    result = check_reward_drop(rewards, "control")
    assert result.status == "ok"
    assert "small: not judged" in result.detail


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        ({"control": SampleStats.from_binary(0, 5000), "a": SampleStats.from_binary(9, 5000)},
         "control reward mean is 0"),
        ({"control": SampleStats.from_binary(9, 5000)}, "no policy besides control"),
    ],
)
def test_reward_drop_degenerate(rewards: dict, message: str) -> None:
    result = check_reward_drop(rewards, "control")
    assert result.status == "insufficient_data"
    assert message in result.detail


def test_reward_drop_does_not_fire_on_aa_noise() -> None:
    """A/A: 3 policies and control at a 10 % rate, 1000 users each (the smallest sample
    judged, hence the noisiest). Over 2000 runs the fraction of runs with any warning
    must stay ≤ α + 3 SE (α = 0.01 one-sided, Bonferroni over the 3 policies); the
    expected rate is ≈ 0.005 since the bound must also clear 0.03."""
    rng = np.random.default_rng(2024)
    runs, n = 2000, 1000
    hits = rng.binomial(n, 0.1, size=(runs, 4))
    fired = 0
    for row in hits:
        rewards = {name: SampleStats.from_binary(int(k), n)
                   for name, k in zip(("control", "a", "b", "c"), row, strict=True)}
        fired += check_reward_drop(rewards, "control").breached
    assert fired / runs <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / runs)


def test_reward_drop_fires_on_a_real_drop() -> None:
    """True drop 20 % (0.10 → 0.08), 20 000 users per arm: SE(d̂) ≈ 0.026, so the 99 %
    lower bound ≈ 0.14 ≫ 0.05 — critical."""
    rng = np.random.default_rng(1)
    rewards = {"control": SampleStats.from_binary(int(rng.binomial(20_000, 0.10)), 20_000),
               "egreedy": SampleStats.from_binary(int(rng.binomial(20_000, 0.08)), 20_000)}
    assert check_reward_drop(rewards, "control").status == "critical"


@pytest.mark.parametrize(
    ("result", "detail"),
    [
        (lambda: check_error_rate(0, 0), "no requests"),
        (lambda: check_p95_latency(None, 0), "no decisions"),
        (lambda: check_p95_latency(50.0, 0), "no decisions"),
        (lambda: check_arm_share({}), "no decisions"),
        (lambda: check_arm_share({"a": 0, "b": 0}), "no decisions"),
    ],
)
def test_checks_without_data_are_insufficient(result, detail: str) -> None:
    r = result()
    assert r.status == "insufficient_data" and r.value is None and detail in r.detail
    json.dumps(r.to_dict(), allow_nan=False)


def test_p95_matches_postgres_percentile_cont() -> None:
    # percentile_cont(0.95) over 1..100 = 95.05 (linear interpolation between 95 and 96).
    assert p95(range(1, 101)) == pytest.approx(95.05)
    assert p95([]) is None


def test_run_checks_in_order() -> None:
    inputs = GuardrailInputs(
        errors=3, requests=1000, p95_latency_ms=80.0, decisions=1000,
        arm_counts={"a": 300, "b": 350, "c": 350},
        rewards={"control": SampleStats.from_binary(100, 1000),
                 "thompson": SampleStats.from_binary(101, 1000)},
    )
    results = run_checks(inputs)
    assert [r.name for r in results] == list(CHECK_NAMES)
    assert [r.status for r in results] == ["ok", "ok", "ok", "ok"]
    json.dumps([r.to_dict() for r in results], allow_nan=False)


# -- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: check_error_rate(5, 3), "errors <= requests"),
        (lambda: check_p95_latency(-1.0, 10), "latency must be finite"),
        (lambda: check_arm_share({"a": -1}), "counts must be >= 0"),
        (lambda: check_reward_drop({"a": SampleStats.empty()}, "control"), "control policy"),
        (lambda: CheckResult("error_rate", 0.1, 0.005, 0.01, "bad"), "unknown status"),  # type: ignore[arg-type]
    ],
)
def test_invalid_check_input(call, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()


# -- rollback rule --------------------------------------------------------------------


def run(**statuses: str) -> list[CheckResult]:
    """A guardrail run; unspecified checks are ok. Critical values are 2 × critical."""
    out = []
    for name in CHECK_NAMES:
        t = DEFAULTS.for_check(name)
        status = statuses.get(name, "ok")
        value = {"ok": t.warning / 2, "warn": (t.warning + t.critical) / 2,
                 "critical": 2 * t.critical, "insufficient_data": None}[status]
        out.append(CheckResult(name, value, t.warning, t.critical, status))  # type: ignore[arg-type]
    return out


OK = run()


@pytest.mark.parametrize(
    ("history", "consecutive", "roll_back", "rules"),
    [
        ([], 3, False, []),
        ([OK], 3, False, []),
        ([run(reward_drop="critical")], 3, False, []),
        ([run(arm_share="warn", reward_drop="warn")], 3, False, []),
        ([run(arm_share="critical", reward_drop="critical")], 3, True, ["two_or_more_critical"]),
        ([run(error_rate="critical")], 3, True, ["error_rate_or_latency_critical"]),
        ([run(p95_latency_ms="critical")], 3, True, ["error_rate_or_latency_critical"]),
        ([run(error_rate="critical", p95_latency_ms="critical")], 3, True,
         ["two_or_more_critical", "error_rate_or_latency_critical"]),
        ([run(arm_share="critical")] * 2, 3, False, []),
        ([run(arm_share="critical")] * 3, 3, True, ["critical_for_n_runs"]),
        ([OK, *[run(reward_drop="critical")] * 3], 3, True, ["critical_for_n_runs"]),
        ([run(reward_drop="critical"), OK, *[run(reward_drop="critical")] * 2], 3, False, []),
        ([run(reward_drop="critical"), run(reward_drop="warn"), *[run(reward_drop="critical")] * 2],
         3, False, []),
        ([*[run(reward_drop="critical")] * 2, run(reward_drop="insufficient_data"),
          run(reward_drop="critical")], 3, False, []),
        ([run(arm_share="critical"), run(reward_drop="critical"), run(arm_share="critical")],
         3, False, []),
        ([*[run(arm_share="critical")] * 3, OK], 3, False, []),
        ([run(reward_drop="critical")], 1, True, ["critical_for_n_runs"]),
        ([run(reward_drop="critical")] * 5, 5, True, ["critical_for_n_runs"]),
        ([run(reward_drop="critical")] * 4, 5, False, []),
    ],
)
def test_rollback_rules(history, consecutive: int, roll_back: bool, rules: list[str]) -> None:
    decision = rollback_decision(history, consecutive)
    assert decision.should_roll_back == roll_back
    assert decision.rules == rules
    assert bool(decision.reasons) == roll_back
    json.dumps(decision.to_dict(), allow_nan=False)


def test_rollback_reasons_list_failing_checks_with_value_and_threshold() -> None:
    decision = rollback_decision([run(error_rate="critical", reward_drop="critical")])
    assert decision.reasons == [
        "error_rate value=0.02 threshold=0.01: 2 checks critical, error rate or latency critical",
        "reward_drop value=0.1 threshold=0.05: 2 checks critical",
    ]
    persistent = rollback_decision([run(arm_share="critical")] * 3)
    assert persistent.reasons == [
        "arm_share value=1 threshold=0.5: critical for 3 consecutive runs"
    ]


def test_rollback_watch_list_when_not_yet_rolling_back() -> None:
    decision = rollback_decision([OK, run(reward_drop="critical"), run(reward_drop="critical")])
    assert not decision.should_roll_back
    assert decision.watch == [
        "reward_drop value=0.1 threshold=0.05: critical for 2 of 3 consecutive runs"
    ]


@pytest.mark.parametrize(
    ("history", "consecutive", "pattern"),
    [
        ([OK], 0, "consecutive must be an integer >= 1"),
        ([OK], True, "consecutive must be an integer >= 1"),
        ([[*OK, OK[0]]], 3, "appears twice"),
    ],
)
def test_rollback_invalid_input(history, consecutive, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        rollback_decision(history, consecutive)
