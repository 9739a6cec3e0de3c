"""A bandit problem built from MovieLens ratings, and a uniformly logged event stream.

Construction
------------
*Arms* are the ``N`` most-rated movies (``arm_kind="movie"``; ties broken by the
smaller movie id) or the ``N`` most-rated genres (``"genre"``; a rating of a movie
counts once for each of the movie's genres). *The reward* of a rating is
``1[rating >= threshold]`` (default 4 stars: "the user liked it").

Arm ``a`` thereby owns a pool of ``n_a`` real rating events, ``k_a`` of them
positive, and its true mean reward is ``mu_a = k_a / n_a``. The policies under test
are not contextual (they see only arms and rewards, like the server's kernels), so
each pool is all a policy can ever observe of its arm: the problem is the
stochastic bandit whose arm ``a`` pays out a uniformly random rating of ``a``.

*The logged stream* is what a uniformly random logging policy would have
recorded: for ``t = 1, 2, ...`` the logged arm ``A_t`` is drawn uniformly from the
``N`` arms, independently of everything else, and the logged reward ``R_t`` is a
rating of ``A_t`` drawn at random from its pool:

- ``sampling="without_replacement"`` (default): each rating event is used at most
  once, as in a real log (the ``j``-th time arm ``a`` is logged it gets the ``j``-th
  rating of a random permutation of ``a``'s pool). The stream ends just before an
  arm would be logged more often than it has ratings (or at ``length``), so it
  holds about ``N * min_a n_a`` events.
- ``sampling="bootstrap"``: rewards drawn with replacement, ``R_t ~
  Bernoulli(mu_{A_t})`` independently, for a stream of any ``length``.

Why uniform logging makes replay unbiased (Li, Chu, Langford & Wang, "Unbiased
offline evaluation of contextual-bandit-based news article recommendation
algorithms", WSDM 2011, Theorem 1): when the logged events ``(A_t, R_t)`` are
i.i.d. with ``A_t`` uniform and independent of the reward, then at every event the
policy's choice ``a`` (made from the history of kept events only) matches ``A_t``
with probability ``1/N`` whatever ``a`` is, and *given a match* ``R_t`` is a fresh
draw from arm ``a``'s reward distribution, exactly what the policy would observe
online. So the sequence of kept (arm, reward) events has the same distribution as
the first ``L`` steps of the policy run live, and the mean reward over the kept
events estimates the policy's per-step reward over ``L ~ T/N`` steps without bias.
A non-uniform logger would break the "given a match" step: arms the logger
favoured would be over-represented, and replay could not tell the policy apart
from the logger. The bootstrap stream satisfies the theorem's i.i.d. assumption
exactly; the without-replacement stream is the finite-population version
(exchangeable rather than independent rewards, a difference of order ``1/n_a``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from banditd.admin_cli.offline.movielens import RATING_MAX, RATING_MIN, MovieLensData

ArmKind = Literal["movie", "genre"]
Sampling = Literal["without_replacement", "bootstrap"]
ARM_KINDS: tuple[ArmKind, ...] = ("movie", "genre")
SAMPLINGS: tuple[Sampling, ...] = ("without_replacement", "bootstrap")

_CHUNK = 1 << 16  # logged arms drawn per step while looking for the first exhausted pool


@dataclass(frozen=True)
class ArmCounts:
    """Every candidate arm with its rating counts, shapes ``(m,)``; from files or SQL."""

    kind: ArmKind
    ids: tuple[str, ...]
    labels: tuple[str, ...]
    n_ratings: np.ndarray  # int64: ratings of the arm
    n_positive: np.ndarray  # int64: ratings >= threshold
    threshold: float

    def __post_init__(self) -> None:
        m = len(self.ids)
        if len(self.labels) != m or self.n_ratings.shape != (m,) or self.n_positive.shape != (m,):
            raise ValueError("ids, labels, n_ratings and n_positive must have the same length")
        if np.any(self.n_positive < 0) or np.any(self.n_positive > self.n_ratings):
            raise ValueError("need 0 <= n_positive <= n_ratings for every arm")


@dataclass(frozen=True)
class ProblemConfig:
    """How to turn ratings into a bandit problem."""

    n_arms: int = 20
    arm_kind: ArmKind = "movie"
    reward_threshold: float = 4.0

    def __post_init__(self) -> None:
        if self.n_arms < 2:
            raise ValueError(f"a bandit problem needs at least 2 arms, got {self.n_arms}")
        if self.arm_kind not in ARM_KINDS:
            raise ValueError(f"arm_kind must be one of {ARM_KINDS}, got {self.arm_kind!r}")
        if not RATING_MIN < self.reward_threshold <= RATING_MAX:
            raise ValueError(
                f"reward threshold must be in ({RATING_MIN}, {RATING_MAX}] so that both rewards "
                f"can occur, got {self.reward_threshold}"
            )


@dataclass(frozen=True)
class StreamConfig:
    """How the uniformly logged stream is drawn (see the module docstring)."""

    sampling: Sampling = "without_replacement"
    length: int | None = None  # cap (without replacement) or exact length (bootstrap)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.length is not None and self.length < 1:
            raise ValueError(f"stream length must be >= 1, got {self.length}")


@dataclass(frozen=True)
class BanditProblem:
    """``K`` arms with their rating pools; ``true_means[a] = n_positive[a] / n_ratings[a]``."""

    kind: ArmKind
    arm_ids: tuple[str, ...]
    arm_labels: tuple[str, ...]
    n_ratings: np.ndarray  # int64 (K,), all >= 1
    n_positive: np.ndarray  # int64 (K,)
    threshold: float

    @property
    def n_arms(self) -> int:
        return len(self.arm_ids)

    @property
    def true_means(self) -> np.ndarray:
        return self.n_positive / self.n_ratings

    @property
    def best_arm(self) -> int:
        return int(np.argmax(self.true_means))

    @property
    def best_value(self) -> float:
        """The reward rate of always playing the best arm (the oracle)."""
        return float(self.true_means.max())

    @property
    def uniform_value(self) -> float:
        """The reward rate of playing arms uniformly at random (the logging policy)."""
        return float(self.true_means.mean())

    def natural_stream_length(self) -> int:
        """About how many events a without-replacement stream holds: ``K * min_a n_a``."""
        return int(self.n_arms * self.n_ratings.min())

    def to_json(self) -> dict[str, Any]:
        return {
            "arm_kind": self.kind,
            "reward_threshold": self.threshold,
            "best_value": self.best_value,
            "uniform_value": self.uniform_value,
            "arms": [
                {"id": i, "label": label, "ratings": int(n), "positive": int(k), "mean": float(mu)}
                for i, label, n, k, mu in zip(
                    self.arm_ids,
                    self.arm_labels,
                    self.n_ratings,
                    self.n_positive,
                    self.true_means,
                    strict=True,
                )
            ],
        }


@dataclass(frozen=True)
class LoggedStream:
    """Uniformly logged events, shapes ``(T,)``: arm index and reward in {0, 1}."""

    arms: np.ndarray  # int64 in [0, K)
    rewards: np.ndarray  # float64 in {0.0, 1.0}
    n_arms: int

    @property
    def propensities(self) -> np.ndarray:
        """The logging policy's probability of each logged arm: ``1/K`` everywhere."""
        return np.full(self.arms.shape[0], 1.0 / self.n_arms)

    def __len__(self) -> int:
        return int(self.arms.shape[0])


def arm_counts_from_data(data: MovieLensData, kind: ArmKind, threshold: float) -> ArmCounts:
    """Per candidate arm: ratings and positive ratings, computed from files in memory."""
    r = data.ratings
    positive = r.rating >= threshold
    movie_ids, inverse = np.unique(r.movie_id, return_inverse=True)
    n = np.bincount(inverse, minlength=movie_ids.size).astype(np.int64)
    k = np.bincount(inverse, weights=positive, minlength=movie_ids.size).astype(np.int64)
    movies = {m.movie_id: m for m in data.movies or ()}
    if kind == "movie":
        labels = []
        for mid in movie_ids.tolist():
            movie = movies.get(mid)
            if movie is None:
                labels.append(f"movie {mid}")
            else:
                labels.append(movie.title + (f" ({movie.year})" if movie.year else ""))
        return ArmCounts(kind, tuple(str(m) for m in movie_ids.tolist()), tuple(labels), n, k,
                         threshold)
    if data.movies is None:
        raise ValueError(
            f"{data.source.ratings} has no movie file beside it, so there are no genres; "
            "use movie arms"
        )
    genre_n: Counter[str] = Counter()
    genre_k: Counter[str] = Counter()
    for mid, count, pos in zip(movie_ids.tolist(), n.tolist(), k.tolist(), strict=True):
        for genre in movies[mid].genres:
            genre_n[genre] += count
            genre_k[genre] += pos
    genres = tuple(sorted(genre_n))
    return ArmCounts(
        kind,
        genres,
        genres,
        np.array([genre_n[g] for g in genres], dtype=np.int64),
        np.array([genre_k[g] for g in genres], dtype=np.int64),
        threshold,
    )


def build_problem(counts: ArmCounts, config: ProblemConfig) -> BanditProblem:
    """The ``config.n_arms`` most-rated arms of ``counts`` (ties: smaller id first)."""
    if counts.kind != config.arm_kind or counts.threshold != config.reward_threshold:
        raise ValueError("counts were computed for a different arm kind or threshold")
    available = np.flatnonzero(counts.n_ratings > 0)
    if available.size < config.n_arms:
        raise ValueError(
            f"asked for {config.n_arms} {config.arm_kind} arms but the data has only "
            f"{available.size} rated {config.arm_kind}s"
        )

    def tie_key(i: int) -> tuple[int, int | str]:
        arm_id = counts.ids[i]
        return (0, int(arm_id)) if arm_id.isdigit() else (1, arm_id)

    order = sorted(available.tolist(), key=lambda i: (-int(counts.n_ratings[i]), tie_key(i)))
    chosen = order[: config.n_arms]
    return BanditProblem(
        kind=config.arm_kind,
        arm_ids=tuple(counts.ids[i] for i in chosen),
        arm_labels=tuple(counts.labels[i] for i in chosen),
        n_ratings=counts.n_ratings[chosen].copy(),
        n_positive=counts.n_positive[chosen].copy(),
        threshold=config.reward_threshold,
    )


def problem_from_data(data: MovieLensData, config: ProblemConfig) -> BanditProblem:
    """:func:`build_problem` over ratings read from files."""
    counts = arm_counts_from_data(data, config.arm_kind, config.reward_threshold)
    return build_problem(counts, config)


def logged_stream(
    problem: BanditProblem, rng: np.random.Generator, config: StreamConfig | None = None
) -> LoggedStream:
    """Draw a uniformly logged stream for ``problem`` (construction in the module docstring)."""
    config = config or StreamConfig()
    k = problem.n_arms
    if config.sampling == "bootstrap":
        length = config.length or problem.natural_stream_length()
        arms = rng.integers(0, k, size=length)
        rewards = (rng.random(length) < problem.true_means[arms]).astype(np.float64)
        return LoggedStream(arms.astype(np.int64), rewards, k)
    arms = _uniform_arms_until_a_pool_runs_out(problem.n_ratings, rng, config.length)
    rewards = np.empty(arms.shape[0], dtype=np.float64)
    for a in range(k):
        where = np.flatnonzero(arms == a)
        # Distinct ratings of arm a, in random order; the first n_positive[a] are the positives.
        picks = rng.choice(int(problem.n_ratings[a]), size=where.size, replace=False)
        rewards[where] = picks < problem.n_positive[a]
    return LoggedStream(arms, rewards, k)


def _uniform_arms_until_a_pool_runs_out(
    pool_sizes: np.ndarray, rng: np.random.Generator, cap: int | None
) -> np.ndarray:
    """Uniform i.i.d. arms, stopping before any arm is drawn more often than its pool holds."""
    k = pool_sizes.shape[0]
    used = np.zeros(k, dtype=np.int64)
    chunks: list[np.ndarray] = []
    total = 0
    while cap is None or total < cap:
        size = _CHUNK if cap is None else min(_CHUNK, cap - total)
        chunk = rng.integers(0, k, size=size)
        stop = size
        for a in range(k):
            where = np.flatnonzero(chunk == a)
            room = int(pool_sizes[a] - used[a])
            if where.size > room:
                stop = min(stop, int(where[room]))  # arm a's (room+1)-th draw: out of ratings
        chunk = chunk[:stop]
        used += np.bincount(chunk, minlength=k)
        chunks.append(chunk)
        total += chunk.size
        if stop < size:
            break
    return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, dtype=np.int64)
