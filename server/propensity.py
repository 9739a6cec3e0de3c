"""Keeps Thompson sampling's cached propensities fresh, off the request path.

A Thompson kernel answers a full-candidate Select with the win probability of
the chosen arm from its cache: a Monte Carlo estimate (M = 4096 joint posterior
draws) over the statistics at the last refresh. A kernel that serves Selects with
``candidate_arms`` also keeps those M samples (as ranks: its subset cache) and
answers a subset from one of them, with the exact propensity of that mechanism.
This task re-draws the caches of kernels whose statistics changed, and builds a
subset cache a kernel asked for, every ``interval`` seconds, in a worker thread:
``refresh_propensities`` snapshots the statistics under the GIL, then draws
without it from its own generator and swaps the finished caches in, so Selects on
the event loop are not held up (at K = 1000 one refresh is ~4 M Beta draws:
0.25-0.65 s, a fifth more with a subset cache). The first caches of a
policy are built the same way, before the experiment's first decision
(``ExperimentRuntime.warm``) and before its first Select with candidates
(``ExperimentRuntime.warm_subsets``).
"""

from __future__ import annotations

import asyncio

from banditd.server.registry import Registry


class PropensityRefresher:
    def __init__(self, registry: Registry, *, interval: float = 0.25) -> None:
        self._registry = registry
        self.interval = interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for runtime in self._registry:
                for policy in runtime.policies:
                    kernel = policy.kernel
                    # Only Thompson kernels have caches; only caches that exist (built by
                    # the policy's first Select) and went stale, or subset caches asked
                    # for, need work (``refresh_due``). Warming every cache at start-up
                    # would cost M x K draws per kernel (minutes of CPU and ~8 kB each at
                    # 1,000 experiments x 1,000 arms; 8 MB each with a subset cache) for
                    # experiments that may never be called.
                    if getattr(kernel, "refresh_due", False):
                        await asyncio.to_thread(kernel.refresh_propensities)
