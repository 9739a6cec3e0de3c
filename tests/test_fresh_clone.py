"""`make serve & make demo` on a fresh clone: both makes share one build (under a
lock), the demo waits for the server, drives its `demo` experiment, and the daily
verdict reads it."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.checkout import copy_checkout, ports_in_use, run_shell, shell_env

pytestmark = [pytest.mark.slow, pytest.mark.embedded]


def test_make_serve_and_make_demo_work_on_a_fresh_clone(tmp_path):
    taken = ports_in_use()
    if taken:
        pytest.skip(f"ports {taken} are in use (a `make serve` of yours?): `make serve` "
                    "uses the default ports")
    checkout = copy_checkout(tmp_path, built=False)
    env = shell_env(checkout, activated=False)
    log = tmp_path / "make-serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen(["make", "serve"], cwd=checkout, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        demo = run_shell("make demo DEMO_ARGS='--seconds 15'", checkout, activated=False,
                         timeout=900)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:] + \
            log.read_text()[-3000:]
        assert "demo summary" in demo.stdout and "Traceback" not in demo.stdout + demo.stderr
        decide = run_shell(".venv/bin/banditctl decide demo", checkout, activated=False,
                           timeout=120)
        assert decide.returncode == 0, decide.stdout + decide.stderr
        first = decide.stdout.splitlines()[0]
        assert first.split(":")[0] == "demo" and first.split()[1] in ("SHIP", "ITERATE", "KILL")
        for policy in ("thompson", "egreedy", "ucb"):
            assert f"{policy}: " in decide.stdout
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(60)
    served = log.read_text()
    builds = (served + demo.stdout + demo.stderr).count("pip install -q -e")
    assert builds == 1, served  # whichever make took the lock built; the other waited
    assert "banditd stopped" in served and "Traceback" not in served, served[-3000:]
