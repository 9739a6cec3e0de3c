"""Durable, exactly-once rewards with group commit.

``submit`` queues a reward and waits for its outcome. Committer tasks (one
connection each, held across commits) take *everything* queued at that moment and
commit it in one transaction — natural group commit: under load a batch grows to
whatever arrived during the previous commit, so one fsync is shared by many calls,
and at low load a reward waits for exactly one commit. Each transaction is one
statement (one round trip; PostgreSQL runs a statement with its data-modifying
CTEs atomically), whose one parameter is the whole group as a JSON array of rows
(``json.dumps`` in C, then one value to encode: asyncpg's encoding of eleven arrays
cost ~15 us per reward, most of a commit's CPU). The parameter is ``jsonb``, parsed
once per group; as ``json`` every ``->>`` parsed its row's text again, eleven times
a row, which cost PostgreSQL 51-57 us of CPU per reward against 30-44 us now
(backend CPU over 800 groups of 26). The statement

1. inserts the reward rows with ``ON CONFLICT (experiment_key, decided_at, decision_id)
   DO NOTHING RETURNING decision_id`` — the unique key (the id determines the other
   two columns) makes a retry, or the same reward sent to another replica, a no-op
   that is detected at commit;
2. adds the rewards of step 1 that were applied and belong to learning decisions
   (served by a policy under test) into ``arm_stats``, in a fixed key order so
   concurrent committers never deadlock;
3. commits, answering with the ``arm_stats`` rows it wrote. Memory adopts those rows
   (``banditd.server.arm_cells``: the absolute committed values, never a delta added
   twice), then the futures are resolved, so memory never holds a reward the
   database does not; with Redis the same rows go to every other server
   (``publish``).

The statement answers with the ids that were *not* applied (NULL when all were, the
common case: one value to decode per group). Only when some were duplicates does a
second, read-only statement look up whether the committed reward was a default one
(the window had closed).

One committer by default: a commit costs the event loop a few hundred us of CPU
whatever its size, and two committers split the same arrivals into groups less than
half as large, and acknowledge fewer rewards a second (benchmarks/RESULTS.md). For the
same reason a committer under load waits up to
``commit_delay`` for its group to fill while rewards keep arriving (see
``_commit_loop``).

If anything fails the transaction rolls back, every caller in the batch gets
``RewardStoreUnavailable`` (the RPC answers UNAVAILABLE) and nothing was counted:
the client retries and loses nothing.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from banditd.server.arm_cells import adopt_cells
from banditd.server.metrics import METRICS
from banditd.server.registry import LEARNING_SERVED_BY, POLICY_BY_CODE, SERVED_BY_NAMES, Registry

app_log = logging.getLogger("banditd.app")
api_log = logging.getLogger("banditd.api")

# One "Policy ... updated" line per (experiment, policy) at most this often.
_POLICY_LOG_INTERVAL_S = 10.0


class RewardOutcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    # A default reward was applied when the wait window closed; the late one is refused.
    WINDOW_CLOSED = "window_closed"


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unix_microseconds(moment: datetime) -> int:
    """An aware datetime as whole Unix microseconds (exact, unlike ``timestamp()``)."""
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1)


class RewardStoreUnavailable(RuntimeError):
    """The reward could not be committed; nothing was acknowledged or counted."""


@dataclass(slots=True)
class PendingReward:
    decision_id: str
    experiment_key: int
    policy_code: int
    served_by: int
    arm: str
    value: float
    normalised: float
    source: str  # 'client' or 'default'
    decided_at_us: int  # Unix microseconds
    event_time_us: int | None
    future: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RewardCommitter:
    """Group-commits rewards and applies them to the in-memory statistics."""

    def __init__(
        self,
        pool,
        registry: Registry,
        *,
        committers: int = 1,
        commit_delay: float = 0.010,
        commit_gap: float = 0.001,
        commit_siblings: int = 5,
        full_group: int = 64,
        publish: Callable[[str, float], None] | None = None,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._queue: list[PendingReward] = []
        self._ready = asyncio.Event()
        self._committers = committers
        self._publish = publish
        self._last_policy_log: dict[tuple[int, str], float] = {}
        self._reward_children: dict[tuple[RewardOutcome, str], object] = {}
        self._last_batch = 0
        self.commit_delay = commit_delay  # seconds a group may wait to fill under load,
        self.commit_gap = commit_gap      # ... while rewards arrive at least this often,
        self.commit_siblings = commit_siblings  # ... when the last group held this many,
        self.full_group = full_group      # ... until it holds this many

    async def submit(self, reward: PendingReward) -> RewardOutcome:
        self._queue.append(reward)
        self._ready.set()
        return await reward.future

    async def run(self) -> None:
        """Run the committer tasks until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self._committers):
                group.create_task(self._commit_loop())

    async def drain(self, timeout: float) -> None:
        """Wait until every queued reward has an outcome (for shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def _commit_loop(self) -> None:
        conn = None
        try:
            while True:
                while not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                # One more loop iteration: calls whose bytes already arrived get queued
                # too, so a busy loop commits fewer, larger groups.
                await asyncio.sleep(0)
                # Under load (the last group held ``commit_siblings`` rewards or more),
                # let the group fill while rewards keep arriving: every ``commit_gap``
                # seconds, for at most ``commit_delay`` (PostgreSQL's commit_delay and
                # commit_siblings, plus an early end when arrivals stop). A commit costs
                # this loop a few hundred us of CPU whatever its size, CPU the gRPC side
                # needs. At 64 concurrent callers (acks as a share of the empty-RPC
                # floor's rate, 3 pairs each): a fixed 1 ms wait gave groups of 8 and
                # 0.65; up to 8 ms, groups of 22 and 0.68-0.80; 10 ms, 27 and 0.80-0.81;
                # 15 ms, 0.81-0.85 but groups that swing between 1-4 and 64. A few
                # callers never wait; a few more wait one gap.
                if self._last_batch >= self.commit_siblings:
                    deadline = time.monotonic() + self.commit_delay
                    queued = len(self._queue)
                    while queued < self.full_group and time.monotonic() < deadline:
                        await asyncio.sleep(self.commit_gap)
                        if len(self._queue) == queued:
                            break
                        queued = len(self._queue)
                if not self._queue:
                    continue
                batch, self._queue = self._queue, []
                self._last_batch = len(batch)
                try:
                    if conn is None:
                        conn = await self._pool.acquire()
                    if not await self._commit(conn, batch):
                        await self._release(conn)
                        conn = None
                except asyncio.CancelledError:
                    _fail(batch, RewardStoreUnavailable("server is shutting down; retry"))
                    raise
                except Exception as exc:  # no connection: like a failed commit
                    api_log.error("ERROR reward commit failed for %d rewards: %s",
                                  len(batch), exc)
                    _fail(batch, RewardStoreUnavailable(f"reward store unavailable ({exc}); "
                                                        "retry"))
                    if conn is not None:
                        await self._release(conn)
                        conn = None
        finally:
            if conn is not None:
                await asyncio.shield(self._release(conn))

    async def _release(self, conn) -> None:
        """Give a connection back (a broken one is closed by the pool); never raises."""
        try:
            await self._pool.release(conn)
        except Exception as exc:
            api_log.error("ERROR releasing a reward-commit connection: %s", exc)

    async def _commit(self, conn, batch: list[PendingReward]) -> bool:
        """Commit ``batch`` and resolve its futures; False when the commit failed."""
        firsts, repeats = _split_repeats(batch)
        firsts.sort(key=_DECISION_ID)  # one insertion order for every replica's committers
        started = time.perf_counter()
        try:
            not_applied, cells_json, committed_at = await conn.fetchrow(
                _COMMIT_SQL, _rows(firsts))
            existing = await _committed_sources(conn, firsts, not_applied) if not_applied else {}
        except Exception as exc:
            api_log.error("ERROR reward commit failed for %d rewards: %s", len(batch), exc)
            _fail(batch, RewardStoreUnavailable(f"reward store unavailable ({exc}); retry"))
            return False
        METRICS.commit_seconds.observe(time.perf_counter() - started)
        METRICS.commit_batch.observe(len(batch))
        if cells_json is not None:
            cells = json.loads(cells_json)
            adopt_cells(self._registry, cells)
        if not_applied or repeats:
            self._resolve_mixed(firsts, repeats, set(not_applied or ()), existing)
        else:  # the common case: every reward was new and is applied
            for reward in firsts:
                if not reward.future.done():
                    reward.future.set_result(RewardOutcome.APPLIED)
            for source, n in Counter(reward.source for reward in firsts).items():
                self._count(RewardOutcome.APPLIED, source, n)
        if cells_json is not None:
            self._log_policies(cells)
            if self._publish is not None:
                self._publish(cells_json, committed_at)
        return True

    def _resolve_mixed(self, firsts: list[PendingReward], repeats: list[PendingReward],
                       not_applied: set[str], existing: dict[str, str]) -> None:
        """Outcomes when some rewards were not applied: a decision rewarded before is a
        DUPLICATE, or WINDOW_CLOSED for a client's reward after the default one; a
        repeat of a decision within the group is a DUPLICATE of its first."""
        outcome_of: dict[str, RewardOutcome] = {}
        for reward in firsts:
            if reward.decision_id not in not_applied:
                outcome = RewardOutcome.APPLIED
            elif existing.get(reward.decision_id) == "default" and reward.source == "client":
                outcome = RewardOutcome.WINDOW_CLOSED
            else:
                outcome = RewardOutcome.DUPLICATE
            outcome_of[reward.decision_id] = outcome
        outcomes: Counter[tuple[RewardOutcome, str]] = Counter()
        for reward in firsts:
            outcomes[(outcome_of[reward.decision_id], reward.source)] += 1
            if not reward.future.done():
                reward.future.set_result(outcome_of[reward.decision_id])
        for reward in repeats:
            outcome = outcome_of[reward.decision_id]
            if outcome is RewardOutcome.APPLIED:
                outcome = RewardOutcome.DUPLICATE
            outcomes[(outcome, reward.source)] += 1
            if not reward.future.done():
                reward.future.set_result(outcome)
        for (outcome, source), n in outcomes.items():
            self._count(outcome, source, n)

    def _count(self, outcome: RewardOutcome, source: str, n: int) -> None:
        """Add ``n`` rewards to ``banditd_rewards_total``: one locked ``inc`` per
        (status, source) and group, not per reward."""
        child = self._reward_children.get((outcome, source))
        if child is None:
            child = METRICS.rewards.labels(outcome.value, source)
            self._reward_children[(outcome, source)] = child
        child.inc(n)

    def _log_policies(self, cells: list) -> None:
        """One "Policy ... updated" line per (experiment, policy) and interval, with the
        committed statistics of the first arm of the group."""
        now = time.monotonic()
        for key, policy, arm, pulls, reward_sum, _sq in cells:
            last = self._last_policy_log.get((key, policy), -_POLICY_LOG_INTERVAL_S)
            if now - last < _POLICY_LOG_INTERVAL_S:
                continue
            self._last_policy_log[(key, policy)] = now
            runtime = self._registry.by_key(key)
            app_log.info(
                "Policy %s updated experiment=%s arm=%s pulls=%.0f mean=%.4f",
                policy, runtime.experiment.id if runtime else key, arm, pulls,
                reward_sum / pulls if pulls else 0.0,
            )


_DECISION_ID = attrgetter("decision_id")


def _split_repeats(batch: list[PendingReward]) -> tuple[list[PendingReward], list[PendingReward]]:
    """``(firsts, repeats)``: the first reward of each decision in the group, and any
    later ones (the same decision rewarded twice before a commit: rare)."""
    if len({reward.decision_id for reward in batch}) == len(batch):
        return list(batch), []
    seen: dict[str, PendingReward] = {}
    repeats = []
    for reward in batch:
        if reward.decision_id in seen:
            repeats.append(reward)
        else:
            seen[reward.decision_id] = reward
    return list(seen.values()), repeats


def _fail(batch: list[PendingReward], exc: Exception) -> None:
    for reward in batch:
        if not reward.future.done():
            reward.future.set_exception(exc)


async def _committed_sources(
    conn, firsts: list[PendingReward], not_applied: list[str]
) -> dict[str, str]:
    """``{decision_id: source}`` of the committed rewards that ``not_applied`` met, read
    by their key (a fresh snapshot: the conflicting row may have committed after the
    commit statement's began)."""
    conflicting = set(not_applied)
    keys = [r for r in firsts if r.decision_id in conflicting]
    return dict(await conn.fetch(
        """SELECT r.decision_id, r.source
           FROM unnest($1::int[], $2::float8[], $3::text[]) AS k(experiment_key, us, id)
           JOIN rewards r ON r.experiment_key = k.experiment_key
                         AND r.decided_at = to_timestamp(k.us / 1e6)
                         AND r.decision_id = k.id""",
        [r.experiment_key for r in keys], [float(r.decided_at_us) for r in keys],
        [r.decision_id for r in keys],
    ))


def _rows(rewards: list[PendingReward]) -> list[tuple]:
    """The group as _COMMIT_SQL's JSON rows (positions as in its ``input``)."""
    return [
        (r.decision_id, r.experiment_key, POLICY_BY_CODE[r.policy_code], r.arm,
         SERVED_BY_NAMES[r.served_by], r.value, r.source, r.decided_at_us, r.event_time_us,
         r.normalised, r.served_by in LEARNING_SERVED_BY)
        for r in rewards
    ]


# One statement, one transaction: the reward rows, then the applied learning rewards
# (normalised to [0, 1]) added to ``arm_stats`` in key order (one lock order for every
# committer: no deadlocks). PostgreSQL runs every data-modifying CTE to completion,
# whether or not the outer query reads it. Returns the ids that were not applied
# (duplicates), NULL when every one was; the arm_stats rows as the transaction left
# them, as JSON text (the cells memory adopts, and the payload Redis carries to the
# other servers without a re-encoding; float8 is written shortest-exact, so it reads
# back exactly); and the transaction's time. $1 is a JSON array of rows (``_rows``) as
# jsonb; times are Unix microseconds (exact in a double until the year 2255); floats
# are written by ``repr``, kept as exact decimals (jsonb's numeric) and read back
# exactly.
_COMMIT_SQL = """
WITH input AS (
    SELECT r->>0 AS decision_id, (r->>1)::int AS experiment_key, r->>2 AS policy,
           r->>3 AS arm, r->>4 AS served_by, (r->>5)::float8 AS value, r->>6 AS source,
           to_timestamp((r->>7)::float8 / 1e6) AS decided_at,
           to_timestamp((r->>8)::float8 / 1e6) AS event_time,
           (r->>9)::float8 AS normalised, (r->>10)::bool AS learning
    FROM jsonb_array_elements($1::jsonb) AS r
),
applied AS (
    INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value, source,
                         decided_at, event_time)
    SELECT decision_id, experiment_key, policy, arm, served_by, value, source, decided_at,
           event_time
    FROM input
    ON CONFLICT (experiment_key, decided_at, decision_id) DO NOTHING
    RETURNING decision_id
),
learned AS (
    INSERT INTO arm_stats AS s (experiment_key, policy, arm, pulls, reward_sum, reward_sum_sq)
    SELECT i.experiment_key, i.policy, i.arm, count(*)::float8, sum(i.normalised),
           sum(banditd_square(i.normalised))
    FROM input i JOIN applied a USING (decision_id)
    WHERE i.learning
    GROUP BY i.experiment_key, i.policy, i.arm
    ORDER BY i.experiment_key, i.policy, i.arm
    ON CONFLICT (experiment_key, policy, arm) DO UPDATE SET
        pulls = s.pulls + EXCLUDED.pulls,
        reward_sum = s.reward_sum + EXCLUDED.reward_sum,
        reward_sum_sq = s.reward_sum_sq + EXCLUDED.reward_sum_sq,
        updated_at = now()
    RETURNING s.experiment_key, s.policy, s.arm, s.pulls, s.reward_sum, s.reward_sum_sq
)
SELECT (SELECT array_agg(i.decision_id) FROM input i
        WHERE NOT EXISTS (SELECT FROM applied a WHERE a.decision_id = i.decision_id)),
       (SELECT json_agg(json_build_array(experiment_key, policy, arm, pulls, reward_sum,
                                         reward_sum_sq))
        FROM learned)::text,
       extract(epoch FROM now())::float8
"""
