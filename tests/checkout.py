"""A newcomer's checkout for the README tests: a copy of this working tree in a
temporary directory, laid out as here (``../shared/data/ml-100k`` beside it), and
the helpers that drive it through a shell."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORTS = (50051, 9095)  # what the README's commands use: gRPC, metrics


def tracked_files() -> list[str]:
    """What a fresh clone of this working tree holds: tracked and new files, not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    return [name for name in listed
            if name and ((ROOT / name).is_file() or (ROOT / name).is_symlink())]


# What `pip install -e .` writes into the tree (the editable install imports them there).
BUILD_OUTPUTS = ("core_ext/**/*.so", "banditd/v1/*_pb2*.py", "banditd/v1/*_pb2*.pyi",
                 "banditd/v1/*.proto")


def copy_checkout(target: Path, *, built: bool) -> Path:
    """Copy this working tree to ``target/main`` as a fresh clone would have it (and,
    when ``built``, with what the build wrote into it, as after `make serve`), with
    ``target/shared/data/ml-100k`` pointing at MovieLens 100K; returns the checkout."""
    from banditd.admin_cli.offline.movielens_fetch import locate_ml100k

    checkout = target / "main"
    names = tracked_files()
    if built:
        names += [str(p.relative_to(ROOT)) for pattern in BUILD_OUTPUTS for p in ROOT.glob(pattern)]
    for name in names:
        destination = checkout / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():  # as git checks a link out: the link itself
            destination.symlink_to(os.readlink(ROOT / name))
        else:
            shutil.copy2(ROOT / name, destination)
    data = target / "shared" / "data"
    data.mkdir(parents=True)
    (data / "ml-100k").symlink_to(locate_ml100k().resolve())
    return checkout


def build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` of the project at ``source`` into ``out``: the one wheel
    a fresh clone builds (Cython kernels compiled, stubs generated)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=900)
    [wheel] = out.glob("*.whl")
    return wheel


def ports_in_use(ports=DEFAULT_PORTS) -> list[int]:
    """Those of ``ports`` something listens on (a developer's own `make serve`)."""
    taken = []
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


def shell_env(checkout: Path, *, activated: bool) -> dict[str, str]:
    """A newcomer's shell: no banditd variables set, and the checkout's ``.venv``
    active only when ``activated`` (as after ``source .venv/bin/activate``)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("BANDITD_", "VIRTUAL_ENV", "PYTHON"))}
    venv_bin = str(Path(__file__).resolve().parents[1] / ".venv" / "bin")
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    if activated:
        env["VIRTUAL_ENV"] = str(checkout / ".venv")
        path.insert(0, str(checkout / ".venv" / "bin"))
    env["PATH"] = os.pathsep.join(path)
    return env


def run_shell(script: str, checkout: Path, *, activated: bool, timeout: float = 600):
    """``script`` in bash (errexit, pipefail) in ``checkout``: the CompletedProcess."""
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=checkout,
        env=shell_env(checkout, activated=activated), capture_output=True, text=True,
        timeout=timeout,
    )


def wait_serving(address: str, timeout: float, alive=lambda: True) -> None:
    """Return once ``address`` reports SERVING; AssertionError after ``timeout`` or when
    ``alive()`` turns false."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert alive(), "the server exited"
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{address} not SERVING after {timeout}s")


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```$", markdown, flags=re.M | re.S)


def example_rows(markdown: str) -> list[tuple[int, str]]:
    """``(exit code, command)`` from the README's exit-code tables (rows whose last
    cell is a command in backticks)."""
    return [(int(code), command) for code, command in
            re.findall(r"^\| (\d) \|[^\n]*\| `([^`\n]+)` \|$", markdown, flags=re.M)]
