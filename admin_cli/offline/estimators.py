"""Off-policy estimators of a target policy's value from logged bandit data.

Notation (shapes in brackets): ``n`` logged events ``i`` with action ``a_i``, reward
``r_i`` in [0, 1] and logging propensity ``p_i = mu(a_i | x_i)``; a target policy
``pi(a | x_i)``; importance weights ``w_i = pi(a_i | x_i) / p_i``. The value to
estimate is ``V(pi) = E_x E_{a~pi}[r(x, a)]``.

Events come pooled in *cells* (:class:`CellMoments`): a cell is a (group, arm) pair,
where events of one group share their target distribution ``pi_g`` [G, K] (the
evaluation of an experiment's log groups by cross-fitting fold and candidate set;
per-event input is one group per event). A cell keeps only the power sums
``S_jk = sum_i r_i^j p_i^-k`` for j, k in {0, 1, 2}. Every estimator here is a smooth
function of term means whose per-event terms are, within a cell, linear in
``(1, r, 1/p, r/p)``, so the nine sums determine both the estimate and its variance:
the cost of an estimate is O(cells), whatever the number of events.

Interval: the delta method (van der Vaart 1998, "Asymptotic Statistics", ch. 3).
Each estimator is ``g(tbar)`` of the sample mean of per-event terms ``t_i``; its
linearisation ``g(tbar) - g(mu) ~ grad g . (tbar - mu)`` gives the influence value
``psi_i = grad g(tbar) . t_i`` and ``Var g(tbar) ~ Var(psi) / n`` (the sandwich
variance of a ratio, as for self-normalised importance sampling in Owen 2013,
ch. 9, for SNIPS; the same for the fitted reward model of DM/DR, whose per-arm
means are ratios of term means).
Each estimator returns ``psi`` per cell as coefficients ``c`` of ``(1, r, 1/p, r/p)``;
``sum psi`` and ``sum psi^2`` are then linear in the cells' power sums, and the
interval is the Wald interval ``g(tbar) +- z_{1-alpha/2} sqrt(Var(psi) / n)``.
Why not a percentile bootstrap: its cost is resamples x events, so it grows with
the log, while the delta method is its first-order equivalent (both rest on the same
asymptotics; Efron & Tibshirani 1993, ch. 21) at a cost that does not. Like a
bootstrap that does not re-learn the target, it ignores the noise of a target
learned on other events (cross-fitting keeps it independent of the events scored)
and, like any normal interval, under-covers when a few huge weights dominate: the
effective sample size below says when.

The effective sample size of the weights, ``ESS = (sum w)^2 / sum w^2`` (Kong 1992;
Owen 2013, "Monte Carlo theory, methods and examples", ch. 9), says how many events
the estimate is really worth. Events whose propensity is missing or outside (0, 1]
cannot be reweighted and are left out, with a warning; propensities below
``min_propensity`` produce a warning because their weights dominate the estimate.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import stats

from banditd.admin_cli.stats.serialise import json_float

POWERS = 3  # r^j p^-k sums for j, k in 0 .. POWERS - 1


@dataclass(frozen=True)
class LoggedData:
    """Logged bandit feedback, shapes ``(n,)``; rewards already normalised to [0, 1]."""

    actions: np.ndarray  # int in [0, n_arms)
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
    """Interval and warning settings shared by every estimator."""

    alpha: float = 0.05  # 1 - confidence level
    min_propensity: float = 0.01  # warn about logged propensities below this

    def __post_init__(self) -> None:
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
class CellMoments:
    """Events pooled by (group, arm): ``sums[c, j, k] = sum_{i in c} r_i^j p_i^-k``.

    Shapes: ``group``, ``arm`` (c,) int64; ``sums`` (c, 3, 3). A pair is one cell
    after ``from_events`` and ``pooled``; ``drain`` may leave it in several, which every
    estimate here reads as their sum.
    """

    group: np.ndarray
    arm: np.ndarray
    sums: np.ndarray
    n_groups: int
    n_arms: int

    @classmethod
    def from_events(
        cls, group: np.ndarray, arm: np.ndarray, rewards: np.ndarray, propensities: np.ndarray,
        n_groups: int, n_arms: int,
    ) -> CellMoments:
        """Pool events (every propensity in (0, 1]) into their cells."""
        key = np.asarray(group, dtype=np.int64) * n_arms + np.asarray(arm, dtype=np.int64)
        keys, inverse = np.unique(key, return_inverse=True)
        inverse = inverse.ravel()
        r_pow = (np.ones_like(rewards), rewards, rewards * rewards)
        inv_p = 1.0 / propensities
        p_pow = (np.ones_like(inv_p), inv_p, inv_p * inv_p)
        sums = np.empty((keys.size, POWERS, POWERS))
        for j in range(POWERS):
            for k in range(POWERS):
                sums[:, j, k] = np.bincount(inverse, weights=r_pow[j] * p_pow[k],
                                            minlength=keys.size)
        return cls(keys // n_arms, keys % n_arms, sums, n_groups, n_arms)

    @classmethod
    def pooled(cls, parts: Sequence[CellMoments], n_groups: int, n_arms: int) -> CellMoments:
        """The cells of several disjoint sets of events, summed where they coincide."""
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64),
                       np.zeros((0, POWERS, POWERS)), n_groups, n_arms)
        keys, inverse = np.unique(np.concatenate([p.group * n_arms + p.arm for p in parts]),
                                  return_inverse=True)
        inverse = inverse.ravel()
        # one power sum at a time: the temporaries stay one column of the parts
        sums = np.empty((keys.size, POWERS, POWERS))
        for j in range(POWERS):
            for k in range(POWERS):
                sums[:, j, k] = np.bincount(
                    inverse, weights=np.concatenate([p.sums[:, j, k] for p in parts]),
                    minlength=keys.size)
        return cls(keys // n_arms, keys % n_arms, sums, n_groups, n_arms)

    @classmethod
    def drain(cls, parts: list[CellMoments], n_groups: int, n_arms: int) -> CellMoments:
        """The cells of ``parts`` side by side, emptying the list as each part is copied
        (so that it is freed: the cells are held about once, never twice). A (group,
        arm) of two parts stays two cells: every estimate here is a sum over cells of
        terms linear in their power sums, so a cell split in two counts as one."""
        total = sum(p.group.shape[0] for p in parts)
        group = np.empty(total, np.int64)
        arm = np.empty(total, np.int64)
        sums = np.empty((total, POWERS, POWERS))
        at = 0
        while parts:
            part = parts.pop(0)
            end = at + part.group.shape[0]
            group[at:end], arm[at:end], sums[at:end] = part.group, part.arm, part.sums
            at = end
        return cls(group, arm, sums, n_groups, n_arms)

    @property
    def n(self) -> int:
        return round(self.sums[:, 0, 0].sum())

    def group_sizes(self) -> np.ndarray:
        """Events per group, (G,)."""
        return np.bincount(self.group, weights=self.sums[:, 0, 0], minlength=self.n_groups)


def fitted_means(nu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The per-arm mean reward model ``q(a) = sigma_a / nu_a`` of DM/DR, (K,); an arm
    never logged (``nu_a = 0``) gets the overall mean ``sigma / nu``."""
    seen = nu > 0
    return np.where(seen, sigma / np.where(seen, nu, 1.0), float(sigma.sum()) / float(nu.sum()))


def _per_arm(cells: CellMoments, weights: np.ndarray) -> np.ndarray:
    return np.bincount(cells.arm, weights=weights, minlength=cells.n_arms) / cells.n


def cell_model(cells: CellMoments) -> np.ndarray:
    """:func:`fitted_means` of the cells' own events, (K,); 0 without events."""
    if cells.n == 0:
        return np.zeros(cells.n_arms)
    return fitted_means(_per_arm(cells, cells.sums[:, 0, 0]), _per_arm(cells, cells.sums[:, 1, 0]))


@dataclass(frozen=True)
class TargetSummary:
    """What the estimators read of a target ``pi_g`` [G, K] on cells, O(cells + K):
    ``pi_cell`` (c,), pi of each cell's group at its arm; ``mass`` (K,), the mean of
    ``pi_i`` over the events (``P`` of DM); ``model_cell`` (c,), each cell's group's
    ``D_g = sum_b pi_g(b) q(b)`` under the cells' own model ``q`` (:func:`cell_model`).
    Built from the whole matrix (:meth:`of`) or a block of groups at a time
    (:class:`TargetAccumulator`), so that no [G, K] matrix need ever exist."""

    pi_cell: np.ndarray
    mass: np.ndarray
    model_cell: np.ndarray

    @classmethod
    def of(cls, cells: CellMoments, target: np.ndarray) -> TargetSummary:
        acc = TargetAccumulator(cells)
        acc.add(np.arange(target.shape[0]), target)
        return acc.finish()


class TargetAccumulator:
    """A :class:`TargetSummary` of cells from the target's rows, given a block of
    groups at a time (each group once; a group never given has pi 0 everywhere)."""

    def __init__(self, cells: CellMoments) -> None:
        self._cells = cells
        self._sizes = cells.group_sizes()
        self._q = cell_model(cells)
        self._order = np.argsort(cells.group, kind="stable")
        self._sorted_groups = cells.group[self._order]
        self._mass = np.zeros(cells.n_arms)
        self._pi_cell = np.zeros(cells.group.shape[0])
        self._model_cell = np.zeros(cells.group.shape[0])

    def add(self, groups: np.ndarray, rows: np.ndarray) -> None:
        """``rows[i]`` is ``pi`` of group ``groups[i]``; ``groups`` increasing."""
        if groups.size == 0:
            return
        self._mass += self._sizes[groups] @ rows
        lo, hi = np.searchsorted(self._sorted_groups, [groups[0], groups[-1] + 1])
        cells = self._order[lo:hi]
        at = np.searchsorted(groups, self._cells.group[cells])
        known = groups[np.minimum(at, groups.size - 1)] == self._cells.group[cells]
        cells, at = cells[known], at[known]
        self._pi_cell[cells] = rows[at, self._cells.arm[cells]]
        self._model_cell[cells] = rows[at] @ self._q

    def finish(self) -> TargetSummary:
        n = self._cells.n
        return TargetSummary(self._pi_cell, self._mass / n if n else self._mass,
                             self._model_cell)


@dataclass(frozen=True)
class Pooled:
    """What the estimators read of cells under one target ``pi``: its summary, and
    the [G, K] matrix itself when it was given whole (a fixed reward model needs it)."""

    cells: CellMoments
    target: np.ndarray | None  # pi_g(a), (G, K), when given whole
    pi_cell: np.ndarray  # pi_g(a) of each cell's own arm, (c,)
    model_cell: np.ndarray  # sum_b pi_g(b) q(b) of each cell's group, q = cell_model, (c,)
    n: int
    nu: np.ndarray  # mean 1[a_i = a], (K,)
    sigma: np.ndarray  # mean r_i 1[a_i = a], (K,)
    P: np.ndarray  # mean pi_i(a), (K,)
    W: np.ndarray  # mean w_i 1[a_i = a], (K,)
    mu_wr: float  # mean w_i r_i
    mu_w: float  # mean w_i

    @classmethod
    def of(cls, cells: CellMoments, target: np.ndarray | TargetSummary) -> Pooled:
        """From the whole target matrix (G, K) or its :class:`TargetSummary`."""
        matrix = None if isinstance(target, TargetSummary) else target
        summary = TargetSummary.of(cells, target) if matrix is not None else target
        s, pi_cell = cells.sums, summary.pi_cell
        n = cells.n
        return cls(
            cells, matrix, pi_cell, summary.model_cell, n,
            nu=_per_arm(cells, s[:, 0, 0]), sigma=_per_arm(cells, s[:, 1, 0]),
            P=summary.mass, W=_per_arm(cells, pi_cell * s[:, 0, 1]),
            mu_wr=float(pi_cell @ s[:, 1, 1]) / n, mu_w=float(pi_cell @ s[:, 0, 1]) / n,
        )

    def ess(self) -> float:
        """``(sum w)^2 / sum w^2`` (Kong 1992); 0 when every weight is 0."""
        sq = float(self.pi_cell**2 @ self.cells.sums[:, 0, 2])
        return (self.mu_w * self.n) ** 2 / sq if sq > 0 else 0.0


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


def usable_propensities(p: np.ndarray) -> np.ndarray:
    """Which propensities can reweight an event: finite and in (0, 1]."""
    return np.isfinite(p) & (p > 0.0) & (p <= 1.0)


def propensity_warnings(p: np.ndarray, config: EstimationConfig) -> list[str]:
    """Warnings about missing or tiny logged propensities ``p`` (n,)."""
    usable = usable_propensities(p)
    tiny = usable & (p < config.min_propensity)
    return propensity_notes(p.shape[0], int(p.shape[0] - usable.sum()), int(tiny.sum()),
                            float(p[tiny].min()) if tiny.any() else math.inf, config)


def propensity_notes(n: int, n_bad: int, n_tiny: int, smallest: float,
                     config: EstimationConfig) -> list[str]:
    """Warnings about ``n_bad`` unusable propensities of ``n`` events and ``n_tiny``
    usable ones below ``config.min_propensity`` (the smallest ``smallest``)."""
    warnings: list[str] = []
    if n_bad:
        warnings.append(
            f"{n_bad} of {n} logged events have no usable propensity "
            "(missing, <= 0 or > 1) and are left out"
        )
    if n_tiny:
        warnings.append(
            f"{n_tiny} logged events have propensity below {config.min_propensity:g} "
            f"(smallest {smallest:.3g}): their importance weights dominate the "
            "IPS/SNIPS/DR estimates"
        )
    return warnings


class Estimator(ABC):
    """Skeleton: a value from the pooled cells, and its influence ``psi`` per cell as
    coefficients of ``(1, r, 1/p, r/p)`` (module docstring); the interval is shared."""

    name: ClassVar[str]

    @abstractmethod
    def linearise(self, pooled: Pooled) -> tuple[float, np.ndarray]:
        """``(g(tbar), c)``: the estimate and its influence coefficients, (c, 4)."""

    def estimate(
        self,
        data: LoggedData,
        action_dist: np.ndarray,
        config: EstimationConfig | None = None,
    ) -> Estimate:
        """This estimator's value of ``action_dist`` on ``data``."""
        return estimate_policy(data, action_dist, [self], config)[self.name]


def _coefficients(pooled: Pooled, c0=0.0, c1=0.0, c2=0.0, c3=0.0) -> np.ndarray:
    out = np.zeros((pooled.pi_cell.shape[0], 4))
    for j, c in enumerate((c0, c1, c2, c3)):
        out[:, j] = c
    return out


class IPS(Estimator):
    r"""Inverse propensity scoring (Horvitz & Thompson 1952, JASA 47(260)).

    .. math:: \hat V_{IPS} = \frac1n \sum_i w_i r_i, \quad w_i = \pi(a_i|x_i) / p_i

    Unbiased when every action ``pi`` can take has ``p > 0``; its variance grows with
    the weights. Influence: ``psi_i = w_i r_i``.
    """

    name = "ips"

    def linearise(self, pooled: Pooled) -> tuple[float, np.ndarray]:
        return pooled.mu_wr, _coefficients(pooled, c3=pooled.pi_cell)


class SNIPS(Estimator):
    r"""Self-normalised IPS (Swaminathan & Joachims 2015, NeurIPS, "The self-normalized
    estimator for counterfactual learning").

    .. math:: \hat V_{SNIPS} = \frac{\sum_i w_i r_i}{\sum_i w_i}

    A weighted mean of observed rewards, so it always lies within [min r, max r];
    slightly biased, usually far less variable than IPS. Undefined (NaN) when every
    weight is 0. Influence of the ratio A/B of means: ``psi_i = (w_i r_i - V w_i) / B``.
    """

    name = "snips"

    def linearise(self, pooled: Pooled) -> tuple[float, np.ndarray]:
        if pooled.mu_w <= 0:
            return math.nan, _coefficients(pooled)
        value = pooled.mu_wr / pooled.mu_w
        pi = pooled.pi_cell / pooled.mu_w
        return value, _coefficients(pooled, c2=-value * pi, c3=pi)


class DirectMethod(Estimator):
    r"""Direct method: average the reward model under the target policy
    (Dudík, Langford & Li 2011, ICML, "Doubly robust policy evaluation and learning").

    .. math:: \hat V_{DM} = \frac1n \sum_i \sum_a \pi(a|x_i)\, \hat q(x_i, a)

    ``reward_model=None`` uses the per-arm mean reward ``q(a) = sigma_a / nu_a`` fitted
    on the log (``sigma_a``, ``nu_a``: means of ``r_i 1[a_i = a]`` and ``1[a_i = a]``;
    an arm never logged gets the overall mean ``sigma / nu``), so
    ``V = sum_a q(a) P_a`` with ``P_a`` the mean of ``pi(a|x_i)``. Its gradient gives
    the influence of an event of arm a in group g:
    ``psi = D_g + r P~_a / nu_a - sigma_a P~_a / nu_a^2 + U (r / nu - sigma / nu^2)``,
    ``D_g = sum_b pi_g(b) q(b)``, ``P~ = P``, ``U = sum of P~`` over arms never logged.
    A fixed model [K] or [G, K] (one row per group) may be passed instead: then
    ``psi = D_g``. No weights: low variance, biased when the model is wrong.
    """

    name = "dm"

    def __init__(self, reward_model: np.ndarray | None = None):
        self.reward_model = reward_model

    def _fixed_model(self, pooled: Pooled) -> np.ndarray:
        assert self.reward_model is not None
        if pooled.target is None:
            raise ValueError("a fixed reward model needs the whole target matrix, not its "
                             "summary")
        g, k = pooled.target.shape
        q = np.asarray(self.reward_model, dtype=np.float64)
        if q.shape not in ((k,), (g, k)):
            raise ValueError(
                f"reward model must have shape ({k},) or ({g}, {k}), got {q.shape}"
            )
        return np.broadcast_to(q, (g, k))

    def _target_mass(self, pooled: Pooled) -> np.ndarray:
        """``P~_a``: what multiplies ``q(a)`` in the estimate."""
        return pooled.P

    def linearise(self, pooled: Pooled) -> tuple[float, np.ndarray]:
        if self.reward_model is not None:
            q = self._fixed_model(pooled)
            d = np.einsum("gk,gk->g", pooled.target, q)
            value = float(pooled.cells.group_sizes() @ d) / pooled.n
            return value, _coefficients(pooled, c0=d[pooled.cells.group])
        q, coef = self._fitted(pooled)
        return float(q @ pooled.P), coef

    def _fitted(self, pooled: Pooled) -> tuple[np.ndarray, np.ndarray]:
        """The per-arm mean model ``q`` (K,) and the influence coefficients of
        ``sum_a q(a) P~_a`` (the class docstring's formula)."""
        nu, sigma = pooled.nu, pooled.sigma
        seen = nu > 0
        total_nu, total_sigma = float(nu.sum()), float(sigma.sum())
        safe_nu = np.where(seen, nu, 1.0)
        q = fitted_means(nu, sigma)  # the model of pooled.model_cell
        mass = self._target_mass(pooled)
        unseen = float(mass[~seen].sum())
        d_sigma = np.where(seen, mass / safe_nu, 0.0) + unseen / total_nu
        d_nu = np.where(seen, -sigma * mass / safe_nu**2, 0.0) - unseen * total_sigma / total_nu**2
        arm = pooled.cells.arm
        c0 = d_nu[arm] + pooled.model_cell
        return q, _coefficients(pooled, c0=c0, c1=d_sigma[arm])


class DoublyRobust(DirectMethod):
    r"""Doubly robust (Dudík, Langford & Li 2011, ICML; Robins & Rotnitzky 1995, JASA).

    .. math:: \hat V_{DR} = \frac1n \sum_i \Big[\sum_a \pi(a|x_i)\,\hat q(x_i, a)
              + w_i \big(r_i - \hat q(x_i, a_i)\big)\Big]

    The direct method plus an importance-weighted correction of the model's error:
    unbiased when the propensities are right *or* the model is. With all ``w_i = 0``
    it is exactly DM; with ``q = 0`` exactly IPS. With the fitted model
    ``V = sum_a q(a) (P_a - W_a) + mean(w r)``, ``W_a`` the mean of ``w_i 1[a_i = a]``;
    its influence is DM's with ``P~ = P - W``, plus ``w_i (r_i - q(a_i))``.
    """

    name = "dr"

    def _target_mass(self, pooled: Pooled) -> np.ndarray:
        return pooled.P - pooled.W

    def linearise(self, pooled: Pooled) -> tuple[float, np.ndarray]:
        pi = pooled.pi_cell
        if self.reward_model is not None:
            dm, coef = super().linearise(pooled)
            q_cell = self._fixed_model(pooled)[pooled.cells.group, pooled.cells.arm]
            correction = pooled.mu_wr - float(q_cell * pi @ pooled.cells.sums[:, 0, 1]) / pooled.n
        else:
            q, coef = self._fitted(pooled)
            dm = float(q @ pooled.P)
            q_cell = q[pooled.cells.arm]
            correction = pooled.mu_wr - float(q @ pooled.W)
        coef[:, 2] = -q_cell * pi
        coef[:, 3] = pi
        return dm + correction, coef


ESTIMATORS: dict[str, type[Estimator]] = {
    "ips": IPS,
    "snips": SNIPS,
    "dm": DirectMethod,
    "dr": DoublyRobust,
}


def default_estimators() -> list[Estimator]:
    """IPS, SNIPS, DM and DR (per-arm mean reward model)."""
    return [IPS(), SNIPS(), DirectMethod(), DoublyRobust()]


_VARIANCE_CHUNK = 1 << 16  # cells expanded at a time (bounds the temporaries)


def _influence_variance(cells: CellMoments, coef: np.ndarray) -> float:
    """``Var(psi)`` over the events, with ``psi = c . (1, r, 1/p, r/p)`` per cell:
    ``sum psi`` and ``sum psi^2`` expanded into the power sums ``S_jk``, a chunk of
    cells at a time."""
    total = square = 0.0
    for start in range(0, coef.shape[0], _VARIANCE_CHUNK):
        s = cells.sums[start:start + _VARIANCE_CHUNK]
        c0, c1, c2, c3 = coef[start:start + _VARIANCE_CHUNK].T
        total += float((c0 * s[:, 0, 0] + c1 * s[:, 1, 0] + c2 * s[:, 0, 1]
                        + c3 * s[:, 1, 1]).sum())
        square += float((
            c0**2 * s[:, 0, 0] + c1**2 * s[:, 2, 0] + c2**2 * s[:, 0, 2] + c3**2 * s[:, 2, 2]
            + 2 * (c0 * c1 * s[:, 1, 0] + c0 * c2 * s[:, 0, 1] + (c0 * c3 + c1 * c2) * s[:, 1, 1]
                   + c1 * c3 * s[:, 2, 1] + c2 * c3 * s[:, 1, 2])
        ).sum())
    n = cells.n
    return max(square / n - (total / n) ** 2, 0.0)


def estimate_cells(
    cells: CellMoments,
    target: np.ndarray | TargetSummary,
    estimators: Sequence[Estimator] | None = None,
    config: EstimationConfig | None = None,
    warnings: Sequence[str] = (),
) -> Mapping[str, Estimate]:
    """Every estimator's value of ``target`` (G, K), or its :class:`TargetSummary`, on
    the pooled ``cells``, with its delta-method interval (module docstring);
    ``warnings`` are passed on."""
    config = config or EstimationConfig()
    estimators = list(estimators) if estimators is not None else default_estimators()
    notes = list(warnings)
    confidence = 1.0 - config.alpha
    if cells.n == 0:
        notes.append("no logged events with a usable propensity: nothing to estimate")
        nan = float("nan")
        return {
            e.name: Estimate(e.name, nan, nan, nan, confidence, 0, 0.0, tuple(notes))
            for e in estimators
        }
    pooled = Pooled.of(cells, target)
    ess = pooled.ess()
    if ess < 0.01 * pooled.n or ess < 10:
        notes.append(
            f"effective sample size {ess:.1f} of {pooled.n} events: the target policy rarely "
            "takes the logged actions, so IPS/SNIPS/DR are unreliable"
        )
    z = float(stats.norm.ppf(1 - config.alpha / 2))
    out: dict[str, Estimate] = {}
    for e in estimators:
        value, coef = e.linearise(pooled)
        own = list(notes)
        if math.isnan(value):
            low = high = math.nan
            own.append(f"{e.name}: undefined on this log (all importance weights are 0)")
        else:
            half = z * math.sqrt(_influence_variance(cells, coef) / pooled.n)
            low, high = value - half, value + half
        out[e.name] = Estimate(e.name, value, low, high, confidence, pooled.n, ess, tuple(own))
    return out


def estimate_policy(
    data: LoggedData,
    action_dist: np.ndarray,
    estimators: Sequence[Estimator] | None = None,
    config: EstimationConfig | None = None,
) -> Mapping[str, Estimate]:
    """Every estimator's value of ``action_dist`` ([K] or per event [n, K]) on
    ``data``: each usable event is its own group."""
    config = config or EstimationConfig()
    pi = as_action_dist(action_dist, len(data), data.n_arms)
    usable = usable_propensities(data.propensities)
    n_used = int(usable.sum())
    cells = CellMoments.from_events(
        np.arange(n_used), data.actions[usable], data.rewards[usable],
        data.propensities[usable], n_used, data.n_arms,
    )
    return estimate_cells(cells, np.ascontiguousarray(pi[usable]), estimators, config,
                          propensity_warnings(data.propensities, config))
