"""The load benchmark's client: closed- and open-loop gRPC drivers (grpc.aio).

Requests are serialised once up front and sent as raw bytes over ``unary_unary``
multi-callables without (de)serialisers, so the client spends no protobuf time per
call and the same bytes go to banditd and to the floor.

* ``closed_loop``: C callers, each sending its next request as soon as its previous
  answer arrived — finds the maximum throughput; latency is per call.
* ``open_loop``: requests at a constant target rate (wrk2-style schedule
  ``t_i = t_0 + i / rate``), each latency measured from the request's *intended* send
  time ``t_i``, so a server (or client) that falls behind shows its queueing instead
  of hiding it (no coordinated omission). The dispatcher's own lateness (``send_lag``)
  is reported beside it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

SERVICE = "/banditd.v1.DecisionService/"
# Raise the per-connection stream limit so C callers never queue inside the client.
CHANNEL_OPTIONS = (("grpc.max_concurrent_streams", 10_000), ("grpc.use_local_subchannel_pool", 1))


@dataclass
class RunResult:
    """Completions in the measured window and their latencies (seconds)."""

    seconds: float
    latencies: np.ndarray
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    send_lag: np.ndarray | None = None

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds > 0 else 0.0

    def summary(self, per_call: int = 1) -> dict:
        lat_ms = self.latencies * 1e3
        out = {
            "calls": len(self.latencies),
            "seconds": round(self.seconds, 3),
            "qps": round(self.qps, 1),
            "errors": self.errors,
        }
        if per_call != 1:
            out["items_per_s"] = round(self.qps * per_call, 1)
        if len(lat_ms):
            for q in (50, 90, 95, 99, 99.9):
                out[f"p{q:g}_ms"] = round(float(np.percentile(lat_ms, q)), 4)
            out["mean_ms"] = round(float(lat_ms.mean()), 4)
            out["max_ms"] = round(float(lat_ms.max()), 4)
        if self.error_codes:
            out["error_codes"] = dict(self.error_codes)
        if self.send_lag is not None and len(self.send_lag):
            lag_ms = self.send_lag * 1e3
            out["send_lag_p50_ms"] = round(float(np.percentile(lag_ms, 50)), 4)
            out["send_lag_p99_ms"] = round(float(np.percentile(lag_ms, 99)), 4)
        return out


def merge(results: Sequence[RunResult]) -> RunResult:
    """Pool repeated runs of one phase (latency samples concatenated)."""
    lags = [r.send_lag for r in results if r.send_lag is not None]
    codes: dict[str, int] = {}
    for r in results:
        for code, n in r.error_codes.items():
            codes[code] = codes.get(code, 0) + n
    return RunResult(
        sum(r.seconds for r in results),
        np.concatenate([r.latencies for r in results]),
        sum(r.errors for r in results),
        codes,
        np.concatenate(lags) if lags else None,
    )


class Target:
    """Raw-bytes callables for one server address."""

    def __init__(self, address: str, channels: int = 1) -> None:
        self.address = address
        self.channels = [
            grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(channels)
        ]

    @classmethod
    def over(cls, addresses: Sequence[str]) -> Target:
        """One channel to each of ``addresses``: caller ``i`` calls server ``i mod n``."""
        target = cls(addresses[0], 0)
        target.address = ",".join(addresses)
        target.channels = [grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS)
                           for a in addresses]
        return target

    def method(self, name: str, index: int = 0):
        return self.channels[index % len(self.channels)].unary_unary(SERVICE + name)

    async def ready(self, timeout: float = 10.0) -> None:
        for channel in self.channels:
            await asyncio.wait_for(channel.channel_ready(), timeout)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def _note_error(result_codes: dict[str, int], exc: grpc.RpcError) -> None:
    code = exc.code().name if hasattr(exc, "code") else type(exc).__name__
    result_codes[code] = result_codes.get(code, 0) + 1


async def closed_loop(
    target: Target,
    method: str,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration: float,
    warmup: float = 0.5,
    max_calls: int | None = None,
) -> RunResult:
    """C callers as fast as possible for ``warmup + duration`` seconds (or until
    ``max_calls`` requests were sent, each request used once: Reward ids)."""
    calls = [target.method(method, i) for i in range(len(target.channels))]
    n_req = len(requests)
    counter = iter(range(max_calls if max_calls is not None else 1 << 62))
    latencies: list[float] = []
    codes: dict[str, int] = {}
    errors = 0
    clock = time.perf_counter
    start = clock()
    window_start = start + warmup
    end = window_start + duration
    done_at = [end]

    async def caller(worker: int) -> None:
        nonlocal errors
        call = calls[worker % len(calls)]
        record = latencies.append
        for i in counter:
            t = clock()
            if t >= end:
                return
            try:
                await call(requests[i % n_req])
            except grpc.RpcError as exc:
                if t >= window_start:
                    errors += 1
                    _note_error(codes, exc)
                continue
            if t >= window_start:
                record(clock() - t)
        done_at[0] = min(done_at[0], clock())  # ran out of requests

    await asyncio.gather(*(caller(w) for w in range(concurrency)))
    seconds = max(1e-9, min(done_at[0], end) - window_start)
    return RunResult(seconds, np.asarray(latencies), errors, codes)


async def open_loop(
    target: Target,
    method: str,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration: float,
    warmup: float = 0.5,
    max_in_flight: int = 20_000,
) -> RunResult:
    """Send at ``rate``/s on a fixed schedule; latency from each intended send time.

    Calls that would exceed ``max_in_flight`` are not sent and count as errors
    (``CLIENT_OVERLOAD``) — the server is then far past saturation anyway.

    The client's cyclic garbage collector is off while it sends (and the heap collected
    just before): a full collection stops the client's event loop, every reply waiting
    meanwhile shows the stall as latency, and it lands on whichever server is being
    measured at the time — a tail of the client's, not the server's. Each call's
    objects are freed by reference counting; the cycles a phase leaves are collected
    when the collector is back on.
    """
    calls = [target.method(method, i) for i in range(len(target.channels))]
    n_calls = len(calls)
    n_req = len(requests)
    interval = 1.0 / rate
    total = int(rate * (warmup + duration))
    first_measured = int(rate * warmup)
    latencies: list[float] = []
    lags: list[float] = []
    codes: dict[str, int] = {}
    errors = 0
    in_flight = 0
    clock = time.perf_counter
    tasks: set[asyncio.Task] = set()

    async def one(i: int, intended: float) -> None:
        nonlocal errors, in_flight
        sent = clock()
        try:
            await calls[i % n_calls](requests[i % n_req])
        except grpc.RpcError as exc:
            if i >= first_measured:
                errors += 1
                _note_error(codes, exc)
            return
        finally:
            in_flight -= 1
        if i >= first_measured:
            latencies.append(clock() - intended)
            lags.append(sent - intended)

    gc.collect()
    gc.disable()
    try:
        t0 = clock() + 0.005
        i = 0
        create_task = asyncio.get_running_loop().create_task
        while i < total:
            now = clock()
            while i < total and t0 + i * interval <= now:
                if in_flight >= max_in_flight:
                    if i >= first_measured:
                        errors += 1
                        codes["CLIENT_OVERLOAD"] = codes.get("CLIENT_OVERLOAD", 0) + 1
                else:
                    in_flight += 1
                    task = create_task(one(i, t0 + i * interval))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, t0 + i * interval - clock()))
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        gc.enable()
    return RunResult(duration, np.asarray(latencies), errors, codes, np.asarray(lags))
