"""Sufficient statistics of a sample: ``n``, ``Σx`` and ``Σx²``.

Everything the CLI reports about a mean (interval, lift, sequential test) needs only
these three numbers, which PostgreSQL computes in one pass
(``count(*), sum(value), sum(banditd_square(value))``: ``value * value`` without
float8's underflow error, migration 0005) and which pool by addition, so daily
rows add up to the experiment total. The layout follows GrowthBook gbstats
``SampleMeanStatistic`` (``gbstats/models/statistics.py``).

Degenerate samples have defined values, never an exception (gbstats
``_default_output``): with ``n = 0`` the mean is 0 and the variance of the mean is
infinite (no information); with ``n ≤ 1`` the sample variance is 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from banditd.admin_cli.stats.serialise import json_float

# Relative slack on the Cauchy–Schwarz check (Σx)² ≤ n·Σx²: sums computed in floating
# point by PostgreSQL or by pooling may overshoot by a few ulps.
_CS_RTOL = 1e-9


@dataclass(frozen=True, slots=True)
class SampleStats:
    """Sufficient statistics of one sample x₁ … xₙ.

    Attributes:
        n: number of observations (a count; ``float`` allowed because PostgreSQL
            ``double precision`` counters arrive as floats), ``n ≥ 0``.
        sum: Σxᵢ.
        sum_sq: Σxᵢ², ``≥ 0`` and ``(Σxᵢ)² ≤ n·Σxᵢ²`` (Cauchy–Schwarz).
    """

    n: float
    sum: float
    sum_sq: float

    def __post_init__(self) -> None:
        for name in ("n", "sum", "sum_sq"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise TypeError(f"SampleStats.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"SampleStats.{name} must be finite, got {value!r}")
        if self.n < 0:
            raise ValueError(f"SampleStats.n must be >= 0, got {self.n!r}")
        if self.sum_sq < 0:
            raise ValueError(f"SampleStats.sum_sq must be >= 0, got {self.sum_sq!r}")
        if self.n == 0 and (self.sum != 0 or self.sum_sq != 0):
            raise ValueError("SampleStats with n = 0 must have sum = sum_sq = 0")
        if self.sum * self.sum > self.n * self.sum_sq * (1 + _CS_RTOL) + 1e-12:
            raise ValueError(
                "SampleStats violates (Σx)² ≤ n·Σx² (Cauchy–Schwarz): "
                f"n={self.n!r}, sum={self.sum!r}, sum_sq={self.sum_sq!r}"
            )

    # -- constructors -------------------------------------------------------------

    @classmethod
    def empty(cls) -> SampleStats:
        """The sample with no observations (the identity for ``+``)."""
        return cls(0, 0.0, 0.0)

    @classmethod
    def from_values(cls, values: Iterable[float] | np.ndarray) -> SampleStats:
        """Statistics of the given observations (any iterable or 1-D array)."""
        x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, float)
        if x.ndim != 1:
            raise ValueError(f"from_values expects a 1-D sample, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("from_values: observations must be finite")
        return cls(int(x.size), float(x.sum()), float(np.dot(x, x)))

    @classmethod
    def from_binary(cls, successes: float, n: float) -> SampleStats:
        """Statistics of ``n`` Bernoulli observations with ``successes`` ones (x² = x)."""
        if not 0 <= successes <= n:
            raise ValueError(f"from_binary needs 0 <= successes <= n, got {successes}/{n}")
        return cls(n, float(successes), float(successes))

    # -- moments ------------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        return self.n == 0

    @property
    def mean(self) -> float:
        """x̄ = Σx / n; defined as 0 when ``n = 0`` (check ``is_empty``)."""
        return self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """Unbiased sample variance s² = (Σx² − (Σx)²/n) / (n − 1); 0 when ``n ≤ 1``.

        Clamped at 0: the one-pass formula can go slightly negative by cancellation
        when all observations are (almost) equal.
        """
        if self.n <= 1:
            return 0.0
        return max((self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1), 0.0)

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def variance_of_mean(self) -> float:
        """Var(x̄) estimated by s²/n; ``inf`` when ``n = 0`` (no information)."""
        return self.variance / self.n if self.n > 0 else math.inf

    # -- pooling ------------------------------------------------------------------

    def __add__(self, other: SampleStats) -> SampleStats:
        """Pool two disjoint samples: every sufficient statistic adds."""
        if not isinstance(other, SampleStats):
            return NotImplemented
        return SampleStats(self.n + other.n, self.sum + other.sum, self.sum_sq + other.sum_sq)

    def __radd__(self, other: object) -> SampleStats:
        # Lets the built-in sum() start from 0.
        if other == 0:
            return self
        return NotImplemented

    def to_dict(self) -> dict[str, float | None]:
        return {
            "n": json_float(self.n),
            "sum": json_float(self.sum),
            "sum_sq": json_float(self.sum_sq),
            "mean": json_float(self.mean),
            "variance": json_float(self.variance),
        }


def pool(samples: Iterable[SampleStats]) -> SampleStats:
    """Σ of the samples' statistics (``SampleStats.empty()`` for none)."""
    total = SampleStats.empty()
    for sample in samples:
        total = total + sample
    return total
