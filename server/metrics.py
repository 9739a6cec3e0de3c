"""Prometheus metrics (``banditd_*``, base units), served over HTTP on --metrics-port.

Labelled children on the hot path are looked up once and cached by the caller
(``labels()`` costs a dict lookup plus a lock), see ``RpcMetrics.child``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets from 100 µs to 1 s: Select costs ~0.1-1 ms, the budget is 120 ms.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.12, 0.25, 0.5, 1.0,
)


class Metrics:
    """Every metric banditd exports, on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_seconds = Histogram(
            "banditd_rpc_duration_seconds", "Server-side RPC latency by method and status code.",
            ("method", "code"), buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.decisions = Counter(
            "banditd_decisions_total", "Decisions served by experiment, policy, arm, served_by.",
            ("experiment", "policy", "arm", "served_by"), registry=r,
        )
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
        self.sync_lag = Gauge(
            "banditd_experiment_sync_lag_seconds",
            "Seconds since the experiment registry last synchronised with PostgreSQL.",
            registry=r,
        )


METRICS = Metrics()
