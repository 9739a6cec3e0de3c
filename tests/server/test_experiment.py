"""Experiment configurations are validated before they reach the database."""

import pytest

from banditd.server.experiment import ExperimentConfigError, ExperimentSpec

GOOD = {"id": "exp-1", "name": "A test", "arms": ("a", "b", "c")}


def test_defaults_split_traffic_equally_between_policies():
    spec = ExperimentSpec(**GOOD)
    assert spec.policies == ("thompson", "egreedy", "ucb", "control")
    assert spec.policy_split == (0.25, 0.25, 0.25, 0.25)
    assert spec.default_policy == "control"


def test_reward_is_normalised_to_the_unit_interval():
    spec = ExperimentSpec(**GOOD, reward_min=-1.0, reward_max=3.0, default_reward=0.0)
    assert spec.normalise_reward(-1.0) == 0.0
    assert spec.normalise_reward(3.0) == 1.0
    assert spec.normalise_reward(1.0) == 0.5


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ""}, "experiment id"),
        ({"id": "has space"}, "experiment id"),
        ({"id": "x" * 129}, "experiment id"),
        ({"name": " "}, "name must not be empty"),
        ({"arms": ()}, "at least one arm"),
        ({"arms": ("a", "a", "b")}, "duplicate arms: a"),
        ({"arms": ("a", "")}, "non-empty"),
        ({"arms": ("a", "b\nc")}, "control characters"),
        ({"policies": ("thompson", "bogus")}, "unknown policy 'bogus'"),
        ({"policies": ("ucb", "ucb")}, "only once"),
        ({"policies": ("ucb", "control"), "policy_split": (0.5, 0.6)}, "sum to 1"),
        ({"policies": ("ucb", "control"), "policy_split": (1.0,)}, "1 shares for 2 policies"),
        ({"policies": ("ucb", "control"), "policy_split": (1.5, -0.5)}, ">= 0"),
        ({"traffic_pct": 1.5}, r"traffic must be a share in \(0, 1\]"),
        ({"traffic_pct": float("nan")}, "traffic"),
        ({"reward_min": 1.0, "reward_max": 1.0}, "reward range"),
        ({"reward_window_seconds": 0}, "reward window"),
        ({"default_reward": 2.0}, "default reward 2.0 is outside"),
        ({"duration_days": 0}, "duration must be > 0"),
        ({"duration_days": -3}, "duration must be > 0"),
        ({"policy_params": {"thompson": {"alpha0": -1.0}}}, "thompson parameters"),
        ({"policy_params": {"egreedy": {"epsilon": 1.5}}}, "egreedy parameters"),
        ({"policy_params": {"ucb": {"c": -1.0}}}, "ucb parameters"),
        ({"policy_params": {"thompson": {"nonsense": 1.0}}}, "thompson parameters"),
        ({"policy_params": {"control": {"default_arm": "zzz"}}}, "not one of the arms"),
        ({"policies": ("ucb",), "policy_params": {"thompson": {}}}, "not in the experiment"),
        ({"default_policy": "thompson"}, "default_policy must be 'control'"),
    ],
)
def test_invalid_configurations_are_refused_with_a_clear_message(changes, message):
    with pytest.raises(ExperimentConfigError, match=message):
        ExperimentSpec(**{**GOOD, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arms": ("a",)}, "at least 2 arms to choose between, got 1"),
        ({"policies": ("thompson", "ucb")}, "have no 'control': add it"),
        ({"policies": ("ucb", "control"), "policy_split": (1.0, 0.0)},
         "policy control has a share of 0"),
        ({"traffic_pct": 0.0}, r"traffic must be in \(0, 1\], got 0"),
        ({"guardrails": {"error_rate": {"critical": "high"}}}, "guardrail thresholds"),
        ({"verdict_criteria": {"alpha": 0.7}}, "verdict criteria: alpha"),
    ],
)
def test_a_new_experiment_must_be_worth_running(changes, message):
    """A stored spec with one arm or no traffic still loads (a server must not refuse
    yesterday's experiment); writing one is refused with the fix."""
    spec = ExperimentSpec(**{**GOOD, **changes})
    with pytest.raises(ExperimentConfigError, match=message):
        spec.validate_for_write()


def test_a_good_spec_is_writable():
    ExperimentSpec(**GOOD).validate_for_write()
