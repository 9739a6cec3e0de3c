"""Keeps Thompson sampling's cached propensities fresh, off the request path.

A Thompson kernel answers a full-candidate Select with the win probability of
the chosen arm from its cache: a Monte Carlo estimate (M = 4096 joint posterior
draws) over the statistics at the last refresh. This task re-estimates the
caches of kernels whose statistics changed, every ``interval`` seconds, in a
worker thread: ``refresh_propensities`` snapshots the statistics under the GIL,
then draws without it from its own generator, so Selects on the event loop are
not held up (at K = 1000 one refresh is ~4 M Beta draws, ~0.1 s).
"""

from __future__ import annotations

import asyncio

from server.registry import Registry


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
                    # Only Thompson kernels have a cache, and only changed ones need work:
                    # a thread hand-off per idle kernel would cost thousands of hops a
                    # second with many experiments.
                    if getattr(kernel, "propensity_version", kernel.version) != kernel.version:
                        await asyncio.to_thread(kernel.refresh_propensities)
