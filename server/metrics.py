"""Prometheus metrics (``banditd_*``, base units), served over HTTP on --metrics-port.

Labelled children on the hot path are looked up once and cached by the caller
(``labels()`` costs a dict lookup plus a lock). The two series touched by every Select
are lock-free collectors fed from the event loop (``LoopHistogram`` for the RPC
latency, ``DecisionCounter`` for decisions): the same exposition as prometheus_client's
``Histogram`` and ``Counter``, at a fraction of the cost per observation.
"""

from __future__ import annotations

import bisect
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample

# Latency buckets from 100 µs to 1 s: Select costs ~0.1-1 ms, the budget is 120 ms.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.12, 0.25, 0.5, 1.0,
)

class _HistogramChild:
    """One label set of a ``LoopHistogram``: plain counts, no lock (see there)."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket (not cumulative); last: +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1  # le: amount <= bound
        self.sum += amount


class LoopHistogram:
    """A labelled histogram observed from the event loop only, without a lock.

    ``prometheus_client.Histogram.observe`` takes a mutex and walks the buckets in
    Python, a large share of a Select under load (benchmarks/RESULTS.md); here a
    child's ``observe`` is one C bisect and two additions. The exposition thread reads
    a copy of the counts (taken under the GIL), so a scrape may see an observation in
    a bucket before its sum — never a count that goes back. Samples are a ``Histogram``'s
    (``_bucket``, ``_count``, ``_sum``, ``_created``).
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...], registry: CollectorRegistry | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], _HistogramChild] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _HistogramChild:
        values = tuple(str(v) for v in values)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children.setdefault(values, _HistogramChild(self.bounds))
        return child

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            counts, total = list(child.counts), child.sum
            cumulative, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            family.add_metric(list(values), buckets, sum_value=total)
            family.samples.append(Sample(f"{self.name}_created",
                                         dict(zip(self.labelnames, values, strict=True)),
                                         child.created))
        yield family


def _le(bound: float) -> str:
    """The ``le`` label as prometheus_client writes it (``0.1``, ``1.0``, ``+Inf``)."""
    from prometheus_client.utils import floatToGoString

    return floatToGoString(bound)


class DecisionCounter:
    """``banditd_decisions_total{experiment, policy, arm, served_by}`` without a lock.

    The hot path counts every decision; a prometheus ``Counter`` child costs a mutex
    per ``inc`` (0.33 us, 5 % of a decision). Here the event loop adds to a plain dict
    (``inc``) and the exposition thread reads a snapshot of it at scrape time
    (``list(dict.items())`` runs under the GIL), so counts are exact and never go back.
    The samples are those of a labelled ``Counter`` (``_total`` and ``_created``).
    """

    NAME = "banditd_decisions"
    LABELS = ("experiment", "policy", "arm", "served_by")
    DOC = "Decisions served by experiment, policy, arm, served_by."

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.counts: dict[tuple[str, str, str, str], int] = {}
        self._created: dict[tuple[str, str, str, str], float] = {}
        if registry is not None:
            registry.register(self)

    def inc(self, labels: tuple[str, str, str, str], amount: int = 1) -> None:
        counts = self.counts
        n = counts.get(labels)
        if n is None:
            self._created[labels] = time.time()
            n = 0
        counts[labels] = n + amount

    def value(self, labels: tuple[str, str, str, str]) -> int:
        return self.counts.get(labels, 0)

    def describe(self):
        return [CounterMetricFamily(self.NAME, self.DOC, labels=self.LABELS)]

    def collect(self):
        family = CounterMetricFamily(self.NAME, self.DOC, labels=self.LABELS)
        created = self._created
        for labels, n in list(self.counts.items()):
            family.add_metric(labels, float(n), created=created.get(labels))
        yield family



class Metrics:
    """Every metric banditd exports, on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_seconds = LoopHistogram(
            "banditd_rpc_duration_seconds", "Server-side RPC latency by method and status code.",
            ("method", "code"), buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.decisions = DecisionCounter(r)
        self.rewards = Counter(
            "banditd_rewards_total", "Rewards by outcome status and source.",
            ("status", "source"), registry=r,
        )
        self.decision_buffer = Gauge(
            "banditd_decision_buffer_records", "Decisions waiting to be written.", registry=r,
        )
        self.flush_seconds = Histogram(
            "banditd_decision_flush_duration_seconds", "Time to write one decision batch.",
            registry=r,
        )
        self.flush_failures = Counter(
            "banditd_decision_flush_failures_total", "Failed decision-log flushes.", registry=r,
        )
        self.commit_seconds = Histogram(
            "banditd_reward_commit_duration_seconds", "Time to commit one reward group.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.commit_batch = Histogram(
            "banditd_reward_commit_batch_size", "Rewards per group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=r,
        )
        self.experiments = Gauge(
            "banditd_experiments_loaded", "Experiments held in memory.", registry=r,
        )
        self.replica_sync_lag = Histogram(
            "banditd_replica_sync_lag_seconds",
            "Time from another server's reward commit to its adoption here (from the "
            "commit's transaction time), by the path that delivered it (redis, postgres).",
            ("path",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 1.5,
                     2.0, 3.0, 5.0, 10.0, 30.0),
            registry=r,
        )
        self._redis_exposed = False
        self.redis_up = Gauge(
            "banditd_redis_up",
            "1 while this server publishes and receives committed statistics through "
            "Redis, 0 while Redis is unreachable (the PostgreSQL poll carries them).",
            registry=None,
        )
        self.redis_messages = Counter(
            "banditd_redis_messages_total",
            "Committed-statistics messages through Redis: published, received from other "
            "servers, or dropped (not published: Redis unreachable).",
            ("direction",),
            registry=None,
        )
        self.sync_lag = Gauge(
            "banditd_experiment_sync_lag_seconds",
            "Seconds since the experiment registry last synchronised with PostgreSQL.",
            registry=r,
        )

    def expose_redis(self) -> None:
        """Export the Redis series, once a server is configured with Redis: without it a
        ``banditd_redis_up 0`` would read as an outage."""
        if not self._redis_exposed:
            self.registry.register(self.redis_up)
            self.registry.register(self.redis_messages)
            self._redis_exposed = True


METRICS = Metrics()

