"""The replay method (admin_cli/offline/replay.py) with the core_ext kernels.

Statistical checks compare with the truth of a synthetic problem (Bernoulli arms
with known means) and allow 4 standard errors: a correct implementation fails such
a check with probability below 1e-4, and the seeds are fixed, so the tests are
deterministic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from banditd.admin_cli.cli_support import json_text
from banditd.admin_cli.offline.bandit_problem import BanditProblem, LoggedStream, StreamConfig
from banditd.admin_cli.offline.plots import plot_replay
from banditd.admin_cli.offline.replay import (
    ReplayConfig,
    core_ext_factory,
    replay_policy,
    run_replay,
)
from banditd.core_ext.policies import Rng, make_kernel, params_from_dict

MEANS = (0.2, 0.3, 0.4, 0.5, 0.8)


def _problem(means=MEANS, pool: int = 1000) -> BanditProblem:
    k = len(means)
    return BanditProblem(
        "movie", tuple(str(i) for i in range(k)), tuple(f"arm {i}" for i in range(k)),
        np.full(k, pool, dtype=np.int64), np.array([round(m * pool) for m in means]), 4.0,
    )


def _bootstrap(length: int) -> StreamConfig:
    return StreamConfig(sampling="bootstrap", length=length)


class _CyclingKernel:
    """Picks arms 0, 1, 2, ... in turn; records updates."""

    def __init__(self, k: int):
        self.k, self.t, self.updates = k, 0, []

    def select(self, candidates=None):
        arm = self.t % self.k
        self.t += 1
        return arm, 1.0 / self.k

    def update(self, arm, reward):
        self.updates.append((arm, reward))


def test_replay_keeps_exactly_the_matching_events_and_learns_only_from_them():
    arms = np.array([0, 0, 2, 1, 1, 2, 0, 1])
    rewards = np.array([1, 0, 1, 0, 1, 1, 0, 0], dtype=np.float64)
    kernel = _CyclingKernel(3)  # picks 0 1 2 0 1 2 0 1
    run = replay_policy(kernel, LoggedStream(arms, rewards, 3))
    matches = [t for t in range(8) if t % 3 == arms[t]]  # events 0, 2, 4, 5, 6, 7
    assert kernel.updates == [(int(arms[t]), float(rewards[t])) for t in matches]
    assert run.kept == len(matches)
    assert run.reward_rate == pytest.approx(rewards[matches].mean())
    np.testing.assert_allclose(run.curve, np.cumsum(rewards[matches]) / np.arange(1, 7))


@pytest.mark.parametrize("default_arm", [None, "1", "4"])
def test_replay_of_a_fixed_policy_recovers_its_true_value(default_arm):
    """Control with a default arm always plays it (value mu_arm); without one it plays
    uniformly (value mean(mu)). Li et al. 2011, Thm. 1: replay is unbiased for both."""
    problem = _problem()
    params = {} if default_arm is None else {"default_arm": default_arm}
    truth = problem.uniform_value if default_arm is None else MEANS[int(default_arm)]
    result = run_replay(
        problem, ReplayConfig(policies=("control",), runs=20, seed=1, stream=_bootstrap(20_000)),
        factory=core_ext_factory({"control": params}, problem.arm_ids),
    )
    (summary,) = result.policies
    se = summary.reward_rates.std(ddof=1) / math.sqrt(20)
    assert abs(summary.reward_rate.mean - truth) <= 4 * se
    # The spread over runs is the Bernoulli one for ~4,000 kept events per run (within 2x).
    kept = summary.kept.mean()
    assert 3_600 < kept < 4_400
    theory = math.sqrt(truth * (1 - truth) / kept)
    assert 0.5 * theory < summary.reward_rates.std(ddof=1) < 2 * theory


def test_replay_matches_the_policy_run_online():
    """The heart of Li et al. (2011) Thm. 1: replaying Thompson sampling on a uniform log
    gives the same expected reward rate as running it online for as many steps."""
    problem = _problem()
    runs = 30
    result = run_replay(problem, ReplayConfig(policies=("thompson",), runs=runs, seed=2,
                                              stream=_bootstrap(5 * 400)))
    (replayed,) = result.policies
    horizon = round(replayed.kept.mean())  # ~400 kept events: still learning
    env = np.random.default_rng(99)
    online = []
    for run in range(runs):
        pulls, sums = np.zeros(5), np.zeros(5)
        kernel = make_kernel("thompson", params_from_dict("thompson"), pulls, sums,
                             Rng(1000 + run))
        total = 0.0
        for _ in range(horizon):
            arm, _ = kernel.select(None)
            reward = float(env.random() < MEANS[arm])
            kernel.update(arm, reward)
            total += reward
        online.append(total / horizon)
    online_rates = np.array(online)
    se = math.sqrt(replayed.reward_rates.var(ddof=1) / runs + online_rates.var(ddof=1) / runs)
    assert abs(replayed.reward_rate.mean - online_rates.mean()) <= 4 * se


def test_bandits_beat_control_when_one_arm_is_clearly_best():
    problem = _problem()
    result = run_replay(problem, ReplayConfig(runs=10, seed=3, stream=_bootstrap(20_000)))
    by_name = {s.policy: s for s in result.policies}
    control = by_name["control"].reward_rate.mean
    assert abs(control - problem.uniform_value) < 0.03
    for name in ("thompson", "ucb", "egreedy"):
        lift = by_name[name].lift_vs_control
        assert lift is not None and lift.low > 0, name
    # Thompson should be close to the best arm (0.8) after ~4,000 kept events.
    assert by_name["thompson"].reward_rate.mean > 0.7
    assert by_name["control"].lift_vs_control is None


def test_adding_a_policy_does_not_change_the_others_results():
    problem = _problem()
    cfg = {"runs": 3, "seed": 4, "stream": _bootstrap(2_000)}
    alone = run_replay(problem, ReplayConfig(policies=("egreedy",), **cfg))
    together = run_replay(problem, ReplayConfig(policies=("thompson", "egreedy"), **cfg))
    np.testing.assert_array_equal(alone.policies[0].reward_rates,
                                  together.policies[1].reward_rates)


def test_without_replacement_stream_on_a_finite_dataset():
    problem = _problem(pool=300)
    result = run_replay(problem, ReplayConfig(policies=("control",), runs=10, seed=5))
    (summary,) = result.policies
    assert np.all(result.stream_lengths <= 5 * 300)
    se = summary.reward_rates.std(ddof=1) / math.sqrt(10)
    assert abs(summary.reward_rate.mean - problem.uniform_value) <= 4 * se


def test_reports_json_and_png(tmp_path):
    problem = _problem()
    result = run_replay(problem, ReplayConfig(runs=2, seed=6, stream=_bootstrap(1_000),
                                              curve_points=50))
    payload = json.loads(json_text(result.to_json()))
    assert [p["policy"] for p in payload["policies"]] == ["thompson", "ucb", "egreedy", "control"]
    assert all(len(p["curve"]["kept_events"]) <= 50 for p in payload["policies"])
    assert payload["problem"]["best_value"] == pytest.approx(0.8)
    rows = result.rows()
    assert set(rows[0]) >= {"policy", "kept_events", "reward_rate", "ci_low", "ci_high"}
    png = plot_replay(result, tmp_path / "sub" / "replay.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_single_run_has_no_interval():
    result = run_replay(_problem(), ReplayConfig(policies=("control",), runs=1,
                                                 stream=_bootstrap(500)))
    assert math.isnan(result.policies[0].reward_rate.low)
    assert result.policies[0].reward_rate.to_json()["low"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policies": ()}, "at least one policy"),
        ({"policies": ("ucb", "ucb")}, "distinct"),
        ({"runs": 0}, "runs"),
        ({"alpha": 1.0}, "alpha"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_replay_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReplayConfig(**kwargs)


def test_unknown_policies_are_rejected_before_running():
    with pytest.raises(ValueError, match="unknown policy magic; known: thompson"):
        run_replay(_problem(), ReplayConfig(policies=("magic",)))
