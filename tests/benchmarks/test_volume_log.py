"""The volume study's generator (benchmarks/volume_log.py) on a small log in real
PostgreSQL: the rows are what banditd would have logged for that experiment (its
assignment, its id layout, propensities of the offered arms, rewards of logged
decisions), in the shares the model's docstring states."""

import base64
import math
import struct

import numpy as np
import pytest

from banditd.core_ext.codecs import DECISION_ID_LENGTH, decision_key_id
from banditd.core_ext.policies import POLICY_CODES, Rng
from banditd.server.decision_id import DecisionIdCodec
from banditd.server.registry import Registry
from benchmarks import volume_log
from benchmarks.volume_log import (
    ARMS,
    LogGenerator,
    create_volume_experiment,
    decision_ids,
    ensure_log_partitions,
    now_ms,
    roll_up,
    span,
)

ROWS = 6000
SERVED_BY_CODES = {"POLICY": 1, "CONTROL": 2, "OUTSIDE_TRAFFIC": 3}


def _share_tolerance(p: float, n: int, design_effect: float = 1.0) -> float:
    """Four standard errors of a share p over n draws (times a design effect for draws
    clustered by user)."""
    return 4 * math.sqrt(design_effect * p * (1 - p) / n)


def test_ids_are_base64url_of_the_payload_layout():
    """Against ``struct`` packing of banditd.server.decision_id's layout and the
    standard library's base64url."""
    rng = np.random.default_rng(1)
    ms = np.array([1_764_000_000_123, 2**47 + 5])
    ids = decision_ids(7, np.array([3, 0]), np.array([1, 3]), np.array([19, 0]), ms,
                       np.array([1, 4]), np.array([0, 2**32 - 1]), rng)
    for i, decision_id in enumerate(ids):
        raw = base64.urlsafe_b64decode(decision_id[1:])
        expected = struct.pack(">BBIBBI6sII", 1, 1, 7, [3, 0][i], [1, 3][i], [19, 0][i],
                               int(ms[i]).to_bytes(6, "big"), [1, 4][i], [0, 2**32 - 1][i])
        assert raw[:26] == expected
        assert decision_id == "d" + base64.urlsafe_b64encode(raw).decode()
        assert len(decision_id) == DECISION_ID_LENGTH
        assert decision_key_id(decision_id) == 1


@pytest.fixture
async def volume_log_db(db_conn, monkeypatch):
    monkeypatch.setattr(volume_log, "CHUNK", 2500)  # several COPYs, as at size
    first, end = span(now_ms())
    experiment = await create_volume_experiment(db_conn, first)
    assert await ensure_log_partitions(db_conn, first, end) > 0
    written = await LogGenerator(experiment, ROWS).write(db_conn, first, end, ROWS)
    return db_conn, experiment, written, (first, end)


async def test_decisions_are_what_the_server_would_have_logged(volume_log_db):
    conn, experiment, written, (first, end) = volume_log_db
    rows = await conn.fetch("SELECT * FROM decisions")
    assert written.decisions == len(rows) == ROWS
    assert len({r["decision_id"] for r in rows}) == ROWS
    assert experiment.start_at.timestamp() * 1000 < first
    codec = DecisionIdCodec({1: bytes(32)}, 1, 0)
    runtime = Registry(Rng(0), codec.signer(), None).upsert(experiment)
    served = {}
    for r in rows:
        assert first <= r["decided_at"].timestamp() * 1000 < end
        slot, served_by = runtime.decider.assign(r["user_id"], end / 1000)
        assert SERVED_BY_CODES[r["served_by"]] == served_by
        assert r["policy"] == runtime.slot_policies[slot].name
        payload = struct.unpack(">BBIBBI6sII", base64.urlsafe_b64decode(r["decision_id"][1:])[:26])
        assert payload[2:6] == (experiment.key, POLICY_CODES[r["policy"]], served_by,
                                ARMS.index(r["arm"]))
        assert int.from_bytes(payload[6], "big") == round(r["decided_at"].timestamp() * 1000)
        offered = r["candidates"] or ARMS
        assert r["arm"] in offered
        if r["candidates"] is not None:
            assert 5 <= len(r["candidates"]) <= 15
        if r["served_by"] != "POLICY":  # control, inside and outside: uniform
            assert r["propensity"] == pytest.approx(1 / len(offered))
        served[r["served_by"]] = served.get(r["served_by"], 0) + 1
    subsets = sum(r["candidates"] is not None for r in rows) / ROWS
    assert abs(subsets - 1 / 3) < _share_tolerance(1 / 3, ROWS)
    # decisions cluster by user (10 each on average, heavy-tailed): a generous design effect
    outside = served["OUTSIDE_TRAFFIC"] / ROWS
    assert abs(outside - 0.1) < _share_tolerance(0.1, ROWS, design_effect=30)
    assert await conn.fetchval(
        "SELECT sum(calls) FROM rpc_counts WHERE method = 'Select'") == ROWS


async def test_rewards_belong_to_their_decisions(volume_log_db):
    conn, experiment, written, (_first, end) = volume_log_db
    rewards = await conn.fetch(
        """SELECT r.*, d.decided_at AS decision_at, d.arm AS decision_arm
           FROM rewards r LEFT JOIN decisions d USING (decision_id)""")
    assert len(rewards) == written.client_rewards + written.default_rewards
    window = experiment.spec.reward_window_seconds
    for r in rewards:
        assert r["decided_at"] == r["decision_at"] and r["arm"] == r["decision_arm"]
        if r["source"] == "client":
            assert r["decided_at"] <= r["event_time"] < r["committed_at"]
            assert r["committed_at"].timestamp() * 1000 <= end + 1000
        else:
            assert r["value"] == experiment.spec.default_reward and r["event_time"] is None
            assert (r["committed_at"] - r["decided_at"]).total_seconds() >= window
    client = [r["value"] for r in rewards if r["source"] == "client"]
    assert abs(len(client) / ROWS - 0.9) < _share_tolerance(0.9, ROWS)
    assert 0.02 <= np.mean(client) <= 0.10
    rolled = await roll_up(conn)
    assert (rolled["decisions"], rolled["rewards"]) == (ROWS, len(rewards))
