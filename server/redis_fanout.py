"""Committed statistics reach every other server within milliseconds, through Redis.

After each group commit a server publishes the ``arm_stats`` rows the commit wrote —
absolute values, the cells of ``banditd.server.arm_cells`` — on its deployment's
pub/sub channel, and every other server adopts them on arrival. Pub/sub delivers at
most once and only to connected subscribers, which is enough because a cell is
absolute: a lost message is superseded by the next one for the same arm or caught by
the PostgreSQL poll (``banditd.server.replica_sync``, which keeps running), a repeated
or late one is behind memory and ignored.

Nothing a call waits for touches Redis: Select never does, and a Reward is
acknowledged before its cells are queued here; a publisher task sends whatever is
queued in one pipeline. When Redis goes away the server logs it once, sets
``banditd_redis_up 0``, drops what it would have published (the poll carries it) and
reconnects with back-off; it logs once more and sets 1 when Redis is back.

The channel is ``banditd:<deployment>:arm_stats``, where the deployment is a keyed
digest of the oldest decision-id signing key: the servers that accept each other's
decision ids are the ones that must share statistics, so two deployments on one
Redis never adopt each other's cells, and the digest reveals nothing of the key.

A message is ``{"origin": <random id of the sender>, "at": <the commit transaction's
time, Unix seconds>, "cells": [[experiment_key, policy, arm, pulls, reward_sum,
reward_sum_sq], ...]}``; the adoption lag is observed from ``at`` on the receiver's
clock (hosts' clocks are assumed NTP-synchronised to well under the lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time

import redis.asyncio as redis
from redis.exceptions import RedisError

from banditd.server.arm_cells import adopt_cells
from banditd.server.metrics import METRICS
from banditd.server.registry import Registry

log = logging.getLogger("banditd.app")

_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.5, 10.0
# Messages queued for one pipeline at most: beyond that the oldest are superseded by
# newer cells anyway, and the queue must not grow while the publisher is stuck.
_MAX_QUEUED = 10_000


_SCHEMES = ("redis", "rediss", "unix")


def check_redis_url(url: str) -> None:
    """Raise ValueError unless ``url`` is a Redis URL redis-py can connect with."""
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in _SCHEMES:
        raise ValueError(f"{url!r} is not a Redis URL: use redis://host:6379/0, "
                         "rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock")


def deployment_channel(signing_keys: dict[int, bytes]) -> str:
    """The pub/sub channel of the deployment whose servers hold ``signing_keys``."""
    oldest = signing_keys[min(signing_keys)]
    digest = hashlib.blake2b(b"arm_stats channel", key=oldest[:64], digest_size=8).hexdigest()
    return f"banditd:{digest}:arm_stats"


class RedisFanout:
    """Publishes this server's committed cells and adopts everyone else's."""

    def __init__(self, url: str, registry: Registry, channel: str) -> None:
        self._url = url
        self._registry = registry
        self.channel = channel
        self._origin = secrets.token_hex(8)
        self._origin_json = json.dumps(self._origin)
        self._queued: list[str] = []
        self._wakeup = asyncio.Event()
        self.up = False
        self._lag = METRICS.replica_sync_lag.labels("redis")
        self._published = METRICS.redis_messages.labels("published")
        self._received = METRICS.redis_messages.labels("received")
        self._dropped = METRICS.redis_messages.labels("dropped")
        METRICS.expose_redis()
        METRICS.redis_up.set(0)

    def publish(self, cells_json: str, committed_at: float) -> None:
        """Queue one commit's cells (JSON text as the database wrote it); never blocks."""
        if not self.up or len(self._queued) >= _MAX_QUEUED:
            self._dropped.inc()
            return
        self._queued.append(
            f'{{"origin":{self._origin_json},"at":{committed_at!r},"cells":{cells_json}}}'
        )
        self._wakeup.set()

    async def run(self) -> None:
        """Stay connected (reconnecting with back-off) until cancelled."""
        backoff = _BACKOFF_FIRST_S
        first = True
        while True:
            client = redis.from_url(self._url, socket_connect_timeout=2.0,
                                    health_check_interval=5)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._set_up(True, first=first)
                    backoff = _BACKOFF_FIRST_S
                    await _first_failure(self._publish_loop(client), self._receive_loop(pubsub))
            except (RedisError, OSError) as exc:
                self._set_up(False, first=first, reason=exc)
            finally:
                first = False
                with contextlib.suppress(RedisError, OSError):
                    await asyncio.shield(client.aclose())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _set_up(self, up: bool, *, first: bool, reason: Exception | None = None) -> None:
        if up and not self.up:
            log.info("Redis %s: committed statistics fan out on %s",
                     "connected" if first else "reachable again", self.channel)
        elif not up and (self.up or first):
            log.warning("Redis unreachable (%s): committed statistics reach the other "
                        "servers through the PostgreSQL poll until it is back", reason)
        self.up = up
        METRICS.redis_up.set(1 if up else 0)
        if not up and self._queued:
            self._dropped.inc(len(self._queued))
            self._queued = []

    async def _publish_loop(self, client) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queued = self._queued, []
            if not batch:
                continue
            async with client.pipeline(transaction=False) as pipe:
                for payload in batch:
                    pipe.publish(self.channel, payload)
                await pipe.execute()
            self._published.inc(len(batch))

    async def _receive_loop(self, pubsub) -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                self._adopt(message["data"])

    def _adopt(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if message["origin"] == self._origin:
                return
            self._received.inc()
            lag = max(0.0, time.time() - float(message["at"]))
            adopt_cells(self._registry, message["cells"], lambda _cell: self._lag.observe(lag))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("ignored a malformed message on %s: %s", self.channel, exc)


async def _first_failure(*coroutines) -> None:
    """Run ``coroutines`` until one of them fails; cancel the rest and raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
