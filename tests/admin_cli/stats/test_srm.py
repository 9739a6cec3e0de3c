"""SRM χ² test: the 50.5/49.5 example, exact splits, calibration under H₀, degenerate input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from banditd.admin_cli.stats.srm import srm_test


def test_flags_505_495_at_a_million_users() -> None:
    """χ² = 2 · 5000² / 500000 = 100 on 1 df, p = chi2.sf(100, 1) ≈ 1.5e−23."""
    result = srm_test({"control": 505_000, "thompson": 495_000}, {"control": 0.5, "thompson": 0.5})
    assert result.statistic == pytest.approx(100.0)
    assert result.p_value == pytest.approx(sps.chi2.sf(100.0, 1), rel=1e-9)
    assert result.flagged and result.df == 1
    assert "control" in result.message


def test_detects_505_495_in_repeated_samples() -> None:
    """Assignment drawn as Binomial(10⁶, 0.505): the deviation 5000 ± 500 (10 SD of the
    H₀ noise) gives χ² ≈ 100 ± 20, so every one of 200 samples must be flagged."""
    counts = np.random.default_rng(505).binomial(1_000_000, 0.505, size=200)
    flagged = [srm_test({"a": int(k), "b": 1_000_000 - int(k)}, {"a": 1, "b": 1}).flagged
               for k in counts]
    assert all(flagged)


@pytest.mark.parametrize(
    ("observed", "split"),
    [
        ({"a": 500_000, "b": 500_000}, {"a": 0.5, "b": 0.5}),
        ({"a": 800, "b": 200}, {"a": 0.8, "b": 0.2}),
        ({"a": 250, "b": 250, "c": 250, "d": 250}, {"a": 1, "b": 1, "c": 1, "d": 1}),
    ],
)
def test_exact_split_is_not_flagged(observed: dict, split: dict) -> None:
    result = srm_test(observed, split)
    assert result.statistic == pytest.approx(0.0, abs=1e-12)
    assert result.p_value == pytest.approx(1.0)
    assert not result.flagged
    assert result.df == len(split) - 1


def test_false_flag_rate_under_h0_matches_threshold() -> None:
    """Under H₀ the χ² p-value is ≈ uniform, so P(flag) ≈ threshold. With threshold 0.05,
    4 groups (multinomial 0.4/0.2/0.2/0.2, 10⁵ users) and 3000 samples: within 3 SE."""
    rng = np.random.default_rng(42)
    weights = {"control": 0.4, "a": 0.2, "b": 0.2, "c": 0.2}
    draws = rng.multinomial(100_000, list(weights.values()), size=3000)
    rate = np.mean([srm_test(dict(zip(weights, d, strict=True)), weights, 0.05).flagged
                    for d in draws])
    assert abs(rate - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 3000)


@pytest.mark.parametrize(
    ("observed", "split", "flagged", "message"),
    [
        ({}, {"a": 1, "b": 1}, False, "no users"),
        ({"a": 10}, {"a": 1}, False, "fewer than two groups"),
        ({"a": 10, "b": 0}, {"a": 1, "b": 0}, False, "fewer than two groups"),
        ({"a": 10, "b": 3}, {"a": 1, "b": 0}, True, "zero weight"),
        ({"a": 100}, {"a": 1, "b": 1}, True, "largest deviation"),
    ],
)
def test_degenerate_inputs(observed: dict, split: dict, flagged: bool, message: str) -> None:
    result = srm_test(observed, split)
    assert result.flagged == flagged
    assert message in result.message
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("observed", "split", "threshold", "pattern"),
    [
        ({"x": 1}, {"a": 1}, 0.001, "not in the configured split"),
        ({"a": 1}, {"a": -1, "b": 2}, 0.001, "split weights"),
        ({"a": 1}, {"a": 0, "b": 0}, 0.001, "split weights"),
        ({"a": -1}, {"a": 1, "b": 1}, 0.001, "observed counts"),
        ({"a": 1}, {"a": 1, "b": 1}, 0.0, "threshold"),
    ],
)
def test_invalid_input(observed: dict, split: dict, threshold: float, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        srm_test(observed, split, threshold)
