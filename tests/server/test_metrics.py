"""The lock-free hot-path metrics expose exactly what prometheus_client's would."""

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from banditd.server.metrics import _LATENCY_BUCKETS, DecisionCounter, LoopHistogram


def _without_created(text: str) -> str:
    return re.sub(r"^\S+_created\{.*\n", "", text, flags=re.M)


@pytest.mark.parametrize("values", [
    [0.0001, 0.00025, 0.12, 1.0, 5.0],            # exactly on bucket bounds (le: <=)
    [0.0, 0.00009999, 0.0001001, 0.11999, 2.5e-3, 7.0],
])
def test_loop_histogram_matches_prometheus_histogram(values):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopHistogram("x_seconds", "doc", ("method", "code"), _LATENCY_BUCKETS, ours)
    reference = Histogram("x_seconds", "doc", ("method", "code"), buckets=_LATENCY_BUCKETS,
                          registry=theirs)
    for v in values:
        for labels in (("Select", "OK"), ("Reward", "UNAVAILABLE")):
            mine.labels(*labels).observe(v)
            reference.labels(*labels).observe(v)
    assert _without_created(generate_latest(ours).decode()) == _without_created(
        generate_latest(theirs).decode())
    assert 'x_seconds_created{code="OK",method="Select"}' in generate_latest(ours).decode()


def test_loop_histogram_checks_the_label_count():
    with pytest.raises(ValueError, match="takes labels"):
        LoopHistogram("y_seconds", "doc", ("method", "code"), (1.0,)).labels("Select")


def test_decision_counter_matches_prometheus_counter():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = DecisionCounter(ours)
    reference = Counter("banditd_decisions_total", DecisionCounter.DOC, DecisionCounter.LABELS,
                        registry=theirs)
    for labels in [("exp", "ucb", "a", "POLICY")] * 3 + [("exp", "control", "b", "CONTROL")]:
        mine.inc(labels)
        reference.labels(*labels).inc()
    assert mine.value(("exp", "ucb", "a", "POLICY")) == 3
    assert _without_created(generate_latest(ours).decode()) == _without_created(
        generate_latest(theirs).decode())
