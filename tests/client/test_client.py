"""``banditd.client`` against a real server, and its retry and deadline policy
against a scripted one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc
import pytest

from banditd.client import AsyncClient, Client
from banditd.client.messages import service_config
from banditd.v1 import decision_pb2 as pb
from tests.conftest import ARMS, make_experiment


async def test_blocking_client_selects_and_rewards_once(start_server, migrated_db_url):
    await make_experiment(migrated_db_url, "exp")
    running = await start_server()
    with Client(f"127.0.0.1:{running.server.port}") as client:
        choice = await asyncio.to_thread(client.select, "exp", "u1", deadline=5)
        assert choice.arm in ARMS and 0 < choice.propensity <= 1
        assert choice.served_by in ("POLICY", "CONTROL")
        again = await asyncio.to_thread(client.select, "exp", "u1", candidates=["arm-1"],
                                        context={"page": "home"}, deadline=5)
        assert again.arm == "arm-1" and again.policy == choice.policy  # same user, same policy
        batch = await asyncio.to_thread(client.select_batch, "exp", ["u2", "u3"], deadline=5)
        assert len(batch) == 2 and len({b.decision_id for b in batch}) == 2
        first = await asyncio.to_thread(client.reward, choice.decision_id, 1.0,
                                        event_time=datetime.now(UTC))
        second = await asyncio.to_thread(client.reward, choice.decision_id, 1.0)
        assert (first, second) == ("applied", "duplicate")
        with pytest.raises(grpc.RpcError) as err:
            await asyncio.to_thread(client.select, "nope", "u1", deadline=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_async_client_selects_and_rewards(start_server, migrated_db_url):
    await make_experiment(migrated_db_url, "exp")
    running = await start_server()
    async with AsyncClient(f"127.0.0.1:{running.server.port}") as client:
        choice = await client.select("exp", "u1", deadline=5)
        [batched] = await client.select_batch("exp", ["u1"], deadline=5)
        assert batched.policy == choice.policy
        assert await client.reward(choice.decision_id, 0.0) == "applied"
        assert await client.reward(choice.decision_id, 0.0) == "duplicate"
        with pytest.raises(grpc.RpcError) as err:
            await client.reward("not-an-id", 1.0)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_arguments_are_refused_before_any_call():
    with pytest.raises(ValueError, match="timezone-aware"):
        Client("127.0.0.1:1").reward("d", 1.0, event_time=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match=r"attempts must be in \[1, 5\]"):
        service_config(6)


class ScriptedServer:
    """A DecisionService whose Reward fails with ``codes`` in turn, then answers
    APPLIED after ``delay`` seconds; ``calls`` counts the attempts it saw."""

    def __init__(self, codes: list[grpc.StatusCode], delay: float = 0.0) -> None:
        self.codes = list(codes)
        self.delay = delay
        self.calls = 0

    async def reward(self, request: bytes, context) -> bytes:
        self.calls += 1
        if self.codes:
            await context.abort(self.codes.pop(0), "scripted failure")
        await asyncio.sleep(self.delay)
        return pb.RewardResponse(status=pb.APPLIED).SerializeToString()

    async def __aenter__(self) -> str:
        self.server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self.reward)
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "banditd.v1.DecisionService", {"Reward": handler})])
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{port}"

    async def __aexit__(self, *exc) -> None:
        await self.server.stop(0)


async def test_unavailable_is_retried_within_the_attempts():
    scripted = ScriptedServer([grpc.StatusCode.UNAVAILABLE] * 2)
    async with scripted as address, AsyncClient(address, attempts=3) as client:
        assert await client.reward("d", 1.0) == "applied"
    assert scripted.calls == 3


async def test_retries_stop_at_the_attempts():
    scripted = ScriptedServer([grpc.StatusCode.UNAVAILABLE] * 3)
    async with scripted as address, AsyncClient(address, attempts=2) as client:
        with pytest.raises(grpc.RpcError) as err:
            await client.reward("d", 1.0)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and scripted.calls == 2


async def test_other_failures_are_not_retried():
    scripted = ScriptedServer([grpc.StatusCode.INVALID_ARGUMENT])
    async with scripted as address, AsyncClient(address) as client:
        with pytest.raises(grpc.RpcError) as err:
            await client.reward("d", 1.0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and scripted.calls == 1


async def test_the_deadline_bounds_the_call():
    scripted = ScriptedServer([], delay=2.0)
    async with scripted as address, AsyncClient(address) as client:
        with pytest.raises(grpc.RpcError) as err:
            await client.reward("d", 1.0, deadline=0.05)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
