"""``banditctl retention``: set, show, clear and apply, their input checks and exit codes."""

from __future__ import annotations

import asyncio
import json

import pytest

from banditd.admin_cli.cli_support import EXIT_NOT_FOUND, EXIT_STATE, EXIT_USAGE
from banditd.server.database import connect
from banditd.server.log_partitions import ensure_partitions


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _create(banditctl, experiment_id: str, window: int):
    return banditctl("experiment", "create", experiment_id, "--name", experiment_id,
                     "--arms", "a,b", "--policies", "ucb,control",
                     "--reward-window", str(window))


def test_set_show_and_clear(banditctl):
    _ok(_create(banditctl, "day", 86_400))
    result = _ok(banditctl("retention", "set", "--decisions", "4w", "--rewards", "30d"))
    assert result.output.strip() == "deployment: decisions 28d, rewards 30d"
    _ok(banditctl("retention", "set", "--experiment", "day", "--decisions", "forever"))

    shown = json.loads(_ok(banditctl("retention", "show", "--json")).output)
    assert shown["deployment"] == {"decisions_days": 28, "rewards_days": 30}
    assert [(o["experiment_id"], o["decisions_days"], o["rewards_days"])
            for o in shown["overrides"]] == [("day", None, 30)]
    today = shown["today"]
    todays = [p for p in shown["partitions"] if p["day"] == today]
    assert {p["table"] for p in todays} == {"decisions", "rewards"}
    assert {p["state"] for p in shown["partitions"]} == {"attached"}
    # the day's partitions follow its one live experiment's override
    assert {p["kept_by"] for p in todays} == {"day"}
    assert {p["drop_on"] for p in todays if p["table"] == "decisions"} == {None}
    text = _ok(banditctl("retention", "show")).output
    assert "deployment: decisions 28d, rewards 30d" in text and "overrides" in text

    assert "removed" in _ok(banditctl("retention", "clear", "--experiment", "day")).output
    again = _ok(banditctl("retention", "clear", "--experiment", "day")).output
    assert "there was none" in again
    _ok(banditctl("retention", "clear", "--deployment"))
    assert "keep forever" in _ok(banditctl("retention", "show")).output


def test_the_rule_is_enforced_with_exit_4(banditctl):
    _ok(_create(banditctl, "week", 7 * 86_400))
    result = banditctl("retention", "set", "--decisions", "7d")
    assert result.exit_code == EXIT_STATE, result.output
    assert "at least 8 days" in result.output and "'week'" in result.output
    _ok(banditctl("retention", "set", "--decisions", "8d", "--rewards", "8d"))
    result = _create(banditctl, "fortnight", 14 * 86_400)
    assert result.exit_code == EXIT_STATE, result.output
    assert "retention set --decisions 15d" in result.output
    launched = banditctl("launch", "--name", "L", "--arms", "a,b", "--reward-window",
                         str(8 * 86_400))
    assert launched.exit_code == EXIT_STATE, launched.output
    names = json.loads(_ok(banditctl("experiment", "list", "--json")).output)
    assert [e["id"] for e in names] == ["week"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("set",), EXIT_USAGE, "nothing to set"),
    (("set", "--decisions", "30"), EXIT_USAGE, "whole days or weeks"),
    (("set", "--rewards", "0d"), EXIT_USAGE, "1 to 36525 days"),
    (("set", "--decisions", "12h"), EXIT_USAGE, "whole days or weeks"),
    (("set", "--decisions", "3d", "--experiment", "nope"), EXIT_NOT_FOUND, "not found"),
    (("clear",), EXIT_USAGE, "exactly one of"),
    (("clear", "--deployment", "--experiment", "x"), EXIT_USAGE, "exactly one of"),
    (("clear", "--experiment", "nope"), EXIT_NOT_FOUND, "not found"),
])
def test_bad_input_exits_with_its_code_and_says_why(banditctl, args, code, message):
    result = banditctl("retention", *args)
    assert result.exit_code == code, result.output
    assert message in result.output


def test_apply_dry_run_and_apply(banditctl, cli_db, tmp_path):
    async def old_day():
        conn = await connect(cli_db)
        try:
            day = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date - 5")
            await ensure_partitions(conn, day, day)
            return day
        finally:
            await conn.close()

    day = asyncio.run(old_day())
    names = {f"decisions_{day:%Y%m%d}", f"rewards_{day:%Y%m%d}"}
    logs = ("--log-dir", str(tmp_path))
    _ok(banditctl("retention", "set", "--decisions", "2d", "--rewards", "2d"))
    dry = json.loads(_ok(banditctl("retention", "apply", "--dry-run", "--json", *logs)).output)
    assert dry["dry_run"] is True and dry["created"] == 0
    assert {p["name"] for p in dry["dropped"]} == names
    report = json.loads(_ok(banditctl("retention", "apply", "--json", *logs)).output)
    assert {p["name"] for p in report["dropped"]} == names
    assert report["failed"] == [] and report["kept"] >= 16  # today and 7 days ahead, twice
    assert "dropped 0 partitions" in _ok(banditctl("retention", "apply", *logs)).output
    logged = (tmp_path / "workers.log").read_text()
    assert all(f"Retention dropped {name} (day {day}, 0 rows, " in logged for name in names)


def test_export_before_drop_fails_before_anything_when_it_cannot_write(banditctl, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    result = banditctl("retention", "apply", "--export-before-drop", str(a_file),
                       "--log-dir", str(tmp_path))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--export-before-drop" in result.output
