"""Off-policy estimators (admin_cli/offline/estimators.py) against known truths.

Coverage: on synthetic logs whose target-policy value V is known exactly, a 95 %
interval should contain V in about 95 % of independent datasets. With D datasets
the observed rate has binomial standard error sqrt(0.95 * 0.05 / D); we accept
rates within 3 of those (the delta method's small-sample under-coverage, of order
1/n, is well inside that at n = 1000).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from banditd.admin_cli.offline.estimators import (
    IPS,
    SNIPS,
    DirectMethod,
    DoublyRobust,
    EstimationConfig,
    LoggedData,
    as_action_dist,
    estimate_policy,
)

DATASETS = 200
COVERAGE_TOLERANCE = 3 * math.sqrt(0.95 * 0.05 / DATASETS)  # ~0.046


def _simulate_non_contextual(rng, n: int):
    """Logging mu = (0.5, 0.3, 0.2), Bernoulli rewards with means (0.3, 0.5, 0.7);
    target pi = (0.1, 0.2, 0.7), so V = 0.03 + 0.10 + 0.49 = 0.62."""
    mu = np.array([0.5, 0.3, 0.2])
    means = np.array([0.3, 0.5, 0.7])
    actions = rng.choice(3, size=n, p=mu)
    rewards = (rng.random(n) < means[actions]).astype(float)
    data = LoggedData(actions, rewards, mu[actions], 3)
    return data, np.array([0.1, 0.2, 0.7]), 0.62


def _simulate_contextual(rng, n: int):
    """Two contexts (x ~ Bernoulli(0.4)); logging and target depend on x, and so do the
    rewards, so the per-arm-mean model of DM is misspecified (DM is left out there).
    V = sum_x P(x) sum_a pi(a|x) r(x, a)."""
    p_x = np.array([0.6, 0.4])
    mu = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    pi = np.array([[0.2, 0.2, 0.6], [0.7, 0.2, 0.1]])
    means = np.array([[0.2, 0.5, 0.9], [0.8, 0.4, 0.1]])
    x = (rng.random(n) < p_x[1]).astype(int)
    # inverse-CDF draw of a ~ mu(. | x), vectorised over events
    actions = (rng.random(n)[:, None] > np.cumsum(mu[x], axis=1)[:, :-1]).sum(axis=1)
    rewards = (rng.random(n) < means[x, actions]).astype(float)
    data = LoggedData(actions, rewards, mu[x, actions], 3)
    truth = float(sum(p_x[c] * pi[c] @ means[c] for c in (0, 1)))
    return data, pi[x], truth


@pytest.mark.parametrize(
    ("simulate", "estimators"),
    [
        (_simulate_non_contextual, ("ips", "snips", "dm", "dr")),
        (_simulate_contextual, ("ips", "snips", "dr")),
    ],
)
def test_intervals_cover_the_true_value_at_the_stated_rate(simulate, estimators):
    rng = np.random.default_rng(2024)
    config = EstimationConfig(alpha=0.05)
    chosen = [e for e in (IPS(), SNIPS(), DirectMethod(), DoublyRobust()) if e.name in estimators]
    hits = dict.fromkeys(estimators, 0)
    errors = {name: [] for name in estimators}
    for _ in range(DATASETS):
        data, pi, truth = simulate(rng, 1000)
        for name, est in estimate_policy(data, pi, chosen, config).items():
            hits[name] += est.ci_low <= truth <= est.ci_high
            errors[name].append(est.value - truth)
    for name in estimators:
        rate = hits[name] / DATASETS
        assert abs(rate - 0.95) <= COVERAGE_TOLERANCE, (name, rate)
        # and no visible bias: mean error within 4 standard errors of 0
        err = np.array(errors[name])
        assert abs(err.mean()) <= 4 * err.std(ddof=1) / math.sqrt(DATASETS), name


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.0, 1.0),
)
def test_snips_never_exceeds_the_largest_reward(n, k, seed, scale):
    """SNIPS is a weighted mean of observed rewards (Swaminathan & Joachims 2015), so
    min r <= V_SNIPS <= max r; its (Wald) interval is centred on it."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, k, size=n)
    rewards = rng.random(n) * scale
    propensities = rng.uniform(0.001, 1.0, size=n)
    pi = rng.dirichlet(np.ones(k), size=n)
    est = SNIPS().estimate(LoggedData(actions, rewards, propensities, k), pi)
    tol = 1e-12
    assert rewards.min() - tol <= est.value <= rewards.max() + tol
    assert est.ci_low <= est.value <= est.ci_high
    assert est.value - est.ci_low == pytest.approx(est.ci_high - est.value, abs=1e-12)


def _zero_weight_case(seed: int = 0, n: int = 300, k: int = 4):
    """Per-event target distributions that put no mass on the logged action."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, k, size=n)
    rewards = rng.random(n)
    pi = rng.dirichlet(np.ones(k), size=n)
    pi[np.arange(n), actions] = 0.0
    pi /= pi.sum(axis=1, keepdims=True)
    return LoggedData(actions, rewards, np.full(n, 1.0 / k), k), pi


@pytest.mark.parametrize("model", [None, "fixed"])
def test_dr_equals_dm_when_every_importance_weight_is_zero(model):
    data, pi = _zero_weight_case()
    q = None if model is None else np.random.default_rng(1).random((len(data), data.n_arms))
    config = EstimationConfig()
    result = estimate_policy(data, pi, [DirectMethod(q), DoublyRobust(q)], config)
    dm, dr = result["dm"], result["dr"]
    assert dr.ess == 0.0
    assert dr.value == pytest.approx(dm.value, abs=1e-12)
    assert (dr.ci_low, dr.ci_high) == pytest.approx((dm.ci_low, dm.ci_high), abs=1e-12)


def test_dr_equals_ips_when_the_reward_model_is_zero():
    rng = np.random.default_rng(5)
    n, k = 500, 3
    data = LoggedData(rng.integers(0, k, n), rng.random(n), rng.uniform(0.1, 1, n), k)
    pi = rng.dirichlet(np.ones(k), size=n)
    config = EstimationConfig()
    result = estimate_policy(data, pi, [IPS(), DoublyRobust(reward_model=np.zeros(k))], config)
    ips, dr = result["ips"], result["dr"]
    assert dr.value == pytest.approx(ips.value, abs=1e-12)
    assert (dr.ci_low, dr.ci_high) == pytest.approx((ips.ci_low, ips.ci_high), abs=1e-12)


def test_fitted_dm_is_the_per_arm_mean_under_the_target():
    actions = np.array([0, 0, 1, 1, 1])
    rewards = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    data = LoggedData(actions, rewards, np.full(5, 0.5), 3)
    est = DirectMethod().estimate(data, np.array([0.5, 0.25, 0.25]))
    overall = rewards.mean()  # arm 2 was never logged
    assert est.value == pytest.approx(0.5 * 0.5 + 0.25 * (2 / 3) + 0.25 * overall)


@pytest.mark.parametrize(
    ("weights", "ess"),
    [
        (np.ones(10), 10.0),
        (np.full(7, 0.3), 7.0),
        (np.array([0.0, 0.0, 5.0]), 1.0),
        (np.array([1.0, 2.0, 3.0]), 36.0 / 14.0),
        (np.zeros(4), 0.0),
    ],
)
def test_effective_sample_size_formula(weights, ess):
    """ESS = (sum w)^2 / sum w^2 (Kong 1992), with w_i = pi(a_i) / p_i: arm 0 logged,
    pi(0) = min(w_i, 1) and p_i = pi(0) / w_i (0.5 for a zero weight)."""
    n = weights.shape[0]
    pi0 = np.minimum(weights, 1.0)
    propensities = np.where(weights > 0, pi0 / np.where(weights > 0, weights, 1.0), 0.5)
    pi = np.column_stack([pi0, 1.0 - pi0])
    data = LoggedData(np.zeros(n, dtype=np.int64), np.ones(n), propensities, 2)
    assert IPS().estimate(data, pi).ess == pytest.approx(ess)


def test_ess_is_n_when_the_target_is_the_logging_policy():
    rng = np.random.default_rng(0)
    mu = np.array([0.2, 0.8])
    actions = rng.choice(2, size=100, p=mu)
    data = LoggedData(actions, rng.random(100), mu[actions], 2)
    assert IPS().estimate(data, mu).ess == pytest.approx(100)


def test_missing_and_tiny_propensities_are_warned_about():
    actions = np.array([0, 1, 0, 1, 0, 1])
    propensities = np.array([0.5, np.nan, 0.001, 0.5, 0.0, 0.5])
    data = LoggedData(actions, np.array([1.0, 0, 1, 0, 1, 1]), propensities, 2)
    est = IPS().estimate(data, np.array([0.5, 0.5]), EstimationConfig(min_propensity=0.01))
    assert est.n == 4  # the NaN and the 0 are left out
    text = " | ".join(est.warnings)
    assert "2 of 6 logged events have no usable propensity" in text
    assert "1 logged events have propensity below 0.01 (smallest 0.001)" in text


def test_no_usable_events_gives_a_defined_result():
    data = LoggedData(np.array([0, 1]), np.array([1.0, 0.0]), np.array([np.nan, np.nan]), 2)
    result = estimate_policy(data, np.array([0.5, 0.5]))
    for est in result.values():
        assert est.n == 0 and math.isnan(est.value) and est.ess == 0.0
        assert any("nothing to estimate" in w for w in est.warnings)
        assert est.to_json()["value"] is None


def test_snips_is_undefined_without_overlap_and_says_so():
    data, pi = _zero_weight_case(n=50)
    est = SNIPS().estimate(data, pi, EstimationConfig())
    assert math.isnan(est.value) and math.isnan(est.ci_low)
    assert any("undefined" in w for w in est.warnings)
    assert any("effective sample size 0.0" in w for w in est.warnings)


@settings(max_examples=30, deadline=None)
@given(pi=hnp.arrays(np.float64, 3, elements=st.floats(0.0, 1.0)).filter(lambda p: p.sum() > 0))
def test_ips_is_linear_in_the_target_distribution(pi):
    """IPS(pi) = sum_a pi(a) IPS(e_a): a quick algebraic check of the weights."""
    pi = pi / pi.sum()
    data, _, _ = _simulate_non_contextual(np.random.default_rng(4), 200)
    cfg = EstimationConfig()
    parts = [IPS().estimate(data, np.eye(3)[a], cfg).value for a in range(3)]
    assert IPS().estimate(data, pi, cfg).value == pytest.approx(float(pi @ parts))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: as_action_dist(np.array([0.5, 0.6]), 3, 2), "probability distributions"),
        (lambda: as_action_dist(np.array([-0.5, 1.5]), 3, 2), "probability distributions"),
        (lambda: as_action_dist(np.ones((2, 2)) / 2, 3, 2), "shape"),
        (lambda: LoggedData(np.array([0, 3]), np.zeros(2), np.ones(2), 3), "arm indices"),
        (lambda: LoggedData(np.array([0, 1]), np.array([0.0, 2.0]), np.ones(2), 3), "[0, 1]"),
        (lambda: LoggedData(np.array([0]), np.zeros(2), np.ones(2), 3), "one length"),
        (lambda: EstimationConfig(alpha=0.0), "alpha"),
        (lambda: EstimationConfig(min_propensity=1.0), "min_propensity"),
        (lambda: DirectMethod(np.zeros(5)).estimate(
            LoggedData(np.array([0]), np.zeros(1), np.ones(1), 2), np.array([1.0, 0.0])),
         "reward model must have shape"),
    ],
)
def test_bad_inputs_are_rejected(make, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make()
