"""banditd's Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Installed by the ``banditd-client`` distribution (grpcio and protobuf only) and, with
the same files, by ``banditd`` itself. The generated stubs it uses are
``banditd.v1.decision_pb2`` and ``decision_pb2_grpc``, typed by their ``.pyi``;
``banditd/v1/decision.proto`` is installed beside them.
"""

from __future__ import annotations

from banditd.client.aio import AsyncClient
from banditd.client.blocking import Client
from banditd.client.messages import RewardOutcome, Selection

__all__ = ["AsyncClient", "Client", "RewardOutcome", "Selection"]
