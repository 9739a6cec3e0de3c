"""Export of the decision log, joined with the rewards, as Parquet for a warehouse.

Layout (hive-partitioned, what DuckDB, Polars, Spark and ``pyarrow.dataset`` read
as the columns ``experiment`` and ``date``)::

    DIR/experiment=<experiment id>/date=<YYYY-MM-DD>/part-0.parquet

One file per experiment and UTC day of ``decided_at``, rows in ``(decided_at,
decision_id)`` order, one row per decision (its reward, if any, joined on the log's
key ``(experiment_key, decided_at, decision_id)``). Columns:

=====================  ==========================  ===========================================
column                 type                        meaning
=====================  ==========================  ===========================================
decision_id            string                      the signed id Select returned
user_id                string                      the caller's user id
decided_at             timestamp[us, UTC]          when the decision was made
policy                 string                      the policy the user is assigned to
arm                    string                      the arm served
propensity             double                      P(arm) under the serving mechanism
served_by              string                      why: POLICY, CONTROL, OUTSIDE, STOPPED, ...
candidates             list<string>                the request's candidate_arms; null = all arms
server_id              string                      the server that decided
latency_us             int32                       the Select's server-side latency
context                string (JSON text)          the request's context map, null if none
reward                 double, nullable            the reward in the experiment's units;
                                                   null while the window is open
reward_source          string, nullable            ``client``, or ``default`` (window closed)
reward_committed_at    timestamp[us, UTC], null.   when the reward was committed
reward_event_time      timestamp[us, UTC], null.   the event time the client gave, if any
=====================  ==========================  ===========================================

Each file's schema metadata ``banditd.experiment`` holds the experiment's id, arms,
policies, policy parameters and reward range as JSON (what ``banditctl evaluate
--from-parquet`` needs; never the hashing salt).

Memory is bounded whatever the log size: a day is read with a server-side cursor in
batches of ``BATCH_ROWS`` and each batch is written as it arrives. A day is written
to a hidden temporary file in its directory and renamed over ``part-0.parquet`` when
complete, so readers never see half a day and a rerun replaces the day whole; a day
that has no rows (any more) has no file.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 65_536
# Joins a request's candidate names into one string ("candidates_joined"), for readers
# that intern distinct lists as strings: arm names are printable, so it is none of them.
NAME_SEPARATOR = "\x1f"
FILE_NAME = "part-0.parquet"
METADATA_KEY = b"banditd.experiment"
_TIMESTAMP = pa.timestamp("us", tz="UTC")

SCHEMA = pa.schema([
    ("decision_id", pa.string()),
    ("user_id", pa.string()),
    ("decided_at", _TIMESTAMP),
    ("policy", pa.string()),
    ("arm", pa.string()),
    ("propensity", pa.float64()),
    ("served_by", pa.string()),
    ("candidates", pa.list_(pa.string())),
    ("server_id", pa.string()),
    ("latency_us", pa.int32()),
    ("context", pa.string()),
    ("reward", pa.float64()),
    ("reward_source", pa.string()),
    ("reward_committed_at", _TIMESTAMP),
    ("reward_event_time", _TIMESTAMP),
])


def _micros(column: str) -> str:
    # exact microseconds since the epoch (extract returns numeric): asyncpg would build
    # a datetime object per value, several times the cost of an integer
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"


_COLUMN_SQL = {
    "decision_id": "d.decision_id",
    "user_id": "d.user_id",
    "decided_at": _micros("d.decided_at"),
    "policy": "d.policy",
    "arm": "d.arm",
    "propensity": "d.propensity",
    "served_by": "d.served_by",
    "candidates": "d.candidates",
    "candidates_joined": f"array_to_string(d.candidates, chr({ord(NAME_SEPARATOR)}))",
    "server_id": "d.server_id",
    "latency_us": "d.latency_us",
    "context": "d.context::text",
    "reward": "r.value",
    "reward_source": "r.source",
    "reward_committed_at": _micros("r.committed_at"),
    "reward_event_time": _micros("r.event_time"),
}


@dataclass(frozen=True)
class ExportedExperiment:
    """What an export keeps of an experiment's configuration (file metadata)."""

    key: int
    id: str
    arms: tuple[str, ...]
    policies: tuple[str, ...]
    policy_params: Mapping[str, Mapping[str, Any]]
    reward_min: float
    reward_max: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "arms": list(self.arms), "policies": list(self.policies),
            "policy_params": {k: dict(v) for k, v in self.policy_params.items()},
            "reward_min": self.reward_min, "reward_max": self.reward_max,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportedExperiment:
        return cls(
            key=-1, id=data["id"], arms=tuple(data["arms"]), policies=tuple(data["policies"]),
            policy_params=data["policy_params"], reward_min=float(data["reward_min"]),
            reward_max=float(data["reward_max"]),
        )


_EXPERIMENT_SQL = """SELECT key, id, arms, policies, policy_params, reward_min, reward_max
                       FROM experiments"""


def _experiment_from_row(row: asyncpg.Record) -> ExportedExperiment:
    return ExportedExperiment(
        key=row["key"], id=row["id"], arms=tuple(row["arms"]), policies=tuple(row["policies"]),
        policy_params=row["policy_params"] or {}, reward_min=float(row["reward_min"]),
        reward_max=float(row["reward_max"]),
    )


async def exported_experiment(conn: asyncpg.Connection, experiment_id: str) -> ExportedExperiment:
    """The live experiment ``experiment_id``; ``ExperimentNotFound`` when there is none."""
    from banditd.server.experiment_store import ExperimentNotFound

    row = await conn.fetchrow(f"{_EXPERIMENT_SQL} WHERE id = $1 AND deleted_at IS NULL",
                              experiment_id)
    if row is None:
        raise ExperimentNotFound(experiment_id)
    return _experiment_from_row(row)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of the UTC day: exactly the range of its log partition."""
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


def day_query(columns: Sequence[str]) -> str:
    """The rows of one experiment (``$1``) and UTC day (``[$2, $3)``), decisions left
    joined with their rewards, in ``(decided_at, decision_id)`` order: the key's order,
    so the scan reads one partition's primary-key index and sorts nothing."""
    select = ", ".join(f"{_COLUMN_SQL[c]} AS {c}" for c in columns)
    return f"""SELECT {select}
                 FROM decisions d
                 LEFT JOIN rewards r
                   ON r.experiment_key = d.experiment_key AND r.decided_at = d.decided_at
                  AND r.decision_id = d.decision_id
                  AND r.decided_at >= $2 AND r.decided_at < $3
                WHERE d.experiment_key = $1 AND d.decided_at >= $2 AND d.decided_at < $3
                ORDER BY d.decided_at, d.decision_id"""


def records_to_batch(rows: Sequence[asyncpg.Record], schema: pa.Schema) -> pa.RecordBatch:
    """Records whose columns are ``schema``'s, in its order, as one record batch."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
        schema=schema,
    )


async def day_batches(
    conn: asyncpg.Connection, experiment_key: int, day: date, schema: pa.Schema
) -> AsyncIterator[pa.RecordBatch]:
    """One experiment's rows of one UTC day with ``schema``'s columns, in batches of at
    most ``BATCH_ROWS``, from a server-side cursor (the caller holds a transaction)."""
    start, end = day_bounds(day)
    cursor = await conn.cursor(day_query(schema.names), experiment_key, start, end)
    while rows := await cursor.fetch(BATCH_ROWS):
        yield records_to_batch(rows, schema)


def day_path(out: Path, experiment_id: str, day: date) -> Path:
    return out / f"experiment={experiment_id}" / f"date={day:%Y-%m-%d}" / FILE_NAME


async def export_experiment_day(
    conn: asyncpg.Connection,
    experiment: ExportedExperiment,
    day: date,
    out: Path,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Write ``experiment``'s rows of ``day`` to its file under ``out`` (module
    docstring); returns the rows written. ``on_rows(n)`` after each batch."""
    path = day_path(out, experiment.id, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(experiment.to_json())})
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            async with conn.transaction(readonly=True):
                async for batch in day_batches(conn, experiment.key, day, schema):
                    writer.write_batch(batch)
                    rows += batch.num_rows
                    if on_rows is not None:
                        on_rows(batch.num_rows)
        if rows:
            os.replace(tmp, path)
            return rows
        tmp.unlink()
        path.unlink(missing_ok=True)
        _remove_empty_dirs(path.parent, out)
        return 0
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_empty_dirs(directory: Path, root: Path) -> None:
    """Remove ``directory`` and its parents up to ``root`` (exclusive) while empty."""
    while directory != root and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


async def export_day(conn: asyncpg.Connection, day: date, out: Path) -> int:
    """Export every experiment's rows of the UTC day ``day`` under ``out`` (the layout
    of the module docstring; deleted experiments included, under their id): what the
    retention job calls before it drops the day's partitions. Returns the rows written."""
    rows = await conn.fetch(f"{_EXPERIMENT_SQL} ORDER BY key")
    total = 0
    for row in rows:
        total += await export_experiment_day(conn, _experiment_from_row(row), day, Path(out))
    return total
