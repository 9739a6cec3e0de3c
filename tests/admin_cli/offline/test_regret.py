"""Regret on the Chapelle & Li (2011) setup: K = 10, best arm 0.5, others 0.4.

R = 20 runs of T = 50 000 steps per policy (default parameters), common random
numbers. Thompson's mean regret must be below UCB1's and ε-greedy's by more than 4
standard errors of the difference, sqrt(SE_1² + SE_2²) (conservative: common random
numbers correlate the runs positively). At this horizon fixed-ε exploration already
costs ε·(K-1)/K·Δ·T ≈ 450, and UCB1's log T / Δ² exploration is larger still; the
Lai–Robbins bound is reported beside the figures.
"""

from __future__ import annotations

import math

import pytest

from banditd.admin_cli.offline.regret import (
    bernoulli_kl,
    chapelle_li_means,
    lai_robbins_bound,
    lai_robbins_constant,
    run_cell,
)


def test_bernoulli_kl_and_lai_robbins_constant() -> None:
    kl = 0.4 * math.log(0.4 / 0.5) + 0.6 * math.log(0.6 / 0.5)
    assert bernoulli_kl(0.4, 0.5) == pytest.approx(kl)
    assert bernoulli_kl(0.5, 0.5) == 0.0
    means = chapelle_li_means(10, 0.1)
    assert lai_robbins_constant(means) == pytest.approx(9 * 0.1 / kl)
    assert lai_robbins_bound(means, 1e4) == pytest.approx(9 * 0.1 / kl * math.log(1e4))


def test_thompson_has_lower_regret_than_ucb1_and_egreedy(capsys) -> None:
    horizon, runs = 50_000, 20
    res = run_cell(10, 0.1, horizon, runs)
    bound = lai_robbins_bound(chapelle_li_means(10, 0.1), horizon)
    with capsys.disabled():
        print(f"\nregret at T={horizon} (R={runs}), Lai–Robbins bound {bound:.0f}: "
              + ", ".join(f"{p} {s.mean:.0f} ± {s.se:.0f}" for p, s in res.items()))
    ts = res["thompson"]
    for other in ("ucb", "egreedy"):
        o = res[other]
        assert ts.mean + 4 * math.hypot(ts.se, o.se) < o.mean, (other, ts, o)
