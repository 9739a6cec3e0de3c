"""What ``pip install`` puts into an environment, built from a fresh clone.

The server distribution installs everything under ``banditd`` (no generic top-level
name such as ``server`` next to an application's own modules). The client
distribution (``clients/python``) ships the same client and stub files as the server
distribution, depends on grpcio and protobuf alone, and in a clean venv talks to a
running server.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_experiment

pytestmark = pytest.mark.slow


@pytest.fixture
def wheels(server_wheel, client_wheel) -> dict[str, Path]:
    """The server's and the client's wheel, built from one fresh copy of the checkout
    (session fixtures in tests/conftest.py, shared with tests/deploy)."""
    return {"server": server_wheel, "client": client_wheel}


def _files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()
                if ".dist-info/" not in name}


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    return sorted(line.split(":", 1)[1].split(";")[0].strip() for line in lines
                  if line.startswith("Requires-Dist:") and "extra ==" not in line)


def test_the_server_installs_only_under_banditd(wheels):
    files = _files(wheels["server"])
    assert {name.split("/")[0] for name in files} == {"banditd"}
    assert "banditd/__init__.py" not in files  # a namespace shared with banditd-client
    for module in ("banditd/server/app.py", "banditd/admin_cli/main.py",
                   "banditd/server/migrations/0001_core.sql", "banditd/v1/decision.proto"):
        assert module in files
    compiled = {name.rsplit(".", 2)[0] for name in files if name.endswith(".so")}
    assert compiled == {f"banditd/core_ext/{room}/{module}" for room, module in (
        ("policies", "_rng"), ("policies", "_arms"), ("policies", "_thompson"),
        ("policies", "_ucb"), ("policies", "_egreedy"), ("policies", "_control"),
            ("policies", "_sample_ranks"),
        ("codecs", "_wire"), ("codecs", "_decision_rows"), ("codecs", "_signing"),
        ("decider", "_decide"), ("decider", "_hashing"))}


def test_the_client_is_the_servers_client_files_and_needs_only_grpc(wheels):
    client, server = _files(wheels["client"]), _files(wheels["server"])
    assert {name.rsplit("/", 1)[0] for name in client} == {"banditd/v1", "banditd/client"}
    assert {"banditd/v1/decision_pb2.pyi", "banditd/v1/decision_pb2_grpc.pyi",
            "banditd/v1/decision.proto", "banditd/v1/py.typed",
            "banditd/client/py.typed", "banditd/client/service_config.json"} <= set(client)
    assert {name: server.get(name) for name in client} == client
    assert [r.split(">")[0] for r in _requires(wheels["client"])] == ["grpcio", "protobuf"]


async def test_the_client_in_a_clean_venv_talks_to_a_running_server(
        wheels, tmp_path, migrated_db_url, start_server):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheels["client"])],
                   check=True, capture_output=True, timeout=600)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], check=True,
                            capture_output=True, text=True).stdout
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.split()}
    server_only = {r.split(">")[0].lower() for r in _requires(wheels["server"])} - {
        "grpcio", "protobuf"}
    assert {"banditd-client", "grpcio", "protobuf"} <= installed
    assert installed & server_only == set()  # no numpy, asyncpg, scipy, PostgreSQL ...

    await make_experiment(migrated_db_url, "exp")
    running = await start_server()
    script = textwrap.dedent(f"""
        import importlib.util
        from banditd.client import Client
        assert importlib.util.find_spec("banditd.server") is None
        with Client("127.0.0.1:{running.server.port}") as client:
            choice = client.select("exp", "u1", deadline=5)
            print(choice.arm, client.reward(choice.decision_id, 1.0))
    """)
    code, out = await _run_python(python, script)
    assert code == 0, out
    arm, outcome = out.split()
    assert arm.startswith("arm-") and outcome == "applied"


async def _run_python(python: Path, script: str) -> tuple[int, str]:
    """Run ``script`` without blocking the event loop the in-process server runs on."""
    proc = await asyncio.create_subprocess_exec(
        str(python), "-c", script, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode, out.decode()
