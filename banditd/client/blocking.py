"""The blocking client, for threaded services::

    from banditd.client import Client

    with Client("localhost:50051") as banditd:
        choice = banditd.select("homepage-hero", "user-42")
        ...
        banditd.reward(choice.decision_id, 1.0)

Failures raise ``grpc.RpcError`` with the server's status and message (for example
``NOT_FOUND`` for an unknown experiment); a caller that must always answer serves its
default arm on any error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import grpc

from banditd.client import messages
from banditd.client.messages import RewardOutcome, Selection
from banditd.v1 import decision_pb2_grpc


class Client:
    """A channel to banditd and its three calls; thread-safe, reuse one per process.

    ``attempts``: tries per call on ``UNAVAILABLE`` (1-5, gRPC's retry policy);
    ``credentials``: TLS channel credentials, or None for plaintext; ``options``: more
    gRPC channel options.
    """

    def __init__(
        self,
        target: str = messages.DEFAULT_TARGET,
        *,
        attempts: int = 3,
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, object]] = (),
    ) -> None:
        self._channel = messages.open_channel(grpc, target, attempts, credentials, options)
        self._stub = decision_pb2_grpc.DecisionServiceStub(self._channel)

    def select(
        self,
        experiment_id: str,
        user_id: str,
        *,
        candidates: Iterable[str] | None = None,
        context: Mapping[str, str] | None = None,
        deadline: float = messages.SELECT_DEADLINE,
    ) -> Selection:
        """The arm ``user_id`` gets in ``experiment_id`` (among ``candidates``, if given)."""
        request = messages.select_request(experiment_id, user_id, candidates, context)
        return messages.selection(self._stub.Select(request, timeout=deadline))

    def select_batch(
        self,
        experiment_id: str,
        user_ids: Sequence[str],
        *,
        candidates: Iterable[str] | None = None,
        deadline: float = messages.SELECT_DEADLINE,
    ) -> list[Selection]:
        """One decision per user, in order, in one call."""
        request = messages.select_batch_request(experiment_id, user_ids, candidates)
        return messages.selections(self._stub.SelectBatch(request, timeout=deadline))

    def reward(
        self,
        decision_id: str,
        value: float,
        *,
        event_time: datetime | None = None,
        deadline: float = messages.REWARD_DEADLINE,
    ) -> RewardOutcome:
        """Report a decision's outcome; returns once it is durable on the server."""
        request = messages.reward_request(decision_id, value, event_time)
        return messages.reward_outcome(self._stub.Reward(request, timeout=deadline))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
