"""Sample-ratio mismatch (SRM): do the assignment counts match the configured split?

If the servers assign users to policies in proportions other than the configured
ones, something upstream is broken (hashing, a crashing replica, a filter applied
after assignment) and every comparison between policies is suspect. The standard check
([Fabijan19], [KTX20] ch. 21) is Pearson's χ² goodness-of-fit test of the observed
counts Oᵢ against Eᵢ = N·wᵢ (wᵢ the configured weights, N = ΣOᵢ):

    χ² = Σᵢ (Oᵢ − Eᵢ)² / Eᵢ  ~  χ²_{k−1}  under H₀,

flagged at a small p-value (default 0.001) because the test runs on every look and a
real SRM gives astronomically small p-values at production sample sizes (a 50.5/49.5
split of 10⁶ users gives χ² = 100, p ≈ 1.5·10⁻²³).

References:
    [Fabijan19] A. Fabijan, J. Gupchup, S. Gupta, J. Omhover, W. Qin, L. Vermeer,
        P. Dmitriev (2019), "Diagnosing sample ratio mismatch in online controlled
        experiments", KDD 2019.
    [KTX20] R. Kohavi, D. Tang, Y. Xu (2020), Trustworthy Online Controlled
        Experiments, Cambridge University Press, ch. 21.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from banditd.admin_cli.stats.serialise import json_float

DEFAULT_SRM_P_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True)
class SRMResult:
    """Outcome of the SRM χ² test.

    Attributes:
        statistic: Pearson χ² (``inf`` when a group with zero configured weight got users).
        p_value: upper tail of χ²_{df}; 1 when the test is not applicable.
        df: degrees of freedom k − 1 over groups with positive configured weight.
        flagged: ``p_value < threshold``.
        threshold: the p-value threshold used.
        observed, expected: counts per group (expected = N·wᵢ).
        message: why the test is degenerate, or which group deviates most.
    """

    statistic: float
    p_value: float
    df: int
    flagged: bool
    threshold: float
    observed: dict[str, float] = field(default_factory=dict)
    expected: dict[str, float] = field(default_factory=dict)
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        total = sum(self.observed.values())
        return {
            "statistic": json_float(self.statistic),
            "p_value": json_float(self.p_value),
            "df": self.df,
            "flagged": self.flagged,
            "threshold": self.threshold,
            "observed": {k: json_float(v) for k, v in self.observed.items()},
            "expected": {k: json_float(v) for k, v in self.expected.items()},
            "observed_share": {
                k: json_float(v / total) if total else None for k, v in self.observed.items()
            },
            "message": self.message,
        }


def srm_test(
    observed: Mapping[str, float],
    split: Mapping[str, float],
    threshold: float = DEFAULT_SRM_P_THRESHOLD,
) -> SRMResult:
    """Pearson χ² test of assignment counts against the configured split.

    Args:
        observed: users (or assignment units) per group; groups missing here count 0.
        split: configured weight per group; normalised to sum to 1 (so both
            ``{"a": 0.5, "b": 0.5}`` and ``{"a": 1, "b": 1}`` work).
        threshold: flag when p < threshold.

    Degenerate cases: no users, or fewer than two groups with positive weight → not
    applicable (p = 1, not flagged). Users in a group with zero configured weight are
    a mismatch by definition (χ² = inf, p = 0, flagged).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"SRM threshold must be in (0, 1), got {threshold!r}")
    unknown = sorted(set(observed) - set(split))
    if unknown:
        raise ValueError(f"observed groups not in the configured split: {', '.join(unknown)}")
    weights = {k: float(w) for k, w in split.items()}
    if any(not math.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"split weights must be finite, >= 0 and not all 0, got {dict(split)!r}")
    counts = {k: float(observed.get(k, 0)) for k in weights}
    if any(not math.isfinite(c) or c < 0 for c in counts.values()):
        raise ValueError(f"observed counts must be finite and >= 0, got {dict(observed)!r}")

    total = sum(counts.values())
    weight_sum = sum(weights.values())
    expected = {k: total * w / weight_sum for k, w in weights.items()}
    active = [k for k, w in weights.items() if w > 0]
    df = len(active) - 1

    def result(statistic: float, p_value: float, message: str) -> SRMResult:
        flagged = p_value < threshold
        return SRMResult(
            statistic, p_value, max(df, 0), flagged, threshold, counts, expected, message
        )

    stray = [k for k, w in weights.items() if w == 0 and counts[k] > 0]
    if stray:
        names = ", ".join(stray)
        return result(math.inf, 0.0, f"users assigned to groups with zero weight: {names}")
    if total == 0:
        return result(0.0, 1.0, "no users assigned yet")
    if df < 1:
        return result(0.0, 1.0, "fewer than two groups with positive weight: nothing to compare")

    obs = np.array([counts[k] for k in active])
    exp = np.array([expected[k] for k in active])
    # Pearson χ² goodness of fit, df = k − 1 [KTX20 ch. 21].
    statistic, p_value = sps.chisquare(obs, exp)
    statistic, p_value = float(statistic), float(p_value)
    worst = max(active, key=lambda k: abs(counts[k] - expected[k]) / math.sqrt(expected[k]))
    message = (
        f"largest deviation: {worst} observed {counts[worst]:.0f} "
        f"({counts[worst] / total:.4%}) vs expected {expected[worst]:.0f} "
        f"({expected[worst] / total:.4%})"
    )
    return result(statistic, p_value, message)
