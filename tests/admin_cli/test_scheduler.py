"""The scheduler runs its jobs on their clocks and stops cleanly on SIGTERM."""

import asyncio
import signal
import subprocess
import sys
import time
from datetime import timedelta

from banditd.admin_cli.scheduler import Schedule, run_scheduler
from banditd.server.database import connect
from tests.conftest import make_experiment


async def test_guardrail_job_runs_and_completes_expired_experiments(migrated_db_url):
    await make_experiment(migrated_db_url, "live")
    await make_experiment(migrated_db_url, "expired", duration_days=1)
    conn = await connect(migrated_db_url)
    try:
        await conn.execute(
            "UPDATE experiments SET end_at = now() - interval '1 minute' WHERE id = 'expired'")
        stop = asyncio.Event()
        task = asyncio.create_task(run_scheduler(
            migrated_db_url, Schedule(guardrail_every=timedelta(seconds=0.3)), stop=stop,
            tick=0.05,
        ))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            runs = await conn.fetchval(
                "SELECT count(*) FROM guardrail_runs WHERE experiment_id = 'live'")
            if runs >= 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        job = await conn.fetchrow("SELECT * FROM scheduler_jobs WHERE job = 'guardrails'")
        status = await conn.fetchval("SELECT status FROM experiments WHERE id = 'expired'")
        verdict_job = await conn.fetchrow("SELECT * FROM scheduler_jobs WHERE job = 'verdict'")
    finally:
        await conn.close()
    assert runs >= 2  # ran on its clock, more than once
    assert job["last_status"] == "ok"
    assert "live: insufficient_data" in job["last_detail"]
    assert status == "completed"
    assert verdict_job["last_run_at"] is None  # 09:00 UTC daily: not due in this test
    assert verdict_job["next_run_at"] > job["last_run_at"]


def test_scheduler_command_exits_cleanly_on_sigterm(cli_db, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "banditd.admin_cli.main", "scheduler", "--guardrail-every", "60",
         "--log-dir", str(tmp_path), "--database-url", cli_db],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (tmp_path / "workers.log").exists():
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "scheduler job guardrails: no running experiments" in (
        tmp_path / "workers.log").read_text()
