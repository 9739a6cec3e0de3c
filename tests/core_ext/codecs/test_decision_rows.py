"""The decider's log rows: PostgreSQL's binary COPY format, read back by a decoder
written here from the format's documentation (PostgreSQL manual, COPY, "Binary
Format"; the types' send functions), independently of the C writer."""

import json
import struct
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from banditd.core_ext.codecs import COPY_HEADER, COPY_TRAILER, DECISION_COLUMNS, DecisionRows
from banditd.server.decision_id import DecisionIdCodec
from tests.server.test_assignment import ARMS, _decider

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
NOW = 1_764_000_000.123456


def _field(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    (n,) = struct.unpack_from(">i", buf, pos)
    if n == -1:
        return None, pos + 4
    return buf[pos + 4 : pos + 4 + n], pos + 4 + n


def _text_array(raw: bytes) -> list[str]:
    ndim, flags, oid, length, lower = struct.unpack_from(">5i", raw)
    assert (ndim, flags, oid, lower) == (1, 0, 25, 1)  # one dimension of text, no NULLs
    out, pos = [], 20
    for _ in range(length):
        value, pos = _field(raw, pos)
        out.append(value.decode())
    assert pos == len(raw)
    return out


def decode(rows: bytes) -> list[dict]:
    """Rows (as ``DecisionRows.take()`` gives them) -> dicts by ``DECISION_COLUMNS``."""
    out, pos = [], 0
    while pos < len(rows):
        (count,) = struct.unpack_from(">h", rows, pos)
        assert count == len(DECISION_COLUMNS)
        pos += 2
        raw = {}
        for column in DECISION_COLUMNS:
            raw[column], pos = _field(rows, pos)
        us = struct.unpack(">q", raw["decided_at"])[0]
        out.append({
            "decision_id": raw["decision_id"].decode(),
            "experiment_key": struct.unpack(">i", raw["experiment_key"])[0],
            "user_id": raw["user_id"].decode(),
            "policy": raw["policy"].decode(),
            "arm": raw["arm"].decode(),
            "propensity": struct.unpack(">d", raw["propensity"])[0],
            "served_by": raw["served_by"].decode(),
            "decided_at": PG_EPOCH + timedelta(microseconds=us),
            "latency_us": struct.unpack(">i", raw["latency_us"])[0],
            "context": None if raw["context"] is None else (
                raw["context"][0], json.loads(raw["context"][1:])),
            "server_id": raw["server_id"].decode(),
            "candidates": None if raw["candidates"] is None else _text_array(raw["candidates"]),
        })
    assert pos == len(rows)
    return out


def test_every_column_reads_back_as_written():
    rows = DecisionRows("server-é")
    decider = _decider(1.0, (0.5, 0.5), rows=rows)
    codec = DecisionIdCodec({1: bytes(32)}, 1, 0)
    plain = decider.decide("alice", NOW)
    started = time.perf_counter() - 0.25  # a request that arrived 250 ms ago
    offered = decider.decide("bøb", NOW, np.array([2, 0], dtype=np.intp), started,
                             json.dumps({"page": "home"}).encode())
    assert len(rows) == 2
    data, keys = rows.take()
    assert keys.tolist() == [7, 7]
    first, second = decode(data)
    for row, (decision_id, slot, arm, propensity, served_by), user in (
        (first, plain, "alice"), (second, offered, "bøb")
    ):
        ref = codec.decode(row["decision_id"])
        assert row["decision_id"] == decision_id
        assert (row["experiment_key"], ref.arm_index) == (7, arm)
        assert (row["user_id"], row["arm"]) == (user, ARMS[arm])
        assert row["policy"] == f"policy-{slot}"
        assert row["propensity"] == propensity
        assert row["served_by"] == "POLICY" and served_by == 1
        # the id's millisecond (which a reward's key is built from), not NOW's microsecond
        assert row["decided_at"] == datetime.fromtimestamp(NOW, UTC).replace(microsecond=123000)
        assert ref.decided_at_ms == int(NOW * 1000)
        assert row["server_id"] == "server-é"
    assert first["context"] is None and first["candidates"] is None
    assert first["latency_us"] == 0  # no start time given
    assert second["context"] == (1, {"page": "home"})  # jsonb: version byte 1, then text
    assert second["candidates"] == ["c", "a"]
    assert 250_000 <= second["latency_us"] < 60_000_000  # since ``started``, in us
    assert rows.take()[0] == b"" and len(rows) == 0


def test_the_default_policy_logs_its_own_name_and_served_by():
    rows = DecisionRows("s")
    decider = _decider(1.0, (0.5, 0.5), serving=(NOW + 1, NOW + 2), rows=rows)
    _id, slot, _arm, _propensity, served_by = decider.decide("alice", NOW)
    (row,) = decode(rows.take()[0])
    assert slot == -1
    assert (row["policy"], row["served_by"]) == ("default", "EXPERIMENT_STOPPED")
    assert served_by == 4


def test_a_refused_decision_writes_no_row():
    rows = DecisionRows("s")
    decider = _decider(1.0, (0.5, 0.5), rows=rows)
    with pytest.raises(ValueError):
        decider.decide("alice", NOW, np.array([5], dtype=np.intp))  # no arm 5
    with pytest.raises(OverflowError):
        decider.decide("alice", float("nan"))
    assert len(rows) == 0 and rows.take()[0] == b""


def test_many_rows_grow_the_buffer_and_stay_in_order():
    rows = DecisionRows("s")
    decider = _decider(1.0, (1.0,), rows=rows)
    ids = [decider.decide(f"user-{i}", NOW + i)[0] for i in range(5_000)]
    data, keys = rows.take()
    decoded = decode(data)
    assert [r["decision_id"] for r in decoded] == ids
    assert [r["user_id"] for r in decoded] == [f"user-{i}" for i in range(5_000)]
    assert len(keys) == 5_000


def test_header_and_trailer_are_the_documented_signature():
    assert b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) == COPY_HEADER
    assert struct.pack(">h", -1) == COPY_TRAILER


async def test_the_rows_have_the_columns_of_the_migrated_table(db_conn):
    """The C writer's column list is the ``decisions`` table's, in order, but for
    ``written_xid``, which the database fills: a migration that adds a column fails
    here, not at the first COPY in production."""
    from banditd.core_ext.codecs import DECISION_COLUMNS

    table = await db_conn.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = 'decisions'
           ORDER BY ordinal_position"""
    )
    assert tuple(r["column_name"] for r in table) == (*DECISION_COLUMNS, "written_xid")
