"""Experiment configuration: guardrail thresholds and verdict criteria parse,
validate and round-trip (``banditd.server.experiment_settings``)."""

from __future__ import annotations

import json
import math

import pytest

from banditd.server.experiment_settings import GuardrailThresholds, Threshold, VerdictCriteria

DEFAULTS = GuardrailThresholds()


def test_runbook_defaults() -> None:
    assert DEFAULTS.to_dict() == {
        "error_rate": {"warning": 0.005, "critical": 0.01},
        "p95_latency_ms": {"warning": 100.0, "critical": 120.0},
        "arm_share": {"warning": 0.40, "critical": 0.50},
        "reward_drop": {"warning": 0.03, "critical": 0.05},
        "reward_drop_test": {"alpha": 0.01, "min_samples_per_arm": 1000},
    }


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (0.03, "ok"), (0.05, "warn"), (0.0300001, "warn"), (0.0500001, "critical"),
        (None, "insufficient_data"), (math.nan, "insufficient_data"),
    ],
)
def test_threshold_classify_at_the_default_reward_drop_levels(value, status) -> None:
    assert DEFAULTS.reward_drop.classify(value) == status


def test_from_dict_merges_partial_overrides_and_round_trips() -> None:
    t = GuardrailThresholds.from_dict({"error_rate": {"critical": 0.02},
                                       "reward_drop_test": {"min_samples_per_arm": 500}})
    assert t.error_rate == Threshold(0.005, 0.02)
    assert t.p95_latency_ms == DEFAULTS.p95_latency_ms
    assert t.reward_drop_test.min_samples_per_arm == 500
    assert GuardrailThresholds.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert GuardrailThresholds.from_dict(None) == GuardrailThresholds.from_dict({}) == DEFAULTS


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"error_rate": {"warning": 0.02}}, "must be <= critical"),
        ({"arm_share": {"warning": 0.6, "critical": 0.5}}, "must be <= critical"),
        ({"error_rate": {"critical": 1.5}}, r"error_rate.critical must be in \[0.0, 1.0\]"),
        ({"arm_share": {"warning": -0.1}}, r"arm_share.warning must be in"),
        ({"reward_drop": {"critical": 2}}, r"reward_drop.critical must be in"),
        ({"p95_latency_ms": {"warning": -5}}, r"p95_latency_ms.warning must be in"),
        ({"p95_latency_ms": {"critical": math.inf}}, "must be finite"),
        ({"error_rate": {"critical": math.nan}}, "must be finite"),
        ({"error_rate": {"critical": "0.01"}}, "must be a number"),
        ({"error_rate": {"critical": True}}, "must be a number"),
        ({"error_rate": 0.01}, "must be an object"),
        ({"error_rate": {"crit": 0.01}}, "unknown keys in error_rate: crit"),
        ({"latency": {}}, "unknown guardrail keys: latency"),
        ({"reward_drop_test": {"alpha": 0.7}}, "alpha must be in"),
        ({"reward_drop_test": {"min_samples_per_arm": 1.5}}, "must be an integer"),
        ({"reward_drop_test": {"min_samples_per_arm": 1}}, "must be >= 2"),
        ({"reward_drop_test": {"beta": 1}}, "unknown keys in reward_drop_test"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_from_dict_rejects_bad_overrides(data, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        GuardrailThresholds.from_dict(data)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"alpha": 0.0}, "alpha must be in"),
        ({"alpha": 0.5}, "alpha must be in"),
        ({"alpha": "0.05"}, "alpha must be a number"),
        ({"mde_relative": 0}, "mde_relative must be in"),
        ({"min_users_per_policy": 1}, "min_users_per_policy must be >= 2"),
        ({"min_users_per_policy": 100.0}, "must be an integer"),
        ({"srm_p_threshold": 1.0}, "srm_p_threshold must be in"),
        ({"power": 1.0}, "power must be in"),
        ({"correction": "holm"}, "correction must be one of"),
        ({"alpah": 0.05}, "unknown verdict criteria: alpah"),
        ("alpha=0.05", "must be a JSON object"),
    ],
)
def test_criteria_validation(data, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        VerdictCriteria.from_dict(data)


def test_criteria_round_trip() -> None:
    c = VerdictCriteria.from_dict({"alpha": 0.01, "min_users_per_policy": 5000})
    assert c.mde_relative == 0.05 and c.alpha == 0.01
    assert VerdictCriteria.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert VerdictCriteria.from_dict(None) == VerdictCriteria()
