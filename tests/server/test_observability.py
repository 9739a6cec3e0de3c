"""Prometheus metrics over HTTP and the runbook's log lines."""

import asyncio
import urllib.request

from banditd.v1 import decision_pb2 as pb
from tests.conftest import free_port, make_experiment


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_endpoint_exports_banditd_series(migrated_db_url, start_server):
    """The registry is per process, so the test compares scrapes before and after."""
    await make_experiment(migrated_db_url)
    port = free_port()
    running = await start_server(metrics_port=port)
    before = _scrape(port)
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1.0))
    after = _scrape(port)

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("banditd_rpc_duration_seconds_count", method="Select", code="OK") == 1
    assert delta("banditd_rpc_duration_seconds_count", method="Reward", code="OK") == 1
    assert delta("banditd_decisions_total", experiment="exp", policy=decision.policy,
                 arm=decision.arm, served_by=pb.ServedBy.Name(decision.served_by)) == 1
    assert delta("banditd_rewards_total", status="applied", source="client") == 1
    names = {name for name, _ in after}
    for name in ("banditd_decision_buffer_records", "banditd_reward_commit_duration_seconds_count",
                 "banditd_experiments_loaded"):
        assert name in names


async def test_policy_updates_are_logged_to_app_log(migrated_db_url, start_server, tmp_path):
    from banditd.server import logs

    await make_experiment(migrated_db_url, policies=("ucb", "control"))
    running = await start_server()
    logs.configure(tmp_path, console=False)
    try:
        decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
        await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1.0))
        logs.flush()
        text = (tmp_path / "app.log").read_text()
    finally:
        logs.configure(None, console=False)
    assert (f"Policy {decision.policy} updated experiment=exp arm={decision.arm} pulls=1 "
            "mean=1.0000") in text


async def test_health_goes_not_serving_while_draining(migrated_db_url, start_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    running = await start_server(grace_seconds=0.5)
    health = health_pb2_grpc.HealthStub(running.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    stop_task = asyncio.ensure_future(running.server.stop())
    second = await watch.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stop_task
