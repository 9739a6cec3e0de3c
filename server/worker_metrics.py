"""One Prometheus endpoint for all workers: the supervisor scrapes and merges them.

Each worker keeps its own registry, on the hot path exactly as a single server does,
and serves it on a private loopback port. At every scrape of the public endpoint the
supervisor reads each worker's exposition (``prometheus_client.parser``) and merges:

- counters, histograms and summaries: samples with the same name and labels are
  summed (a worker's ``_created`` is a timestamp: the earliest is kept), so a rate
  over the merged series is the server's rate;
- gauges (and any other type) are per worker: each sample gets a ``worker`` label
  (the decision buffer's depth, the sync lag, the loaded experiments are one worker's
  facts).

A worker that does not answer within the scrape timeout is left out of that scrape;
``banditd_workers_scraped`` says how many answered.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

_TIMEOUT = 2.0
_SUMMED = ("counter", "histogram", "summary")


def _scrape(port: int) -> list[Metric]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=_TIMEOUT) as reply:
        return list(text_string_to_metric_families(reply.read().decode()))


def merge(per_worker: Iterable[tuple[int, list[Metric]]]) -> list[Metric]:
    """The merged families of ``(worker index, families)`` pairs (module docstring)."""
    merged: dict[str, Metric] = {}
    sums: dict[str, dict[tuple, float]] = {}
    for worker, families in per_worker:
        for family in families:
            out = merged.setdefault(family.name,
                                    Metric(family.name, family.documentation, family.type))
            if family.type not in _SUMMED:
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "worker": str(worker)},
                                   sample.value)
                continue
            totals = sums.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if sample.name.endswith("_created"):
                    totals[key] = min(totals.get(key, sample.value), sample.value)
                else:
                    totals[key] = totals.get(key, 0.0) + sample.value
    for name, totals in sums.items():
        for (sample_name, labels), value in totals.items():
            merged[name].add_sample(sample_name, dict(labels), value)
    return list(merged.values())


class MergedWorkerMetrics:
    """A collector yielding the merge of every worker ``ports()`` lists."""

    def __init__(self, ports: Callable[[], list[tuple[int, int]]]) -> None:
        self._ports = ports

    def collect(self):
        scraped = []
        for worker, port in self._ports():
            try:
                scraped.append((worker, _scrape(port)))
            except OSError:
                continue  # restarting or stuck: this scrape goes without it
        yield from merge(scraped)
        answered = GaugeMetricFamily("banditd_workers_scraped",
                                     "Workers whose metrics this scrape merged.")
        answered.add_metric([], len(scraped))
        yield answered


def serve_merged_metrics(host: str, port: int, ports: Callable[[], list[tuple[int, int]]]):
    """Serve the merged metrics on ``host:port`` in a thread; the server (``shutdown()``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedWorkerMetrics(ports))
    httpd, _thread = start_http_server(port, host, registry)
    return httpd
