"""``banditctl demo``: simulated MovieLens users against a running banditd.

The demo drives a running experiment — by default ``demo``, the one
``banditd serve --create-demo`` (``make serve``) starts — or creates one, with
Thompson sampling, ε-greedy, UCB1 and a uniform control splitting the users. The
experiment's i-th arm stands for the i-th most-rated movie of a MovieLens dataset.
Simulated users are real MovieLens users: each step picks a user at random,
offers as candidates the arms that user rated (``candidate_arms``), and rewards
the chosen movie with 1 when the user's real rating is at least ``threshold``
(default 4), else 0. A live terminal view shows
decisions/s, each policy's reward rate and the arm shares; at the end the demo
prints a summary and writes a PNG of cumulative reward per policy.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from banditd.v1 import decision_pb2 as pb
from banditd.v1 import decision_pb2_grpc

POLICIES = ("thompson", "egreedy", "ucb", "control")


@dataclass(frozen=True, slots=True)
class DemoUsers:
    """Users with the arms they rated and whether they liked each.

    Attributes:
        arms: the experiment's arms; arm i stands for the i-th most-rated movie.
        titles: the movie behind each arm.
        users: user ids (``ml-<MovieLens user id>``) who rated at least two arms.
        rated: the arms each user rated (their candidates).
        liked: 1.0 when the user's rating of the arm's movie reaches the threshold.
    """

    arms: tuple[str, ...]
    titles: dict[str, str]
    users: tuple[str, ...]
    rated: dict[str, tuple[str, ...]]
    liked: dict[tuple[str, str], float]


def top_movie_arms(data, n_arms: int) -> tuple[str, ...]:
    """Arm names for a new demo experiment: ``<movie id>:<title>`` of the ``n_arms``
    most-rated movies, most-rated first."""
    titles = _titles(data)
    return tuple(f"{m}:{titles.get(m, 'movie')}"[:64] for m in _most_rated(data, n_arms))


def _titles(data) -> dict[int, str]:
    return {m.movie_id: m.title for m in data.movies or ()}


def _most_rated(data, n: int) -> list[int]:
    movie_ids, counts = np.unique(data.ratings.movie_id, return_counts=True)
    return [int(m) for m in movie_ids[np.argsort(-counts, kind="stable")[:n]]]


def build_users(data, arms: tuple[str, ...], threshold: float, min_rated: int = 2) -> DemoUsers:
    """Arm i = the i-th most-rated movie, whatever the arm is called (so the demo drives
    the ``demo`` experiment of ``banditd serve --create-demo`` as well as one it made);
    users = those who rated at least ``min_rated`` of these movies."""
    ratings = data.ratings
    top = _most_rated(data, len(arms))
    if len(top) < len(arms):
        raise ValueError(f"the data has {len(top)} movies, the experiment {len(arms)} arms")
    arm_of = dict(zip(top, arms, strict=True))
    movie_titles = _titles(data)
    mask = np.isin(ratings.movie_id, top)
    rated: dict[str, list[str]] = defaultdict(list)
    liked: dict[tuple[str, str], float] = {}
    for user, movie, rating in zip(ratings.user_id[mask], ratings.movie_id[mask],
                                   ratings.rating[mask], strict=True):
        user_key, arm = f"ml-{int(user)}", arm_of[int(movie)]
        rated[user_key].append(arm)
        liked[(user_key, arm)] = 1.0 if rating >= threshold else 0.0
    users = tuple(sorted(u for u, rated_arms in rated.items() if len(rated_arms) >= min_rated))
    return DemoUsers(
        arms=tuple(arms),
        titles={arm: movie_titles.get(m, f"movie {m}") for m, arm in arm_of.items()},
        users=users,
        rated={u: tuple(rated[u]) for u in users},
        liked=liked,
    )


async def wait_until_serving(address: str, timeout: float) -> bool:
    """True once ``address`` answers SERVING on ``grpc.health.v1``, False after ``timeout``."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.aio.AioRpcError:
                pass  # not up yet, or still loading
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.5)


@dataclass
class DemoStats:
    """What the live view and the summary show."""

    started: float = field(default_factory=time.monotonic)
    decisions: int = 0
    errors: int = 0
    by_policy: Counter = field(default_factory=Counter)
    reward_by_policy: Counter = field(default_factory=Counter)
    arm_counts: Counter = field(default_factory=Counter)
    # (elapsed seconds, policy, cumulative reward of that policy) for the plot.
    curve: list[tuple[float, str, float]] = field(default_factory=list)

    def record(self, policy: str, arm: str, reward: float) -> None:
        self.decisions += 1
        self.by_policy[policy] += 1
        self.reward_by_policy[policy] += reward
        self.arm_counts[arm] += 1
        self.curve.append((time.monotonic() - self.started, policy,
                           self.reward_by_policy[policy]))

    def rate(self, policy: str) -> float | None:
        n = self.by_policy[policy]
        return self.reward_by_policy[policy] / n if n else None

    def summary(self) -> dict:
        elapsed = time.monotonic() - self.started
        return {
            "seconds": elapsed,
            "decisions": self.decisions,
            "decisions_per_s": self.decisions / elapsed if elapsed else 0.0,
            "errors": self.errors,
            "policies": {
                p: {"decisions": self.by_policy[p], "reward_rate": self.rate(p),
                    "cumulative_reward": self.reward_by_policy[p]}
                for p in POLICIES
            },
            "arm_shares": {arm: n / self.decisions for arm, n in self.arm_counts.most_common()}
            if self.decisions else {},
        }


async def drive(address: str, experiment_id: str, users: DemoUsers, seconds: float,
                concurrency: int, stats: DemoStats, seed: int | None = None) -> None:
    """Run ``concurrency`` simulated-user loops against the server for ``seconds``."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)

        async def user_loop() -> None:
            while time.monotonic() < deadline:
                user = rng.choice(users.users)
                try:
                    decision = await stub.Select(pb.SelectRequest(
                        experiment_id=experiment_id, user_id=user,
                        candidate_arms=users.rated[user], context={"source": "demo"},
                    ), timeout=5)
                    reward = users.liked[(user, decision.arm)]
                    await stub.Reward(pb.RewardRequest(decision_id=decision.decision_id,
                                                       value=reward), timeout=5)
                except grpc.aio.AioRpcError:
                    stats.errors += 1
                    await asyncio.sleep(0.05)
                    continue
                stats.record(decision.policy, decision.arm, reward)

        await asyncio.gather(*(user_loop() for _ in range(concurrency)))


def render(stats: DemoStats, experiment_id: str, seconds: float, titles: dict[str, str]):
    """The live view: throughput, reward rate per policy, top arm shares (with the movie
    behind each arm)."""
    from rich.console import Group
    from rich.table import Table

    elapsed = time.monotonic() - stats.started
    head = Table.grid()
    head.add_row(f"[bold]banditd demo[/bold] — experiment {experiment_id} — "
                 f"{elapsed:4.0f}/{seconds:.0f}s — {stats.decisions} decisions "
                 f"({stats.decisions / elapsed if elapsed else 0:.0f}/s), {stats.errors} errors")
    policies = Table(title="reward rate by policy", header_style="bold")
    for column in ("policy", "decisions", "reward rate", "cumulative reward"):
        policies.add_column(column)
    for policy in POLICIES:
        rate = stats.rate(policy)
        policies.add_row(policy, str(stats.by_policy[policy]),
                         "-" if rate is None else f"{rate:.3f}",
                         f"{stats.reward_by_policy[policy]:.0f}")
    arms = Table(title="arm shares (top 10)", header_style="bold")
    arms.add_column("arm")
    arms.add_column("movie")
    arms.add_column("share")
    for arm, n in stats.arm_counts.most_common(10):
        arms.add_row(arm, titles.get(arm, ""), f"{n / stats.decisions:.1%}")
    return Group(head, policies, arms)


def plot(stats: DemoStats, path: Path) -> Path:
    """PNG: cumulative reward per policy against time, and each policy's running reward
    rate against its own decisions (policies get different numbers of users)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cumulative, rate) = plt.subplots(1, 2, figsize=(12, 5))
    for policy in POLICIES:
        points = [(t, r) for t, p, r in stats.curve if p == policy]
        if not points:
            continue
        cumulative.plot([t for t, _ in points], [r for _, r in points], label=policy)
        n = np.arange(1, len(points) + 1)
        rate.plot(n, np.array([r for _, r in points]) / n, label=policy)
    cumulative.set(xlabel="seconds", ylabel="cumulative reward (liked recommendations)",
                   title="cumulative reward per policy")
    rate.set(xlabel="decisions of the policy", ylabel="reward rate so far",
             title="running reward rate per policy")
    rate.set_ylim(0, 1)
    for ax in (cumulative, rate):
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
