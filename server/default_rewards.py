"""Default rewards: when a decision's reward window closes without a reward.

Every ``interval`` seconds the worker finds logged learning decisions (served by
a policy under test) whose window has closed and that have no reward, and
submits the experiment's default reward for each through the same group
committer as client rewards — so it is applied exactly once, even with several
replicas running the worker, and a client reward racing it loses cleanly (the
client gets FAILED_PRECONDITION). Each applied default is logged to
``workers.log`` as ``Reward <decision_id> computed ...``.

Each experiment keeps a watermark: once a round has found every due decision,
later rounds scan only decisions newer than the watermark (minus a margin for
rows the decision log wrote late), so a round costs an index range per
experiment rather than a pass over the whole decision log.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from banditd.core_ext.policies import POLICY_CODES
from banditd.server.registry import POLICY_BY_CODE, Registry
from banditd.server.reward_commit import (
    PendingReward,
    RewardCommitter,
    RewardOutcome,
    unix_microseconds,
)

log = logging.getLogger("banditd.workers")

# Due decisions of the experiments in $1, each scanned only from its watermark $2
# (an index range on decisions (experiment_key, decided_at)) up to $4 minus its window.
_DUE = """
SELECT d.decision_id, d.experiment_key, d.policy, d.arm, d.served_by, d.decided_at
FROM unnest($1::int[], $2::timestamptz[], $3::float8[]) AS w(key, since, window_s)
JOIN decisions d ON d.experiment_key = w.key
    AND d.decided_at >= w.since
    AND d.decided_at < $4::timestamptz - make_interval(secs => w.window_s)
WHERE d.served_by IN ('POLICY', 'CONTROL')
  AND NOT EXISTS (SELECT 1 FROM rewards r
                  WHERE r.experiment_key = d.experiment_key AND r.decided_at = d.decided_at
                    AND r.decision_id = d.decision_id)
ORDER BY d.decided_at
LIMIT $5
"""
# A decision row may reach the table after its time (the decision log retries while
# PostgreSQL is away): watermarks trail the scanned range by this much.
_LATE_ROWS = timedelta(minutes=10)
_EVER = datetime.min.replace(tzinfo=UTC)
_SERVED_BY_CODES = {"POLICY": 1, "CONTROL": 2}


class DefaultRewardWorker:
    """Applies the default reward to decisions whose window closed unrewarded."""

    def __init__(
        self, pool, registry: Registry, committer: RewardCommitter, *, interval: float = 5.0,
        batch: int = 5_000,
    ) -> None:
        self._pool = pool
        self._registry = registry
        self._committer = committer
        self.interval = interval
        self.batch = batch
        # experiment key -> every due decision older than this has been handled
        self._watermarks: dict[int, datetime] = {}

    async def run(self) -> None:
        while True:
            try:
                while await self.run_once() == self.batch:
                    pass
            except Exception as exc:  # keep the worker alive; the next round retries
                log.error("ERROR default-reward round failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> int:
        """One round; returns how many due decisions it found."""
        runtimes = list(self._registry)
        windows = [r.experiment.spec.reward_window_seconds for r in runtimes]
        keys = [r.key for r in runtimes]
        async with self._pool.acquire() as conn:
            now = await conn.fetchval("SELECT now()")
            rows = await conn.fetch(
                _DUE, keys, [self._watermarks.get(k, _EVER) for k in keys], windows, now,
                self.batch,
            )
        pending = []
        for row in rows:
            runtime = self._registry.by_key(row["experiment_key"])
            if runtime is None or row["arm"] not in runtime.arm_index:
                continue
            spec = runtime.experiment.spec
            pending.append(
                PendingReward(
                    decision_id=row["decision_id"],
                    experiment_key=runtime.key,
                    policy_code=POLICY_CODES[row["policy"]],
                    served_by=_SERVED_BY_CODES[row["served_by"]],
                    arm=row["arm"],
                    value=spec.default_reward,
                    normalised=spec.normalise_reward(spec.default_reward),
                    source="default",
                    decided_at_us=unix_microseconds(row["decided_at"]),
                    event_time_us=None,
                )
            )
        outcomes = await asyncio.gather(
            *(self._committer.submit(p) for p in pending), return_exceptions=True
        )
        for reward, outcome in zip(pending, outcomes, strict=True):
            if outcome is RewardOutcome.APPLIED:
                log.info(
                    "Reward %s computed: default value=%g experiment_key=%d policy=%s arm=%s "
                    "(window closed)",
                    reward.decision_id, reward.value, reward.experiment_key,
                    POLICY_BY_CODE[reward.policy_code], reward.arm,
                )
            elif isinstance(outcome, Exception):
                raise outcome
        if len(rows) < self.batch:  # every due decision up to now was found and handled
            for key, window in zip(keys, windows, strict=True):
                self._watermarks[key] = now - timedelta(seconds=window) - _LATE_ROWS
        return len(rows)
