"""The load benchmark's floor: ``banditd.v1.DecisionService`` with empty handlers.

``python -m benchmarks.load_floor --port P`` serves the same service on a plain
``grpc.aio`` server (same defaults as banditd's: ``grpc.aio.server()``, insecure
port, health service) whose handlers return canned responses of the same sizes as
banditd's: a 53-char decision id, an arm name, a policy name, a propensity and a
served_by; a SelectBatch answer with one canned response per request; Reward answers
APPLIED. Requests are still parsed and responses serialised by the generated stubs, so
the floor is exactly "what Python gRPC costs" for these messages, with no banditd work.
It prints ``READY <port>`` on stdout once serving and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from banditd.v1 import decision_pb2, decision_pb2_grpc

# Same shape as banditd's answers: ``d`` + base64url of 38 bytes (see banditd.server.decision_id).
CANNED_DECISION_ID = "d" + "A" * 52


def canned_select(arm: str = "arm-3") -> decision_pb2.SelectResponse:
    return decision_pb2.SelectResponse(
        decision_id=CANNED_DECISION_ID, arm=arm, policy="thompson", propensity=0.1234567,
        served_by=decision_pb2.POLICY,
    )


class FloorServicer(decision_pb2_grpc.DecisionServiceServicer):
    """Canned answers: the cost of the RPC itself and nothing else."""

    def __init__(self) -> None:
        self._select = canned_select()
        self._reward = decision_pb2.RewardResponse(status=decision_pb2.APPLIED)
        self._batches: dict[int, decision_pb2.SelectBatchResponse] = {}

    async def Select(self, request, context):
        return self._select

    async def SelectBatch(self, request, context):
        n = len(request.requests)
        response = self._batches.get(n)
        if response is None:
            response = decision_pb2.SelectBatchResponse(responses=[self._select] * n)
            self._batches[n] = response
        return response

    async def Reward(self, request, context):
        return self._reward


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(FloorServicer(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot bind {host}:{port}")
    await server.start()
    # Configured like banditd (``banditd.server.app._freeze_startup_objects``): start-up objects
    # out of the cyclic GC's reach, so that a full collection costs the floor no more
    # than it costs banditd.
    gc.collect()
    gc.freeze()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"READY {bound}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
