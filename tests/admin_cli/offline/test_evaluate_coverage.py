"""Coverage of evaluate's delta-method intervals (admin_cli/offline/evaluate.py) on
simulated logs with candidate subsets, where events are pooled by (fold, set, arm).

Each dataset: K = 5 Bernoulli arms (means MU), requests that offer one of 12 fixed
subsets or (a fifth of them) every arm, logged by an ε-greedy-like mechanism over
the offered arms (0.5 on the truly best offered arm, the rest uniform over the
offered ones), propensity recorded exactly. The target ``uniform`` over the offered
arms does not depend on what is learned, so its value is known exactly:
V = E_C[mean_{a in C} MU_a]. A 95 % interval should contain V in 95 % of D
independent datasets; the observed rate has binomial standard error
sqrt(0.95 * 0.05 / D), and we accept 3 of those. DM's per-arm mean model is right
here (rewards depend on the arm only), so all four estimators are checked.
"""

from __future__ import annotations

import math

import numpy as np

from banditd.admin_cli.offline.evaluate import FULL_SET, LoggedExperiment, evaluate_experiment

MU = np.array([0.15, 0.3, 0.45, 0.6, 0.75])
DATASETS = 200
EVENTS = 1500
TOLERANCE = 3 * math.sqrt(0.95 * 0.05 / DATASETS)  # ~0.046


def _subsets(rng) -> list[tuple[int, ...]]:
    return [tuple(sorted(rng.choice(5, size=int(rng.integers(2, 5)), replace=False).tolist()))
            for _ in range(12)]


def _dataset(rng, subsets) -> LoggedExperiment:
    full = rng.random(EVENTS) < 0.2
    which = rng.integers(len(subsets), size=EVENTS)
    actions = np.empty(EVENTS, dtype=np.int64)
    propensities = np.empty(EVENTS)
    for i in range(EVENTS):
        offered = list(range(5)) if full[i] else list(subsets[which[i]])
        p = np.full(len(offered), 0.5 / len(offered))
        p[-1] += 0.5  # the best offered arm: MU is increasing and the sets are sorted
        j = int(rng.choice(len(offered), p=p))
        actions[i], propensities[i] = offered[j], p[j]
    values = (rng.random(EVENTS) < MU[actions]).astype(float)
    return LoggedExperiment.from_events(
        experiment_id="sim", arms=tuple("abcde"), policies=("control",), policy_params={},
        reward_min=0.0, reward_max=1.0, actions=actions, values=values,
        propensities=propensities, logged_policy=np.array(["control"] * EVENTS, dtype=object),
        candidate_sets=tuple(subsets), candidate_set=np.where(full, FULL_SET, which),
    )


def test_intervals_cover_the_true_value_at_the_stated_rate():
    rng = np.random.default_rng(17)
    subsets = _subsets(rng)
    truth = 0.2 * MU.mean() + 0.8 * np.mean([MU[list(c)].mean() for c in subsets])
    hits = dict.fromkeys(("ips", "snips", "dm", "dr"), 0)
    errors = {name: [] for name in hits}
    for _ in range(DATASETS):
        [uniform] = evaluate_experiment(_dataset(rng, subsets), ("uniform",)).candidates
        for name, est in uniform.estimates.items():
            hits[name] += est.ci_low <= truth <= est.ci_high
            errors[name].append(est.value - truth)
    for name, hit in hits.items():
        assert abs(hit / DATASETS - 0.95) <= TOLERANCE, (name, hit / DATASETS)
        # no visible bias: mean error within 4 standard errors of 0
        err = np.array(errors[name])
        assert abs(err.mean()) <= 4 * err.std(ddof=1) / math.sqrt(DATASETS), name
