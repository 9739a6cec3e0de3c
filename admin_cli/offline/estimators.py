"""Off-policy estimators of a target policy's value from logged bandit data.

Notation (shapes in brackets): ``n`` logged events ``i`` with action ``a_i`` [n],
reward ``r_i`` in [0, 1] [n] and logging propensity ``p_i = mu(a_i | x_i)`` [n]; a
target policy ``pi(a | x_i)`` given per event [n, K] (or once [K] when it ignores
the context); importance weights ``w_i = pi(a_i | x_i) / p_i``; a reward model
``q(x_i, a)`` [n, K]. The value to estimate is ``V(pi) = E_x E_{a~pi}[r(x, a)]``.

Every estimator shares one skeleton (:class:`Estimator`): it maps each event to a
small vector of *per-sample terms* [n, m]; the estimate is a function (``combine``)
of the terms' sample means; the confidence interval is the percentile bootstrap
over events (Efron & Tibshirani 1993, ch. 13) of that same function, so models
fitted on the log (the per-arm reward model) are refitted in every resample.
Estimators only define their terms and ``combine``.

The effective sample size of the weights, ``ESS = (sum w)^2 / sum w^2`` (Kong 1992;
Owen 2013, "Monte Carlo theory, methods and examples", ch. 9), says how many
events the estimate is really worth: ``n`` when ``pi`` equals the logging policy,
far less when the two disagree. Events whose propensity is missing or outside
(0, 1] cannot be reweighted and are left out, with a warning; propensities below
``min_propensity`` produce a warning because their weights dominate the estimate.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from banditd.admin_cli.stats.serialise import json_float


@dataclass(frozen=True)
class LoggedData:
    """Logged bandit feedback, shapes ``(n,)``; rewards already normalised to [0, 1]."""

    actions: np.ndarray  # int64 in [0, n_arms)
    rewards: np.ndarray  # float64 in [0, 1]
    propensities: np.ndarray  # float64; NaN where the log has none
    n_arms: int

    def __post_init__(self) -> None:
        n = self.actions.shape[0]
        if self.actions.shape != (n,) or self.rewards.shape != (n,):
            raise ValueError("actions, rewards and propensities must be 1-d of one length")
        if self.propensities.shape != (n,):
            raise ValueError("actions, rewards and propensities must be 1-d of one length")
        if self.n_arms < 1:
            raise ValueError(f"n_arms must be >= 1, got {self.n_arms}")
        if n and (self.actions.min() < 0 or self.actions.max() >= self.n_arms):
            raise ValueError(f"actions must be arm indices in [0, {self.n_arms})")
        if n and not (np.all(self.rewards >= 0.0) and np.all(self.rewards <= 1.0)):
            raise ValueError("rewards must be normalised to [0, 1]")

    def __len__(self) -> int:
        return int(self.actions.shape[0])


@dataclass(frozen=True)
class EstimationConfig:
    """Bootstrap and warning settings shared by every estimator."""

    n_bootstrap: int = 1000  # bootstrap resamples for the interval
    alpha: float = 0.05  # 1 - confidence level
    seed: int = 0  # bootstrap resampling seed
    min_propensity: float = 0.01  # warn about logged propensities below this

    def __post_init__(self) -> None:
        if self.n_bootstrap < 2:
            raise ValueError(f"n_bootstrap must be >= 2, got {self.n_bootstrap}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 <= self.min_propensity < 1.0:
            raise ValueError(f"min_propensity must be in [0, 1), got {self.min_propensity}")


@dataclass(frozen=True)
class Estimate:
    """One estimator's value of one target policy, with its interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int  # events used
    ess: float  # effective sample size of the importance weights
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "value": json_float(self.value),
            "ci_low": json_float(self.ci_low),
            "ci_high": json_float(self.ci_high),
            "confidence": self.confidence,
            "n": self.n,
            "ess": json_float(self.ess),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Prepared:
    """The usable events with everything estimators need, shapes ``(n,)`` / ``(n, K)``."""

    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    action_dist: np.ndarray  # pi(a | x_i), [n, K]
    weights: np.ndarray  # w_i = pi(a_i | x_i) / p_i

    @property
    def n(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_arms(self) -> int:
        return int(self.action_dist.shape[1])

    def onehot(self) -> np.ndarray:
        """``1[a_i = a]`` [n, K]."""
        out = np.zeros((self.n, self.n_arms))
        out[np.arange(self.n), self.actions] = 1.0
        return out


def effective_sample_size(weights: np.ndarray) -> float:
    """``(sum w)^2 / sum w^2`` (Kong 1992); 0 when every weight is 0."""
    sq = float(np.dot(weights, weights))
    return float(weights.sum()) ** 2 / sq if sq > 0 else 0.0


def as_action_dist(action_dist: np.ndarray, n: int, n_arms: int) -> np.ndarray:
    """Validate ``pi`` given as [K] or [n, K] and broadcast it to [n, K]."""
    pi = np.asarray(action_dist, dtype=np.float64)
    if pi.ndim == 1:
        pi = np.broadcast_to(pi, (n, pi.shape[0]))
    if pi.shape != (n, n_arms):
        raise ValueError(f"target policy must have shape ({n_arms},) or ({n}, {n_arms})")
    if np.any(pi < 0) or not np.allclose(pi.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("target policy rows must be probability distributions over the arms")
    return pi


def prepare(
    data: LoggedData, action_dist: np.ndarray, config: EstimationConfig
) -> tuple[Prepared, list[str]]:
    """Drop events without a usable propensity, compute weights, collect warnings."""
    pi = as_action_dist(action_dist, len(data), data.n_arms)
    p = data.propensities
    usable = np.isfinite(p) & (p > 0.0) & (p <= 1.0)
    warnings: list[str] = []
    n_bad = int(len(data) - usable.sum())
    if n_bad:
        warnings.append(
            f"{n_bad} of {len(data)} logged events have no usable propensity "
            "(missing, <= 0 or > 1) and are left out"
        )
    tiny = usable & (p < config.min_propensity)
    if tiny.any():
        warnings.append(
            f"{int(tiny.sum())} logged events have propensity below {config.min_propensity:g} "
            f"(smallest {float(p[tiny].min()):.3g}): their importance weights dominate the "
            "IPS/SNIPS/DR estimates"
        )
    actions = data.actions[usable]
    pi_used = np.ascontiguousarray(pi[usable])
    weights = pi_used[np.arange(actions.shape[0]), actions] / p[usable]
    prepared = Prepared(actions, data.rewards[usable], p[usable], pi_used, weights)
    return prepared, warnings


class Estimator(ABC):
    """Skeleton: per-sample terms [n, m] → ``combine`` of their means → bootstrap interval."""

    name: ClassVar[str]

    @abstractmethod
    def terms(self, prep: Prepared) -> np.ndarray:
        """Per-sample terms, shape ``(n, m)``."""

    @abstractmethod
    def combine(self, means: np.ndarray) -> np.ndarray:
        """Estimates from term means: ``(..., m)`` → ``(...)``."""

    def estimate(
        self,
        data: LoggedData,
        action_dist: np.ndarray,
        config: EstimationConfig | None = None,
    ) -> Estimate:
        """This estimator's value of ``action_dist`` on ``data``."""
        return estimate_policy(data, action_dist, [self], config)[self.name]


class IPS(Estimator):
    r"""Inverse propensity scoring (Horvitz & Thompson 1952, JASA 47(260)).

    .. math:: \hat V_{IPS} = \frac1n \sum_i w_i r_i, \quad w_i = \pi(a_i|x_i) / p_i

    Unbiased when every action ``pi`` can take has ``p > 0``; its variance grows with
    the weights. Terms: ``[w_i r_i]`` (m = 1).
    """

    name = "ips"

    def terms(self, prep: Prepared) -> np.ndarray:
        return (prep.weights * prep.rewards)[:, None]

    def combine(self, means: np.ndarray) -> np.ndarray:
        return means[..., 0]


class SNIPS(Estimator):
    r"""Self-normalised IPS (Swaminathan & Joachims 2015, NeurIPS, "The self-normalized
    estimator for counterfactual learning").

    .. math:: \hat V_{SNIPS} = \frac{\sum_i w_i r_i}{\sum_i w_i}

    A weighted mean of observed rewards, so it always lies within [min r, max r];
    slightly biased, usually far less variable than IPS. Undefined (NaN) when every
    weight is 0. Terms: ``[w_i r_i, w_i]`` (m = 2).
    """

    name = "snips"

    def terms(self, prep: Prepared) -> np.ndarray:
        return np.column_stack([prep.weights * prep.rewards, prep.weights])

    def combine(self, means: np.ndarray) -> np.ndarray:
        num, den = means[..., 0], means[..., 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _per_arm_means(sum_r: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The per-arm mean reward model ``q(a) = sum_{a_i=a} r_i / n_a`` from term means
    ``(..., K)``; an arm never logged gets the overall mean reward."""
    total = count.sum(axis=-1, keepdims=True)
    overall = sum_r.sum(axis=-1, keepdims=True) / np.where(total > 0, total, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, sum_r / np.where(count > 0, count, 1.0), overall)


class DirectMethod(Estimator):
    r"""Direct method: average the reward model under the target policy
    (Dudík, Langford & Li 2011, ICML, "Doubly robust policy evaluation and learning").

    .. math:: \hat V_{DM} = \frac1n \sum_i \sum_a \pi(a|x_i)\, \hat q(x_i, a)

    ``reward_model=None`` uses the per-arm mean reward ``q(a) = mean{r_i : a_i = a}``
    fitted on the log (refitted in each bootstrap resample; an arm never logged gets
    the overall mean). A fixed model [n, K] may be passed instead. No weights: low
    variance, biased when the model is wrong.
    """

    name = "dm"

    def __init__(self, reward_model: np.ndarray | None = None):
        self.reward_model = reward_model

    def _fixed_model(self, prep: Prepared) -> np.ndarray:
        assert self.reward_model is not None
        q = np.asarray(self.reward_model, dtype=np.float64)
        if q.shape not in ((prep.n_arms,), (prep.n, prep.n_arms)):
            raise ValueError(
                f"reward model must have shape ({prep.n_arms},) or ({prep.n}, {prep.n_arms}), "
                f"got {q.shape}"
            )
        return np.broadcast_to(q, (prep.n, prep.n_arms))

    def terms(self, prep: Prepared) -> np.ndarray:
        if self.reward_model is not None:
            q = self._fixed_model(prep)
            return np.einsum("ik,ik->i", prep.action_dist, q)[:, None]
        onehot = prep.onehot()
        # [r_i 1(a_i=a)]_a, [1(a_i=a)]_a, [pi(a|x_i)]_a
        return np.hstack([onehot * prep.rewards[:, None], onehot, prep.action_dist])

    def combine(self, means: np.ndarray) -> np.ndarray:
        if self.reward_model is not None:
            return means[..., 0]
        k = means.shape[-1] // 3
        q = _per_arm_means(means[..., :k], means[..., k : 2 * k])
        return np.sum(q * means[..., 2 * k : 3 * k], axis=-1)


class DoublyRobust(DirectMethod):
    r"""Doubly robust (Dudík, Langford & Li 2011, ICML; Robins & Rotnitzky 1995, JASA).

    .. math:: \hat V_{DR} = \frac1n \sum_i \Big[\sum_a \pi(a|x_i)\,\hat q(x_i, a)
              + w_i \big(r_i - \hat q(x_i, a_i)\big)\Big]

    The direct method plus an importance-weighted correction of the model's error:
    unbiased when the propensities are right *or* the model is. With all ``w_i = 0``
    it is exactly DM; with ``q = 0`` exactly IPS. Reward model as in
    :class:`DirectMethod`.
    """

    name = "dr"

    def terms(self, prep: Prepared) -> np.ndarray:
        if self.reward_model is not None:
            q = self._fixed_model(prep)
            q_logged = q[np.arange(prep.n), prep.actions]
            dm = np.einsum("ik,ik->i", prep.action_dist, q)
            return (dm + prep.weights * (prep.rewards - q_logged))[:, None]
        onehot = prep.onehot()
        wr = (prep.weights * prep.rewards)[:, None]
        # DM terms, then w_i r_i, then [w_i 1(a_i=a)]_a
        return np.hstack([super().terms(prep), wr, onehot * prep.weights[:, None]])

    def combine(self, means: np.ndarray) -> np.ndarray:
        if self.reward_model is not None:
            return means[..., 0]
        k = (means.shape[-1] - 1) // 4
        q = _per_arm_means(means[..., :k], means[..., k : 2 * k])
        dm = np.sum(q * means[..., 2 * k : 3 * k], axis=-1)
        # mean_i w_i (r_i - q(a_i)) = mean(w r) - sum_a q(a) mean(w 1[a_i = a])
        correction = means[..., 3 * k] - np.sum(q * means[..., 3 * k + 1 :], axis=-1)
        return dm + correction


ESTIMATORS: dict[str, type[Estimator]] = {
    "ips": IPS,
    "snips": SNIPS,
    "dm": DirectMethod,
    "dr": DoublyRobust,
}


def default_estimators() -> list[Estimator]:
    """IPS, SNIPS, DM and DR (per-arm mean reward model)."""
    return [IPS(), SNIPS(), DirectMethod(), DoublyRobust()]


_BOOTSTRAP_CELLS = 4_000_000  # resample-count cells per matrix product (memory bound)


def estimate_policy(
    data: LoggedData,
    action_dist: np.ndarray,
    estimators: Sequence[Estimator] | None = None,
    config: EstimationConfig | None = None,
) -> Mapping[str, Estimate]:
    """Every estimator's value of ``action_dist`` on ``data``; all share the resamples."""
    config = config or EstimationConfig()
    estimators = list(estimators) if estimators is not None else default_estimators()
    prep, warnings = prepare(data, action_dist, config)
    confidence = 1.0 - config.alpha
    if prep.n == 0:
        warnings.append("no logged events with a usable propensity: nothing to estimate")
        nan = float("nan")
        return {
            e.name: Estimate(e.name, nan, nan, nan, confidence, 0, 0.0, tuple(warnings))
            for e in estimators
        }
    ess = effective_sample_size(prep.weights)
    if ess < 0.01 * prep.n or ess < 10:
        warnings.append(
            f"effective sample size {ess:.1f} of {prep.n} events: the target policy rarely "
            "takes the logged actions, so IPS/SNIPS/DR are unreliable"
        )
    terms = [e.terms(prep) for e in estimators]
    points = [float(e.combine(t.mean(axis=0))) for e, t in zip(estimators, terms, strict=True)]
    boot = _bootstrap(estimators, terms, prep.n, config)
    out: dict[str, Estimate] = {}
    for e, point, values in zip(estimators, points, boot, strict=True):
        notes = list(warnings)
        finite = values[np.isfinite(values)]
        if math.isnan(point) or finite.size < 2:
            low = high = float("nan")
            notes.append(f"{e.name}: undefined on this log (all importance weights are 0)")
        else:
            low, high = np.quantile(finite, [config.alpha / 2, 1 - config.alpha / 2])
            if finite.size < values.size:
                notes.append(
                    f"{e.name}: {values.size - finite.size} of {values.size} bootstrap "
                    "resamples were undefined and are left out of the interval"
                )
        out[e.name] = Estimate(
            e.name, point, float(low), float(high), confidence, prep.n, ess, tuple(notes)
        )
    return out


def _bootstrap(
    estimators: Sequence[Estimator], terms: Sequence[np.ndarray], n: int, config: EstimationConfig
) -> list[np.ndarray]:
    """Percentile-bootstrap replicates: resample events with replacement (as counts)
    and recompute each estimator from the resampled term means."""
    rng = np.random.default_rng(config.seed)
    out = [np.empty(config.n_bootstrap) for _ in estimators]
    batch = max(1, _BOOTSTRAP_CELLS // n)
    for start in range(0, config.n_bootstrap, batch):
        b = min(batch, config.n_bootstrap - start)
        # b resamples of n events each, as per-event counts [b, n] (one bincount)
        picks = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        for e, t, values in zip(estimators, terms, out, strict=True):
            values[start : start + b] = e.combine(counts @ t / n)
    return out
