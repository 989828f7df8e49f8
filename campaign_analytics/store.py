"""The events table on disk: ingest (dedupe, atomic commit, ledger), quarantine, read back.

Layout of a table directory::

    <table>/_delta_log/                 the events table's commit log (Delta Lake)
    <table>/event_date=YYYY-MM-DD/      its Parquet files, one folder per UTC day
    <table>/_quarantine/                rejected and skipped records (a Delta table too)

Every load is one commit of the events table. The ledger of loads is that
commit's own metadata, so a load and its ledger entry appear together or not
at all; quarantine rows of a load that never committed are not shown.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable, Field, Schema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, create_table_with_add_actions

from ._event_ids import EventIdSet, id_words
from ._order import JSON_NUMBER
from ._rows import rows_at
from .errors import ParameterError, TableError
from .flatten import (
    CORE_SCHEMA,
    PROVENANCE_COLUMNS,
    QUARANTINE_SCHEMA,
    RAW_JSON_COLUMNS,
    USER_PREFIXES,
    FlatBatch,
    FlattenLimits,
    UserColumns,
    connect,
    flatten_batch,
    lines_table,
)
from .flatten import cursor as flatten_cursor
from .sources import Chunk, PartialRead, PayloadFile, find_files, read_chunks
from .triggers import EVENT_TIME_RANGE

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LoadSummary",
    "ingest",
    "load",
    "read_events",
    "read_rejected",
    "read_skipped",
    "read_loads",
    "events_dataset",
    "vacuum",
]

PathLike = str | os.PathLike[str]
Sources = PathLike | Iterable[PathLike]

PARTITION_COLUMN: Final[str] = "event_date"
QUARANTINE_DIR: Final[str] = "_quarantine"
_LOCK_FILE: Final[str] = "_commit.lock"
_LEDGER_KEY: Final[str] = "campaign_analytics.load"
_PARQUET_COMPRESSION: Final[str] = "zstd"
# Row-group statistics (min, max, nulls) let readers skip row groups. They pay off on times,
# numbers and the few text columns analyses filter by; on the other text (JSON, free text,
# ids unique to an event) they would cost a fifth of the writing time and skip nothing.
_FILTERED_TEXT_COLUMNS: Final[frozenset[str]] = frozenset(
    {
        "trigger", "entity", "stage", "app_id", "campaign_id", "notification_id", "template_id", "label",
        "kind", "load_id",
    }
)
# A batch also ends at this many bytes of raw records, so huge records make smaller batches.
_BATCH_BYTES: Final[int] = 48 << 20
# Batches flattened side by side. Each runs its query single-threaded in DuckDB, which
# costs less CPU than splitting one query over threads, and overlaps one batch's
# planning with the other's execution.
_FLATTEN_WORKERS: Final[int] = 2
_DUCKDB_THREADS: Final[int] = max(1, (os.cpu_count() or 2) // _FLATTEN_WORKERS)
# DuckDB memory of a load's batches, shared by both flatten workers and the writer. A batch
# that does not fit is flattened in halves.
_MEMORY_LIMIT_BYTES: Final[int] = 512 * 1000**2
# A record that does not fit that even alone is flattened on a connection of its own, one
# such record at a time, with this many times max_record_bytes of memory. Measured: a record
# takes 25 to 55 times its size of DuckDB memory to flatten (a list of objects about 100
# times), of which far less, about 15 to 80 times its size, is ever resident.
_ALONE_MEMORY_PER_RECORD_BYTE: Final[int] = 128
_ALONE: Final[threading.Lock] = threading.Lock()
_SIZE_UNITS: Final[dict[str, int]] = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_URL_SYNTAX: Final[frozenset[str]] = frozenset("%#?\\")
_FIXED_HEAD: Final[list[str]] = CORE_SCHEMA.names
_FIXED_TAIL: Final[list[str]] = RAW_JSON_COLUMNS.names + PROVENANCE_COLUMNS.names


@dataclass
class LoadSummary:
    """What one load did. ``records == written + duplicates + rejected + skipped``.

    Attributes
    ----------
    load_id
        The load's id (also in every row it wrote).
    files, files_unchanged
        Files read, and files passed over because a committed load already
        holds the very same bytes (use ``force=True`` to read them again).
    records, written, duplicates, rejected, skipped
        Records read and what became of them. Duplicates are events the
        table or this load already had, and the rejected or skipped records
        of a file that a load running alongside read too and committed first.
    reject_reasons
        Rejected and skipped records per reason.
    new_columns
        User columns this load added to the table.
    capped_keys
        User keys not made into columns because of ``max_user_columns``; their
        values stay in ``variables_json`` / ``metadata_json``.
    too_deep
        User sub-objects nested deeper than ``max_depth`` (kept in raw JSON only).
    partial_files
        Files that broke off part way (a truncated or corrupt gzip stream, a
        read error): the records before the break were loaded, and the break
        is one rejected record naming the file and the line where reading stopped.
    version
        The table version the load committed, or None when nothing was committed.
    """

    load_id: str
    table: str
    started_at: str
    finished_at: str = ""
    seconds: float = 0.0
    files: int = 0
    files_unchanged: int = 0
    records: int = 0
    written: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    new_columns: list[str] = field(default_factory=list)
    capped_keys: list[str] = field(default_factory=list)
    too_deep: int = 0
    partial_files: list[str] = field(default_factory=list)
    version: int | None = None
    file_details: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def balanced(self) -> bool:
        """True when every record read is accounted for."""
        return self.records == self.written + self.duplicates + self.rejected + self.skipped

    def to_dict(self, *, with_files: bool = False) -> dict[str, Any]:
        """The summary as plain JSON-ready values."""
        out = asdict(self)
        if not with_files:
            out.pop("file_details")
        return out

    def __str__(self) -> str:
        lines = [
            f"load {self.load_id} into {self.table}" + (f" (version {self.version})" if self.version is not None else ""),
            f"  files      {self.files:>12,}" + (f"   ({self.files_unchanged:,} unchanged, passed over)" if self.files_unchanged else ""),
            f"  records    {self.records:>12,}",
            f"  written    {self.written:>12,}",
            f"  duplicates {self.duplicates:>12,}",
            f"  rejected   {self.rejected:>12,}",
            f"  skipped    {self.skipped:>12,}",
            f"  seconds    {self.seconds:>12,.1f}",
        ]
        for reason, count in sorted(self.reject_reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:10]:
            lines.append(f"    {count:>8,}  {reason}")
        if self.new_columns:
            lines.append(f"  new columns: {', '.join(self.new_columns[:20])}" + (" ..." if len(self.new_columns) > 20 else ""))
        if self.capped_keys:
            lines.append(
                f"  {len(self.capped_keys):,} user keys over max_user_columns kept in raw JSON only: "
                + ", ".join(self.capped_keys[:10]) + (" ..." if len(self.capped_keys) > 10 else "")
            )
        if self.too_deep:
            lines.append(f"  {self.too_deep:,} nested user objects deeper than max_depth kept in raw JSON only")
        if self.partial_files:
            lines.append(
                f"  {len(self.partial_files):,} file(s) broke off part way; the records before the break were loaded "
                "and the break is a rejected record (see read_rejected): "
                + ", ".join(self.partial_files[:10]) + (" ..." if len(self.partial_files) > 10 else "")
            )
        if not self.balanced:
            lines.append("  WARNING: the counts do not add up; please report this with the input files")
        return "\n".join(lines)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _table_uri(table: PathLike) -> str:
    if not isinstance(table, (str, os.PathLike)):
        raise ParameterError(f"The table must be a folder path (str or os.PathLike), not {type(table).__name__} {table!r}.")
    path = os.path.abspath(os.fspath(table))
    # Delta Lake reads a local path as a URL: "%41" or "a\\b" would name another folder, and after "#" or "?"
    # it finds no commit history (the ledger); control characters fail its commits.
    refused = sorted({char for char in path if char in _URL_SYNTAX or ord(char) < 0x20 or ord(char) == 0x7F})
    if refused:
        raise TableError(
            f"A table path cannot hold {', '.join(map(repr, refused))}: Delta Lake reads the path as a URL. "
            f"Choose another path than {path!r}."
        )
    return path


def data_files(table: DeltaTable, partition_filters: list[tuple[str, str, Any]] | None = None) -> list[str]:
    """The local paths of a Delta table's live data files (the log's URIs, unescaped: a space stays a space)."""
    return [urllib.parse.unquote(uri.removeprefix("file://")) for uri in table.file_uris(file_pruning_predicate=partition_filters)]


def _load_options(limits: FlattenLimits | None, batch_records: int) -> FlattenLimits:
    """The limits of a load (the defaults when None), once its options are checked."""
    if limits is not None and not isinstance(limits, FlattenLimits):
        raise ParameterError(
            f"limits must be a FlattenLimits, not {type(limits).__name__}: e.g. limits=FlattenLimits(max_depth=4)."
        )
    if isinstance(batch_records, bool) or not isinstance(batch_records, (int, np.integer)) or batch_records < 1:
        raise ParameterError(f"batch_records must be a whole number of records, at least 1, not {batch_records!r}.")
    return limits or FlattenLimits()


def _open_table(path: str, *, must_exist: bool) -> DeltaTable | None:
    """The events table at path; None if the path is free for a new table."""
    if not os.path.exists(path):
        if not must_exist:
            _check_new_table_path(path)
        if must_exist:
            raise TableError(f"There is no table at {path!r}. Run `campaign-analytics ingest SOURCE --table {path}` first.")
        return None
    if not os.path.isdir(path):
        raise TableError(f"{path!r} is a file, not a table directory. Choose another --table path.")
    if not _has_commit(path):
        if _only_our_files(path):
            if must_exist:
                raise TableError(f"No load has committed to {path!r} yet. Run `campaign-analytics ingest SOURCE --table {path}`.")
            return None
        if must_exist:
            raise TableError(f"{path!r} is not a Delta table (no _delta_log). Pass the folder `campaign-analytics ingest` wrote.")
        raise TableError(
            f"{path!r} exists but is not a Delta table (no _delta_log). Refusing to write into it: "
            "choose an empty or new directory for the table."
        )
    try:
        table = DeltaTable(path)
    except TableNotFoundError as error:
        raise TableError(f"{path!r} has a _delta_log but no readable table ({error}).") from error
    names = set(table.schema().to_arrow().names)
    if "event_id" not in names or PARTITION_COLUMN not in names:
        raise TableError(f"{path!r} is a Delta table but not a campaign events table (no event_id / event_date).")
    return table


def _only_our_files(path: str) -> bool:
    """True for an empty directory, or one holding only what a load writes before its first commit."""
    return all(
        name in (QUARANTINE_DIR, _LOCK_FILE, "_delta_log") or name.startswith(PARTITION_COLUMN + "=")
        for name in os.listdir(path)
    )


def _has_commit(path: str) -> bool:
    """True when the directory's Delta log holds at least one commit (a killed first commit leaves none)."""
    log = os.path.join(path, "_delta_log")
    if not os.path.isdir(log):
        return False
    return any(name.endswith((".json", ".checkpoint.parquet")) and name[:20].isdigit() for name in os.listdir(log))


def _check_new_table_path(path: str) -> None:
    """A table can be created at path: no dangling link there, and no file where a folder must be."""
    if os.path.lexists(path) and not os.path.exists(path):
        raise TableError(f"{path!r} is a link to nothing. Remove it or choose another --table path.")
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise TableError(f"Cannot create a table at {path!r}: {parent!r} is a file, not a folder. Choose another --table path.")
    if parent and not os.access(parent, os.W_OK | os.X_OK):
        raise TableError(f"Cannot create a table at {path!r}: {parent!r} is not writable. Choose another --table path.")


def _ledger(table: DeltaTable | None) -> list[dict[str, Any]]:
    if table is None:
        return []
    entries = []
    for commit in table.history():
        raw = commit.get(_LEDGER_KEY)
        if raw:
            entry = json.loads(raw)
            entry["table_version"] = commit.get("version")
            entry["committed_at"] = commit.get("timestamp")
            entries.append(entry)
    return entries[::-1]


def _committed_by(root: str, key: str, load_id: str) -> bool:
    """Whether a commit of the Delta table at root carries this load's id in its ``key`` metadata."""
    if not _has_commit(root):
        return False
    return any(load_id in str(commit.get(key, "")) for commit in DeltaTable(root).history())


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How this package writes a Parquet file of ``schema`` (compression, which columns get statistics)."""
    text = (pa.string(), pa.large_string(), pa.string_view())
    statistics = [
        f.name for f in schema
        if f.name in _FILTERED_TEXT_COLUMNS
        or not (f.type in text or pa.types.is_list(f.type) or pa.types.is_large_list(f.type))
    ]
    return {"compression": _PARQUET_COMPRESSION, "write_statistics": statistics}


class _PartitionWriter:
    """Writes event rows into per-day Parquet files; a new file when the columns change."""

    def __init__(self, root: str, load_id: str, *, partition: str | None, max_open: int = 64) -> None:
        self.root = root
        self.load_id = load_id
        self.partition = partition
        self.max_open = max_open
        self._open: dict[str | None, tuple[pq.ParquetWriter, str, pa.Schema, int]] = {}
        self._sequence = 0
        self.adds: list[AddAction] = []

    def write(self, table: pa.Table) -> None:
        if self.partition is None:
            self._write_part(None, table)
            return
        for value, part in _partition_parts(table, self.partition):
            self._write_part(value.isoformat(), part.drop_columns([self.partition]))

    def _write_part(self, key: str | None, part: pa.Table) -> None:
        current = self._open.get(key)
        if current is not None and current[2] != part.schema:
            self._close(key)
            current = None
        if current is None:
            if len(self._open) >= self.max_open:
                self._close(next(iter(self._open)))
            self._sequence += 1
            folder = f"{self.partition}={key}/" if key is not None else ""
            relative = f"{folder}part-{self.load_id}-{self._sequence:05d}.parquet"
            target = os.path.join(self.root, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            writer = pq.ParquetWriter(target, part.schema, **_parquet_options(part.schema))
            current = (writer, relative, part.schema, 0)
        writer, relative, schema, rows = current
        writer.write_table(part, row_group_size=256_000)
        self._open[key] = (writer, relative, schema, rows + part.num_rows)

    def _close(self, key: str | None) -> None:
        writer, relative, _, rows = self._open.pop(key)
        writer.close()
        self.adds.append(_added_file(self.root, relative, {self.partition: key} if self.partition else {}, rows))

    def close(self) -> list[AddAction]:
        for key in list(self._open):
            self._close(key)
        return self.adds

    def abandon(self) -> None:
        """Close and delete every file this writer made (the load will not commit)."""
        for key in list(self._open):
            self._close(key)
        for add in self.adds:
            try:
                os.remove(os.path.join(self.root, add.path))
            except OSError:
                pass
        self.adds = []


def _added_file(root: str, relative: str, partition_values: Mapping[str, str | None], rows: int) -> AddAction:
    """The commit entry of a Parquet file this load wrote, once its bytes are on disk."""
    target = os.path.join(root, relative)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())
    return AddAction(
        path=relative,
        size=os.path.getsize(target),
        partition_values=dict(partition_values),
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps({"numRecords": rows}),
    )


def _partition_parts(table: pa.Table, column: str) -> Iterator[tuple[Any, pa.Table]]:
    """(value, rows) for each value of a partition column.

    Captures arrive mostly in time order, so a batch is a few runs of one
    day each: those are cut out without copying. Rows in no particular
    order are filtered per value instead.
    """
    values = table.column(column)
    if table.num_rows == 0:
        return
    as_numbers = values.cast(pa.int32()).to_numpy() if pa.types.is_date32(values.type) and not values.null_count else None
    if as_numbers is not None:
        starts = np.flatnonzero(as_numbers[1:] != as_numbers[:-1]) + 1
        distinct = len(np.unique(as_numbers))
        if len(starts) + 1 <= 2 * distinct:
            bounds = [0, *starts.tolist(), table.num_rows]
            for begin, end in zip(bounds[:-1], bounds[1:]):
                yield values[begin].as_py(), table.slice(begin, end - begin)
            return
    for value in pc.unique(values).to_pylist():
        yield value, table.filter(pc.equal(values, value))


class _Deduplicator:
    """Event ids already in the table (for the days a load touches) or earlier in the load."""

    def __init__(self, table: DeltaTable | None) -> None:
        self.table = table
        self.loaded_days: set[dt.date] = set()
        self.seen = EventIdSet()

    def new_rows(self, events: pa.Table) -> np.ndarray:
        """Positions (ascending) of the rows whose event id is new; their ids are remembered.

        Of an id several rows hold, the first by file and line counts.
        """
        days = set(pc.unique(events.column(PARTITION_COLUMN)).to_pylist()) - self.loaded_days
        if days and self.table is not None:
            files = data_files(self.table, [(PARTITION_COLUMN, "in", [d.isoformat() for d in sorted(days)])])
            if files:
                # Read a file at a time: only the 16-byte form of the ids stays in memory.
                words = [id_words(pc.drop_null(pq.read_table(file, columns=["event_id"]).column("event_id"))) for file in files]
                high, low = (np.concatenate([w[i] for w in words]) for i in (0, 1))
                self.seen.add_new((high, low))
        self.loaded_days |= days
        return self.seen.add_new(id_words(events.column("event_id")), events.select(["source_file", "source_line"]))


def _rows_at_by_day(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """The rows at positions ``rows`` (ascending); copied, those of one day together, in their order.

    The writer then cuts each day's rows out without copying them again.
    """
    if len(rows) == table.num_rows:
        return table
    days = table.column(PARTITION_COLUMN)
    if pa.types.is_date32(days.type) and not days.null_count:
        rows = rows[np.argsort(days.cast(pa.int32()).to_numpy()[rows], kind="stable")]
    return rows_at(table, rows)


def _line_batches(
    files: Sequence[PayloadFile],
    limits: FlattenLimits,
    *,
    batch_records: int,
    progress: Any,
    digests: Mapping[PayloadFile, Any],
    stopped: dict[str, PartialRead],
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(lines, set-aside lines) for each batch of about batch_records lines of the files (digests: hashes to feed).

    A file that breaks off part way gives the records before the break, then
    the break as a set-aside (rejected) line; it is also put in ``stopped``.
    """
    pending: list[Chunk] = []
    breaks: list[PartialRead] = []
    size = volume = 0

    def batch() -> tuple[pa.Table, pa.Table]:
        lines, set_aside = lines_table(pending, max_record_bytes=limits.max_record_bytes)
        if breaks:
            set_aside = pa.concat_tables([set_aside, _break_rows(breaks).cast(set_aside.schema)])
            breaks.clear()
        return lines, set_aside

    for file in files:
        chunks = read_chunks(
            file, chunk_records=min(batch_records, 16_384), max_record_bytes=limits.max_record_bytes, digest=digests.get(file)
        )
        try:
            for chunk in chunks:
                pending.append(chunk)
                size += len(chunk)
                volume += chunk.nbytes
                if size >= batch_records or volume >= _BATCH_BYTES:
                    yield batch()
                    pending, size, volume = [], 0, 0
        except PartialRead as problem:
            stopped[file.path] = problem
            breaks.append(problem)
        if progress is not None:
            progress.update(file.size)
    if pending or breaks:
        yield batch()


def _break_rows(breaks: Sequence[PartialRead]) -> pa.Table:
    """The rejected records that stand for files broken off part way."""
    return _rejected_rows(
        [(b.reason, b.raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace"), b.path, b.line) for b in breaks]
    )


def _rejected_rows(rows: Sequence[tuple[str, str, str, int]]) -> pa.Table:
    """Rejected records (kind, reason, trigger, raw, source_file, source_line) from (reason, raw, file, line)."""
    reasons, raws, files, lines = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pa.table(
        {
            "kind": pa.array(["rejected"] * len(rows), pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "trigger": pa.nulls(len(rows), pa.string()),
            "raw": pa.array(raws, pa.string()),
            "source_file": pa.array(files, pa.string()),
            "source_line": pa.array(lines, pa.int64()),
        }
    )


def _column_paths(table: DeltaTable | None) -> dict[str, str]:
    """Leaf path → user column, as the committed loads recorded it."""
    paths: dict[str, str] = {}
    for entry in _ledger(table):
        for name, pointer in entry.get("column_paths", {}).items():
            paths.setdefault(pointer, name)
    return paths


def _quarantine_table(flat: FlatBatch, set_aside: pa.Table, load_id: str, ingested_at: dt.datetime) -> pa.Table:
    parts = [t for t in (set_aside, flat.quarantine) if t.num_rows]
    if not parts:
        return QUARANTINE_SCHEMA.empty_table()
    rows = pa.concat_tables([p.select(["kind", "reason", "trigger", "raw", "source_file", "source_line"]).cast(
        pa.schema([QUARANTINE_SCHEMA.field(n) for n in ("kind", "reason", "trigger", "raw", "source_file", "source_line")])
    ) for p in parts])
    return _with_provenance(rows, load_id, ingested_at)


def _with_provenance(rows: pa.Table, load_id: str | None, ingested_at: dt.datetime) -> pa.Table:
    """The rows with load_id and ingested_at appended (load_id is null for an in-memory load)."""
    n = rows.num_rows
    for name, value in (("load_id", load_id), ("ingested_at", ingested_at)):
        field_ = PROVENANCE_COLUMNS.field(name)
        rows = rows.append_column(field_, pa.repeat(pa.scalar(value, field_.type), n))
    return rows


def _delta_schema(arrow: pa.Schema) -> Schema:
    # Delta timestamps are microseconds; the Parquet files keep milliseconds and readers cast.
    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f
        for f in arrow
    ]
    return Schema.from_arrow(pa.schema(fields))


def _commit(
    uri: str, table: DeltaTable | None, adds: list[AddAction], schema: pa.Schema, partition_by: list[str], metadata: dict[str, str]
) -> DeltaTable:
    """Append the files in one commit, growing the table schema first when columns are new."""
    properties = CommitProperties(custom_metadata=metadata)
    if table is None:
        create_table_with_add_actions(uri, _delta_schema(schema), adds, mode="error", partition_by=partition_by or None, commit_properties=properties)
        return DeltaTable(uri)
    for attempt in range(20):
        try:
            table.update_incremental()
            have = set(table.schema().to_arrow().names)
            missing = [schema.field(name) for name in schema.names if name not in have]
            if missing:
                added = pa.schema(_delta_schema(pa.schema(missing)).to_arrow())  # deltalake >= 1.0 gives an arro3 schema
                table.alter.add_columns([Field.from_arrow(f) for f in added])
                table.update_incremental()
            actions: list[AddAction | RemoveAction] = list(adds)
            table.create_write_transaction(
                actions, mode="append", schema=table.schema(), partition_by=partition_by or None, commit_properties=properties
            )
            return table
        except CommitFailedError:
            time.sleep(0.05 * (attempt + 1))
    raise TableError(f"Could not commit to {uri!r} after 20 attempts: other writers keep changing it. Try again.")


@contextlib.contextmanager
def _commit_lock(uri: str) -> Iterator[None]:
    """Serialise the commit step of loads into one table (the reading and writing before it runs in parallel)."""
    os.makedirs(uri, exist_ok=True)
    with open(os.path.join(uri, _LOCK_FILE), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _column_names(uri: str, adds: list[AddAction]) -> set[str]:
    """The columns of this load's files (read from their footers)."""
    names: set[str] = set()
    for add in adds:
        names.update(pq.read_schema(os.path.join(uri, add.path)).names)
    return names


def _renamed_columns(uri: str, adds: list[AddAction], renames: Mapping[str, str]) -> list[AddAction]:
    """This load's files again, with columns renamed (old → new, all at once, so names may swap)."""
    kept: list[AddAction] = []
    for add in adds:
        path = os.path.join(uri, add.path)
        with contextlib.closing(pq.ParquetFile(path)) as source:
            if not renames.keys() & set(source.schema_arrow.names):
                kept.append(add)
                continue
            schema = pa.schema([f.with_name(renames.get(f.name, f.name)) for f in source.schema_arrow])
            new_path = add.path.replace(".parquet", "-c.parquet")
            with pq.ParquetWriter(os.path.join(uri, new_path), schema, **_parquet_options(schema)) as writer:
                for batch in source.iter_batches():
                    writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
            rows = source.metadata.num_rows
        kept.append(_added_file(uri, new_path, add.partition_values, rows))
        os.remove(path)
    return kept


def _drop_concurrent_duplicates(
    uri: str, start_files: set[str], adds: list[AddAction], con: duckdb.DuckDBPyConnection, summary: LoadSummary
) -> list[AddAction]:
    """Rewrite this load's files without the events that loads committed after it started already hold."""
    current = _open_table(uri, must_exist=False)
    if current is None or not adds:
        return adds
    days = sorted({day for a in adds if (day := a.partition_values[PARTITION_COLUMN]) is not None})
    newer = sorted(set(data_files(current, [(PARTITION_COLUMN, "in", days)])) - start_files)
    if not newer:
        return adds
    ours = [os.path.join(uri, a.path) for a in adds]
    clashes = con.sql(
        "SELECT DISTINCT o.event_id FROM read_parquet(?) o SEMI JOIN read_parquet(?) n ON o.event_id = n.event_id",
        params=[ours, newer],
    ).to_arrow_table()
    if clashes.num_rows == 0:
        return adds

    def counted(dropped: pa.Table) -> None:
        summary.written -= dropped.num_rows
        summary.duplicates += dropped.num_rows

    return _rewritten_without(uri, adds, "event_id", clashes.column("event_id"), counted)


def _drop_records_of_files_loaded_meanwhile(
    root: str, adds: list[AddAction], before: DeltaTable | None, meanwhile: DeltaTable, summary: LoadSummary
) -> list[AddAction]:
    """Rewrite this load's rejected and skipped records without those of files a load committed after it started.

    Such a load read the same bytes (the same content hash): as in a serial run, where the later
    load passes the file over, its records are kept once. Here they count as duplicates.
    """
    earlier = {entry["load_id"] for entry in _ledger(before)}
    hashes = {
        f["hash"] for entry in _ledger(meanwhile) if entry["load_id"] not in earlier
        for f in entry.get("file_list", []) if f.get("status") in ("loaded", "partial") and f.get("hash")
    }
    paths = [d["path"] for d in summary.file_details if d["status"] in ("loaded", "partial") and d["hash"] in hashes]
    if not paths or not adds:
        return adds

    def counted(dropped: pa.Table) -> None:
        kinds = Counter(dropped.column("kind").to_pylist())
        summary.rejected -= kinds.get("rejected", 0)
        summary.skipped -= kinds.get("skipped", 0)
        summary.duplicates += dropped.num_rows
        for reason in dropped.column("reason").to_pylist():
            key = _reason_key(reason)
            summary.reject_reasons[key] -= 1
            if not summary.reject_reasons[key]:
                del summary.reject_reasons[key]

    return _rewritten_without(root, adds, "source_file", pa.array(paths, pa.string()), counted)


def _rewritten_without(
    root: str, adds: list[AddAction], column: str, values: pa.Array | pa.ChunkedArray, counted: Callable[[pa.Table], None]
) -> list[AddAction]:
    """This load's files again without the rows whose ``column`` is among ``values`` (handed to ``counted``)."""
    kept: list[AddAction] = []
    for add in adds:
        path = os.path.join(root, add.path)
        table = pq.read_table(path)
        drop = pc.is_in(table.column(column), value_set=values)
        dropped = table.filter(drop)
        if dropped.num_rows == 0:
            kept.append(add)
            continue
        counted(dropped)
        remaining = table.filter(pc.invert(drop))
        if remaining.num_rows:
            new_path = add.path.replace(".parquet", "-r.parquet")
            pq.write_table(remaining, os.path.join(root, new_path), **_parquet_options(remaining.schema))
            kept.append(_added_file(root, new_path, add.partition_values, remaining.num_rows))
        os.remove(path)
    return kept


def ingest(
    sources: Sources,
    table: PathLike,
    *,
    force: bool = False,
    limits: FlattenLimits | None = None,
    batch_records: int = 50_000,
    progress: bool | None = None,
) -> LoadSummary:
    """Load raw webhook payload files into the events table (a Delta Lake table).

    Parameters
    ----------
    sources
        Files, directories (recursive) or glob patterns; NDJSON, JSON arrays or
        single POST bodies, optionally gzip-compressed.
    table
        The table directory; created on the first load.
    force
        Read files again even when a committed load already holds the same bytes
        (their events are still deduplicated).
    limits
        Caps on nesting depth, user columns and record size. Flattening a
        record takes up to about 50 times its size in engine memory (a list
        of objects about 100 times). A record up to ``max_record_bytes`` that
        does not fit the memory the batches share (512 MB) is flattened
        alone, one such record at a time, with up to 128 times
        ``max_record_bytes`` of memory, but never more than DuckDB's own
        default (80% of this machine's memory); one that needs more still is
        rejected as "too large to flatten".
    batch_records
        Records per batch (a batch also ends after 48 MiB of input). Up to
        four batches are in memory at once; smaller batches use less memory
        and run slower, since every batch costs a fixed query setup.
    progress
        Show a progress bar on stderr; by default only when stderr is a terminal.

    Returns
    -------
    LoadSummary
        Counts of the load; ``records == written + duplicates + rejected + skipped``.

    Raises
    ------
    SourceError
        A source is missing or cannot be read at all (nothing is written). A
        file that breaks off part way (a truncated or corrupt gzip stream, a
        read error) is not an error: the records before the break load, the
        break is one rejected record, and the file is listed in
        ``partial_files`` and in the ledger with status ``partial``.
    TableError
        The table path exists but is not an events table (nothing is written).
    ParameterError
        ``limits`` is not a :class:`FlattenLimits`, or ``batch_records`` is not a
        whole number of at least 1.

    Examples
    --------
    >>> import tempfile, campaign_analytics as ca
    >>> summary = ca.ingest("data/sample", tempfile.mkdtemp() + "/events")
    >>> summary.balanced
    True
    """
    limits = _load_options(limits, batch_records)
    if not isinstance(force, bool):
        raise ParameterError(f"force must be True or False, not {force!r}.")
    uri = _table_uri(table)
    started = _now()
    delta = _open_table(uri, must_exist=False)
    files = find_files(sources)
    load_id = started.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    summary = LoadSummary(load_id=load_id, table=uri, started_at=started.isoformat())
    loaded = [
        f for entry in _ledger(delta) for f in entry.get("file_list", [])
        if f.get("status") in ("loaded", "partial") and f.get("hash")
    ]
    already = {f["hash"] for f in loaded}
    # Only a file of the same size as one loaded before, or as another one here, can hold the
    # same bytes: those are hashed first. The others are hashed as they are read, not read twice.
    sizes = Counter(file.size for file in files)
    maybe_copies = {f.get("size") for f in loaded} | {size for size, n in sizes.items() if n > 1}
    hashed_while_read: dict[PayloadFile, Any] = {}
    to_read: list[PayloadFile] = []
    for file in files:
        digest: str | None = None
        if not force and file.size in maybe_copies:
            # A file that cannot be hashed now is read below all the same: one that breaks off part
            # way is then a rejected record, one that cannot be read at all a clear error.
            with contextlib.suppress(OSError):
                digest = file.content_hash()
        if digest is not None and digest in already:
            summary.files_unchanged += 1
            status = "unchanged"
        else:
            status = "loaded"
            to_read.append(file)
            if digest is None:
                hashed_while_read[file] = hashlib.sha256()
            else:
                already.add(digest)
        summary.file_details.append({"path": file.path, "size": file.size, "hash": digest, "status": status})
    summary.files = len(files)

    existing_names = delta.schema().to_arrow().names if delta is not None else []
    user_columns = UserColumns(_column_paths(delta), max_columns=limits.max_user_columns)
    con = connect(threads=_DUCKDB_THREADS, memory_limit=f"{_MEMORY_LIMIT_BYTES}B")
    events_writer = _PartitionWriter(uri, load_id, partition=PARTITION_COLUMN)
    quarantine_root = os.path.join(uri, QUARANTINE_DIR)
    quarantine_writer = _PartitionWriter(quarantine_root, load_id, partition=None)
    columns_seen: dict[str, pa.Field] = {}
    stopped: dict[str, PartialRead] = {}
    start_files = set(data_files(delta)) if delta is not None else set()
    done = False
    bar = _progress_bar(sum(f.size for f in to_read), progress)

    def write_events(events: pa.Table, rows: np.ndarray) -> None:
        fresh = _with_provenance(_rows_at_by_day(events, rows), load_id, started)
        for f in fresh.schema:
            columns_seen.setdefault(f.name, f)
        events_writer.write(fresh)

    try:
        _run(
            to_read, con, _Deduplicator(delta), limits, user_columns, summary,
            batch_records=batch_records, progress=bar, on_events=write_events,
            on_quarantine=quarantine_writer.write, ingested_at=started, digests=hashed_while_read, stopped=stopped,
        )
        # A file that broke off part way keeps the hash of its bytes as stored when they could all
        # be read, so the same bytes are passed over next time; else it has none and is read again.
        hashes = {
            file.path: digest.hexdigest() for file, digest in hashed_while_read.items()
            if file.path not in stopped or stopped[file.path].hashed
        }
        for detail in summary.file_details:
            if detail["hash"] is None:
                detail["hash"] = hashes.get(detail["path"])
            if detail["path"] in stopped:
                detail["status"] = "partial"
        quarantine_adds = quarantine_writer.close()
        event_adds = events_writer.close()
        # Only columns some written row has: names given to the leaves of records that were then
        # rejected (or of batches that failed) never reach the table, nor the ledger's mapping.
        written_columns = {name: pointer for name, pointer in user_columns.new.items() if name in columns_seen}
        with _commit_lock(uri):
            # Loads may run side by side: events another load committed since this one
            # started are duplicates here too, and are taken out before committing, as are the
            # rejected and skipped records of files such a load read; and the names of new
            # columns are fitted to those the other loads gave.
            meanwhile = _open_table(uri, must_exist=False)
            if meanwhile is not None and (delta is None or meanwhile.version() != delta.version()):
                event_adds = _drop_concurrent_duplicates(uri, start_files, event_adds, con, summary)
                still = _column_names(uri, event_adds)
                columns_seen = {name: f for name, f in columns_seen.items() if name in still}
                written_columns = {name: pointer for name, pointer in written_columns.items() if name in still}
                renames = UserColumns.settle(written_columns, _column_paths(meanwhile), meanwhile.schema().to_arrow().names)
                if renames:
                    event_adds = _renamed_columns(uri, event_adds, renames)
                    columns_seen = {renames.get(n, n): f.with_name(renames.get(n, n)) for n, f in columns_seen.items()}
                    written_columns = {renames.get(n, n): pointer for n, pointer in written_columns.items()}
                existing_names = meanwhile.schema().to_arrow().names
                if not force:
                    quarantine_adds = _drop_records_of_files_loaded_meanwhile(
                        quarantine_root, quarantine_adds, delta, meanwhile, summary
                    )
            summary.new_columns = sorted(set(written_columns) - set(existing_names))
            if quarantine_adds:
                quarantine_table = _open_quarantine(quarantine_root)
                _commit(quarantine_root, quarantine_table, quarantine_adds, QUARANTINE_SCHEMA, [], {_LEDGER_KEY + ".quarantine": load_id})
            finished = _now()
            summary.finished_at = finished.isoformat()
            summary.seconds = round((finished - started).total_seconds(), 3)
            current = _open_table(uri, must_exist=False)
            schema = _table_schema(current.schema().to_arrow().names if current is not None else existing_names, columns_seen)
            ledger = summary.to_dict(with_files=True)
            ledger["file_list"] = ledger.pop("file_details")
            ledger["column_paths"] = written_columns
            ledger.pop("version")
            committed = _commit(uri, current, event_adds, schema, [PARTITION_COLUMN], {_LEDGER_KEY: json.dumps(ledger)})
            done = True
        committed.update_incremental()
        summary.version = committed.version()
    except BaseException as error:
        if not done:
            # An interrupt (Ctrl-C) can land just after a commit returned, before this code knew: the Delta log
            # says which commits happened, and the files a commit lists are never removed.
            if _committed_by(uri, _LEDGER_KEY, load_id):
                error.add_note(f"load {load_id} had committed before this: its events are in the table")
            else:
                events_writer.abandon()
            if not _committed_by(quarantine_root, _LEDGER_KEY + ".quarantine", load_id):
                quarantine_writer.abandon()
        raise
    finally:
        if bar is not None:
            bar.close()
        con.close()
    return summary


class _InOrder:
    """Lets batch k through a step only after batch k - 1, one batch at a time.

    Batches are flattened side by side, but some steps must see them in
    order: naming new user columns (so collision suffixes do not depend on
    timing) and handing batches to the writer (so the first occurrence of a
    duplicate is the one kept).
    """

    def __init__(self) -> None:
        self._next = 0
        self._condition = threading.Condition()

    def turn(self, k: int) -> _Turn:
        """Batch k's turn: entered once batch k - 1 has had its own; may be entered again."""
        return _Turn(self, k)

    def skip(self, k: int) -> None:
        """Let the batches after k through (k failed, or never needed its turn)."""
        with self.turn(k):
            pass


class _Turn:
    def __init__(self, order: _InOrder, k: int) -> None:
        self.order = order
        self.k = k

    def __enter__(self) -> None:
        condition = self.order._condition
        condition.acquire()
        condition.wait_for(lambda: self.order._next >= self.k)

    def __exit__(self, *exc: object) -> None:
        self.order._next = max(self.order._next, self.k + 1)
        self.order._condition.notify_all()
        self.order._condition.release()


def _run(
    files: Sequence[PayloadFile],
    con: duckdb.DuckDBPyConnection,
    deduplicator: _Deduplicator,
    limits: FlattenLimits,
    user_columns: UserColumns,
    summary: LoadSummary,
    *,
    batch_records: int,
    progress: Any,
    on_events: Callable[[pa.Table, np.ndarray], None],
    on_quarantine: Callable[[pa.Table], None],
    ingested_at: dt.datetime,
    digests: Mapping[PayloadFile, Any] | None = None,
    stopped: dict[str, PartialRead] | None = None,
) -> None:
    """Read, flatten and deduplicate the files, counting into summary and handing rows on.

    ``on_events`` gets each batch's events with the positions of those new to the load and
    the table; ``on_quarantine`` its rejected and skipped records.

    Files that broke off part way are put in ``stopped`` (path → what happened).

    Three stages overlap: this thread reads, two workers flatten a batch
    each (DuckDB, a connection each), and a writer deduplicates and writes
    the batches in order (DuckDB and Parquet, its own connection). Reading
    waits while both workers are busy and a worker waits for the writer to
    take its batch, so at most four batches are in memory at once.
    """
    reasons: Counter[str] = Counter()
    capped: set[str] = set()
    stopped = {} if stopped is None else stopped
    naming = _InOrder()
    handing_on = _InOrder()
    writing: list[Future[None]] = []  # the batch the writer works on, if any
    local = threading.local()
    cursors: list[duckdb.DuckDBPyConnection] = []

    def process(k: int, lines: pa.Table, set_aside: pa.Table) -> None:
        try:
            if not hasattr(local, "con"):
                local.con = flatten_cursor(con)
                local.relations = {}
                cursors.append(local.con)
            flats = list(_flattened(local.con, lines, limits, user_columns, naming.turn(k), local.relations))
            naming.skip(k)  # a batch that never named columns (one record too large) must not hold up the next
            with handing_on.turn(k):
                for flat in flats:
                    if writing:
                        writing.pop().result()
                    writing.append(writer.submit(handle, flat, set_aside))
                    set_aside = set_aside.slice(0, 0)
        finally:
            naming.skip(k)
            handing_on.skip(k)

    def handle(flat: FlatBatch, set_aside: pa.Table) -> None:
        summary.records += flat.records + set_aside.num_rows
        if flat.events.num_rows:
            rows = deduplicator.new_rows(flat.events)
            summary.written += len(rows)
            summary.duplicates += flat.events.num_rows - len(rows)
            if len(rows):
                on_events(flat.events, rows)
        quarantined = _quarantine_table(flat, set_aside, summary.load_id, ingested_at)
        if quarantined.num_rows:
            kinds = Counter(quarantined.column("kind").to_pylist())
            summary.rejected += kinds.get("rejected", 0)
            summary.skipped += kinds.get("skipped", 0)
            reasons.update(_reason_key(r) for r in quarantined.column("reason").to_pylist())
            on_quarantine(quarantined)
        capped.update(flat.capped_keys)
        summary.too_deep += flat.too_deep

    try:
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaign-analytics-write") as writer,
            ThreadPoolExecutor(max_workers=_FLATTEN_WORKERS, thread_name_prefix="campaign-analytics-flatten") as flattener,
        ):
            pending: deque[Future[None]] = deque()
            batches = _line_batches(
                files, limits, batch_records=batch_records, progress=progress, digests=digests or {}, stopped=stopped
            )
            for k, batch in enumerate(batches):
                if len(pending) == _FLATTEN_WORKERS:
                    pending.popleft().result()
                pending.append(flattener.submit(process, k, *batch))
            while pending:
                pending.popleft().result()
            if writing:
                writing.pop().result()
    finally:
        for cursor in cursors:
            cursor.close()
    summary.reject_reasons = dict(reasons)
    summary.capped_keys = sorted(capped)
    summary.partial_files = list(stopped)


def _flattened(
    con: duckdb.DuckDBPyConnection,
    lines: pa.Table,
    limits: FlattenLimits,
    user_columns: UserColumns,
    naming: contextlib.AbstractContextManager[Any],
    relations: dict[str, duckdb.DuckDBPyRelation],
) -> Iterator[FlatBatch]:
    """Flatten a batch; if it does not fit the engine's memory limit, flatten its halves instead.

    Records with huge user objects can make one batch need far more memory
    than its size on disk. A single record that still does not fit is
    flattened on its own with more memory (see :func:`_flatten_alone`).
    """
    try:
        yield flatten_batch(con, lines, limits=limits, user_columns=user_columns, naming=naming, relations=relations)
        return
    except duckdb.OutOfMemoryException:
        if lines.num_rows > 1:
            half = lines.num_rows // 2
            yield from _flattened(con, lines.slice(0, half), limits, user_columns, naming, relations)
            yield from _flattened(con, lines.slice(half), limits, user_columns, naming, relations)
            return
    yield _flatten_alone(lines, limits, user_columns, naming)


def _flatten_alone(
    lines: pa.Table, limits: FlattenLimits, user_columns: UserColumns, naming: contextlib.AbstractContextManager[Any]
) -> FlatBatch:
    """Flatten one record on a connection of its own, with memory sized from max_record_bytes.

    One such record at a time, so two huge records never take that memory
    together. A record that needs more still is rejected with that reason
    rather than failing the load.
    """
    limit = _alone_memory_limit(limits.max_record_bytes)
    # The batch's naming turn before the lock: a worker holds the lock only inside its own turn,
    # so no worker waits for the lock while holding the turn another one needs.
    with naming, _ALONE:
        con = connect(threads=1, memory_limit=f"{limit}B")
        try:
            return flatten_batch(con, lines, limits=limits, user_columns=user_columns, naming=naming)
        except duckdb.OutOfMemoryException:
            pass
        finally:
            con.close()
    row = lines.to_pylist()[0]
    reason = (
        f"too large to flatten: the record needs more than {limit >> 20:,} MiB of memory, the most one record "
        f"may use here ({_ALONE_MEMORY_PER_RECORD_BYTE} x max_record_bytes, at most 80% of this machine's "
        "memory); raise max_record_bytes, or load it on a machine with more memory"
    )
    rejected = _rejected_rows([(reason, (row["raw"] or "")[:1024], row["source_file"], row["source_line"])])
    return FlatBatch(events=pa.table({}), quarantine=rejected, records=1)


def _alone_memory_limit(max_record_bytes: int) -> int:
    """Bytes of DuckDB memory for one record flattened alone: at least the shared limit, at most DuckDB's default here."""
    limit = max(_ALONE_MEMORY_PER_RECORD_BYTE * max_record_bytes, _MEMORY_LIMIT_BYTES)
    return min(limit, _engine_default_memory() or limit)


def _engine_default_memory() -> int | None:
    """The memory limit DuckDB sets itself here (80% of what this process may use, cgroups included), in bytes."""
    con = duckdb.connect()
    try:
        rows = con.sql("SELECT current_setting('memory_limit')").fetchall()
    finally:
        con.close()
    return _size_bytes(str(rows[0][0])) if rows else None


def _size_bytes(text: str) -> int | None:
    """Bytes of a DuckDB size text such as '18.8 GiB'; None when it is not one."""
    number, _, unit = text.strip().partition(" ")
    try:
        return int(float(number) * _SIZE_UNITS[unit])
    except (ValueError, KeyError):
        return None


def _reason_key(reason: str) -> str:
    """The kind of problem (the text before the first colon), so counts group by kind, not by value."""
    return reason.split(":", 1)[0]


def _table_schema(existing: list[str], seen: dict[str, pa.Field]) -> pa.Schema:
    """The table's columns after this load: core, user columns (variables, then metadata), raw JSON, provenance."""
    full = {f.name: f for f in CORE_SCHEMA}
    full.update({f.name: f for f in RAW_JSON_COLUMNS})
    full.update({f.name: f for f in PROVENANCE_COLUMNS})
    user = sorted(set(n for n in seen if n not in full) | set(n for n in existing if n not in full), key=_user_column_order)
    return pa.schema(
        [full[n] for n in _FIXED_HEAD] + [pa.field(n, pa.string()) for n in user] + [full[n] for n in _FIXED_TAIL]
    )


def _open_quarantine(root: str) -> DeltaTable | None:
    if _has_commit(root):
        return DeltaTable(root)
    return None


def _progress_bar(total: int, progress: bool | None) -> Any:
    if progress is None:
        progress = sys.stderr.isatty() and total > 64 << 20
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="ingest", file=sys.stderr)


def events_dataset(table: PathLike) -> Any:
    """The live Parquet files of the events table as a ``pyarrow.dataset.Dataset``.

    Only files the Delta log lists as live are part of it, so files left by a
    load that never committed are never read.

    Examples
    --------
    >>> import tempfile, campaign_analytics as ca
    >>> path = tempfile.mkdtemp() + "/events"
    >>> _ = ca.ingest("data/sample", path)
    >>> ca.events_dataset(path).count_rows() > 0
    True
    """
    uri = _table_uri(table)
    delta = _open_table(uri, must_exist=True)
    assert delta is not None
    return _live_files(delta, uri)


def _live_files(delta: DeltaTable, root: str) -> Any:
    """The live Parquet files of a local Delta table as an Arrow dataset, typed by the Delta schema.

    Not ``DeltaTable.to_pyarrow_dataset()``: its file system is implemented in
    Python, and an Arrow worker thread that drops the last reference to it
    while the interpreter shuts down aborts the process.
    """
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    schema = pa.schema(delta.schema().to_arrow())  # deltalake >= 1.0 gives an arro3 schema
    partitions = list(delta.metadata().partition_columns)
    partitioning = ds.partitioning(pa.schema([schema.field(c) for c in partitions]), flavor="hive") if partitions else None
    files = data_files(delta)
    return ds.dataset(
        files, schema=schema, format="parquet", partitioning=partitioning, partition_base_dir=root,
        filesystem=pafs.LocalFileSystem(),
    )


# The loader keeps event times in EVENT_TIME_RANGE only: bounds outside it select the same rows as
# its own ends, and are clamped to them.
_EARLIEST, _LATEST = EVENT_TIME_RANGE


def _as_utc(value: object, *, name: str, end: bool) -> dt.datetime:
    """A time bound as an aware UTC datetime; a bare date is a whole UTC day (``end`` takes the day after).

    Text must be ISO 8601 (``2026-11-02``, ``20261102``, ``2026-11-02T10:00Z``): a form like
    ``02/11/2026`` means different days in different countries, so it is refused, not guessed.
    A time without an offset is UTC.
    """
    example = "use e.g. '2026-11-02' (a whole UTC day) or '2026-11-02T10:00Z'"

    def whole_day(day: dt.date) -> dt.datetime:
        if end and day >= _LATEST.date():
            return _LATEST
        return dt.datetime.combine(day + dt.timedelta(days=1) if end else day, dt.time())

    moment: dt.datetime
    if isinstance(value, dt.datetime):  # a pandas Timestamp is one too
        moment = value
    elif isinstance(value, dt.date):
        moment = whole_day(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(text)
            except ValueError:
                raise ParameterError(f"{name}={value!r} is not an ISO 8601 date or time; {example}.") from None
        else:
            moment = whole_day(day)
    else:
        raise ParameterError(f"{name} must be a date, a datetime or ISO 8601 text, not {type(value).__name__} {value!r}; {example}.")
    try:
        moment = moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment.astimezone(dt.timezone.utc)
    except OverflowError:  # year 1 or 9999 shifted past the calendar: far outside the range either way
        return _LATEST if moment.year > _LATEST.year else _EARLIEST
    return min(max(moment, _EARLIEST), _LATEST)


def read_events(
    table: PathLike,
    start: str | dt.date | dt.datetime | None = None,
    end: str | dt.date | dt.datetime | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read the events table (or part of it) as a pandas DataFrame.

    Parameters
    ----------
    table
        The table directory.
    start, end
        Keep events whose ``event_time`` is at or after ``start`` and before
        ``end``. A bare date (``"2026-11-02"`` or ``datetime.date``) means the
        whole UTC day, so ``end="2026-11-02"`` includes that day. Text is ISO
        8601; a time without an offset is taken as UTC.
    columns
        Columns to read (default: all), in the table's order.

    Raises
    ------
    ParameterError
        A bound that is not a date or time, ``start`` after ``end``, or an
        unknown or repeated column name.
    TableError
        No events table at ``table``.

    Returns
    -------
    pandas.DataFrame
        Core columns first, then ``variables__*`` / ``metadata__*`` (numeric or
        boolean where every value of the column is), then raw JSON and
        provenance columns. Timestamps are ``datetime64[ms, UTC]``.

    Examples
    --------
    >>> import tempfile, campaign_analytics as ca
    >>> path = tempfile.mkdtemp() + "/events"
    >>> _ = ca.ingest("data/sample", path)
    >>> events = ca.read_events(path, start="2026-11-02", end="2026-11-03")
    >>> events["event_date"].astype(str).unique().tolist()
    ['2026-11-02', '2026-11-03']
    """
    import pyarrow.dataset as ds

    lower = _as_utc(start, name="start", end=False) if start is not None else None
    upper = _as_utc(end, name="end", end=True) if end is not None else None
    if lower is not None and upper is not None and lower >= upper:
        raise ParameterError(f"start={start!r} is not before end={end!r}: nothing could match. Swap them?")
    if columns is not None:
        if isinstance(columns, str):
            raise ParameterError(f"columns must be a list of column names, not {columns!r}; e.g. columns=['event_id', 'event_time'].")
        columns = list(columns)  # once: a generator could be read only once
        if not all(isinstance(c, str) for c in columns):
            raise ParameterError(f"columns must be a list of column names, not {columns!r}; e.g. columns=['event_id', 'event_time'].")
        repeated = sorted({c for c in columns if list(columns).count(c) > 1})
        if repeated:
            raise ParameterError(f"Column(s) {repeated} asked for more than once; name each column once.")
    dataset = events_dataset(table)
    names = dataset.schema.names
    if columns is not None:
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise ParameterError(f"Unknown column(s) {unknown}; the table has: {', '.join(names)}.")
    expression = None
    if lower is not None:
        expression = (ds.field(PARTITION_COLUMN) >= lower.date()) & (ds.field("event_time") >= lower)
    if upper is not None:
        upper_filter = (ds.field(PARTITION_COLUMN) <= upper.date()) & (ds.field("event_time") < upper)
        expression = upper_filter if expression is None else expression & upper_filter
    arrow = dataset.to_table(columns=list(columns) if columns is not None else None, filter=expression)
    return _to_pandas(arrow)


def _user_column_order(name: str) -> tuple[int, str]:
    """The contract's order of user columns: every variables__* column, then every metadata__* one, each by name."""
    prefix = name.split("__", 1)[0]
    return (USER_PREFIXES.index(prefix) if prefix in USER_PREFIXES else len(USER_PREFIXES), name)


def _ordered(names: Sequence[str]) -> list[str]:
    fixed = set(_FIXED_HEAD) | set(_FIXED_TAIL)
    user = sorted((n for n in names if n not in fixed), key=_user_column_order)
    present = set(names)
    return [n for n in _FIXED_HEAD if n in present] + user + [n for n in _FIXED_TAIL if n in present]


_JSON_INTEGER = r"^-?(?:0|[1-9][0-9]*)$"
_JSON_NUMBER = f"^{JSON_NUMBER}$"
# float64 holds every whole number of up to 15 digits exactly (2**53 has 16); a longer integer part may lose digits.
_BEYOND_FLOAT_DIGITS = r"^-?[0-9]{16,}"


def _user_series(array: pa.ChunkedArray) -> pd.Series:
    """A user column as numbers or booleans when every value is one exactly, else as text.

    Whole numbers become Int64 when they all fit it. Other numbers become
    float64, unless one has more integer digits than a float64 holds
    exactly (an order id like 12345678901234567890): that column stays text,
    so no digit is lost.
    """
    import pandas as pd
    values = array.drop_null()
    if len(values) == 0:
        return array.to_pandas()
    if pc.all(pc.match_substring_regex(values, _JSON_INTEGER)).as_py():
        try:
            return pd.Series(array.cast(pa.int64()).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get))
        except (pa.ArrowInvalid, OverflowError):
            return pd.Series(array.to_pandas())
    if pc.all(pc.match_substring_regex(values, _JSON_NUMBER)).as_py():
        if pc.any(pc.match_substring_regex(values, _BEYOND_FLOAT_DIGITS)).as_py():
            return pd.Series(array.to_pandas())
        return pd.Series(array.cast(pa.float64()).to_pandas())
    if pc.all(pc.is_in(values, pa.array(["true", "false"]))).as_py():
        return pd.Series(pc.equal(array, "true").to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get))
    return pd.Series(array.to_pandas())


def _to_pandas(arrow: pa.Table) -> pd.DataFrame:
    """Arrow events → pandas: column order of the contract, ms timestamps, typed user columns, lists as lists."""
    import pandas as pd
    columns: dict[str, Any] = {}
    for name in _ordered(arrow.column_names):
        array = arrow.column(name)
        if pa.types.is_timestamp(array.type):
            columns[name] = array.cast(pa.timestamp("ms", tz="UTC")).to_pandas()
        elif name.startswith(("variables__", "metadata__")):
            columns[name] = _user_series(array)
        elif pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            columns[name] = pd.Series(array.to_pylist(), dtype=object)
        elif pa.types.is_integer(array.type) and array.null_count:
            # Nullable integers stay integers (float64 would turn 3 into 3.0).
            columns[name] = array.to_pandas(types_mapper={array.type: pd.Int64Dtype() if array.type == pa.int64() else pd.Int32Dtype()}.get)
        elif pa.types.is_date(array.type):
            columns[name] = pd.Series(array.to_pandas(date_as_object=True), dtype=object)
        else:
            columns[name] = array.to_pandas()
    frame = pd.DataFrame(
        {name: pd.Series(series).reset_index(drop=True) for name, series in columns.items()},
        index=pd.RangeIndex(arrow.num_rows),
    )
    if "event_date" in frame:
        frame["event_date"] = pd.to_datetime(frame["event_date"]).dt.date.astype(object) if len(frame) else frame["event_date"]
    return frame


def load(sources: Sources, *, limits: FlattenLimits | None = None, batch_records: int = 50_000) -> pd.DataFrame:
    """Read and flatten payload files into a DataFrame, without writing a table.

    The same rows ``ingest`` would write (deduplicated, flattened, typed), for
    analyses that only need the loader. Rejected and skipped records are in
    ``frame.attrs["quarantine"]`` and the counts in ``frame.attrs["load_summary"]``.

    Parameters
    ----------
    sources
        Files, directories or glob patterns, as for :func:`ingest`.
    limits
        Caps on nesting depth, user columns and record size.
    batch_records
        Records per batch.

    Returns
    -------
    pandas.DataFrame
        One row per unique event, columns as :func:`read_events` gives them.

    Raises
    ------
    SourceError
        A source is missing or cannot be read at all.
    ParameterError
        ``limits`` is not a :class:`FlattenLimits`, or ``batch_records`` is not a
        whole number of at least 1.

    Examples
    --------
    >>> import campaign_analytics as ca
    >>> events = ca.load("data/sample")
    >>> events.attrs["load_summary"]["records"] >= len(events)
    True
    """
    limits = _load_options(limits, batch_records)
    files = find_files(sources)
    started = _now()
    summary = LoadSummary(load_id="in-memory", table="", started_at=started.isoformat(), files=len(files))
    con = connect(threads=_DUCKDB_THREADS, memory_limit=f"{_MEMORY_LIMIT_BYTES}B")
    events: list[pa.Table] = []
    quarantine: list[pa.Table] = []
    try:
        _run(
            files, con, _Deduplicator(None), limits, UserColumns(max_columns=limits.max_user_columns), summary,
            batch_records=batch_records, progress=None,
            on_events=lambda batch, rows: events.append(rows_at(batch, rows)), on_quarantine=quarantine.append,
            ingested_at=started,
        )
    finally:
        con.close()
    if events:
        arrow = _with_provenance(pa.concat_tables(events, promote_options="default"), None, started)
    else:
        arrow = _table_schema([], {}).empty_table()
    frame = _to_pandas(arrow)
    finished = _now()
    summary.finished_at = finished.isoformat()
    summary.seconds = round((finished - started).total_seconds(), 3)
    frame.attrs["load_summary"] = summary.to_dict()
    frame.attrs["quarantine"] = _quarantine_frame(pa.concat_tables(quarantine) if quarantine else QUARANTINE_SCHEMA.empty_table())
    return frame


def _committed_loads(table: DeltaTable) -> set[str]:
    return {entry["load_id"] for entry in _ledger(table)}


def _read_quarantine(table: PathLike, kind: str, load_id: str | None) -> pd.DataFrame:
    uri = _table_uri(table)
    delta = _open_table(uri, must_exist=True)
    assert delta is not None
    quarantine = _open_quarantine(os.path.join(uri, QUARANTINE_DIR))
    if quarantine is None:
        return _quarantine_frame(QUARANTINE_SCHEMA.empty_table())
    import pyarrow.dataset as ds

    committed = _committed_loads(delta)
    if load_id is not None:
        if load_id not in committed:
            raise ParameterError(f"No committed load {load_id!r} in {uri!r}; see read_loads() for the load ids.")
        committed = {load_id}
    arrow = _live_files(quarantine, os.path.join(uri, QUARANTINE_DIR)).to_table(
        filter=(ds.field("kind") == kind) & ds.field("load_id").isin(sorted(committed))
    )
    arrow = arrow.sort_by([("ingested_at", "ascending"), ("source_file", "ascending"), ("source_line", "ascending")])
    return _quarantine_frame(arrow)


def _quarantine_frame(arrow: pa.Table) -> pd.DataFrame:
    """Rejected or skipped records as pandas, columns in the quarantine table's order."""
    frame = _to_pandas(arrow)
    return frame[[name for name in QUARANTINE_SCHEMA.names if name in frame.columns]]


def read_rejected(table: PathLike, load_id: str | None = None) -> pd.DataFrame:
    """Records that could not be loaded, with the reason, raw text, file and line.

    Parameters
    ----------
    table
        The table directory.
    load_id
        Only this load's records (default: every committed load).

    Returns
    -------
    pandas.DataFrame
        Columns kind, reason, trigger, raw, source_file, source_line, load_id, ingested_at.

    Examples
    --------
    >>> import tempfile, campaign_analytics as ca
    >>> path = tempfile.mkdtemp() + "/events"
    >>> summary = ca.ingest("data/sample", path)
    >>> len(ca.read_rejected(path)) == summary.rejected
    True
    """
    return _read_quarantine(table, "rejected", load_id)


def read_skipped(table: PathLike, load_id: str | None = None) -> pd.DataFrame:
    """Records of other CometChat triggers (e.g. ``after_message``), kept but not loaded as events.

    Same columns as :func:`read_rejected`.

    Examples
    --------
    >>> import tempfile, campaign_analytics as ca
    >>> path = tempfile.mkdtemp() + "/events"
    >>> summary = ca.ingest("data/sample", path)
    >>> len(ca.read_skipped(path)) == summary.skipped
    True
    """
    return _read_quarantine(table, "skipped", load_id)


def read_loads(table: PathLike, *, files: bool = False) -> pd.DataFrame:
    """The ledger: what was loaded when.

    Parameters
    ----------
    table
        The table directory.
    files
        One row per file of each load (path, size, content hash, status)
        instead of one row per load. Status is ``loaded``, ``unchanged``
        (passed over: a committed load holds the same bytes) or ``partial``
        (the file broke off part way; the records before the break were
        loaded). The hash is of the bytes as stored; it is empty when they
        could not all be read.

    Returns
    -------
    pandas.DataFrame
        Per load: load_id, table_version, committed_at, started_at, seconds,
        files, files_unchanged, records, written, duplicates, rejected,
        skipped, new_columns, capped_keys.

    Examples
    --------
    >>> import tempfile, campaign_analytics as ca
    >>> path = tempfile.mkdtemp() + "/events"
    >>> _ = ca.ingest("data/sample", path)
    >>> ca.read_loads(path)[["records", "written"]].shape
    (1, 2)
    """
    import pandas as pd
    delta = _open_table(_table_uri(table), must_exist=True)
    assert delta is not None
    entries = _ledger(delta)
    if files:
        rows = [{"load_id": e["load_id"], **f} for e in entries for f in e.get("file_list", [])]
        return pd.DataFrame(rows, columns=["load_id", "path", "size", "hash", "status"])
    keep = [
        "load_id", "table_version", "committed_at", "started_at", "seconds", "files", "files_unchanged",
        "records", "written", "duplicates", "rejected", "skipped", "new_columns", "capped_keys",
    ]
    frame = pd.DataFrame([{k: e.get(k) for k in keep} for e in entries], columns=keep)
    frame["committed_at"] = pd.to_datetime(frame["committed_at"], unit="ms", utc=True).astype("datetime64[ms, UTC]")
    return frame


def vacuum(table: PathLike, *, dry_run: bool = True, min_age_hours: float = 1.0) -> list[str]:
    """Files under the table that no commit lists: what a killed or failed load left behind.

    Such files are never read (readers follow the commit log), but they take
    space. Files younger than ``min_age_hours`` are left alone, so a load that
    is still running elsewhere keeps its files.

    Parameters
    ----------
    table
        The table directory.
    dry_run
        Only list the files (the default); ``False`` deletes them.
    min_age_hours
        Leave files modified more recently than this.

    Returns
    -------
    list[str]
        The files (relative to the table directory) removed, or that would be.

    Examples
    --------
    >>> import tempfile, campaign_analytics as ca
    >>> path = tempfile.mkdtemp() + "/events"
    >>> _ = ca.ingest("data/sample", path)
    >>> ca.vacuum(path)
    []
    """
    if isinstance(min_age_hours, bool) or not isinstance(min_age_hours, (int, float)) or not min_age_hours >= 0:  # NaN too
        raise ParameterError(f"min_age_hours must be a number of hours, 0 or more, not {min_age_hours!r}.")
    uri = _table_uri(table)
    try:
        delta = _open_table(uri, must_exist=False)
    except TableError:
        # Not a folder a load could write into: say so as a reader would, since vacuum writes nothing new.
        delta = _open_table(uri, must_exist=True)
    if delta is None and not os.path.isdir(uri):
        raise TableError(f"There is no table at {uri!r}: nothing to clean up.")
    cutoff = time.time() - min_age_hours * 3600
    found: list[str] = []
    if delta is None:
        # No load ever committed: every data file here was left by one that did not.
        for root, _, names in os.walk(uri):
            for name in names:
                path = os.path.join(root, name)
                relative = os.path.relpath(path, uri)
                if name.endswith(".parquet") and not relative.startswith("_delta_log"):
                    if os.path.getmtime(path) <= cutoff:
                        found.append(relative)
        if not dry_run:
            for relative in found:
                os.remove(os.path.join(uri, relative))
        return sorted(found)
    for log, prefix in ((delta, ""), (_open_quarantine(os.path.join(uri, QUARANTINE_DIR)), QUARANTINE_DIR + "/")):
        if log is None:
            continue
        for relative in log.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True):
            path = os.path.join(uri, prefix + relative)
            if os.path.isfile(path) and os.path.getmtime(path) <= cutoff:
                found.append(prefix + relative)
    quarantine_root = os.path.join(uri, QUARANTINE_DIR)
    if _open_quarantine(quarantine_root) is None and os.path.isdir(quarantine_root):
        for name in os.listdir(quarantine_root):
            path = os.path.join(quarantine_root, name)
            if name.endswith(".parquet") and os.path.getmtime(path) <= cutoff:
                found.append(f"{QUARANTINE_DIR}/{name}")
    if not dry_run:
        for relative in found:
            os.remove(os.path.join(uri, relative))
    return sorted(found)
