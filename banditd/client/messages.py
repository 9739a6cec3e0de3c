"""What the client sends and returns, shared by the blocking and the asyncio client.

Requests are built here and answers turned into plain frozen dataclasses, so a caller
never handles protobuf objects. ``service_config.json`` beside this module is the
channel's gRPC service config, the one file for clients in every language:
``round_robin`` over the addresses a name resolves to, and calls that fail with
``UNAVAILABLE`` (no server there yet, a server draining or starting, a connection lost
before the call reached it) retried by gRPC itself with exponential back-off, inside
the call's deadline. Retrying is safe for both methods: banditd answers
``UNAVAILABLE`` only for a call it did not carry out, and ``Reward`` is idempotent by
decision id (a repeat answers ``DUPLICATE``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Literal

from banditd.v1 import decision_pb2 as pb

DEFAULT_TARGET = "localhost:50051"
#: Select's default deadline: the decision budget's outer limit.
SELECT_DEADLINE = 0.12
#: Reward's default deadline: a reward is acknowledged once durable, one group commit.
REWARD_DEADLINE = 2.0


def service_config(attempts: int) -> str:
    """``service_config.json`` (the config every client should use: ``round_robin``
    over the addresses a name resolves to, and the retry policy) with ``attempts``
    tries per call."""
    if not 1 <= attempts <= 5:  # gRPC caps maxAttempts at 5
        raise ValueError(f"attempts must be in [1, 5], got {attempts!r}")
    config = json.loads(resources.files(__package__).joinpath("service_config.json").read_text())
    for method in config["methodConfig"]:
        if attempts == 1:
            del method["retryPolicy"]
        else:
            method["retryPolicy"]["maxAttempts"] = attempts
    return json.dumps(config)


def channel_options(attempts: int, extra: Iterable[tuple[str, object]] = ()) -> list:
    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config(attempts)),
            *extra]


def open_channel(api, target: str, attempts: int, credentials, options):
    """A channel of ``api`` (``grpc`` or ``grpc.aio``, whose channel constructors take
    the same arguments) with :func:`channel_options`; TLS when ``credentials`` is given."""
    opts = channel_options(attempts, options)
    if credentials is not None:
        return api.secure_channel(target, credentials, options=opts)
    return api.insecure_channel(target, options=opts)


@dataclass(frozen=True, slots=True)
class Selection:
    """One decision: the arm, the id to reward it by, and how it was chosen."""

    decision_id: str
    arm: str
    policy: str
    propensity: float
    served_by: str  # a ServedBy name: POLICY, CONTROL, OUTSIDE_TRAFFIC, ...


RewardOutcome = Literal["applied", "duplicate"]


def select_request(
    experiment_id: str,
    user_id: str,
    candidates: Iterable[str] | None = None,
    context: Mapping[str, str] | None = None,
) -> pb.SelectRequest:
    return pb.SelectRequest(experiment_id=experiment_id, user_id=user_id,
                            candidate_arms=list(candidates or ()), context=dict(context or {}))


def selection(response: pb.SelectResponse) -> Selection:
    return Selection(decision_id=response.decision_id, arm=response.arm,
                     policy=response.policy, propensity=response.propensity,
                     served_by=pb.ServedBy.Name(response.served_by))


def select_batch_request(experiment_id: str, user_ids: Iterable[str],
                         candidates: Iterable[str] | None = None) -> pb.SelectBatchRequest:
    arms = list(candidates or ())
    return pb.SelectBatchRequest(requests=[
        select_request(experiment_id, user, arms) for user in user_ids])


def selections(response: pb.SelectBatchResponse) -> list[Selection]:
    return [selection(r) for r in response.responses]


def reward_request(decision_id: str, value: float,
                   event_time: datetime | None = None) -> pb.RewardRequest:
    request = pb.RewardRequest(decision_id=decision_id, value=value)
    if event_time is not None:
        if event_time.tzinfo is None:
            raise ValueError("event_time must be timezone-aware (for example datetime.now(UTC))")
        request.event_time.FromDatetime(event_time)
    return request


def reward_outcome(response: pb.RewardResponse) -> RewardOutcome:
    return "duplicate" if response.status == pb.DUPLICATE else "applied"
