"""Select and SelectBatch through a real gRPC channel to a real server and database."""

import asyncio

import grpc
import pytest

from banditd.server.database import connect
from banditd.server.experiment_store import change_status
from banditd.v1 import decision_pb2 as pb
from tests.conftest import ARMS, make_experiment, wait_for

POLICIES = {"thompson", "ucb", "egreedy", "control"}


async def test_select_fills_every_response_field(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    running = await start_server()
    reply = await running.stub.Select(
        pb.SelectRequest(experiment_id="exp", user_id="alice", context={"page": "home"})
    )
    assert reply.arm in ARMS
    assert reply.policy in POLICIES
    assert 0.0 < reply.propensity <= 1.0
    expected = pb.CONTROL if reply.policy == "control" else pb.POLICY
    assert reply.served_by == expected
    assert reply.decision_id.startswith("d")


async def test_decisions_are_logged_with_everything_guardrails_need(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    running = await start_server()
    replies = [
        await running.stub.Select(
            pb.SelectRequest(experiment_id="exp", user_id=f"u{i}", context={"i": str(i)})
        )
        for i in range(20)
    ]
    await running.server.decision_log.flush()
    conn = await connect(migrated_db_url)
    try:
        rows = {r["decision_id"]: r for r in await conn.fetch("SELECT * FROM decisions")}
    finally:
        await conn.close()
    assert set(rows) == {r.decision_id for r in replies}
    for i, reply in enumerate(replies):
        row = rows[reply.decision_id]
        assert (row["user_id"], row["policy"], row["arm"]) == (f"u{i}", reply.policy, reply.arm)
        assert row["propensity"] == pytest.approx(reply.propensity)
        assert row["served_by"] == pb.ServedBy.Name(reply.served_by)
        assert row["context"] == {"i": str(i)}
        assert row["latency_us"] >= 0
        assert row["server_id"] == running.server.server_id


async def test_calls_are_counted_for_the_error_rate_guardrail(migrated_db_url, start_server):
    """rpc_counts gets one successful Select per decision (single or batch item) and
    every refused call under its status code."""
    experiment = await make_experiment(migrated_db_url)
    running = await start_server()
    for i in range(5):
        await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
    await running.stub.SelectBatch(pb.SelectBatchRequest(requests=[
        pb.SelectRequest(experiment_id="exp", user_id=f"b{i}") for i in range(3)]))
    with pytest.raises(grpc.aio.AioRpcError):
        await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u\x00"))
    with pytest.raises(grpc.aio.AioRpcError):  # two decisions stand, the third item fails
        await running.stub.SelectBatch(pb.SelectBatchRequest(requests=[
            pb.SelectRequest(experiment_id="exp", user_id="c1"),
            pb.SelectRequest(experiment_id="exp", user_id="c2"),
            pb.SelectRequest(experiment_id="exp", user_id=""),
        ]))
    assert await running.server.decision_log.flush()
    conn = await connect(migrated_db_url)
    try:
        rows = await conn.fetch(
            "SELECT method, code, sum(calls) AS n FROM rpc_counts WHERE experiment_key = $1 "
            "GROUP BY method, code", experiment.key)
    finally:
        await conn.close()
    assert {(r["method"], r["code"]): r["n"] for r in rows} == {
        ("Select", "OK"): 10,
        ("Select", "INVALID_ARGUMENT"): 1,
        ("SelectBatch", "INVALID_ARGUMENT"): 1,
    }


async def test_every_user_keeps_their_policy(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    running = await start_server()
    users = [f"user-{i}" for i in range(40)]
    first = [await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=u))
             for u in users]
    second = [await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=u))
              for u in users]
    assert [r.policy for r in first] == [r.policy for r in second]
    assert {r.policy for r in first} == POLICIES  # 40 users reach all four quarters


async def test_traffic_split_follows_the_configuration(migrated_db_url, start_server):
    """2,000 users, traffic 50 %: the inside count is Binomial(2000, 0.5) (sd 22.4); 5 sd."""
    await make_experiment(migrated_db_url, traffic_pct=0.5)
    running = await start_server()
    requests = [pb.SelectRequest(experiment_id="exp", user_id=f"u{i}") for i in range(2000)]
    replies = []
    for start in range(0, 2000, 500):
        chunk = pb.SelectBatchRequest(requests=requests[start:start + 500])
        batch = await running.stub.SelectBatch(chunk)
        replies.extend(batch.responses)
    outside = sum(r.served_by == pb.OUTSIDE_TRAFFIC for r in replies)
    assert abs(outside - 1000) < 5 * 22.4
    assert all(r.policy == "control" for r in replies if r.served_by == pb.OUTSIDE_TRAFFIC)


async def test_candidate_subset_restricts_the_choice_and_is_logged(
    migrated_db_url, start_server
):
    await make_experiment(migrated_db_url)
    running = await start_server()
    for i in range(40):
        reply = await running.stub.Select(
            pb.SelectRequest(
                experiment_id="exp", user_id=f"u{i}", candidate_arms=["arm-3", "arm-1"]
            )
        )
        assert reply.arm in {"arm-1", "arm-3"}
        assert 0.0 < reply.propensity <= 1.0
    await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="all-arms"))
    await running.server.decision_log.flush()
    conn = await connect(migrated_db_url)
    try:
        logged = await conn.fetch("SELECT user_id, candidates FROM decisions")
    finally:
        await conn.close()
    by_user = {r["user_id"]: r["candidates"] for r in logged}
    assert by_user.pop("all-arms") is None
    assert set(map(tuple, by_user.values())) == {("arm-3", "arm-1")}


async def test_fixed_control_arm_is_served_with_propensity_one(migrated_db_url, start_server):
    await make_experiment(
        migrated_db_url, policies=("control",),
        policy_params={"control": {"default_arm": "arm-2"}},
    )
    running = await start_server()
    reply = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="bob"))
    assert (reply.arm, reply.policy, reply.served_by, reply.propensity) == (
        "arm-2", "control", pb.CONTROL, 1.0,
    )


async def test_draft_experiment_serves_control_as_stopped(migrated_db_url, start_server):
    await make_experiment(migrated_db_url, start=False)
    running = await start_server()
    reply = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="bob"))
    assert (reply.policy, reply.served_by) == ("control", pb.EXPERIMENT_STOPPED)


@pytest.mark.parametrize(("action", "served_by"),
                         [("stop", pb.EXPERIMENT_STOPPED), ("rollback", pb.ROLLED_BACK)])
async def test_stop_and_rollback_reach_the_server_within_a_second(
    migrated_db_url, start_server, action, served_by
):
    await make_experiment(migrated_db_url)
    running = await start_server(sync_interval=30.0)  # only LISTEN/NOTIFY can be this fast
    await asyncio.sleep(0.2)  # the listener connects
    conn = await connect(migrated_db_url)
    try:
        await change_status(conn, "exp", action, actor="test", reason="test")
    finally:
        await conn.close()
    loop = asyncio.get_running_loop()
    changed_at = loop.time()

    async def switched():
        reply = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="carol"))
        return reply.served_by == served_by and reply.policy == "control"

    await wait_for(switched, timeout=1.0)
    assert loop.time() - changed_at < 1.0


async def test_select_batch_equals_single_selects(migrated_db_url, start_server):
    await make_experiment(
        migrated_db_url, traffic_pct=0.6, policies=("ucb", "control"),
        policy_params={"control": {"default_arm": "arm-4"}},
    )
    running = await start_server()
    requests = [pb.SelectRequest(experiment_id="exp", user_id=f"u{i}") for i in range(100)]
    batch = await running.stub.SelectBatch(pb.SelectBatchRequest(requests=requests))
    singles = [await running.stub.Select(r) for r in requests]
    assert len(batch.responses) == len(singles)
    for b, s in zip(batch.responses, singles, strict=True):
        assert (b.policy, b.served_by) == (s.policy, s.served_by)
        if s.policy == "control" and s.served_by == pb.CONTROL:
            assert b.arm == s.arm == "arm-4"
    assert len({r.decision_id for r in batch.responses} | {r.decision_id for r in singles}) == 200


async def test_health_and_reflection_are_served(migrated_db_url, start_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    running = await start_server()
    health = health_pb2_grpc.HealthStub(running.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="banditd.v1.DecisionService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    call = reflection.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    services = set()
    async for response in call:
        services |= {s.name for s in response.list_services_response.service}
    assert "banditd.v1.DecisionService" in services



async def test_decisions_survive_a_failed_flush_and_are_written_once(migrated_db_url, start_server):
    """While the decisions table cannot be written, flushes fail and keep every row; the
    first flush after that writes each decision exactly once and counts each once."""
    experiment = await make_experiment(migrated_db_url)
    running = await start_server()
    log = running.server.decision_log
    log.interval = 3600  # only the flushes below
    conn = await connect(migrated_db_url)
    try:
        await conn.execute("ALTER TABLE decisions RENAME TO decisions_away")
        before = [await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"a{i}"))
                  for i in range(4)]
        assert not await log.flush()
        assert len(log) == 4
        during = [await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"b{i}"))
                  for i in range(3)]
        assert not await log.flush()
        assert len(log) == 7
        await conn.execute("ALTER TABLE decisions_away RENAME TO decisions")
        assert await log.flush()
        assert len(log) == 0
        logged = await conn.fetch("SELECT decision_id, user_id, decided_at FROM decisions")
        selects = await conn.fetchval(
            "SELECT sum(calls) FROM rpc_counts WHERE experiment_key = $1 AND method = 'Select' "
            "AND code = 'OK'", experiment.key)
    finally:
        await conn.close()
    assert sorted(r["decision_id"] for r in logged) == sorted(
        r.decision_id for r in before + during)
    assert selects == 7
    codec = running.server.servicer._codec
    for row in logged:  # decided_at is the time the id carries (ms) to the microsecond
        ms = codec.decode(row["decision_id"]).decided_at_ms
        assert abs(row["decided_at"].timestamp() * 1000 - ms) < 1


async def test_call_counters_alone_are_written_at_most_every_counts_interval(
        migrated_db_url, start_server):
    """With no decisions waiting, the flusher writes the call counters once per
    ``counts_interval`` (a database round trip per second, not ten); rows waiting
    take the counters along at once."""
    experiment = await make_experiment(migrated_db_url)
    running = await start_server()
    log = running.server.decision_log
    log.interval, log.counts_interval = 0.01, 3600.0
    await log.flush()  # the next counters-only write is due in an hour

    async def counted() -> int:
        conn = await connect(migrated_db_url)
        try:
            return await conn.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM rpc_counts WHERE experiment_key = $1",
                experiment.key)
        finally:
            await conn.close()

    log.count_call(experiment.key, "Reward", "INVALID_ARGUMENT")
    await asyncio.sleep(0.3)  # some 30 flusher rounds
    assert await counted() == 0
    await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    # the Select's row (counted as one Select) brings the Reward failure along
    assert await wait_for(lambda: _equals(counted(), 2))


async def _equals(value, expected) -> bool:
    return await value == expected


async def test_first_selects_wait_for_thompson_caches_built_beside_the_loop(
        migrated_db_url, start_server, monkeypatch):
    """An experiment's first Selects wait for its Thompson propensity cache, which is
    built once in a worker thread: meanwhile other experiments are served (the event
    loop is free), and the first decisions carry the cache's propensities."""
    import threading

    import numpy as np

    from banditd.server.registry import ExperimentRuntime

    await make_experiment(migrated_db_url, "warm", policies=("thompson", "control"))
    # A fixed salt fixes which of the 8 users thompson serves (not all of them go to control).
    await make_experiment(migrated_db_url, "cold", policies=("thompson", "control"),
                          salt="00c0ffee00c0ffee")
    running = await start_server()
    gate = threading.Event()
    builds: list[tuple[str, int]] = []
    build = ExperimentRuntime._build_caches

    def gated_build(runtime):
        builds.append((runtime.id, threading.get_ident()))
        gate.wait(60)
        build(runtime)

    monkeypatch.setattr(ExperimentRuntime, "_build_caches", gated_build)
    gate.set()
    await running.stub.Select(pb.SelectRequest(experiment_id="warm", user_id="u"))
    gate.clear()

    async def select_cold(user_id: str):
        return await running.stub.Select(pb.SelectRequest(experiment_id="cold", user_id=user_id))

    cold = [asyncio.create_task(select_cold(f"user-{i}")) for i in range(8)]
    try:
        await wait_for(lambda: any(name == "cold" for name, _ in builds))
        # The cold experiment's build is held at the gate: a Select elsewhere answers.
        reply = await running.stub.Select(pb.SelectRequest(experiment_id="warm", user_id="v"))
        assert reply.arm in ARMS
        assert not any(task.done() for task in cold)
    finally:
        gate.set()
    replies = await asyncio.gather(*cold)

    loop_thread = threading.get_ident()
    assert [name for name, _ in builds] == ["warm", "cold"]  # once each, 8 callers shared it
    assert all(thread != loop_thread for _, thread in builds)
    kernel = running.server.registry.get("cold").policies[0].kernel
    assert kernel.propensity_version == 0  # built before any decision, no reward since
    cache = kernel.cached_propensities()
    thompson = [r for r in replies if r.policy == "thompson"]
    assert thompson
    expected = [cache[ARMS.index(r.arm)] for r in thompson]
    assert np.array_equal([r.propensity for r in thompson], expected)


async def test_select_batch_waits_for_a_cold_experiment_too(migrated_db_url, start_server):
    await make_experiment(migrated_db_url, "cold", policies=("thompson", "control"))
    running = await start_server()
    reply = await running.stub.SelectBatch(pb.SelectBatchRequest(requests=[
        pb.SelectRequest(experiment_id="cold", user_id=f"user-{i}") for i in range(20)]))
    assert len(reply.responses) == 20
    runtime = running.server.registry.get("cold")
    assert not runtime.cold
    assert runtime.policies[0].kernel.propensity_version == 0


async def test_an_edited_experiment_keeps_its_cache_and_builds_none(
        migrated_db_url, start_server, monkeypatch):
    """A settings edit reloads the experiment into a new runtime (the change feed):
    the Thompson cache comes along, so the next Selects build nothing and wait for
    nothing, and their propensities are the cache's."""
    import numpy as np

    from banditd.server.experiment_store import update_settings
    from banditd.server.registry import ExperimentRuntime

    await make_experiment(migrated_db_url, "ramp", policies=("thompson", "control"))
    running = await start_server()
    builds: list[str] = []
    build = ExperimentRuntime._build_caches

    def counted_build(runtime):
        builds.append(runtime.id)
        build(runtime)

    monkeypatch.setattr(ExperimentRuntime, "_build_caches", counted_build)
    await running.stub.Select(pb.SelectRequest(experiment_id="ramp", user_id="u"))
    first = running.server.registry.get("ramp")
    conn = await connect(migrated_db_url)
    try:
        await update_settings(conn, "ramp", traffic_pct=0.5, actor="test")
    finally:
        await conn.close()
    await wait_for(lambda: running.server.registry.get("ramp") is not first)
    runtime = running.server.registry.get("ramp")
    assert runtime.experiment.spec.traffic_pct == 0.5 and not runtime.cold
    replies = [await running.stub.Select(pb.SelectRequest(experiment_id="ramp",
                                                           user_id=f"user-{i}"))
               for i in range(40)]
    assert builds == ["ramp"]  # the first Select's; none after the edit
    cache = runtime.policies[0].kernel.cached_propensities()
    np.testing.assert_array_equal(first.policies[0].kernel.cached_propensities(), cache)
    served = [r for r in replies if r.served_by == pb.POLICY]
    assert served  # half the traffic is in the experiment
    assert [r.propensity for r in served] == [cache[ARMS.index(r.arm)] for r in served]


async def test_first_selects_with_candidates_wait_for_the_subset_cache(
        migrated_db_url, start_server, monkeypatch):
    """An experiment's first Selects with candidate_arms wait for its Thompson subset
    cache, built once in a worker thread together with the full-set cache (one build,
    not two); every Thompson decision then logs the exact frequency of the cached
    sample mechanism (the kernel's action_distribution over the same candidates)."""
    import threading

    import numpy as np

    from banditd.server.registry import ExperimentRuntime

    await make_experiment(migrated_db_url, "movies", policies=("thompson", "control"))
    running = await start_server()
    builds: list[tuple[str, int]] = []
    full_builds: list[str] = []
    build, build_full = ExperimentRuntime._build_subset_caches, ExperimentRuntime._build_caches

    def counted(runtime):
        builds.append(("subset", threading.get_ident()))
        build(runtime)

    def counted_full(runtime):
        full_builds.append(runtime.id)
        build_full(runtime)

    monkeypatch.setattr(ExperimentRuntime, "_build_subset_caches", counted)
    monkeypatch.setattr(ExperimentRuntime, "_build_caches", counted_full)
    offered = ["arm-4", "arm-1", "arm-2"]
    replies = await asyncio.gather(*(running.stub.Select(pb.SelectRequest(
        experiment_id="movies", user_id=f"user-{i}", candidate_arms=offered))
        for i in range(30)))
    assert len(builds) == 1 and builds[0][1] != threading.get_ident()
    assert full_builds == []                # the full-set cache came from the same draws
    runtime = running.server.registry.get("movies")
    assert not runtime.cold and not runtime.subset_cold
    kernel = runtime.policies[0].kernel
    assert kernel.subset_cache_version == kernel.propensity_version == 0
    pi = kernel.action_distribution(np.array([ARMS.index(a) for a in offered], dtype=np.intp))
    thompson = [r for r in replies if r.policy == "thompson"]
    assert thompson and all(r.arm in offered for r in replies)
    assert [r.propensity for r in thompson] == [pi[ARMS.index(r.arm)] for r in thompson]
    # a full-set Select after it waits for nothing and reads the same full-set cache
    await running.stub.Select(pb.SelectRequest(experiment_id="movies", user_id="all"))
    assert full_builds == [] and len(builds) == 1


async def test_full_set_selects_never_build_a_subset_cache(migrated_db_url, start_server):
    await make_experiment(migrated_db_url, "plain", policies=("thompson", "control"))
    running = await start_server()
    for i in range(20):
        await running.stub.Select(pb.SelectRequest(experiment_id="plain", user_id=f"u{i}"))
    runtime = running.server.registry.get("plain")
    assert runtime.subset_cold               # never asked: nothing built
    assert runtime.policies[0].kernel.subset_cache_bytes == 0


async def test_an_edited_experiment_keeps_its_subset_cache(migrated_db_url, start_server):
    from banditd.server.experiment_store import update_settings

    await make_experiment(migrated_db_url, "ramp", policies=("thompson", "control"))
    running = await start_server()
    await running.stub.Select(pb.SelectRequest(
        experiment_id="ramp", user_id="u", candidate_arms=["arm-0", "arm-3"]))
    first = running.server.registry.get("ramp")
    conn = await connect(migrated_db_url)
    try:
        await update_settings(conn, "ramp", traffic_pct=0.5, actor="test")
    finally:
        await conn.close()
    await wait_for(lambda: running.server.registry.get("ramp") is not first)
    runtime = running.server.registry.get("ramp")
    assert not runtime.subset_cold
    kernel, old = runtime.policies[0].kernel, first.policies[0].kernel
    assert kernel.subset_cache_bytes == old.subset_cache_bytes > 0
    assert kernel.subset_cache_version == kernel.version
