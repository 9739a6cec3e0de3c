"""Off-policy evaluation of an experiment's log (admin_cli/offline/evaluate.py), real DB.

The synthetic log (logged_fixtures.py) has arm means 2, 5 and 8 on a 0..10 scale, so
uniform play is worth 5 and always playing ``c`` 8. Checks allow 4 delta-method
standard errors (the 95 % interval's half-width is ~2 of them).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from banditd.admin_cli.cli_support import json_text
from banditd.admin_cli.offline.evaluate import (
    EvaluateConfig,
    LoggedExperiment,
    evaluate_experiment,
    fetch_logged_experiment,
    greedy_distribution,
)
from banditd.server.experiment_store import ExperimentNotFound
from tests.admin_cli.offline.logged_fixtures import ARMS, write_logged_experiment

CONFIG = EvaluateConfig(draws=2000)


async def test_fetch_reads_rewarded_decisions_in_the_experiment_units(db_conn):
    await write_logged_experiment(db_conn)
    logged = await fetch_logged_experiment(db_conn, "exp-ope")
    assert logged.arms == ARMS and logged.policies == ("egreedy", "control")
    assert logged.n_decisions == 3600
    assert (logged.n_pending, logged.n_unknown_arm) == (7, 1)
    # rewards of 0 or 10 in the experiment's units, normalised to 0 or 1 for the estimators
    total = sum(reward for _, reward in logged.logged_totals.values())
    assert total % 10 == 0 and logged.reward_sums.sum() == total / 10
    assert sum(n for n, _ in logged.logged_totals.values()) == logged.pulls.sum() == 3600
    assert logged.policy_params == {"egreedy": {"epsilon": 0.3}}


async def test_unknown_experiment(db_conn):
    with pytest.raises(ExperimentNotFound):
        await fetch_logged_experiment(db_conn, "nope")


async def test_estimates_recover_known_policy_values(db_conn):
    await write_logged_experiment(db_conn)
    logged = await fetch_logged_experiment(db_conn, "exp-ope")
    report = evaluate_experiment(logged, ("uniform", "greedy", "control", "thompson"), CONFIG)
    truths = {"uniform": 5.0, "control": 5.0, "greedy": 8.0}
    for cand in report.candidates:
        for est in cand.estimates.values():
            value, low, high = (report.to_units(x) for x in (est.value, est.ci_low, est.ci_high))
            assert low <= value <= high
            if cand.candidate in truths:
                half_width_se = (high - low) / (2 * 1.96)
                assert abs(value - truths[cand.candidate]) <= 4 * half_width_se, (cand, est)
    dist = {c.candidate: c.action_dist for c in report.candidates}
    np.testing.assert_allclose(dist["uniform"], 1 / 3)
    np.testing.assert_allclose(dist["greedy"], [0, 0, 1])
    assert dist["thompson"][2] > 0.95  # ~1,300 c pulls at 0.8 vs ~1,000 b pulls at 0.5
    # Thompson mostly plays c, so it is worth nearly 8
    thompson = next(c for c in report.candidates if c.candidate == "thompson")
    assert report.to_units(thompson.estimates["dr"].value) > 7.0
    assert report.logged_values["control"][0] == 3000
    assert any("7 decisions have no reward yet" in w for w in report.warnings)
    assert any("1 decisions name an arm" in w for w in report.warnings)
    payload = json.loads(json_text(report.to_json()))
    assert payload["candidates"][1]["action_distribution"] == {"a": 0.0, "b": 0.0, "c": 1.0}
    assert payload["decisions_used"] == 3600


def test_egreedy_distribution_is_read_exactly_from_the_kernel():
    """Arm means 0, 0.5, 1 in both folds, epsilon 0.3: every full-set request gets
    [0.1, 0.1, 0.8]; a request offering {0, 1} explores over the two and exploits arm
    1, [0.15, 0.85, 0] (a renormalised full-set distribution would give [0.5, 0.5, 0])."""
    n = 300
    subset = (np.arange(n) // 3) % 2 == 1
    actions = np.where(subset, np.arange(n) % 2, np.arange(n) % 3)   # subset rows: a or b
    logged = LoggedExperiment.from_events(
        experiment_id="x", arms=("a", "b", "c"), policies=("egreedy",),
        policy_params={"egreedy": {"epsilon": 0.3}}, reward_min=0.0, reward_max=1.0,
        actions=actions, values=actions / 2,
        propensities=np.full(n, 0.5), logged_policy=np.array(["egreedy"] * n, dtype=object),
        candidate_sets=((0, 1),), candidate_set=np.where(subset, 0, -1),
    )
    [egreedy] = evaluate_experiment(logged, ("egreedy",), CONFIG).candidates
    share = subset.mean()
    expected = (1 - share) * np.array([0.1, 0.1, 0.8]) + share * np.array([0.15, 0.85, 0.0])
    np.testing.assert_allclose(egreedy.action_dist, expected, rtol=1e-12)


def test_greedy_shares_ties_and_scores_unseen_arms_at_the_overall_mean():
    pi = greedy_distribution(np.array([0, 1, 1]), np.array([1.0, 1.0, 1.0]), 3)
    np.testing.assert_allclose(pi, [1 / 3, 1 / 3, 1 / 3])
    pi = greedy_distribution(np.array([0, 0, 1]), np.array([1.0, 1.0, 0.0]), 3)
    np.testing.assert_allclose(pi, [1, 0, 0])


def test_bad_config():
    with pytest.raises(ValueError, match="draws"):
        EvaluateConfig(draws=0)
    assert math.isclose(1 - EvaluateConfig().estimation.alpha, 0.95)
