"""The README works as written: its command blocks, the snippet the server prints and
its exit-code examples run in a copy of the checkout against `banditd serve
--create-demo` on the embedded PostgreSQL, and leave no file git would show."""

from __future__ import annotations

import signal
import subprocess

import pytest

from banditd.server.quickstart import DEFAULT_ADDRESS, try_it
from tests.checkout import (
    ROOT,
    copy_checkout,
    example_rows,
    fenced_blocks,
    ports_in_use,
    run_shell,
    shell_env,
    wait_serving,
)

pytestmark = [pytest.mark.slow, pytest.mark.embedded]

README = (ROOT / "README.md").read_text()
# Blocks that are not run here, and why.
NOT_RUN = {
    "make serve   # fresh machine": "tests/test_fresh_clone.py runs `make serve & make demo` "
    "from a fresh copy; `make test` would run this suite inside itself",
    "# on your hosts, not this machine": "points at a PostgreSQL host that does not exist here",
    "# on each host of a deployment": "points at a Redis host that does not exist here",
}
TRY_IT = try_it(DEFAULT_ADDRESS, "demo", ".venv/bin/activate")


def _skip_reason(code: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if code.startswith(start)), None)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """A copy of the checkout with its `.venv` (the build's), a server started there as
    `make serve` starts it, and the server's stderr; stopped afterwards."""
    taken = ports_in_use()
    if taken:
        pytest.skip(f"ports {taken} are in use (a `make serve` of yours?): the README's "
                    "commands use the default ports")
    checkout = copy_checkout(tmp_path_factory.mktemp("readme"), built=True)
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)
    subprocess.run(["git", "add", "-A"], cwd=checkout, check=True)
    stderr = checkout.parent / "serve.err"
    with stderr.open("w") as err:
        server = subprocess.Popen(
            [str(checkout / ".venv" / "bin" / "banditd"), "serve", "--create-demo"],
            cwd=checkout, env=shell_env(checkout, activated=True), stdout=err, stderr=err,
        )
    try:
        wait_serving(DEFAULT_ADDRESS, 120, alive=lambda: server.poll() is None)
        yield checkout, stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, stderr.read_text()[-3000:]
    shutdown = stderr.read_text()
    assert "Traceback" not in shutdown and "fork" not in shutdown, shutdown[-3000:]


def _check(result) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]


def test_the_server_prints_the_readme_snippet(newcomer):
    _, stderr = newcomer
    assert TRY_IT in README
    assert TRY_IT in stderr.read_text()


def test_every_command_block_runs_as_written(newcomer):
    checkout, _ = newcomer
    ran = 0
    for language, code in fenced_blocks(README):
        if _skip_reason(code):
            continue
        if language == "python":
            script = f"python - <<'PY'\n{code}PY\n"
        else:
            assert language == "sh", f"unexpected block language {language!r}"
            script = code
        # The first block activates the venv itself; later ones run in that session.
        _check(run_shell(script, checkout, activated=ran > 0))
        ran += 1
    assert ran >= 7
    left = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=checkout,
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    # Everything was staged before the server started: any other line is a file the
    # commands created or changed outside the ignored directories.
    assert [line for line in left if not line.startswith("A  ")] == []


def test_every_exit_code_example_exits_with_its_code(newcomer):
    checkout, _ = newcomer
    rows = example_rows(README)
    assert {code for code, _ in rows} == {0, 1, 2, 3, 4, 5}
    for code, command in rows:
        result = run_shell(command, checkout, activated=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == code, f"{command}: {output[-2000:]}"
        assert "Traceback" not in output, output
        if code:
            assert "error" in output.lower(), f"{command} failed without saying why: {output}"


def test_nothing_here_is_skipped_silently():
    skipped = [code for _, code in fenced_blocks(README) if _skip_reason(code)]
    assert len(skipped) == len(NOT_RUN)
