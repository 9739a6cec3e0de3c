"""Helpers shared by the kernel tests."""

from __future__ import annotations

import numpy as np
from scipy import integrate, stats


def thompson_win_probabilities(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Exact P(arm a has the largest Beta draw), by numerical integration of
    P(a wins) = ∫_0^1 f_a(x) Π_{j≠a} F_j(x) dx (f, F: Beta pdf, cdf)."""
    out = np.empty(len(alpha))
    for a in range(len(alpha)):
        others = [j for j in range(len(alpha)) if j != a]

        def integrand(x: float, a: int = a, others: list[int] = others) -> float:
            v = stats.beta.pdf(x, alpha[a], beta[a])
            for j in others:
                v *= stats.beta.cdf(x, alpha[j], beta[j])
            return v

        lo, hi = stats.beta.ppf([1e-12, 1 - 1e-12], alpha[a], beta[a])
        out[a] = integrate.quad(integrand, lo, hi, limit=200, epsabs=1e-10)[0]
    return out


def binomial_se(p: float | np.ndarray, n: int) -> float | np.ndarray:
    """Standard error of a frequency estimate of probability p from n trials."""
    return np.sqrt(np.asarray(p) * (1 - np.asarray(p)) / n)


def select_frequencies(policy, candidates, n: int) -> np.ndarray:
    """Share of n ``select(candidates)`` calls that returned each of the K arms."""
    arms = [policy.select(candidates)[0] for _ in range(n)]
    return np.bincount(arms, minlength=policy.n_arms) / n
