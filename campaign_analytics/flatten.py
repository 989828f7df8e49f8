"""Payload → row: typed core columns, ``variables__*`` / ``metadata__*`` text columns, tags, raw JSON.

Records arrive as raw bytes (from :mod:`campaign_analytics.sources`). One pass
in Python does only what needs the whole record: parse it (orjson), sort it
into event / rejected / skipped, and compute the event id from its canonical
JSON. Everything column-shaped (typing, timestamp rules, the stage's own
timestamp, flattening of user objects) then runs as one vectorised DuckDB
query per batch.

User-defined leaves are stored as text so the table schema never depends on
arrival order: a key that is ``15`` in one event and ``"10%"`` in another is
two text values of one column.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb
import orjson
import pyarrow as pa

from .sources import OVERSIZE_MARKER, Chunk
from .triggers import STAGE_TIMESTAMP_FIELDS, TRIGGERS

__all__ = [
    "CORE_SCHEMA",
    "RAW_JSON_COLUMNS",
    "PROVENANCE_COLUMNS",
    "QUARANTINE_SCHEMA",
    "USER_PREFIXES",
    "FlattenLimits",
    "BatchBuilder",
    "FlatBatch",
    "user_column_name",
    "flatten_batch",
]

USER_PREFIXES: Final[tuple[str, ...]] = ("variables", "metadata")
_TS = pa.timestamp("ms", tz="UTC")

# The events table's fixed columns, in table order (user columns follow the core ones).
CORE_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        ("event_id", pa.string()),
        ("trigger", pa.string()),
        ("entity", pa.string()),
        ("stage", pa.string()),
        ("app_id", pa.string()),
        ("region", pa.string()),
        ("webhook_id", pa.string()),
        ("campaign_id", pa.string()),
        ("notification_id", pa.string()),
        ("item_id", pa.string()),
        ("template_id", pa.string()),
        ("template_version", pa.int32()),
        ("receiver", pa.string()),
        ("channel_type", pa.string()),
        ("channel_id", pa.string()),
        ("status", pa.string()),
        ("label", pa.string()),
        ("category", pa.string()),
        ("category_id", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("topic", pa.string()),
        ("error_message", pa.string()),
        ("name", pa.string()),
        ("tag", pa.string()),
        ("data_type", pa.string()),
        ("alternative_text", pa.string()),
        ("send_mode", pa.string()),
        ("priority", pa.string()),
        ("channels", pa.list_(pa.string())),
        ("realtime_fanout", pa.list_(pa.string())),
        ("total_targets", pa.int64()),
        ("sent_count", pa.int64()),
        ("failed_count", pa.int64()),
        *[(column, _TS) for column in STAGE_TIMESTAMP_FIELDS.values()],
        ("event_time", _TS),
        ("event_date", pa.date32()),
    ]
)
RAW_JSON_COLUMNS: Final[pa.Schema] = pa.schema(
    [
        ("variables_json", pa.string()),
        ("metadata_json", pa.string()),
        ("content_json", pa.string()),
        ("extra_json", pa.string()),
    ]
)
PROVENANCE_COLUMNS: Final[pa.Schema] = pa.schema(
    [
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("load_id", pa.string()),
        ("ingested_at", _TS),
    ]
)
QUARANTINE_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        ("kind", pa.string()),
        ("reason", pa.string()),
        ("trigger", pa.string()),
        ("raw", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("load_id", pa.string()),
        ("ingested_at", _TS),
    ]
)

# data field → (column, kind). kind: text | int32 | int64 | list | json
_DATA_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "campaignId": ("campaign_id", "text"),
    "notificationId": ("notification_id", "text"),
    "id": ("id", "text"),
    "pushNotificationId": ("push_notification_id", "text"),
    "appId": ("data_app_id", "text"),
    "templateId": ("template_id", "text"),
    "templateVersion": ("template_version", "int32"),
    "receiver": ("receiver", "text"),
    "channelType": ("channel_type", "text"),
    "channelId": ("channel_id", "text"),
    "status": ("status", "text"),
    "label": ("label", "text"),
    "templateCategory": ("template_category", "text"),
    "category": ("data_category", "text"),
    "categoryId": ("category_id", "text"),
    "tags": ("tags", "list"),
    "topic": ("topic", "text"),
    "errorMessage": ("error_message", "text"),
    "name": ("name", "text"),
    "tag": ("tag", "text"),
    "dataType": ("data_type", "text"),
    "alternativeText": ("alternative_text", "text"),
    "sendMode": ("send_mode", "text"),
    "priority": ("priority", "text"),
    "channels": ("channels", "list"),
    "realtimeFanout": ("realtime_fanout", "list"),
    "totalTargets": ("total_targets", "int64"),
    "sentCount": ("sent_count", "int64"),
    "failedCount": ("failed_count", "int64"),
    "variables": ("variables_json", "json"),
    "metadata": ("metadata_json", "json"),
    "content": ("content_json", "json"),
    **{name: (column, "timestamp") for name, column in STAGE_TIMESTAMP_FIELDS.items()},
}
_KNOWN_DATA_KEYS: Final[frozenset[str]] = frozenset(_DATA_FIELDS)
_UNSAFE_KEY_CHARS: Final[re.Pattern[str]] = re.compile(r"[^0-9A-Za-z_]")
# Timestamps outside [1970-01-01, 2200-01-01) are taken as wrong data, not as dates.
_MIN_EPOCH_MS: Final[int] = 0
_MAX_EPOCH_MS: Final[int] = 7_258_118_400_000
_MILLISECONDS_FROM: Final[float] = 1e11


@dataclass(frozen=True, slots=True)
class FlattenLimits:
    """Limits that keep pathological payloads from hurting the table.

    Parameters
    ----------
    max_depth
        User objects nested deeper than this many keys are not flattened into
        columns; they stay in ``variables_json`` / ``metadata_json``.
    max_user_columns
        At most this many ``variables__*`` plus ``metadata__*`` columns in the
        table. Keys past the cap stay in the raw JSON columns only and are
        listed in the load summary.
    max_record_bytes
        A record larger than this is rejected without being read whole.
    """

    max_depth: int = 8
    max_user_columns: int = 1000
    max_record_bytes: int = 16 << 20


def user_column_name(prefix: str, path: Sequence[str]) -> str:
    """Column name of a user-defined leaf.

    Parameters
    ----------
    prefix
        ``"variables"`` or ``"metadata"``.
    path
        The keys from the top of the object down to the leaf.

    Returns
    -------
    str
        ``prefix__key1__key2``, where every character of a key outside letters,
        digits and ``_`` becomes ``_`` (an empty key becomes ``_``).

    Examples
    --------
    >>> user_column_name("variables", ["cart", "item-count"])
    'variables__cart__item_count'
    """
    return "__".join([prefix, *(_UNSAFE_KEY_CHARS.sub("_", key) or "_" for key in path)])


@dataclass(slots=True)
class FlatBatch:
    """The outcome of flattening one batch.

    ``events`` holds every accepted record (duplicates not yet removed: that
    is the store's job), ``quarantine`` the rejected and skipped ones, and
    ``capped_keys`` the user columns left out because of ``max_user_columns``.
    """

    events: pa.Table
    quarantine: pa.Table
    capped_keys: set[str] = field(default_factory=set)
    too_deep: int = 0


class BatchBuilder:
    """Sorts raw records into events, rejected and skipped, one chunk at a time.

    The only per-record Python work in a load: parse, check the envelope,
    compute the event id. Call :meth:`add` with chunks, then :meth:`take` to
    get the batch as Arrow arrays and start a new one.
    """

    def __init__(self, *, max_record_bytes: int = FlattenLimits.max_record_bytes) -> None:
        self.max_record_bytes = max_record_bytes
        self._hash_prefixes: dict[tuple[str, str | None], bytes] = {}
        self._reset()

    def _reset(self) -> None:
        self.trigger: list[str] = []
        self.event_id: list[str] = []
        self.raw: list[bytes] = []
        self.extra_json: list[str | None] = []
        self.source_file: list[str] = []
        self.source_line: list[int] = []
        self.quarantine: dict[str, list[Any]] = {name: [] for name in ("kind", "reason", "trigger", "raw", "source_file", "source_line")}

    def __len__(self) -> int:
        return len(self.event_id) + len(self.quarantine["kind"])

    def _set_aside(self, kind: str, reason: str, trigger: str | None, raw: bytes, source_file: str, line: int) -> None:
        q = self.quarantine
        q["kind"].append(kind)
        q["reason"].append(reason)
        q["trigger"].append(trigger)
        q["raw"].append(raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace"))
        q["source_file"].append(source_file)
        q["source_line"].append(line)

    def add(self, chunk: Chunk) -> None:
        """Parse every record of a chunk and sort it into this batch."""
        loads, dumps, sort_keys = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
        decode_error = orjson.JSONDecodeError
        blake2b, known_keys, triggers = hashlib.blake2b, _KNOWN_DATA_KEYS, TRIGGERS
        prefixes = self._hash_prefixes
        source_file = chunk.source_file
        line_number = chunk.first_line - 1
        for line in chunk.lines:
            line_number += 1
            if not line or line.isspace():
                continue
            try:
                record = loads(line)
            except decode_error as error:
                if line.startswith(OVERSIZE_MARKER):
                    size, _, preview = line[len(OVERSIZE_MARKER):].partition(b"\n")
                    self._set_aside(
                        "rejected",
                        f"record too large: {int(size):,} bytes, over max_record_bytes={self.max_record_bytes:,} "
                        "(only its first bytes are kept here)",
                        None, preview, source_file, line_number,
                    )
                else:
                    self._set_aside("rejected", f"invalid JSON: {error}", None, line, source_file, line_number)
                continue
            if type(record) is not dict:
                self._set_aside(
                    "rejected", f"not a JSON object: got a JSON {_json_kind(record)}", None, line, source_file, line_number
                )
                continue
            trigger = record.get("trigger")
            data = record.get("data")
            if type(trigger) is not str:
                reason = "no trigger" if trigger is None else f"trigger not a string: got a JSON {_json_kind(trigger)}"
                self._set_aside("rejected", reason, None, line, source_file, line_number)
                continue
            if trigger not in triggers:
                self._set_aside(
                    "skipped", f"not a campaign trigger: {trigger[:80]!r}", trigger, line, source_file, line_number
                )
                continue
            if type(data) is not dict:
                reason = "no data object" if data is None else f"no data object: data is a JSON {_json_kind(data)}"
                self._set_aside("rejected", reason, trigger, line, source_file, line_number)
                continue
            version = data.get("templateVersion")
            if type(version) is str:
                try:
                    data["templateVersion"] = int(version)
                except ValueError:
                    pass
            app_id = record.get("appId")
            prefix = prefixes.get((trigger, app_id)) if type(app_id) is str or app_id is None else None
            if prefix is None:
                prefix = b"%s\x1f%s\x1f" % (trigger.encode(), (_text(app_id) or "").encode())
                if len(prefixes) < 10_000:
                    prefixes[(trigger, app_id)] = prefix
            digest = blake2b(prefix, digest_size=16)
            digest.update(dumps(data, option=sort_keys))
            self.event_id.append(digest.hexdigest())
            self.trigger.append(trigger)
            self.raw.append(line)
            if data.keys() <= known_keys:
                self.extra_json.append(None)
            else:
                self.extra_json.append(dumps({k: v for k, v in data.items() if k not in known_keys}).decode())
            self.source_file.append(source_file)
            self.source_line.append(line_number)

    def take(self) -> tuple[pa.Table, pa.Table]:
        """The records added so far, as (accepted, quarantined) Arrow tables; the builder starts afresh."""
        accepted = pa.table(
            {
                "trigger": pa.array(self.trigger, pa.string()),
                "event_id": pa.array(self.event_id, pa.string()),
                "raw": pa.array(self.raw, pa.binary()).cast(pa.string()),
                "extra_json": pa.array(self.extra_json, pa.string()),
                "source_file": pa.array(self.source_file, pa.string()),
                "source_line": pa.array(self.source_line, pa.int64()),
            }
        )
        q = self.quarantine
        quarantined = pa.table(
            {
                "kind": pa.array(q["kind"], pa.string()),
                "reason": pa.array(q["reason"], pa.string()),
                "trigger": pa.array(q["trigger"], pa.string()),
                "raw": pa.array(q["raw"], pa.string()),
                "source_file": pa.array(q["source_file"], pa.string()),
                "source_line": pa.array(q["source_line"], pa.int64()),
            }
        )
        self._reset()
        return accepted, quarantined


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _text(value: object) -> str | None:
    if value is None or type(value) is str:
        return value  # type: ignore[return-value]
    return orjson.dumps(value).decode()


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _stage1_sql() -> str:
    """The typed extraction of one batch: one JSON parse per record, everything else columnar.

    Three layers, so every value is cast once: the parsed fields as text, then
    typed values, then what depends on them (entity, stage, event_time, the
    reject reason comparing text and typed value).
    """
    struct_fields = []
    for name, (_, kind) in _DATA_FIELDS.items():
        struct_fields.append(f'"{name}":"{"JSON" if kind in ("list", "json") else "VARCHAR"}"')
    passthrough = ["event_id", "trigger", "region", "webhook_id", "extra_json", "source_file", "source_line"]
    envelope = (
        '{"appId":"VARCHAR","region":"VARCHAR","webhook":"VARCHAR","data":' + "{" + ",".join(struct_fields) + "}}"
    )
    typed = [*passthrough, "coalesce(envelope_app_id, \"appId\") AS app_id"]
    final = [*passthrough, "app_id"]
    reasons = []
    for name, (column, kind) in _DATA_FIELDS.items():
        raw = _sql_ident(name)
        if kind == "text":
            typed.append(f"{raw} AS {column}")
        elif kind in ("int32", "int64"):
            sql_type = "INTEGER" if kind == "int32" else "BIGINT"
            typed.append(f"{raw} AS _raw_{column}")
            typed.append(
                f"CASE WHEN TRY_CAST({raw} AS DOUBLE) = floor(TRY_CAST({raw} AS DOUBLE)) "
                f"THEN TRY_CAST(TRY_CAST({raw} AS DOUBLE) AS {sql_type}) END AS {column}"
            )
            reasons.append(
                f"CASE WHEN _raw_{column} IS NOT NULL AND {column} IS NULL THEN "
                f"'not a whole number: {name}=' || left(_raw_{column}, 60) END"
            )
        elif kind == "list":
            typed.append(
                f"CASE WHEN {raw} IS NULL THEN NULL ELSE CASE json_type({raw}) "
                f"WHEN 'ARRAY' THEN from_json({raw}, '[\"VARCHAR\"]') WHEN 'NULL' THEN NULL "
                f"WHEN 'VARCHAR' THEN [{raw} ->> '$'] ELSE [CAST({raw} AS VARCHAR)] END END AS {column}"
            )
        elif kind == "json":
            typed.append(f"CASE WHEN json_type({raw}) <> 'NULL' THEN CAST({raw} AS VARCHAR) END AS {column}")
        elif kind == "timestamp":
            typed.append(f"{raw} AS _raw_{column}")
            typed.append(f"_ts_ms({raw}) AS {column}")
            reasons.append(
                f"CASE WHEN _raw_{column} IS NOT NULL AND {column} IS NULL THEN "
                f"'unparseable timestamp: {name}=' || left(_raw_{column}, 60) || "
                "' (epoch seconds or ms, or ISO 8601, 1970-2199)' END"
            )
        final.append(column)
    event_time = ["CASE trigger"]
    missing = ["CASE trigger"]
    for trigger in TRIGGERS.values():
        times = ", ".join(STAGE_TIMESTAMP_FIELDS[f] for f in trigger.time_fields)
        event_time.append(f"WHEN '{trigger.name}' THEN coalesce({times}, NULL)")
        missing.append(
            f"WHEN '{trigger.name}' THEN 'no stage timestamp: the {trigger.stage} event has no "
            f"{' or '.join(trigger.time_fields)}'"
        )
    event_time.append("END")
    missing.append("END")
    entity = "CASE trigger " + " ".join(f"WHEN '{t.name}' THEN '{t.entity}'" for t in TRIGGERS.values()) + " END"
    stage = "CASE trigger " + " ".join(f"WHEN '{t.name}' THEN '{t.stage}'" for t in TRIGGERS.values()) + " END"
    final += [f"{entity} AS entity", f"{stage} AS stage", "event_time"]
    reasons.append(f"CASE WHEN event_time IS NULL THEN {' '.join(missing)} END")
    final.append(f"NULLIF(concat_ws('; ', {', '.join(reasons)}), '') AS reject_reason")
    parsed = (
        "SELECT * EXCLUDE (r), r.appId AS envelope_app_id, r.region AS region, r.webhook AS webhook_id, unnest(r.data) "
        f"FROM (SELECT *, from_json(raw, {_sql_string(envelope)}) AS r FROM batch)"
    )
    with_time = f"SELECT *, {' '.join(event_time)} AS event_time FROM (SELECT {', '.join(typed)} FROM ({parsed}))"
    return f"SELECT {', '.join(final)} FROM ({with_time})"


_MACROS: Final[tuple[str, ...]] = (
    f"CREATE OR REPLACE TEMP MACRO _epoch_ms_in_range(ms) AS "
    f"CASE WHEN ms >= {_MIN_EPOCH_MS} AND ms < {_MAX_EPOCH_MS} THEN ms END",
    "CREATE OR REPLACE TEMP MACRO _number_to_ms(x) AS "
    f"TRY_CAST(round(CASE WHEN abs(x) >= {_MILLISECONDS_FROM} THEN x ELSE x * 1000 END) AS BIGINT)",
    # Epoch seconds, epoch milliseconds (>= 1e11) or an ISO-8601 text; NULL when none of these.
    "CREATE OR REPLACE TEMP MACRO _ts_ms(t) AS _epoch_ms_in_range(CASE "
    "WHEN TRY_CAST(t AS DOUBLE) IS NOT NULL THEN _number_to_ms(TRY_CAST(t AS DOUBLE)) "
    "ELSE epoch_ms(TRY_CAST(t AS TIMESTAMPTZ)) END)",
)
_STAGE1_SQL: Final[str] = _stage1_sql()


def connect(*, threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB connection set up for flattening (UTC, macros)."""
    # Without the ICU extension DuckDB keeps TIMESTAMPTZ in UTC, which is what the table wants.
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = {_sql_string(memory_limit)}")
    for statement in _MACROS:
        con.execute(statement)
    return con


def _leaf_paths(structure: Any, max_depth: int, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], bool]]:
    """(path, ambiguous) of every leaf of a DuckDB json_structure; ambiguous leaves may hold objects."""
    for key, value in structure.items():
        here = (*path, key)
        if isinstance(value, dict) and value:
            if len(here) < max_depth:
                yield from _leaf_paths(value, max_depth, here)
            else:
                yield here, None  # type: ignore[misc]  # too deep: marks the cut
        else:
            yield here, value == "JSON"


def _json_pointer(path: Sequence[str]) -> str:
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in path)


def flatten_batch(
    con: duckdb.DuckDBPyConnection,
    accepted: pa.Table,
    *,
    limits: FlattenLimits = FlattenLimits(),
    user_columns: dict[str, str] | None = None,
) -> FlatBatch:
    """Flatten one batch of accepted records into event rows.

    Parameters
    ----------
    con
        A connection from :func:`connect`.
    accepted
        The accepted records of a :class:`BatchBuilder`.
    limits
        Depth and width caps for user-defined objects.
    user_columns
        User columns the table already has, keyed by lower-cased name; new
        columns found here are added to it (the caller keeps it across
        batches so a name keeps its first spelling and the cap holds).

    Returns
    -------
    FlatBatch
        Event rows with the core columns, the user columns and the raw JSON
        columns; records whose typed values are wrong go to ``quarantine``.
    """
    if user_columns is None:
        user_columns = {}
    con.register("batch", accepted)
    try:
        stage1 = con.sql(_STAGE1_SQL).to_arrow_table()
        con.register("stage1", stage1)
        quarantine = con.sql(
            "SELECT 'rejected' AS kind, s.reject_reason AS reason, s.trigger, b.raw, s.source_file, s.source_line "
            "FROM stage1 s JOIN batch b ON s.source_file = b.source_file AND s.source_line = b.source_line "
            "WHERE s.reject_reason IS NOT NULL ORDER BY s.source_file, s.source_line"
        ).to_arrow_table()
        columns: list[str] = []
        inner: list[str] = []
        capped: set[str] = set()
        too_deep = 0
        for prefix in USER_PREFIXES:
            source = f"{prefix}_json"
            structures = con.sql(
                f"SELECT DISTINCT json_structure({source}) FROM stage1 "
                f"WHERE reject_reason IS NULL AND json_type({source}) = 'OBJECT'"
            ).fetchall()
            leaves: dict[tuple[str, ...], bool] = {}
            for (text,) in structures:
                for path, ambiguous in _leaf_paths(orjson.loads(text), limits.max_depth):
                    if ambiguous is None:
                        too_deep += 1
                        continue
                    leaves[path] = leaves.get(path, False) or ambiguous
            interior = {path[:i] for path in leaves for i in range(1, len(path))}
            by_column: dict[str, list[tuple[int, bool]]] = {}
            paths = sorted(leaves)
            for index, path in enumerate(paths, start=1):
                name = user_column_name(prefix, path)
                known = user_columns.get(name.lower())
                if known is None:
                    if len(user_columns) >= limits.max_user_columns:
                        capped.add(name)
                        continue
                    user_columns[name.lower()] = known = name
                by_column.setdefault(known, []).append((index, leaves[path] or path in interior))
            if not by_column:
                continue
            pointers = ", ".join(_sql_string(_json_pointer(p)) for p in paths)
            inner.append(f"json_extract_string({source}, [{pointers}]) AS _{prefix}_values")
            if any(ambiguous for parts in by_column.values() for _, ambiguous in parts):
                inner.append(f"json_type({source}, [{pointers}]) AS _{prefix}_types")
            for name, parts in sorted(by_column.items()):
                values = [
                    f"CASE WHEN _{prefix}_types[{i}] <> 'OBJECT' THEN _{prefix}_values[{i}] END"
                    if ambiguous
                    else f"_{prefix}_values[{i}]"
                    for i, ambiguous in parts
                ]
                expression = values[0] if len(values) == 1 else f"coalesce({', '.join(values)})"
                columns.append(f"{expression} AS {_sql_ident(name)}")
        events = con.sql(_stage2_sql(inner, columns)).to_arrow_table()
    finally:
        con.unregister("batch")
        con.unregister("stage1")
    return FlatBatch(events=_typed(events), quarantine=quarantine, capped_keys=capped, too_deep=too_deep)


def _stage2_sql(inner: list[str], user_columns: list[str]) -> str:
    core = []
    for column in CORE_SCHEMA.names:
        if column == "item_id":
            core.append(
                "CASE entity WHEN 'feed_item' THEN coalesce(id, push_notification_id) "
                "WHEN 'push_notification' THEN coalesce(push_notification_id, id) END AS item_id"
            )
        elif column == "category":
            core.append("coalesce(template_category, data_category) AS category")
        elif column == "event_date":
            core.append("CAST(epoch_ms(event_time) AS DATE) AS event_date")
        else:
            core.append(column)
    select = core + user_columns + list(RAW_JSON_COLUMNS.names) + ["source_file", "source_line"]
    extra = "".join(f", {expression}" for expression in inner)
    return (
        f"SELECT {', '.join(select)} FROM (SELECT *{extra} FROM stage1 WHERE reject_reason IS NULL)"
    )


def _typed(events: pa.Table) -> pa.Table:
    """Cast epoch-millisecond columns to timestamp(ms, UTC) and the rest to the contract's types."""
    arrays = []
    fields = []
    for column in events.column_names:
        array = events.column(column)
        if column in CORE_SCHEMA.names:
            target = CORE_SCHEMA.field(column).type
            if array.type != target:
                array = array.cast(target)
        elif pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
            array = array.cast(pa.string())
        arrays.append(array)
        fields.append(pa.field(column, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
