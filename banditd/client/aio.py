"""The asyncio client (``grpc.aio``), for asyncio services::

    from banditd.client import AsyncClient

    async with AsyncClient("localhost:50051") as banditd:
        choice = await banditd.select("homepage-hero", "user-42")
        await banditd.reward(choice.decision_id, 1.0)

The same calls, defaults and errors as :class:`banditd.client.Client`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import grpc

from banditd.client import messages
from banditd.client.messages import RewardOutcome, Selection
from banditd.v1 import decision_pb2_grpc


class AsyncClient:
    """A ``grpc.aio`` channel to banditd; create it inside the event loop that uses it."""

    def __init__(
        self,
        target: str = messages.DEFAULT_TARGET,
        *,
        attempts: int = 3,
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, object]] = (),
    ) -> None:
        self._channel = messages.open_channel(grpc.aio, target, attempts, credentials, options)
        self._stub = decision_pb2_grpc.DecisionServiceStub(self._channel)

    async def select(
        self,
        experiment_id: str,
        user_id: str,
        *,
        candidates: Iterable[str] | None = None,
        context: Mapping[str, str] | None = None,
        deadline: float = messages.SELECT_DEADLINE,
    ) -> Selection:
        request = messages.select_request(experiment_id, user_id, candidates, context)
        return messages.selection(await self._stub.Select(request, timeout=deadline))

    async def select_batch(
        self,
        experiment_id: str,
        user_ids: Sequence[str],
        *,
        candidates: Iterable[str] | None = None,
        deadline: float = messages.SELECT_DEADLINE,
    ) -> list[Selection]:
        request = messages.select_batch_request(experiment_id, user_ids, candidates)
        return messages.selections(await self._stub.SelectBatch(request, timeout=deadline))

    async def reward(
        self,
        decision_id: str,
        value: float,
        *,
        event_time: datetime | None = None,
        deadline: float = messages.REWARD_DEADLINE,
    ) -> RewardOutcome:
        request = messages.reward_request(decision_id, value, event_time)
        return messages.reward_outcome(await self._stub.Reward(request, timeout=deadline))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
