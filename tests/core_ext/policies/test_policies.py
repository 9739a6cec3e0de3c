"""The operator façade and the policy parameter objects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditd.core_ext.policies import (
    POLICY_NAMES,
    ControlParams,
    ControlPolicy,
    Decision,
    EpsilonGreedyParams,
    EpsilonGreedyPolicy,
    Rng,
    ThompsonParams,
    ThompsonPolicy,
    UCB1Policy,
    UCBParams,
    get_policy,
    make_kernel,
    params_from_dict,
)


def test_policy_names() -> None:
    assert POLICY_NAMES == ("thompson", "ucb", "egreedy", "control")


@pytest.mark.parametrize(("name", "params", "match"), [
    ("nope", {}, "unknown policy"),
    ("thompson", {"alpha": 1.0}, "unknown parameter"),
    ("thompson", {"alpha0": 0.0}, "alpha0"),
    ("thompson", {"beta0": -1}, "beta0"),
    ("thompson", {"alpha0": "1"}, "number"),
    ("thompson", {"alpha0": True}, "number"),
    ("thompson", {"alpha0": math.nan}, "finite"),
    ("ucb", {"c": -1.0}, "c must be"),
    ("egreedy", {"epsilon": 1.5}, "epsilon"),
    ("egreedy", {"epsilon": math.nan}, "epsilon"),
    ("egreedy", {"decay": -0.1}, "decay"),
    ("control", {"default_arm": ""}, "default_arm"),
    ("control", {"default_arm": 3}, "default_arm"),
])
def test_bad_params_raise(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        params_from_dict(name, params)


def test_params_defaults_and_immutability() -> None:
    assert params_from_dict("thompson", None) == ThompsonParams(1.0, 1.0)
    assert params_from_dict("ucb", {}) == UCBParams(math.sqrt(2))
    assert params_from_dict("egreedy", {"epsilon": 0.2}) == EpsilonGreedyParams(0.2, 0.0)
    assert params_from_dict("control", {"default_arm": "a"}) == ControlParams("a")
    with pytest.raises(AttributeError):
        ThompsonParams().alpha0 = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(("name", "params", "cls"), [
    ("thompson", ThompsonParams(2.0, 3.0), ThompsonPolicy),
    ("ucb", UCBParams(0.5), UCB1Policy),
    ("egreedy", EpsilonGreedyParams(0.3, 0.1), EpsilonGreedyPolicy),
    ("control", ControlParams("b"), ControlPolicy),
])
def test_make_kernel(name: str, params, cls) -> None:
    kernel = make_kernel(name, params, np.zeros(3), np.zeros(3), Rng(1), arms=["a", "b", "c"])
    assert isinstance(kernel, cls)
    if name == "control":
        assert kernel.default_arm == 1
    with pytest.raises(ValueError, match="takes"):
        make_kernel("ucb" if name != "ucb" else "thompson", params, np.zeros(3), np.zeros(3),
                    Rng(1))


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_facade_select_and_update(name: str) -> None:
    policy = get_policy(name, None, seed=3)
    decision = policy.select({"user": "u1"}, ["arm1", "arm2"])
    assert isinstance(decision, Decision)
    assert decision.arm in ("arm1", "arm2") and 0 < decision.propensity <= 1
    policy.update(decision.arm, 1.0)
    names = [f"movie-{i}" for i in range(9)]            # grows the arrays past 4
    for i in range(40):
        d = policy.select({}, names[: 2 + i % 8])
        policy.update(d.arm, float(i % 2))
    stats = policy.stats()
    assert sum(p for p, _ in stats.values()) == 41
    assert stats[decision.arm][0] >= 1
    assert set(policy.arms) >= set(names[:9])


def test_facade_is_reproducible_with_a_seed() -> None:
    def run() -> list[Decision]:
        p = get_policy("thompson", {"alpha0": 1.0, "beta0": 1.0}, seed=9)
        out = []
        for i in range(30):
            d = p.select({}, ["a", "b", "c"])
            p.update(d.arm, float(i % 3 == 0))
            out.append(d)
        return out

    assert run() == run()


def test_facade_control_default_arm_by_name() -> None:
    policy = get_policy("control", {"default_arm": "b"}, seed=1)
    assert policy.select({}, ["a", "b"]) == Decision("b", 1.0)
    d = policy.select({}, ["a", "c"])
    assert d.arm in ("a", "c") and d.propensity == 0.5


@pytest.mark.parametrize(("call", "match"), [
    (lambda p: p.select({}, []), "non-empty"),
    (lambda p: p.select({}, "ab"), "non-empty list"),
    (lambda p: p.select({}, ["a", "a"]), "more than once"),
    (lambda p: p.select([], ["a"]), "context"),
    (lambda p: p.select({}, ["a", ""]), "non-empty strings"),
    (lambda p: p.update("a", 2.0), "reward"),
    (lambda p: p.update("a", math.nan), "reward"),
    (lambda p: p.update("", 1.0), "arm"),
])
def test_facade_bad_input(call, match: str) -> None:
    policy = get_policy("egreedy", {"epsilon": 0.1})
    with pytest.raises(ValueError, match=match):
        call(policy)
    assert policy.stats() == {}


def test_policy_wire_codes_never_change():
    """Decision ids already handed out carry these codes: a new policy is appended, an
    existing one keeps its code (the order of ``PolicyName``)."""
    from banditd.core_ext.policies import POLICY_CODES

    assert POLICY_CODES == {"thompson": 0, "ucb": 1, "egreedy": 2, "control": 3}
