"""The embedded PostgreSQL default: no --database-url, everything under --data-dir."""

import asyncio
import json
import subprocess
import sys
import tempfile

import grpc
import pytest

from banditd.v1 import decision_pb2 as pb
from banditd.v1 import decision_pb2_grpc

pytestmark = pytest.mark.embedded


def banditctl(data_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "banditd.admin_cli.main", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120,
    )


async def test_serve_and_banditctl_share_the_embedded_database(server_process):
    # A short path: PostgreSQL's Unix socket lives in the data dir.
    with tempfile.TemporaryDirectory(prefix="bd-", dir="/tmp") as data_dir:
        proc = server_process(None, "--data-dir", data_dir, "--create-demo")
        proc.wait_serving(timeout=120)
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            decision = await stub.Select(pb.SelectRequest(experiment_id="demo", user_id="alice"))
            reward = await stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1))
        assert reward.status == pb.APPLIED

        listed = banditctl(data_dir, "experiment", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [e["id"] for e in json.loads(listed.stdout)] == ["demo"]

        stopped = banditctl(data_dir, "experiment", "stop", "demo", "--reason", "test")
        assert stopped.returncode == 0, stopped.stderr
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = decision_pb2_grpc.DecisionServiceStub(channel)
            for _ in range(50):
                reply = await stub.Select(pb.SelectRequest(experiment_id="demo", user_id="bob"))
                if reply.served_by == pb.EXPERIMENT_STOPPED:
                    break
                await asyncio.sleep(0.05)
        assert reply.served_by == pb.EXPERIMENT_STOPPED
        assert proc.terminate() == 0
