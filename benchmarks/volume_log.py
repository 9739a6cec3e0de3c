"""The volume study's decision logs: one experiment's decisions and rewards, generated
in bulk and written with COPY (``copy_records_to_table``), as a server would have
logged them over two weeks.

The model, per log of ``rows`` decisions:

* **Experiment.** 20 arms, Thompson and control split 50/50, 90 % of users inside the
  traffic; created and started through ``banditd.server.experiment_store``, then its
  ``start_at`` moved to before the first generated row, so every command treats the
  log as the experiment's own.
* **Users.** ``rows / 10`` users whose activity is lognormal (σ = 1.2: most users
  decide a few times, a few hundreds of times). Each user is assigned as the server
  assigns (``banditd.server.assignment``'s hash of the salt and the user id): outside
  the traffic (served by the default policy, control, as ``OUTSIDE_TRAFFIC``), else
  Thompson (``POLICY``) or control (``CONTROL``).
* **Decisions.** Times uniform over the span, written in time order as the log grows.
  A third of the requests offer a candidate subset of 5-15 arms. Control chooses
  uniformly among the offered arms; Thompson with probabilities ∝ rate^(1 + 6f), f
  the share of the span elapsed, so it concentrates on the best arms as it learns.
  The logged propensity is the chosen arm's probability among the offered ones.
  Latency is lognormal (median 350 µs).
* **Decision ids.** 53-character texts of the layout in ``banditd.server.decision_id``
  (the payload names the experiment, policy, served_by, arm, millisecond and one of
  four server nonces with a per-row counter, so ids are unique); the 12 MAC bytes are
  random, since no key signs them and nothing here verifies them.
* **Rewards.** Bernoulli per arm, rates spaced evenly over 2-10 %. 90 % of the
  decisions get the client's reward after a lognormal delay (median 60 s, σ 1.5) if it
  has arrived by now; of the rest, those whose reward window (1 day) has closed get
  the experiment's default reward (source ``default``), as the server's default-reward
  worker writes it.
* **Calls.** ``rpc_counts`` holds the successful Selects and Rewards per minute, which
  the error-rate guardrail reads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

EXPERIMENT_ID = "volume"
ARMS = tuple(f"movie-{i:02d}" for i in range(20))
POLICIES = ("thompson", "control")
SPLIT = (0.5, 0.5)
TRAFFIC_PCT = 0.9
SALT = "0a1b2c3d4e5f"
SPAN_DAYS = 14
USERS_PER_DECISION = 0.1
ACTIVITY_SIGMA = 1.2
SUBSET_SHARE = 1 / 3
SUBSET_SIZES = (5, 15)
CLIENT_REWARD_SHARE = 0.9
REWARD_RATES = (0.02, 0.10)
CHUNK = 100_000
SERVER_NONCES = 4
GENERATOR_SERVER = "volume-generator"
REWARD_COLUMNS = ("decision_id", "experiment_key", "policy", "arm", "served_by", "value",
                  "source", "decided_at", "event_time", "committed_at")
_B64URL = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)
_POLICY, _CONTROL, _OUTSIDE = 1, 2, 3  # ServedBy codes (decision.proto)
_SERVED_BY = {_POLICY: "POLICY", _CONTROL: "CONTROL", _OUTSIDE: "OUTSIDE_TRAFFIC"}


def now_ms() -> int:
    return int(time.time() * 1000)


async def create_volume_experiment(conn, first_ms: int):
    """The study's experiment, created and started through banditd's own API, with its
    ``start_at`` one minute before ``first_ms`` (the first generated decision)."""
    from banditd.server.experiment import ExperimentSpec
    from banditd.server.experiment_store import change_status, create_experiment, get_experiment

    start = _utc(first_ms - 60_000)
    if not await conn.fetchval("SELECT to_regclass('log_retention') IS NOT NULL"):
        # a schema before 0008 (the storage phase), which today's create no longer
        # writes to: the row as that schema holds a started experiment
        await conn.execute(
            """INSERT INTO experiments (id, name, arms, policies, policy_split, traffic_pct,
                                        salt, status, start_at)
               VALUES ($1, 'volume study', $2, $3, $4, $5, $6, 'running', $7)""",
            EXPERIMENT_ID, list(ARMS), list(POLICIES), list(SPLIT), TRAFFIC_PCT, SALT, start)
        return await get_experiment(conn, EXPERIMENT_ID)
    spec = ExperimentSpec(id=EXPERIMENT_ID, name="volume study", arms=ARMS, policies=POLICIES,
                          policy_split=SPLIT, traffic_pct=TRAFFIC_PCT, salt=SALT)
    await create_experiment(conn, spec, actor="benchmark")
    await change_status(conn, EXPERIMENT_ID, "start", actor="benchmark")
    await conn.execute("UPDATE experiments SET start_at = $2 WHERE id = $1", EXPERIMENT_ID,
                       start)
    return await get_experiment(conn, EXPERIMENT_ID)


async def ensure_log_partitions(conn, first_ms: int, last_ms: int) -> int | None:
    """Create the day partitions the span needs; None when the log is unpartitioned
    (a schema before migration 0008)."""
    if not await conn.fetchval("SELECT to_regproc('banditd_ensure_log_partitions') IS NOT NULL"):
        return None
    from banditd.server.log_partitions import ensure_partitions

    return await ensure_partitions(conn, _day(first_ms), _day(last_ms))


async def roll_up(conn) -> dict | None:
    """``banditd.server.rollups.catch_up`` timed; None when the schema has no rollups."""
    try:
        from banditd.server.rollups import catch_up
    except ImportError:
        return None
    if not await conn.fetchval("SELECT to_regclass('rollup_horizon') IS NOT NULL"):
        return None
    started = time.perf_counter()
    run = await catch_up(conn)
    seconds = time.perf_counter() - started
    rows = run.decisions + run.rewards
    return {"seconds": round(seconds, 3), "decisions": run.decisions, "rewards": run.rewards,
            "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None}


@dataclass
class Written:
    """What one ``LogGenerator.write`` added."""

    decisions: int = 0
    client_rewards: int = 0
    default_rewards: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        rows = self.decisions + self.client_rewards + self.default_rewards
        return {"decisions": self.decisions, "client_rewards": self.client_rewards,
                "default_rewards": self.default_rewards, "seconds": round(self.seconds, 2),
                "rows_per_s": round(rows / self.seconds, 1) if self.seconds else None}


class LogGenerator:
    """Decisions and rewards of the volume experiment over a population sized for
    ``rows`` decisions; ``write`` appends those of one time range."""

    def __init__(self, experiment, rows: int, seed: int = 17) -> None:
        from banditd.core_ext.decider import BUCKETS, hash64
        from banditd.core_ext.policies import POLICY_CODES
        from banditd.server.assignment import SEPARATOR, policy_table, traffic_threshold

        self.key = experiment.key
        self.window_ms = int(experiment.spec.reward_window_seconds * 1000)
        self.default_reward = float(experiment.spec.default_reward)
        self.rng = np.random.default_rng(seed)
        n_users = max(1000, int(rows * USERS_PER_DECISION))
        self.users = np.array([f"user-{i:08d}" for i in range(n_users)], dtype=object)
        activity = self.rng.lognormal(0.0, ACTIVITY_SIGMA, n_users)
        self.user_cdf = np.cumsum(activity / activity.sum())
        prefix = experiment.spec.salt.encode() + SEPARATOR
        table = policy_table(experiment.spec.policy_split)
        threshold = traffic_threshold(experiment.spec.traffic_pct)
        hashes = [hash64(prefix + u.encode()) for u in self.users]
        inside = np.array([h % BUCKETS < threshold for h in hashes])
        slot = np.array([table[(h // BUCKETS) % BUCKETS] for h in hashes])
        policies = experiment.spec.policies
        # per user: the policy that serves them, its wire code, and their served_by
        policy_index = np.where(inside, slot, policies.index("control"))
        self.policy_names = np.array(policies, dtype=object)[policy_index]
        self.policy_codes = np.array([POLICY_CODES[p] for p in policies], np.uint8)[policy_index]
        self.served_by = np.where(~inside, _OUTSIDE,
                                  np.where(self.policy_names == "control", _CONTROL, _POLICY))
        self.arm_names = np.array(experiment.spec.arms, dtype=object)
        self.rates = self.rng.permutation(np.linspace(*REWARD_RATES, len(self.arm_names)))
        self.counter_base = int(self.rng.integers(0, 2**31))
        self.written = 0  # rows numbered so far: the ids' counters
        self.span_ms: tuple[int, int] | None = None  # the whole log's time range

    async def write(self, conn, first_ms: int, end_ms: int, rows: int, *,
                    progress=None) -> Written:
        """Append ``rows`` decisions uniform over [first_ms, end_ms) and their rewards as
        of ``end_ms`` (now), in time order, ``CHUNK`` rows per COPY."""
        started = time.perf_counter()
        lo = first_ms if self.span_ms is None else self.span_ms[0]
        self.span_ms = (lo, end_ms)
        times = np.sort(self.rng.integers(first_ms, end_ms, rows))
        written = Written()
        minutes: dict[tuple[int, str], int] = {}
        for at in range(0, rows, CHUNK):
            decisions, rewards, clients, defaults = self._chunk(times[at:at + CHUNK], end_ms,
                                                                minutes)
            await conn.copy_records_to_table("decisions", records=decisions,
                                             columns=_decision_columns())
            await conn.copy_records_to_table("rewards", records=rewards, columns=REWARD_COLUMNS)
            written.decisions += len(decisions)
            written.client_rewards += clients
            written.default_rewards += defaults
            if progress is not None:
                progress(written.decisions, rows)
        await conn.executemany(
            """INSERT INTO rpc_counts (experiment_key, minute, server_id, method, code, calls)
               VALUES ($1, $2, $3, $4, 'OK', $5)
               ON CONFLICT (experiment_key, minute, server_id, method, code)
               DO UPDATE SET calls = rpc_counts.calls + EXCLUDED.calls""",
            [(self.key, _utc(m * 60_000), GENERATOR_SERVER, method, n)
             for (m, method), n in sorted(minutes.items())],
        )
        written.seconds = time.perf_counter() - started
        return written

    def _chunk(self, ms: np.ndarray, now: int, minutes: dict) -> tuple[list, list, int, int]:
        """The decision and reward records of decisions at ``ms`` (sorted), counting the
        Selects and client Rewards per minute into ``minutes``."""
        rng, n, k = self.rng, len(ms), len(self.arm_names)
        user = np.searchsorted(self.user_cdf, rng.random(n) * self.user_cdf[-1])
        served = self.served_by[user]
        # the offered arms: every arm, or a random 5-15 of them
        offered = np.ones((n, k), bool)
        subset = np.flatnonzero(rng.random(n) < SUBSET_SHARE)
        keys = rng.random((len(subset), k))
        sizes = rng.integers(SUBSET_SIZES[0], SUBSET_SIZES[1] + 1, len(subset))
        cut = np.sort(keys, axis=1)[np.arange(len(subset)), sizes - 1]
        offered[subset] = keys <= cut[:, None]
        # Thompson's choice sharpens as it learns; control (and outside traffic) is uniform
        lo, hi = self.span_ms
        learned = 1.0 + 6.0 * (ms - lo) / max(hi - lo, 1)
        weights = np.where((served == _POLICY)[:, None], self.rates[None, :] ** learned[:, None],
                           1.0) * offered
        weights /= weights.sum(axis=1, keepdims=True)
        arm = np.minimum((weights.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1), k - 1)
        propensity = weights[np.arange(n), arm]
        latency = np.minimum(rng.lognormal(math.log(350.0), 0.5, n), 2**31 - 1).astype(np.int64)
        nonce = rng.integers(0, SERVER_NONCES, n)
        counter = (self.counter_base + self.written + np.arange(n)) & 0xFFFFFFFF
        self.written += n
        ids = decision_ids(self.key, self.policy_codes[user], served, arm, ms, nonce + 1,
                           counter, rng)
        decided = [_utc(t) for t in ms.tolist()]
        policy = self.policy_names[user].tolist()
        arm_name = self.arm_names[arm].tolist()
        served_name = [_SERVED_BY[s] for s in served.tolist()]
        candidates = [None] * n
        for i in subset.tolist():
            candidates[i] = self.arm_names[offered[i]].tolist()
        decisions = list(zip(ids, [self.key] * n, self.users[user].tolist(), policy, arm_name,
                             propensity.tolist(), served_name, decided, latency.tolist(),
                             [None] * n, [f"volume-{s}" for s in nonce.tolist()], candidates,
                             strict=True))
        # rewards: the client's after its delay, else the default once the window closed
        value = (rng.random(n) < self.rates[arm]).astype(np.float64)
        event = ms + (rng.lognormal(math.log(60.0), 1.5, n) * 1000).astype(np.int64)
        client = (rng.random(n) < CLIENT_REWARD_SHARE) & (event <= now)
        committed = event + np.maximum(1, rng.lognormal(math.log(4.0), 0.5, n)).astype(np.int64)
        closed = ms + self.window_ms + rng.integers(0, 60_000, n)
        default = ~client & (closed <= now)
        rewards = []
        for i in np.flatnonzero(client | default).tolist():
            common = (ids[i], self.key, policy[i], arm_name[i], served_name[i])
            if client[i]:
                rewards.append((*common, float(value[i]), "client", decided[i],
                                _utc(int(event[i])), _utc(int(committed[i]))))
            else:
                rewards.append((*common, self.default_reward, "default", decided[i], None,
                                _utc(int(closed[i]))))
        for m, c in zip(*np.unique(ms // 60_000, return_counts=True), strict=True):
            minutes[(int(m), "Select")] = minutes.get((int(m), "Select"), 0) + int(c)
        for m, c in zip(*np.unique(committed[client] // 60_000, return_counts=True), strict=True):
            minutes[(int(m), "Reward")] = minutes.get((int(m), "Reward"), 0) + int(c)
        return decisions, rewards, int(client.sum()), int(default.sum())


def decision_ids(experiment_key: int, policy: np.ndarray, served_by: np.ndarray,
                 arm: np.ndarray, decided_ms: np.ndarray, nonce: np.ndarray,
                 counter: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Ids of banditd's layout (``banditd.server.decision_id``), one per row: "d" +
    base64url(payload | MAC), the MAC random bytes."""
    n = len(arm)
    raw = np.zeros((n, 39), np.uint8)  # 26 payload + 12 MAC bytes, + 1 to fill 13 triples
    raw[:, 0] = 1  # version
    raw[:, 1] = 1  # key_id
    raw[:, 2:6] = _big_endian(np.full(n, experiment_key), 4)
    raw[:, 6] = policy
    raw[:, 7] = served_by
    raw[:, 8:12] = _big_endian(arm, 4)
    raw[:, 12:18] = _big_endian(decided_ms, 6)
    raw[:, 18:22] = _big_endian(nonce, 4)
    raw[:, 22:26] = _big_endian(counter, 4)
    raw[:, 26:38] = rng.integers(0, 256, (n, 12), dtype=np.uint8)
    triples = raw.reshape(n, 13, 3).astype(np.uint32)
    bits = (triples[..., 0] << 16) | (triples[..., 1] << 8) | triples[..., 2]
    sextets = np.stack([(bits >> s) & 63 for s in (18, 12, 6, 0)], axis=-1).reshape(n, 52)
    text = np.empty((n, 53), np.uint8)
    text[:, 0] = ord("d")
    text[:, 1:] = _B64URL[sextets]
    text[:, 52] = ord("=")  # 38 bytes: the last triple holds two, so one padding character
    joined = text.tobytes().decode("ascii")
    return [joined[i:i + 53] for i in range(0, len(joined), 53)]


def _big_endian(values: np.ndarray, width: int) -> np.ndarray:
    shifts = np.arange(8 * (width - 1), -1, -8, dtype=np.uint64)
    return ((np.asarray(values, np.uint64)[:, None] >> shifts) & 0xFF).astype(np.uint8)


def _decision_columns() -> tuple[str, ...]:
    from banditd.core_ext.codecs import DECISION_COLUMNS

    return DECISION_COLUMNS


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _day(ms: int) -> date:
    return _utc(ms).date()


def span(end_ms: int) -> tuple[int, int]:
    """The study's log span: ``SPAN_DAYS`` ending at ``end_ms``."""
    return end_ms - int(timedelta(days=SPAN_DAYS).total_seconds() * 1000), end_ms
