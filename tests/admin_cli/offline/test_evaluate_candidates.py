"""Off-policy evaluation when requests offer candidate subsets (``decisions.candidates``).

The logged propensity is the probability among the arms a request offered, so every
target policy must be restricted to those arms. The synthetic log
(``write_subset_logged_experiment``) has known arm means, so each candidate's true
value on the logged requests is known exactly; checks allow 4 delta-method standard
errors (the 95 % interval's half-width is ~2 of them).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import integrate, stats

from banditd.admin_cli.cli_support import json_text
from banditd.admin_cli.offline.estimators import estimate_cells
from banditd.admin_cli.offline.evaluate import (
    FULL_SET,
    EvaluateConfig,
    LoggedExperiment,
    evaluate_experiment,
    fetch_logged_experiment,
    greedy_over,
    uniform_over,
)
from banditd.core_ext.policies import Rng, make_kernel, params_from_dict
from banditd.server.experiment import ExperimentSpec
from banditd.server.experiment_store import create_experiment
from banditd.server.log_partitions import ensure_partitions
from tests.admin_cli.offline.logged_fixtures import (
    SUBSET_ARMS,
    write_subset_logged_experiment,
)

CONFIG = EvaluateConfig(draws=2000)
ALL_CANDIDATES = ("uniform", "greedy", "control", "egreedy", "thompson", "ucb")


def _se(est) -> float:
    return (est.ci_high - est.ci_low) / (2 * 1.96)


# ------------------------------------------------------------------ end to end, real DB


async def test_fetch_reads_candidate_sets(db_conn):
    log = await write_subset_logged_experiment(db_conn, n=500)
    logged = await fetch_logged_experiment(db_conn, "exp-subsets")
    k = len(SUBSET_ARMS)
    used = logged.slot_sizes()
    assert logged.n_decisions == 500 and used[0] == log.n_full > 0
    offered = Counter(c for c in log.candidates if len(c) < k)
    assert dict(zip(logged.candidate_sets, used[1:].tolist(), strict=True)) == offered
    # every logged arm is one its request offered
    slots = (tuple(range(k)), *logged.candidate_sets)
    assert all(a in slots[g // 2] for g, a in zip(logged.cells.group.tolist(),
                                                  logged.cells.arm.tolist(), strict=True))
    assert all(0 < len(s) < k for s in logged.candidate_sets)
    assert len(set(logged.candidate_sets)) == len(logged.candidate_sets)  # interned
    np.testing.assert_array_equal(np.sort(np.repeat(logged.set_sizes(), used)),
                                  np.sort([len(c) for c in log.candidates]))
    assert (logged.n_unknown_candidate, logged.n_arm_not_candidate) == (0, 0)


async def test_fetch_cleans_inconsistent_candidate_sets(db_conn):
    spec = ExperimentSpec(id="exp-odd", name="odd", arms=("a", "b", "c"), policies=("control",),
                          reward_min=0.0, reward_max=1.0)
    experiment = await create_experiment(db_conn, spec)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    await ensure_partitions(db_conn, at.date(), at.date() + timedelta(days=1))
    rows = [  # (id, arm, propensity, candidates)
        ("d0", "a", 1 / 3, ["c", "b", "a"]),  # every arm, any order: a full-set request
        ("d1", "a", 1 / 2, ["a", "retired"]),  # unknown name dropped -> {a}
        ("d2", "b", 1 / 2, ["a", "c"]),  # chosen arm missing -> added: {a, b, c} = full
        ("d3", "c", 1 / 2, ["c", "b", "c"]),  # duplicates -> {b, c}
        ("d4", "b", 1 / 2, ["b", "c"]),  # same set as d3
        ("d5", "b", 1 / 3, None),
    ]
    await db_conn.executemany(
        """INSERT INTO decisions (decision_id, experiment_key, user_id, policy, arm, propensity,
                                  served_by, decided_at, latency_us, server_id, candidates)
           VALUES ($1, $2, 'u', 'control', $3, $4, 'CONTROL', $5, 1, 'test', $6)""",
        [(d, experiment.key, arm, p, at, c) for d, arm, p, c in rows],
    )
    await db_conn.executemany(
        """INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value,
                                source, decided_at)
           VALUES ($1, $2, 'control', $3, 'CONTROL', 1.0, 'client', $4)""",
        [(d, experiment.key, arm, at) for d, arm, _, _ in rows],
    )
    logged = await fetch_logged_experiment(db_conn, "exp-odd")
    assert logged.candidate_sets == ((0,), (1, 2))
    assert logged.slot_sizes().tolist() == [3, 1, 2]  # d0, d2, d5; d1; d3, d4
    assert (logged.n_unknown_candidate, logged.n_arm_not_candidate) == (1, 1)
    report = evaluate_experiment(logged, ("uniform",), CONFIG)
    assert any("1 decisions list candidates that are not arms" in w for w in report.warnings)
    assert any("1 decisions chose an arm missing from their own" in w for w in report.warnings)
    uniform = report.candidates[0]
    # mean over the 6 events of pi_i: full, {a}, full, {b,c}, {b,c}, full
    np.testing.assert_allclose(uniform.action_dist, [(3 / 3 + 1) / 6, 2 / 6, 2 / 6])


async def test_restricted_targets_recover_true_values(db_conn):
    """IPS, SNIPS, DM and DR of every candidate recover its true value on requests that
    offered per-user subsets (and some full-set ones). Fails with the old evaluator,
    which scored targets over all K arms: its IPS of uniform was ~|C|/K of the truth."""
    log = await write_subset_logged_experiment(db_conn)
    logged = await fetch_logged_experiment(db_conn, "exp-subsets")
    report = evaluate_experiment(logged, ALL_CANDIDATES, CONFIG)
    assert report.warnings == ()
    by_name = {c.candidate: c for c in report.candidates}
    for name in ("uniform", "control", "greedy", "egreedy"):
        truth = log.true_value(name)
        for est in by_name[name].estimates.values():
            assert est.ci_low <= est.value <= est.ci_high
            assert abs(est.value - truth) <= 4 * _se(est), (name, est, truth)
    # Thompson and UCB, having learned from ~6,000 events with gaps of 0.15 between arm
    # means, (almost) always play the best offered arm: worth (nearly) greedy's value.
    for name in ("thompson", "ucb"):
        dr = by_name[name].estimates["dr"]
        assert abs(dr.value - log.true_value("greedy")) <= 4 * _se(dr) + 0.02, (name, dr)
    # The target distributions live on the offered arms: m0 (the worst arm) is never
    # the best of a set of >= 2 arms, and uniform's mean distribution is the mean of
    # 1[a in C_i] / |C_i|, not 1/K.
    assert by_name["greedy"].action_dist[0] == 0.0
    offered = np.zeros((len(log.candidates), len(SUBSET_ARMS)))
    for i, cand in enumerate(log.candidates):
        offered[i, list(cand)] = 1.0 / len(cand)
    np.testing.assert_allclose(by_name["uniform"].action_dist, offered.mean(axis=0))
    np.testing.assert_allclose(by_name["control"].action_dist, offered.mean(axis=0))
    for cand in report.candidates:
        assert math.isclose(cand.action_dist.sum(), 1.0)

    # the old full-arm target: IPS scaled by about mean(|C|)/K, far outside the interval
    truth = log.true_value("uniform")
    ips = by_name["uniform"].estimates["ips"]
    everywhere = np.full((logged.group_sizes.size, len(SUBSET_ARMS)), 1 / len(SUBSET_ARMS))
    old = estimate_cells(logged.cells, everywhere, config=CONFIG.estimation)["ips"]
    scale = report.candidate_set_summary()["mean_size"] / len(SUBSET_ARMS)
    assert abs(old.value - scale * truth) < 4 * _se(old)
    assert abs(old.value - truth) > 10 * _se(ips)

    payload = json.loads(json_text(report.to_json()))
    summary = payload["candidate_sets"]
    assert summary["decisions_with_subset"] == len(log.candidates) - log.n_full
    assert summary["distinct_subsets"] == len(logged.candidate_sets)
    assert math.isclose(summary["mean_size"], np.mean([len(c) for c in log.candidates]))


# ------------------------------------------------------------- NULL candidates, warnings


def _logged(n: int = 600, k: int = 3, **overrides) -> LoggedExperiment:
    rng = np.random.default_rng(5)
    actions = rng.integers(k, size=n)
    fields = dict(
        experiment_id="x", arms=tuple("abcdefgh"[:k]), policies=("egreedy", "control"),
        policy_params={"egreedy": {"epsilon": 0.2}}, reward_min=0.0, reward_max=1.0,
        actions=actions, values=(rng.random(n) < 0.3 + 0.2 * actions).astype(float),
        propensities=np.full(n, 1 / k), logged_policy=np.array(["control"] * n, dtype=object),
    )
    fields.update(overrides)
    return LoggedExperiment.from_events(**fields)


def test_null_candidates_are_full_set_requests():
    n = 600
    plain = evaluate_experiment(_logged(n), ALL_CANDIDATES, CONFIG)
    explicit = evaluate_experiment(
        _logged(n, candidate_set=np.full(n, FULL_SET)), ALL_CANDIDATES, CONFIG
    )
    for a, b in zip(plain.candidates, explicit.candidates, strict=True):
        np.testing.assert_array_equal(a.action_dist, b.action_dist)
        assert a.estimates == b.estimates
    assert plain.candidate_set_summary() == {
        "decisions_with_subset": 0, "distinct_subsets": 0, "mean_size": 3.0,
    }


def test_bad_candidate_index():
    with pytest.raises(ValueError, match="one entry per decision"):
        _logged(10, candidate_set=np.full(3, FULL_SET))
    with pytest.raises(ValueError, match="candidate_sets"):
        _logged(10, candidate_set=np.zeros(10, dtype=np.int64))


def test_warns_when_control_propensities_show_unrecorded_subsets():
    # K = 6 arms, control propensity 1/3: the requests offered 3 arms, not recorded
    n = 300
    legacy = _logged(n, k=6, propensities=np.full(n, 1 / 3))
    report = evaluate_experiment(legacy, ("uniform",), CONFIG)
    [warning] = report.warnings
    assert f"{n} decisions served by control have no recorded candidate set" in warning
    assert "about 1/3" in warning and "migration 0004" in warning
    # 1/K or a default arm's 1.0 are full-set propensities; recorded subsets are fine
    full = _logged(n, k=6, propensities=np.where(np.arange(n) % 2, 1 / 6, 1.0))
    assert evaluate_experiment(full, ("uniform",), CONFIG).warnings == ()
    recorded = _logged(n, k=6, propensities=np.full(n, 1 / 3),
                       actions=np.zeros(n, dtype=np.int64),
                       candidate_sets=((0, 1, 2),), candidate_set=np.zeros(n, dtype=np.int64))
    assert evaluate_experiment(recorded, ("uniform",), CONFIG).warnings == ()


# ------------------------------------------------------- restricted target distributions


def _kernel(name: str, pulls, sums, params=None, arms=()):
    return make_kernel(name, params_from_dict(name, params or {}), np.asarray(pulls, float),
                       np.asarray(sums, float), Rng(3), arms)


def _restricted(kernel, candidates, **kw) -> np.ndarray:
    return kernel.action_distribution(np.array(candidates, dtype=np.intp), **kw)


def test_uniform_and_greedy_over_a_subset():
    np.testing.assert_allclose(uniform_over(4, (1, 3)), [0, 0.5, 0, 0.5])
    np.testing.assert_allclose(uniform_over(4), [0.25] * 4)
    means = np.array([0.9, 0.5, 0.2, 0.5])
    np.testing.assert_allclose(greedy_over(means), [1, 0, 0, 0])
    np.testing.assert_allclose(greedy_over(means, (1, 2, 3)), [0, 0.5, 0, 0.5])  # ties share
    np.testing.assert_allclose(greedy_over(means, (2,)), [0, 0, 1, 0])


def test_egreedy_restricted_is_exact_and_not_a_renormalisation():
    pulls, sums = [10, 10, 10, 10], [9, 5, 3, 1]
    kernel = _kernel("egreedy", pulls, sums, {"epsilon": 0.3})
    full = kernel.action_distribution()
    np.testing.assert_allclose(full, [0.775, 0.075, 0.075, 0.075])
    # offered {1, 2, 3}: explore uniformly over the 3, exploit arm 1 (the best offered);
    # renormalising the full-set distribution would give 1/3 each
    np.testing.assert_allclose(_restricted(kernel, (1, 2, 3)), [0, 0.1 + 0.7, 0.1, 0.1])
    # tiny epsilon: the non-greedy candidates, which select would (almost) never show,
    # still get their exact share
    kernel = _kernel("egreedy", pulls, sums, {"epsilon": 0.001})
    np.testing.assert_allclose(_restricted(kernel, (1, 2, 3)),
                               [0, 0.999 + 0.001 / 3, 0.001 / 3, 0.001 / 3])


def test_ucb_restricted_uses_the_subset_statistics():
    pulls, sums = [100, 40, 50, 50], [95, 20, 20, 30]
    kernel = _kernel("ucb", pulls, sums)
    np.testing.assert_allclose(kernel.action_distribution(), [1, 0, 0, 0])
    cand = [1, 2, 3]
    total = sum(pulls[a] for a in cand)  # UCB's N is over the offered arms
    index = [sums[a] / pulls[a] + math.sqrt(2 * math.log(total) / pulls[a]) for a in cand]
    expected = np.zeros(4)
    expected[cand[int(np.argmax(index))]] = 1.0
    np.testing.assert_allclose(_restricted(kernel, cand), expected)
    # an untried offered arm is played first, ties share
    kernel = _kernel("ucb", [5, 0, 0, 5], [5, 0, 0, 1])
    np.testing.assert_allclose(_restricted(kernel, (0, 1, 2)), [0, 0.5, 0.5, 0])


def test_control_restricted_plays_its_default_arm_only_when_offered():
    kernel = _kernel("control", [0] * 4, [0] * 4, {"default_arm": "a"}, arms=("a", "b", "c", "d"))
    np.testing.assert_allclose(_restricted(kernel, (0, 2)), [1, 0, 0, 0])
    np.testing.assert_allclose(_restricted(kernel, (1, 2, 3)), [0, 1 / 3, 1 / 3, 1 / 3])
    uniform = _kernel("control", [0] * 4, [0] * 4)
    np.testing.assert_allclose(_restricted(uniform, (1, 3)), [0, 0.5, 0, 0.5])


def test_thompson_restricted_is_the_win_probability_within_the_subset():
    # arm 0 dominates the full set, so renormalising full-set win probabilities over
    # {1, 2, 3} would be Monte Carlo noise; the subset's own win probabilities are not
    pulls, sums = [100, 20, 20, 20], [95, 12, 10, 8]
    kernel = _kernel("thompson", pulls, sums)
    draws = 20000
    pi = _restricted(kernel, (1, 2, 3), draws=draws)
    betas = [stats.beta(1 + s, 1 + n - s) for n, s in zip(pulls, sums, strict=True)]

    def win(a: int, others: tuple[int, ...]) -> float:
        def f(x):
            return betas[a].pdf(x) * np.prod([betas[j].cdf(x) for j in others])
        return integrate.quad(f, 0, 1)[0]

    exact = [0.0] + [win(a, tuple(j for j in (1, 2, 3) if j != a)) for a in (1, 2, 3)]
    assert pi[0] == 0.0 and math.isclose(pi.sum(), 1.0)
    for a in (1, 2, 3):
        assert abs(pi[a] - exact[a]) <= 4 * math.sqrt(exact[a] * (1 - exact[a]) / draws) + 1e-3
    assert exact[1] > 0.6  # the likely winner among the offered arms
