"""The load study's measured phases, in the order the run takes them.

Every phase is repeated with the order of the two servers alternating, and a figure is
the median (throughput) or the pooled samples (latency) of its repeats — never the best
run:

* unloaded latency: one caller, closed loop (``*_unloaded_p50_ms``);
* maximum throughput: C callers, closed loop (``*_max_qps``: per concurrency the
  median of the repeats, then the best concurrency of the sweep);
* open loop at 25/50/75 % of banditd's maximum, for banditd and for the floor at the
  same absolute rates; latency from each request's intended send time (wrk2-style
  constant-rate schedule, no coordinated omission);
* SelectBatch with 100 users per call (``batch_select_decisions_per_s``);
* Select with ``candidate_arms`` to Thompson on an experiment of 20 arms (only users
  its Thompson policy serves), 64 callers, closed loop: every call over all arms, over
  a random 10-arm subset, and over a random 5-arm subset (a fresh subset per call, as
  the movie use case sends each user's unseen movies), the three rotating within each
  of many short rounds, while Rewards for that experiment arrive at a steady 200/s so its propensity
  caches are re-estimated throughout; ``select_subset_qps_ratio`` is, per subset
  size, the median over the rounds of the subset's throughput over the full set's in
  the same round;
* Reward, durable with group commit, closed loop, every call with a fresh decision id
  selected beforehand, repeated and alternating with the floor's Reward, at 64 and 128
  callers (``reward_acks_per_s``: per concurrency the median of the repeats, then the
  best concurrency, as for ``*_max_qps``; its p50/p99 pooled), then one caller
  (``reward_unloaded_p50_ms``). Both concurrencies are needed: at 64 callers a
  Reward's latency is mostly its group's commit cycle (fill, then one commit), so the
  server is waiting rather than saturated (it uses less than the full core it uses at
  128 callers) and 64 callers cannot reach its maximum;
* for context, the same reward rows committed by bare asyncpg at the concurrency of
  that maximum:
  one ``INSERT ... ON CONFLICT DO NOTHING`` transaction per row over a pool of
  min(C, 40) connections (``asyncpg_commit_rows_per_s``), and group-commit style, C
  producers and 2 committers each writing everything queued in one ``unnest`` INSERT
  transaction (``asyncpg_group_commit_rows_per_s``);
* memory: a second database with 1,000 running experiments x 1,000 arms x 4 policies
  (bulk INSERT into ``experiments``; every experiment over one catalogue of arm names),
  a fresh server on it: seconds to SERVING and its VmRSS then (``memory``); full mode
  also reports the same with distinct arm names per experiment (context, no target).

Each phase takes the servers (or the database) and the run's :class:`Settings`, prints
its line of progress and returns its part of the result dict: its top-level figures
and, under ``"phases"``, its detailed entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from banditd.server.database import create_database, drop_database
from benchmarks.load_client import RunResult, Target, closed_loop, open_loop
from benchmarks.load_harness import (
    BENCH_DB_PREFIX,
    EXPERIMENT_ID,
    POLICIES,
    STEAL_WARN_CORES,
    SUBSET_ARMS,
    SUBSET_EXPERIMENT_ID,
    Measured,
    Server,
    measured,
    pooled,
    process_memory,
    rotated,
    start_banditd,
    thompson_users,
)

BATCH_USERS = 100
LOAD_LEVELS = (0.25, 0.50, 0.75)
BUDGET_ATTEMPTS = 3
SUBSET_SIZES = (10, 5)
SUBSET_CONCURRENCY = 64
SUBSET_REWARDS_PER_S = 200.0


@dataclass(frozen=True)
class Settings:
    """One run's settings: the mode's phase lengths (seconds), repeats and concurrencies,
    then the command line's choices."""

    mode: str
    unloaded: float
    closed: float
    open: float
    batch: float
    reward: float
    asyncpg: float
    warmup: float
    concurrency: tuple[int, ...]
    repeats: int
    closed_repeats: int
    subset: float           # seconds per round of the subset study
    subset_rounds: int
    reward_concurrency: tuple[int, ...]
    arms: int
    channels: int
    batch_concurrency: int
    memory_experiments: int
    memory_arms: int
    embedded: bool
    pin: bool  # servers on a core of their own (benchmarks.load_harness.Placement)
    server_root: Path


@dataclass(frozen=True)
class ServerPair:
    """banditd (its results named ``select``) and the floor, each with its client target."""

    banditd: Server
    floor: Server
    banditd_target: Target
    floor_target: Target

    @classmethod
    async def connect(cls, banditd: Server, floor: Server, channels: int) -> ServerPair:
        """Both servers with a client target of ``channels`` channels each, ready."""
        banditd_target = Target(banditd.address, channels)
        floor_target = Target(floor.address, channels)
        await banditd_target.ready()
        await floor_target.ready()
        return cls(banditd, floor, banditd_target, floor_target)

    def order(self, repeat: int) -> list[tuple[str, Server, Target]]:
        """Both servers in the order of the ``repeat``-th run: repeats alternate which
        goes first, so that drift (the other tenants of a shared machine) hits both
        alike."""
        items = [("select", self.banditd, self.banditd_target),
                 ("floor", self.floor, self.floor_target)]
        return items if repeat % 2 == 0 else items[::-1]

    async def close(self) -> None:
        """Close both client targets (the servers keep running)."""
        await self.banditd_target.close()
        await self.floor_target.close()


# -- requests ----------------------------------------------------------------------------


def select_requests(n_users: int, experiment_id: str = EXPERIMENT_ID) -> list[bytes]:
    """Serialised Select requests, one per user."""
    from banditd.v1 import decision_pb2 as pb

    return [pb.SelectRequest(experiment_id=experiment_id, user_id=f"user-{i:07d}")
            .SerializeToString() for i in range(n_users)]


def subset_requests(n_users: int, size: int | None, seed: int) -> list[bytes]:
    """Serialised Select requests to the subset experiment, one per user Thompson
    serves, each with its own random ``size``-arm subset of SUBSET_ARMS as
    ``candidate_arms`` (None: none)."""
    from banditd.v1 import decision_pb2 as pb

    rnd = random.Random(seed)
    users = thompson_users(n_users, f"subset-{'all' if size is None else size}")
    return [pb.SelectRequest(
        experiment_id=SUBSET_EXPERIMENT_ID, user_id=user,
        candidate_arms=[] if size is None else rnd.sample(SUBSET_ARMS, size),
    ).SerializeToString() for user in users]


def batch_requests(n_calls: int, users: int = BATCH_USERS) -> list[bytes]:
    """Serialised SelectBatch requests of ``users`` users each, every user distinct."""
    from banditd.v1 import decision_pb2 as pb

    out = []
    for c in range(n_calls):
        items = [pb.SelectRequest(experiment_id=EXPERIMENT_ID, user_id=f"user-{c}-{u}")
                 for u in range(users)]
        out.append(pb.SelectBatchRequest(requests=items).SerializeToString())
    return out


async def preselect_decisions(target: Target, n: int,
                              experiment_id: str = EXPERIMENT_ID) -> list[str]:
    """``n`` fresh decision ids of ``experiment_id`` from SelectBatch calls (100 users
    each)."""
    from banditd.v1 import decision_pb2 as pb

    call = target.method("SelectBatch")
    ids: list[str] = []
    tag = secrets.token_hex(3)

    async def worker(w: int) -> None:
        b = w
        while len(ids) < n:
            req = pb.SelectBatchRequest(requests=[
                pb.SelectRequest(experiment_id=experiment_id, user_id=f"rw-{tag}-{b}-{u}")
                for u in range(BATCH_USERS)])
            reply = pb.SelectBatchResponse.FromString(await call(req.SerializeToString()))
            ids.extend(r.decision_id for r in reply.responses)
            b += 8

    await asyncio.gather(*(worker(w) for w in range(8)))
    return ids[:n]


def reward_requests(decision_ids: list[str]) -> list[bytes]:
    """Serialised Reward requests, one per decision id, a reproducible 30 % of them 1.0."""
    from banditd.v1 import decision_pb2 as pb

    rnd = random.Random(7)
    return [pb.RewardRequest(decision_id=d, value=float(rnd.random() < 0.3)).SerializeToString()
            for d in decision_ids]


async def preselect_free_ids(n: int) -> list[str]:
    """Decision-id-shaped unique keys for the bare asyncpg rows."""
    return ["d" + secrets.token_urlsafe(39)[:52] for _ in range(n)]


def reward_id_count(settings: Settings, floor_max_qps: float) -> int:
    """Decision ids one Reward repeat may use, and as many bare asyncpg rows: ids for up
    to twice the floor's rate over the phase and its warm-up (group commit can outrun
    it), plus a margin."""
    return int(2 * floor_max_qps * (settings.reward + settings.warmup)) + 4000


# -- repeats ------------------------------------------------------------------------------


async def alternating(pair: ServerPair, repeats: int,
                      phase: Callable[[Target], Coroutine[Any, Any, RunResult]],
                      ) -> dict[str, list[Measured]]:
    """``phase(target)`` measured on both servers ``repeats`` times, alternating which
    goes first; the runs by server name."""
    runs: dict[str, list[Measured]] = {"select": [], "floor": []}
    for r in range(repeats):
        for name, server, target in pair.order(r):
            runs[name].append(await measured(server, phase(target)))
    return runs


def repeated(ms: list[Measured]) -> dict[str, Any]:
    """The pooled summary of a phase's repeats with the median throughput as ``qps``
    and every repeat's beside it."""
    return {**pooled(ms).summary(), "qps": round(float(np.median([m.result.qps for m in ms])), 1),
            "qps_repeats": [round(m.result.qps, 1) for m in ms]}


def paired_ratios(runs: list[Measured], baseline: list[Measured]) -> list[float]:
    """Throughput of each run over that of the baseline's run it was paired with."""
    return [a.result.qps / b.result.qps for a, b in zip(runs, baseline, strict=True)]


# -- the phases ---------------------------------------------------------------------------


async def warm_up(pair: ServerPair, requests: list[bytes]) -> None:
    """Warm both servers (imports, caches, the first Thompson propensity estimate), then
    put the client's start-up objects out of the cyclic GC's reach."""
    for _name, _server, target in pair.order(0):
        await closed_loop(target, "Select", requests, concurrency=8, duration=1.0, warmup=0.2)
    # The client's own full GC collections traverse every module and request and stall
    # its event loop, delaying sends and replies alike: an open-loop window that holds
    # one shows it in its tail latencies. Frozen, as banditd and the floor freeze
    # theirs, those objects no longer cost the client such a stall.
    gc.collect()
    gc.freeze()


async def unloaded_latency(pair: ServerPair, requests: list[bytes],
                           settings: Settings) -> dict[str, Any]:
    """One caller, closed loop: ``*_unloaded_p50_ms`` of both servers."""
    runs = await alternating(pair, settings.repeats, partial(
        closed_loop, method="Select", requests=requests, concurrency=1,
        duration=settings.unloaded, warmup=settings.warmup))
    phases = {f"{name}_unloaded": {"repeats": len(ms), **pooled(ms).summary()}
              for name, ms in runs.items()}
    out = {"phases": phases, **{f"{name}_unloaded_p50_ms": phases[f"{name}_unloaded"]["p50_ms"]
                                for name in runs}}
    print(f"  unloaded p50: select {out['select_unloaded_p50_ms']:.3f} ms, "
          f"floor {out['floor_unloaded_p50_ms']:.3f} ms", flush=True)
    return out


async def closed_loop_maximum(pair: ServerPair, requests: list[bytes],
                              settings: Settings) -> dict[str, Any]:
    """C callers, closed loop: the maximum throughput over the concurrency sweep (per
    concurrency the median of the repeats), ``*_max_qps`` and their paired ratios."""
    closed: dict[str, dict[int, dict]] = {"select": {}, "floor": {}}
    pair_ratios: dict[int, list[float]] = {}
    for c in settings.concurrency:
        runs = await alternating(pair, settings.closed_repeats, partial(
            closed_loop, method="Select", requests=requests, concurrency=c,
            duration=settings.closed, warmup=settings.warmup))
        pair_ratios[c] = paired_ratios(runs["select"], runs["floor"])
        for name, ms in runs.items():
            closed[name][c] = repeated(ms)
    out: dict[str, Any] = {"phases": {f"{name}_closed": {str(c): s for c, s in by_c.items()}
                                      for name, by_c in closed.items()}}
    for name, by_c in closed.items():
        out[f"{name}_max_qps"] = max(s["qps"] for s in by_c.values())
    out["select_vs_floor_qps"] = round(out["select_max_qps"] / out["floor_max_qps"], 3)
    out["select_vs_floor_qps_paired"] = {
        str(c): [round(x, 3) for x in ratios] for c, ratios in pair_ratios.items()}
    out["select_vs_floor_qps_paired_median"] = round(float(np.median(
        [x for ratios in pair_ratios.values() for x in ratios])), 3)
    print(f"  max qps: select {out['select_max_qps']:.0f}, floor {out['floor_max_qps']:.0f} "
          f"(ratio {out['select_vs_floor_qps']:.3f}; paired ratios "
          f"{out['select_vs_floor_qps_paired']})", flush=True)
    return out


async def _open_loop_attempts(pair: ServerPair, requests: list[bytes], settings: Settings,
                              level: float, rate: float) -> list[dict[str, dict]]:
    """One load level's attempts, each the pooled repeats of both servers. The budget
    level (50 %) is measured again, up to BUDGET_ATTEMPTS times in all, while the
    hypervisor steals STEAL_WARN_CORES or more during it: those latencies measure the
    host."""
    attempts: list[dict[str, dict]] = []
    while True:
        runs = await alternating(pair, settings.repeats, partial(  # samples pooled
            open_loop, method="Select", requests=requests, rate=rate,
            duration=settings.open, warmup=settings.warmup))
        attempts.append({name: {"target_qps": round(rate, 1), "repeats": len(ms),
                                **pooled(ms).summary()}
                         for name, ms in runs.items()})
        stolen = attempts[-1]["select"]["steal_cores"]
        if level != 0.5 or stolen < STEAL_WARN_CORES or len(attempts) >= BUDGET_ATTEMPTS:
            return attempts
        print(f"  open loop 50 %: {stolen:.2f} cores stolen by the hypervisor; "
              "measuring again", flush=True)


async def open_loop_levels(pair: ServerPair, requests: list[bytes], settings: Settings,
                           max_qps: float) -> dict[str, Any]:
    """Open loop at 25/50/75 % of banditd's maximum ``max_qps``, both servers at the same
    rates. Every attempt is kept in the report; the one with the least steal is the
    figure."""
    open_results: dict[str, dict[str, dict]] = {"select": {}, "floor": {}}
    for level in LOAD_LEVELS:
        attempts = await _open_loop_attempts(pair, requests, settings, level, level * max_qps)
        best = min(attempts, key=lambda a: a["select"]["steal_cores"])
        for name, levels in open_results.items():
            levels[f"{round(level * 100)}"] = {
                **best[name], "attempts": len(attempts),
                "steal_cores_of_attempts": [a[name]["steal_cores"] for a in attempts]}
    out: dict[str, Any] = {"phases": {f"{name}_open": levels
                                      for name, levels in open_results.items()}}
    for name, levels in open_results.items():
        for pct, s in levels.items():
            for q in ("p50", "p95", "p99"):
                out[f"{name}_{q}_ms_at_{pct}pct"] = s[f"{q}_ms"]
    for pct in open_results["select"]:
        s, f = open_results["select"][pct], open_results["floor"][pct]
        print(f"  open loop {pct} % ({s['target_qps']:.0f}/s): select p50/p95/p99 "
              f"{s['p50_ms']:.2f}/{s['p95_ms']:.2f}/{s['p99_ms']:.2f} ms; floor "
              f"{f['p50_ms']:.2f}/{f['p95_ms']:.2f}/{f['p99_ms']:.2f} ms", flush=True)
    return out


async def select_batch(pair: ServerPair, settings: Settings, max_qps: float) -> dict[str, Any]:
    """SelectBatch, 100 users per call, on banditd: the best concurrency's decisions/s,
    also relative to single Select's maximum ``max_qps``."""
    batches = batch_requests(200)
    best = None
    for c in (settings.batch_concurrency,) if settings.mode == "short" else (2, 4, 8):
        m = await measured(pair.banditd, closed_loop(
            pair.banditd_target, "SelectBatch", batches, concurrency=c,
            duration=settings.batch, warmup=settings.warmup))
        s = {"concurrency": c, "users_per_call": BATCH_USERS, **m.summary(BATCH_USERS)}
        if best is None or s["items_per_s"] > best["items_per_s"]:
            best = s
    out = {"phases": {"select_batch": best},
           "batch_select_decisions_per_s": best["items_per_s"],
           "batch_vs_single_select": round(best["items_per_s"] / max_qps, 2)}
    print(f"  SelectBatch: {out['batch_select_decisions_per_s']:.0f} decisions/s "
          f"({out['batch_vs_single_select']:.1f}x single Select)", flush=True)
    return out


@contextlib.asynccontextmanager
async def steady_rewards(target: Target, decision_ids: list[str], rate: float,
                         counts: dict[str, int]):
    """Send a Reward for each of ``decision_ids`` in turn at ``rate``/s (fixed schedule,
    not waiting for answers) while the ``async with`` body runs; ``counts`` gets the
    ``sent`` and ``errors`` totals when it ends."""
    call = target.method("Reward")
    requests = reward_requests(decision_ids)
    pending: set[asyncio.Task] = set()
    counts.update(sent=0, errors=0)

    async def one(request: bytes) -> None:
        try:
            await call(request)
        except grpc.RpcError:
            counts["errors"] += 1

    async def schedule() -> None:
        t0 = time.perf_counter()
        for i, request in enumerate(requests):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            task = asyncio.create_task(one(request))
            pending.add(task)
            task.add_done_callback(pending.discard)
            counts["sent"] += 1

    sender = asyncio.create_task(schedule())
    try:
        yield
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        if pending:
            await asyncio.gather(*pending)


async def subset_select(pair: ServerPair, settings: Settings) -> dict[str, Any]:
    """Select over all arms against Select over random 10- and 5-arm subsets, Thompson,
    20 arms, SUBSET_CONCURRENCY callers, rotating the order within each of
    ``subset_rounds`` rounds, with Rewards arriving at SUBSET_REWARDS_PER_S."""
    variants: dict[str, list[bytes]] = {"full": subset_requests(20_000, None, seed=1)}
    for size in SUBSET_SIZES:
        variants[str(size)] = subset_requests(20_000, size, seed=size)
    names = list(variants)
    repeats = settings.subset_rounds
    warmup = 0.2  # the server is warm: only the closed loop's own ramp
    # Enough ids for the whole phase: every run with its warm-up, plus the settling
    # before each (at most 3 s), with a margin.
    seconds = repeats * len(names) * (settings.subset + warmup + 3.0) + 10.0
    ids = await preselect_decisions(pair.banditd_target, int(SUBSET_REWARDS_PER_S * seconds),
                                    SUBSET_EXPERIMENT_ID)
    await asyncio.sleep(0.5)  # let the decision log flush the pre-selected ones
    runs: dict[str, list[Measured]] = {name: [] for name in names}
    counts: dict[str, int] = {}
    started = time.perf_counter()
    async with steady_rewards(pair.banditd_target, ids, SUBSET_REWARDS_PER_S, counts):
        for name in names:  # warm: the first calls build the caches the runs use
            await closed_loop(pair.banditd_target, "Select", variants[name],
                              concurrency=8, duration=0.5, warmup=0.2)
        for r in range(repeats):
            for name in rotated(names, r):
                runs[name].append(await measured(pair.banditd, closed_loop(
                    pair.banditd_target, "Select", variants[name],
                    concurrency=SUBSET_CONCURRENCY, duration=settings.subset,
                    warmup=warmup)))
    reward_rate = counts["sent"] / (time.perf_counter() - started)
    ratios = {name: paired_ratios(runs[name], runs["full"]) for name in names[1:]}
    out: dict[str, Any] = {
        "phases": {"select_subset": {
            "arms": len(SUBSET_ARMS), "concurrency": SUBSET_CONCURRENCY,
            "rewards_per_s": round(reward_rate, 1), "reward_errors": counts["errors"],
            **{name: repeated(ms) for name, ms in runs.items()}}},
        "select_subset_qps": {name: round(float(np.median([m.result.qps for m in ms])), 1)
                              for name, ms in runs.items()},
        "select_subset_qps_ratio": {name: round(float(np.median(x)), 3)
                                    for name, x in ratios.items()},
        "select_subset_qps_ratio_paired": {name: [round(v, 3) for v in x]
                                           for name, x in ratios.items()},
    }
    qps = out["select_subset_qps"]
    print(f"  Select with candidate_arms (Thompson, {len(SUBSET_ARMS)} arms, "
          f"{SUBSET_CONCURRENCY} callers, {reward_rate:.0f} Rewards/s): all arms "
          f"{qps['full']:.0f}/s, " + ", ".join(
              f"{name} arms {qps[name]:.0f}/s (ratio {out['select_subset_qps_ratio'][name]:.3f}, "
              f"paired {out['select_subset_qps_ratio_paired'][name]})" for name in names[1:]),
          flush=True)
    return out


async def _reward_repeats(pair: ServerPair, settings: Settings, concurrency: int,
                          n_ids: int) -> dict[str, list[Measured]]:
    """Reward at one concurrency, repeated and alternating with the floor's Reward;
    every repeat with ``n_ids`` freshly selected decision ids."""
    runs: dict[str, list[Measured]] = {"select": [], "floor": []}
    for r in range(settings.repeats):
        ids = await preselect_decisions(pair.banditd_target, n_ids)
        await asyncio.sleep(0.5)  # let the decision log flush the pre-selected ones
        phase = {
            "select": closed_loop(
                pair.banditd_target, "Reward", reward_requests(ids), concurrency=concurrency,
                duration=settings.reward, warmup=settings.warmup, max_calls=len(ids)),
            "floor": closed_loop(
                pair.floor_target, "Reward", reward_requests(ids[:20_000]),
                concurrency=concurrency, duration=settings.reward, warmup=settings.warmup),
        }
        for name, server, _target in pair.order(r):
            runs[name].append(await measured(server, phase[name]))
    return runs


async def reward_sweep(pair: ServerPair, settings: Settings, n_ids: int) -> dict[str, Any]:
    """Reward, durable and group-committed, a fresh decision id per call, at each
    concurrency; the figure is the best concurrency's median (latencies pooled)."""
    reward_runs = {c: await _reward_repeats(pair, settings, c, n_ids)
                   for c in settings.reward_concurrency}
    phases = {key: {str(c): {"concurrency": c, "repeats": len(runs[name]),
                             **repeated(runs[name])}
                    for c, runs in reward_runs.items()}
              for key, name in (("reward", "select"), ("floor_reward", "floor"))}
    best_c = max(settings.reward_concurrency, key=lambda c: phases["reward"][str(c)]["qps"])
    best = phases["reward"][str(best_c)]
    out = {"phases": phases, "reward_acks_per_s": best["qps"],
           "reward_concurrency_at_max": best_c, "reward_p50_ms": best["p50_ms"],
           "reward_p99_ms": best["p99_ms"],
           "reward_vs_floor_reward_paired": {
               str(c): [round(x, 3) for x in paired_ratios(runs["select"], runs["floor"])]
               for c, runs in reward_runs.items()}}
    for c in settings.reward_concurrency:
        s, f = phases["reward"][str(c)], phases["floor_reward"][str(c)]
        print(f"  Reward, {c} callers: {s['qps']:.0f} acks/s (repeats {s['qps_repeats']}), "
              f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms (floor Reward "
              f"{f['qps']:.0f}/s; paired ratios "
              f"{out['reward_vs_floor_reward_paired'][str(c)]})", flush=True)
    return out


async def reward_unloaded(pair: ServerPair, settings: Settings) -> dict[str, Any]:
    """One Reward caller on banditd: a durable reward's own latency."""
    spare = await preselect_decisions(pair.banditd_target, 4000)
    await asyncio.sleep(0.5)
    m = await measured(pair.banditd, closed_loop(
        pair.banditd_target, "Reward", reward_requests(spare), concurrency=1,
        duration=settings.unloaded, warmup=0.2, max_calls=len(spare)))
    summary = m.summary()
    return {"phases": {"reward_unloaded": summary}, "reward_unloaded_p50_ms": summary["p50_ms"]}


async def asyncpg_commit(url: str, decision_ids: list[str], *, concurrency: int,
                         duration: float, group: bool) -> dict[str, Any]:
    """The reward rows committed by bare asyncpg at ``concurrency`` (see module doc)."""
    import asyncpg

    from banditd.server.database import connect

    setup = await connect(url)
    table = f"bench_commit_{'group' if group else 'row'}"
    await setup.execute(f"""CREATE TABLE {table} (decision_id text,
        experiment_key int, policy text, arm text, served_by text, value float8, source text,
        decided_at timestamptz, event_time timestamptz,
        PRIMARY KEY (experiment_key, decided_at, decision_id))""")
    await setup.close()
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    rows = [(d, 1, "thompson", "arm-3", "POLICY", float(i % 3 == 0), "client", now, None)
            for i, d in enumerate(decision_ids)]
    pool_size = min(concurrency, 40) if not group else 2
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    latencies: list[float] = []
    next_row = iter(rows)
    clock = time.perf_counter
    end = clock() + duration
    insert_one = f"""INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (experiment_key, decided_at, decision_id) DO NOTHING"""
    insert_many = f"""INSERT INTO {table} SELECT * FROM unnest($1::text[], $2::int[],
        $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::timestamptz[],
        $9::timestamptz[]) ON CONFLICT (experiment_key, decided_at, decision_id) DO NOTHING
        RETURNING decision_id"""
    queue: list[tuple[tuple, asyncio.Future]] = []
    ready = asyncio.Event()
    stop = False

    async def committer() -> None:
        while not stop or queue:
            while not queue:
                ready.clear()
                if stop:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), 0.1)
            batch = queue[:]
            queue.clear()
            columns = [list(c) for c in zip(*(row for row, _ in batch), strict=True)]
            async with pool.acquire() as conn, conn.transaction():
                await conn.fetch(insert_many, *columns)
            for _, future in batch:
                future.set_result(None)

    async def producer() -> None:
        loop = asyncio.get_running_loop()
        for row in next_row:
            t = clock()
            if t >= end:
                return
            if group:
                future = loop.create_future()
                queue.append((row, future))
                ready.set()
                await future
            else:
                async with pool.acquire() as conn:
                    await conn.execute(insert_one, *row)
            latencies.append(clock() - t)

    started = clock()
    committers = [asyncio.create_task(committer()) for _ in range(2)] if group else []
    await asyncio.gather(*(producer() for _ in range(concurrency)))
    elapsed = clock() - started
    stop = True
    ready.set()
    await asyncio.gather(*committers)
    await pool.close()
    lat = np.asarray(latencies) * 1e3
    return {
        "rows_per_s": round(len(latencies) / elapsed, 1),
        "rows": len(latencies),
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "connections": pool_size,
        "concurrency": concurrency,
    }


async def bare_asyncpg(url: str, settings: Settings, n_ids: int,
                       concurrency: int) -> dict[str, Any]:
    """The same rows through bare asyncpg (servers stopped), at ``concurrency``: the
    concurrency of banditd's Reward maximum."""
    fresh = await preselect_free_ids(n_ids)
    row = await asyncpg_commit(url, fresh, concurrency=concurrency,
                               duration=settings.asyncpg, group=False)
    group = await asyncpg_commit(url, fresh, concurrency=concurrency,
                                 duration=settings.asyncpg, group=True)
    out = {"phases": {"asyncpg_row": row, "asyncpg_group": group},
           "asyncpg_commit_rows_per_s": row["rows_per_s"],
           "asyncpg_group_commit_rows_per_s": group["rows_per_s"],
           "asyncpg_commit_method": (
               f"asyncpg_commit_rows_per_s: {concurrency} concurrent callers, one INSERT ... "
               "ON CONFLICT (the rewards' key) DO NOTHING transaction per row over a pool of "
               f"{row['connections']} connections; "
               f"asyncpg_group_commit_rows_per_s: {concurrency} producers, 2 committers each "
               "taking everything queued into one unnest INSERT ... ON CONFLICT DO NOTHING "
               "RETURNING transaction (banditd's scheme without gRPC and the arm_stats "
               "upsert)")}
    print(f"  bare asyncpg: {out['asyncpg_commit_rows_per_s']:.0f} rows/s (row per "
          f"transaction), {out['asyncpg_group_commit_rows_per_s']:.0f} rows/s "
          "(group commit)", flush=True)
    return out


async def memory_case(admin_url: str, log_dir: Path, root: Path, *, experiments: int,
                      arms: int, distinct_arms: bool) -> dict[str, Any]:
    """Start a fresh server (from the checkout ``root``) over ``experiments`` running
    experiments of ``arms`` arms."""
    from banditd.server.database import connect
    from banditd.server.migrate import migrate

    url = await create_database(admin_url, BENCH_DB_PREFIX)
    server = None
    try:
        conn = await connect(url)
        try:
            await migrate(conn)
            t = time.monotonic()
            arm_expr = "'e' || g || '-arm-' || a" if distinct_arms else "'arm-' || a"
            await conn.execute(f"""
                INSERT INTO experiments (id, name, arms, policies, policy_split, traffic_pct,
                                         status, start_at, salt)
                SELECT 'mem-' || g, 'memory case ' || g,
                       ARRAY(SELECT {arm_expr} FROM generate_series(0, $1 - 1) a),
                       $2::text[], $3::float8[], 1.0, 'running', now(), md5(g::text)
                FROM generate_series(1, $4) g""",
                arms, list(POLICIES), [1 / len(POLICIES)] * len(POLICIES), experiments)
            insert_s = time.monotonic() - t
        finally:
            await conn.close()
        server = start_banditd(url, log_dir, root=root)
        startup = await server.wait_serving(timeout=600)
        at_serving = process_memory(server.pid)
        return {
            "experiments": experiments, "arms": arms, "policies": len(POLICIES),
            "distinct_arm_names": distinct_arms,
            "bulk_insert_seconds": round(insert_s, 2),
            "startup_seconds": round(startup, 2),
            "rss_mb": at_serving["VmRSS"],
            "hwm_mb": at_serving["VmHWM"],
        }
    finally:
        if server is not None:
            server.stop()
        await drop_database(admin_url, url)


async def memory(admin_url: str, log_dir: Path, settings: Settings) -> dict[str, Any]:
    """Many experiments, many arms: ``memory`` (one arm catalogue) and, in full mode,
    ``memory_distinct_arms``; nothing when the memory case is skipped."""
    if settings.memory_experiments <= 0:
        return {}
    cases = [("memory", False)] + ([("memory_distinct_arms", True)]
                                   if settings.mode == "full" else [])
    out = {}
    for key, distinct in cases:
        mem = await memory_case(admin_url, log_dir, settings.server_root,
                                experiments=settings.memory_experiments,
                                arms=settings.memory_arms, distinct_arms=distinct)
        out[key] = mem
        names = "distinct arm names per experiment" if distinct else "one arm catalogue"
        print(f"  {key}: {mem['experiments']} experiments x {mem['arms']} arms x "
              f"{mem['policies']} policies ({names}): RSS {mem['rss_mb']:.0f} MB at "
              f"SERVING after {mem['startup_seconds']:.1f} s", flush=True)
    return out
