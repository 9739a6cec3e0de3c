"""Always-valid inference for a difference of means: the normal-mixture mSPRT.

The verdict engine looks at every experiment once a day. A fixed-horizon z-test
evaluated at each look rejects a true null far more often than its nominal α (about
20 % over 14 looks at α = 0.05; see ``benchmarks/verdict.py``). The mixture sequential
probability ratio test (mSPRT) of [Johari17] keeps P(any look rejects | H₀) ≤ α for
any number of looks, chosen in any data-dependent way.

Model. At look n the estimate θ̂ₙ (a difference of means, or a relative lift) is
approximately N(θ, Vₙ), where Vₙ = Var(θ̂ₙ) shrinks as data accrue. In information
time Iₙ = 1/Vₙ the score Sₙ = θ̂ₙ·Iₙ is a Brownian motion with drift θ (the canonical
joint distribution of group-sequential tests, [JT00 ch. 3]), so for every θ,
exp(θSₙ − θ²Iₙ/2) is a martingale under H₀: θ = 0, and so is its mixture over a prior
θ ~ H = N(θ₀, τ²). Integrating gives the mixture likelihood ratio

    Λₙ = √(Vₙ / (Vₙ + τ²)) · exp( τ² (θ̂ₙ − θ₀)² / (2 Vₙ (Vₙ + τ²)) ),

which with one stream of n observations of variance σ² (Vₙ = σ²/n) is exactly the
normal-mixture statistic of [Johari17], Λₙ = √(σ²/(σ² + nτ²)) ·
exp(n²τ²(X̄ₙ − θ₀)² / (2σ²(σ² + nτ²))), and with two equal streams (Vₙ = 2σ²/n) their
two-sample form √(2σ²/(2σ² + nτ²)) · exp(n²τ²(Ȳₙ − X̄ₙ − θ₀)² / (4σ²(2σ² + nτ²))).
By Ville's inequality P(supₙ Λₙ ≥ 1/α | H₀) ≤ α, hence

* always-valid p-value ([Johari17]): pₙ = min(pₙ₋₁, 1/Λₙ), p₀ = 1;
* always-valid confidence interval ([Johari17], inverting the test): the running intersection
  CIₙ = ∩_{m ≤ n} {θ₀ : Λₘ(θ₀) < 1/α}. Solving Λ(θ₀) < 1/α for θ₀ gives the interval
  θ̂ ± hₙ with half-width

      hₙ = √( Vₙ (Vₙ + τ²) / τ² · ( 2 log(1/α) + log((Vₙ + τ²) / Vₙ) ) ).

Vₙ is the plug-in estimate s_T²/n_T + s_C²/n_C, as in [Johari17] for conversion
rates; the guarantee is then asymptotic in n, which the A/A benchmark checks.

Choice of τ². The mixing variance sets where the test is most powerful. Setting
∂ log Λ / ∂τ² = 0 gives τ² = (θ̂ − θ₀)² − V: for an observed effect equal to the
minimum detectable effect δ, Λ is largest when τ² ≈ δ² once the data resolve δ
(V ≪ δ²). We therefore use

    τ² = δ_MDE²,   δ_MDE = mde_relative · x̄_C  (absolute scale),   τ² = mde_relative²
    (relative scale),

i.e. the prior puts the smallest effect worth detecting at one prior standard deviation
([Johari17] recommend matching H to the anticipated effect sizes). The price: while
V ≫ τ² (small samples) the half-width behaves like (V/τ)·√(2 log(1/α) + log(V/τ²))
rather than √V, so effects far larger than the MDE are not detected on the first few
hundred users. Catastrophic losses are the guardrails' job (reward-drop check), not the
verdict engine's.

References:
    [Johari17] R. Johari, P. Koomen, L. Pekelis, D. Walsh (2017), "Peeking at A/B tests:
        why it matters, and what to do about it", KDD 2017, pp. 1517–1525
        (long version: "Always valid inference", arXiv:1512.04922).
    [JT00] C. Jennison, B. W. Turnbull (2000), Group Sequential Methods with
        Applications to Clinical Trials, Chapman & Hall.
    [Howard21] S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021), "Time-uniform,
        nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2):1055–1080
        (the same normal-mixture boundary, read as a confidence sequence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from banditd.admin_cli.stats.intervals import difference_variance, relative_lift_variance
from banditd.admin_cli.stats.serialise import json_float, json_interval
from banditd.admin_cli.stats.sufficient import SampleStats

ArrayLike = float | np.ndarray


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


# -- vectorised core (shared by the engine and the benchmark) -------------------------


def mixture_log_likelihood_ratio(
    estimate: ArrayLike, variance: ArrayLike, tau2: ArrayLike, null: ArrayLike = 0.0
) -> np.ndarray:
    """log Λ for the normal-mixture mSPRT, elementwise over broadcastable arrays.

        log Λ = ½ log(V / (V + τ²)) + τ² (θ̂ − θ₀)² / (2 V (V + τ²))      [Johari17]

    A look without usable information — V ≤ 0, V = inf, τ² ≤ 0 or a non-finite
    estimate — contributes no evidence: log Λ = 0 (Λ = 1, p = 1).
    """
    est = np.asarray(estimate, float)
    var = np.asarray(variance, float)
    t2 = np.asarray(tau2, float)
    theta0 = np.asarray(null, float)
    usable = (var > 0) & np.isfinite(var) & (t2 > 0) & np.isfinite(t2) & np.isfinite(est)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        total = var + t2
        # Johari et al. (2017) normal-mixture Λ, written with V = σ²/n (module docstring).
        log_lr = 0.5 * np.log(var / total) + t2 * (est - theta0) ** 2 / (2 * var * total)
    return np.where(usable, log_lr, 0.0)


def look_p_value(
    estimate: ArrayLike, variance: ArrayLike, tau2: ArrayLike, null: ArrayLike = 0.0
) -> np.ndarray:
    """min(1, 1/Λ) at one look, before the running minimum over looks."""
    log_lr = mixture_log_likelihood_ratio(estimate, variance, tau2, null)
    return np.exp(-np.maximum(log_lr, 0.0))


def always_valid_halfwidth(variance: ArrayLike, tau2: ArrayLike, alpha: float) -> np.ndarray:
    """Half-width h of {θ₀ : Λ(θ₀) < 1/α} at one look, elementwise.

        h = √( V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²)/V)) )   [Johari17]

    ``inf`` for a look without usable information (V ≤ 0, V = inf or τ² ≤ 0).
    """
    _check_alpha(alpha)
    var = np.asarray(variance, float)
    t2 = np.asarray(tau2, float)
    usable = (var > 0) & np.isfinite(var) & (t2 > 0) & np.isfinite(t2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        total = var + t2
        # Invert Λ(θ₀) < 1/α: (θ̂ − θ₀)² < V(V+τ²)/τ² · (2 log(1/α) + log((V+τ²)/V)).
        half2 = var * total / t2 * (2 * math.log(1 / alpha) + np.log(total / var))
        half = np.sqrt(half2)
    return np.where(usable, half, np.inf)


def running_p_value(p_values: ArrayLike, axis: int = -1) -> np.ndarray:
    """Always-valid p-value path pₙ = min(pₙ₋₁, 1/Λₙ) along ``axis`` (the looks) [Johari17]."""
    return np.minimum.accumulate(np.asarray(p_values, float), axis=axis)


def running_interval(
    lower: ArrayLike, upper: ArrayLike, axis: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Running intersection ∩_{m ≤ n} [lₘ, uₘ] along ``axis`` [Johari17].

    The intersection can come out empty (lower > upper) when the effect is not
    stationary; callers report that rather than an interval.
    """
    return (
        np.maximum.accumulate(np.asarray(lower, float), axis=axis),
        np.minimum.accumulate(np.asarray(upper, float), axis=axis),
    )


# -- mixing variance and planning -----------------------------------------------------


def tau2_from_mde(mde: float, baseline: float = 1.0) -> float:
    """τ² = (mde · baseline)²: the MDE at one prior standard deviation (module docstring).

    On the absolute scale pass ``baseline`` = the control mean (δ_MDE = mde_relative · x̄_C);
    on the relative scale keep ``baseline = 1``. Returns 0 (no evidence) for a zero
    baseline.
    """
    if not mde > 0:
        raise ValueError(f"the minimum detectable effect must be > 0, got {mde!r}")
    return float((mde * baseline) ** 2)


def required_variance(effect: float, tau2: float, alpha: float, power: float = 0.8) -> float:
    """The largest Var(θ̂) at which a true effect ``effect`` is detected with ``power``.

    Detection at a look needs |θ̂| > h(V), and θ̂ ~ N(δ, V), so
    P(detect) ≈ Φ((|δ| − h(V)) / √V) (ignoring the earlier looks, which only help, so
    this is conservative). Setting it to ``power`` gives the equation

        h(V*) + z_power · √V* = |δ|,

    solved by bisection on log V. h(V) + z√V increases with V for α < 0.6: with
    u = V/τ², d(h²/τ²)/du = (1 + 2u)(2 log(1/α) + log(1 + 1/u)) − 1 > 2 log(1/α) − 1 > 0.
    Returns 0 when ``effect`` is 0.
    """
    _check_alpha(alpha)
    if not 0.5 <= power < 1:
        raise ValueError(f"power must be in [0.5, 1), got {power!r}")
    if not tau2 > 0:
        raise ValueError(f"tau2 must be > 0, got {tau2!r}")
    delta = abs(effect)
    if delta == 0:
        return 0.0
    z_power = float(sps.norm.ppf(power))

    def excess(log_v: float) -> float:
        v = math.exp(log_v)
        return float(always_valid_halfwidth(v, tau2, alpha)) + z_power * math.sqrt(v) - delta

    lo, hi = math.log(delta**2) - 60.0, math.log(delta**2) + 5.0
    if excess(hi) <= 0:  # pragma: no cover - h(V) ≥ √(2V log(1/α)) exceeds δ at V = e⁵δ²
        return math.exp(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if excess(mid) > 0:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-10:
            break
    return math.exp(lo)


# -- per-look API on SampleStats ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Look:
    """One interim analysis: the estimate θ̂ and its estimated variance V = Var(θ̂).

    ``tau2`` is the mixing variance used at this look (it may depend on data up to the
    look, e.g. τ² = (mde·x̄_C)²).
    """

    estimate: float
    variance: float
    tau2: float


def difference_look(treatment: SampleStats, control: SampleStats, mde_relative: float) -> Look:
    """Look at Δ = μ_T − μ_C: θ̂ = x̄_T − x̄_C, V = s_T²/n_T + s_C²/n_C, τ² = (mde·x̄_C)²."""
    estimate = treatment.mean - control.mean
    variance = difference_variance(treatment, control)
    return Look(estimate, variance, tau2_from_mde(mde_relative, control.mean))


def relative_look(treatment: SampleStats, control: SampleStats, mde_relative: float) -> Look:
    """Look at r = μ_T/μ_C − 1 with the delta-method variance and τ² = mde².

    See :func:`banditd.admin_cli.stats.intervals.relative_lift_variance`; with x̄_C = 0
    (or x̄_C⁴ underflowing to 0) the estimate is ``nan`` and the look carries no evidence.
    """
    if control.is_empty or control.mean**4 == 0:
        return Look(math.nan, math.inf, tau2_from_mde(mde_relative))
    estimate = treatment.mean / control.mean - 1
    return Look(estimate, relative_lift_variance(treatment, control), tau2_from_mde(mde_relative))


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """Always-valid inference after the last of ``looks`` looks.

    Attributes:
        estimate: θ̂ at the last look.
        lower, upper: running-intersection always-valid (1 − α) interval (``±inf`` when
            no look carried information, ``nan`` when the intersection is empty).
        p_value: running minimum of 1/Λ over the looks (H₀: θ = ``null``).
        alpha: the level; ``significant`` is ``p_value ≤ alpha``.
        looks: number of looks so far.
        message: why the result is degenerate, empty when it is not.
    """

    estimate: float
    lower: float
    upper: float
    p_value: float
    alpha: float
    looks: int
    message: str = ""

    @property
    def significant(self) -> bool:
        return self.p_value <= self.alpha

    def lies_within(self, low: float, high: float) -> bool:
        """The interval is defined, finite and strictly inside (low, high)."""
        return (
            math.isfinite(self.lower) and math.isfinite(self.upper)
            and low < self.lower and self.upper < high
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "estimate": json_float(self.estimate),
            "ci": json_interval(self.lower, self.upper),
            "level": 1 - self.alpha,
            "p_value": json_float(self.p_value),
            "significant": self.significant,
            "looks": self.looks,
            "method": "mSPRT normal mixture (Johari et al. 2017)",
            "message": self.message,
        }


def msprt_path(
    looks: Sequence[Look], alpha: float = 0.05, null: float = 0.0
) -> list[SequentialResult]:
    """Always-valid p-value and interval after each look, in order.

    The caller passes every look taken so far (for the engine: the cumulative data at
    the end of each day); element k of the result is what an analyst looking after
    look k would have seen, so ``msprt_path(looks)[-1]`` is today's result.
    """
    _check_alpha(alpha)
    if not looks:
        return []
    est = np.array([look.estimate for look in looks], float)
    var = np.array([look.variance for look in looks], float)
    tau2 = np.array([look.tau2 for look in looks], float)
    p_path = running_p_value(look_p_value(est, var, tau2, null))
    half = always_valid_halfwidth(var, tau2, alpha)
    with np.errstate(invalid="ignore"):
        lower, upper = running_interval(np.where(np.isfinite(est), est - half, -np.inf),
                                        np.where(np.isfinite(est), est + half, np.inf))
    results = []
    for k in range(len(looks)):
        message = ""
        lo, hi = float(lower[k]), float(upper[k])
        if lo > hi:
            message = "the running intersection of intervals is empty: the effect is not stationary"
            lo = hi = math.nan
        elif math.isinf(hi - lo):
            message = (
                "no look so far carried information (empty arm, zero variance or zero baseline)"
            )
        results.append(
            SequentialResult(float(est[k]), lo, hi, float(p_path[k]), alpha, k + 1, message)
        )
    return results


def msprt(looks: Sequence[Look], alpha: float = 0.05, null: float = 0.0) -> SequentialResult:
    """The always-valid result after the last look (see :func:`msprt_path`)."""
    if not looks:
        return SequentialResult(math.nan, -math.inf, math.inf, 1.0, alpha, 0, "no looks")
    return msprt_path(looks, alpha, null)[-1]
