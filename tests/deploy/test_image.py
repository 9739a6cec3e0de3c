"""The image, built and run outside a container: the wheel a fresh clone builds (the
build stage's ``pip wheel``, shared with test_packaging), installed by the runtime
stage's own ``pip install`` line into a clean venv whose PATH has no compiler, then the
three containers of the Kubernetes base run from it with the environment the kubelet
would give them: the migrate Job, a server pod (two workers, from its CPU limit) and
the scheduler, against a real PostgreSQL.

What differs from a container, on purpose: paths the image or the pod name
(/var/log/banditd, /var/lib/banditd) live under a temporary directory, and the ports are
free ones rather than 50051/9095, which a developer's `make serve` may hold.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from fnmatch import fnmatch
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banditd.server.database import connect
from banditd.v1 import decision_pb2, decision_pb2_grpc
from tests.conftest import REDIS_URL, free_port, make_experiment, wait_for
from tests.deploy import dockerfile
from tests.deploy.manifests import container, container_env, cpu_cores, find, pod_template

pytestmark = pytest.mark.slow

COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make")
POD_NAME = "banditd-7d9f-abcde"


def _runtime() -> dockerfile.Stage:
    return dockerfile.stages()[-1]


def _clean_path_env(venv: Path, home: Path) -> dict[str, str]:
    """The base of the image's environment: its interpreter's bin and nothing else on
    PATH (python:*-slim has no compiler), and this machine's pip settings to reach the
    package index; :class:`Pod` adds the runtime stage's ENV and the container's env."""
    env = {key: value for key, value in os.environ.items() if key.startswith("PIP_")}
    env.update(PATH=str(venv / "bin"), HOME=str(home), LANG="C.UTF-8")
    return env


@pytest.fixture(scope="module")
def image(server_wheel, tmp_path_factory) -> Path:
    """A root directory standing in for the image's filesystem, with ``venv``: the
    runtime stage's ``pip install`` replayed with the wheel the build stage makes."""
    root = tmp_path_factory.mktemp("image")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _clean_path_env(venv, root / "home")
    assert [tool for tool in COMPILERS if shutil.which(tool, path=env["PATH"])] == []
    [install] = [c for c in _runtime().run_commands() if c[:2] == ["pip", "install"]]
    [pattern] = [word for word in install if word.endswith(".whl")]
    assert fnmatch(server_wheel.name, pattern.rsplit("/", 1)[1]), (server_wheel, pattern)
    argv = [str(venv / "bin" / "python"), "-m",
            *[str(server_wheel) if word == pattern else word for word in install]]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


class Pod:
    """One container of the base, started from the stand-in image as the kubelet would:
    the image's entrypoint (or the container's command) and args, the resolved env."""

    def __init__(self, root: Path, workload: dict, secrets: dict[str, dict],
                 ports: dict[str, int] | None = None) -> None:
        spec = container(workload)
        env = _clean_path_env(root / "venv", root / "home")
        resolved = container_env(workload, image_env=_runtime().env(), secrets=secrets,
                                 pod_name=POD_NAME)
        for name, value in resolved.items():
            if value.startswith("/"):  # the image's and the pod's paths, under root
                value = str(root / value.lstrip("/"))
                Path(value).mkdir(parents=True, exist_ok=True)
            env[name] = value
        env.update(ports or {})
        entrypoint = dockerfile.exec_form(_runtime().last("ENTRYPOINT"))
        cmd = dockerfile.exec_form(_runtime().last("CMD"))
        argv = [*spec["command"], *spec.get("args", [])] if "command" in spec else [
            *entrypoint, *spec.get("args", cmd)]
        argv[0] = shutil.which(argv[0], path=env["PATH"])
        assert argv[0] and argv[0].startswith(str(root / "venv")), spec
        workdir = root / _runtime().last("WORKDIR").value.lstrip("/")
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = env
        name = workload["metadata"]["name"]
        self.stdout, self.stderr = root / f"{name}.out", root / f"{name}.err"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=err)

    def output(self) -> str:
        return self.stderr.read_text()

    def terminate(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_the_image_has_the_three_commands_the_base_runs(image):
    env = _clean_path_env(image / "venv", image / "home")
    for command in (["banditd", "serve"], ["banditctl", "migrate"],
                    ["banditctl", "scheduler"]):
        argv = [shutil.which(command[0], path=env["PATH"]), *command[1:], "--help"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout


def _wait_health(address: str, service: str, proc: subprocess.Popen, err: Path,
                 timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"exited {proc.returncode}: {err.read_text()[-3000:]}"
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{address} {service!r} not SERVING after {timeout}s")


def _memory(pid: int) -> int:
    """Resident bytes of process ``pid`` and its descendants (the workers): more than the
    pod's cgroup would be charged, since shared pages count once per process here."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        found = {child for child, parent in parents.items() if parent in tree}
        grew = not found <= tree
        tree |= found
    total = 0
    for member in tree:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        [rss] = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
        total += int(rss) * 1024
    return total


async def test_migrate_then_serve_and_schedule_as_the_base_runs_them(image, database_url):
    secrets = {"banditd-secrets": {"database-url": database_url, "redis-url": REDIS_URL}}

    job = Pod(image, find("Job", "banditd-migrate"), secrets)
    assert job.proc.wait(timeout=300) == 0, job.output()
    assert "schema at version" in job.stdout.read_text()

    await make_experiment(database_url, "exp")
    deployment = find("Deployment", "banditd")
    port, metrics_port = free_port(), free_port()
    server = Pod(image, deployment, secrets, ports={
        "BANDITD_PORT": str(port), "BANDITD_METRICS_PORT": str(metrics_port)})
    scheduler = Pod(image, find("Deployment", "banditd-scheduler"), secrets)
    try:
        spec = container(deployment)
        address = f"127.0.0.1:{port}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            _wait_health(address, spec[probe]["grpc"].get("service", ""), server.proc,
                         server.stderr, timeout=120)
        with grpc.insecure_channel(address) as channel:  # the compiled kernels decide
            reply = decision_pb2_grpc.DecisionServiceStub(channel).Select(
                decision_pb2.SelectRequest(experiment_id="exp", user_id="u1"), timeout=10)
        assert reply.arm.startswith("arm-") and reply.decision_id

        path = pod_template(deployment)["metadata"]["annotations"]["prometheus.io/path"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}", timeout=10) as r:
            assert r.status == 200 and b"banditd_" in r.read()

        workers = int(server.env["BANDITD_WORKERS"])
        assert workers == cpu_cores(spec["resources"]["limits"]["cpu"]) == 2
        # Health answers SERVING from the first worker; the supervisor says so once
        # every worker serves.
        await wait_for(lambda: f"{workers} workers serving" in server.output(), timeout=60)
        limit = 2 ** 30 * int(spec["resources"]["limits"]["memory"].removesuffix("Gi"))
        assert _memory(server.proc.pid) < limit / 2, "an idle pod already near its memory limit"

        conn = await connect(database_url)
        try:
            deadline = time.monotonic() + 60
            row = None
            while time.monotonic() < deadline and scheduler.proc.poll() is None:
                row = await conn.fetchrow(
                    "SELECT owner, last_status FROM scheduler_jobs WHERE job = 'guardrails'")
                if row is not None and row["last_status"] is not None:
                    break
                time.sleep(0.5)
        finally:
            await conn.close()
        assert row is not None and row["last_status"] == "ok", scheduler.output()[-3000:]
        assert row["owner"] == f"scheduler:{POD_NAME}"

        pause = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = pod_template(deployment)["spec"]["terminationGracePeriodSeconds"] - pause
        assert server.terminate(timeout=grace) == 0, server.output()[-3000:]
        assert "Traceback" not in server.output()
        assert scheduler.terminate(timeout=60) == 0, scheduler.output()[-3000:]
        assert "Traceback" not in scheduler.output()
    finally:
        server.kill()
        scheduler.kill()
