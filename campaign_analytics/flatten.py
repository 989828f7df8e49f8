"""Payload → row: typed core columns, ``variables__*`` / ``metadata__*`` text columns, tags, raw JSON.

Records arrive as raw lines (from :mod:`campaign_analytics.sources`) and are
parsed, sorted into event / rejected / skipped, typed and flattened by DuckDB,
batch by batch, with no per-record Python. Only records that fail (invalid
JSON, invalid UTF-8, oversize) pass through Python, to name what is wrong.
A batch is parsed once, straight into its Arrow columns; each distinct value
of ``variables``, ``metadata`` and ``content`` in it is then flattened once
and joined back with the event ids, since a campaign's events share most of
these objects.

User-defined leaves are stored as text so the table schema never depends on
arrival order: a key that is ``15`` in one event and ``"10%"`` in another is
two text values of one column.

The event id is the MD5 of the trigger, the app id and a canonical form of
``data``: every known field by name, every leaf of ``variables``, ``metadata``
and ``content`` as ``path=value`` in path order, unknown fields in key order;
objects inside lists, past the depth cap or in unknown fields are written
with their keys sorted at every depth. Key order anywhere in an object
therefore does not change it, nor does ``templateVersion`` arriving as ``"2"``
instead of ``2``. Each row is hashed by its own leaves, so the id never
depends on the other records of its batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ._rows import rows_at
from .errors import ParameterError
from .sources import Chunk
from .triggers import EVENT_TIME_RANGE, STAGE_TIMESTAMP_FIELDS, TRIGGERS

__all__ = [
    "CORE_SCHEMA",
    "RAW_JSON_COLUMNS",
    "PROVENANCE_COLUMNS",
    "QUARANTINE_SCHEMA",
    "USER_PREFIXES",
    "FlattenLimits",
    "FlatBatch",
    "UserColumns",
    "user_column_name",
    "lines_table",
    "connect",
    "cursor",
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
_UNSAFE_KEY_CHARS: Final[re.Pattern[str]] = re.compile(r"[^0-9A-Za-z_]")
_MIN_EPOCH_MS: Final[int] = int(EVENT_TIME_RANGE[0].timestamp()) * 1000
_MAX_EPOCH_MS: Final[int] = int(EVENT_TIME_RANGE[1].timestamp()) * 1000
_MILLISECONDS_FROM: Final[float] = 1e11


# Records are held as Arrow strings (32-bit offsets); this bound keeps any one record well within them.
_MAX_RECORD_BYTES_CAP: Final[int] = 1 << 30


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
        Flattening a record takes up to about 100 times its size in memory,
        so how big a record can load also depends on the machine.
    """

    max_depth: int = 8
    max_user_columns: int = 1000
    max_record_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_user_columns", "max_record_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name} must be a whole number of at least 1, not {value!r}.")
        if self.max_record_bytes > _MAX_RECORD_BYTES_CAP:
            raise ParameterError(
                f"max_record_bytes must be at most {_MAX_RECORD_BYTES_CAP:,} (1 GiB), not {self.max_record_bytes:,}: "
                "a single webhook body is never that big; split such captures into NDJSON lines."
            )


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


class UserColumns:
    """Which column each user-defined leaf goes to, stable across batches and loads.

    A leaf's column is :func:`user_column_name` of its path. When two
    different paths would share a name (``first-name`` and ``first_name``, or
    ``Name`` and ``name``: Delta Lake column names ignore case), the path seen
    later gets ``_2``, ``_3``, ... so no value is lost. The mapping is kept in
    the table's ledger, so a path keeps its column in every later load.

    Parameters
    ----------
    paths
        Known mapping of leaf path (``/variables/a/b`` as a JSON pointer) to column.
    max_columns
        At most this many user columns in all.
    """

    def __init__(self, paths: dict[str, str] | None = None, *, max_columns: int = 1000) -> None:
        self.paths: dict[str, str] = dict(paths or {})
        self.taken: dict[str, str] = {name.lower(): pointer for pointer, name in self.paths.items()}
        self.max_columns = max_columns
        self.new: dict[str, str] = {}

    def column(self, prefix: str, path: Sequence[str]) -> str | None:
        """The column of a leaf, or None when the cap is reached."""
        pointer = _json_pointer((prefix, *path))
        name = self.paths.get(pointer)
        if name is not None:
            return name
        if len(self.paths) >= self.max_columns:
            return None
        base = name = user_column_name(prefix, path)
        suffix = 1
        while name.lower() in self.taken:
            suffix += 1
            name = f"{base}_{suffix}"
        self.paths[pointer] = name
        self.taken[name.lower()] = pointer
        self.new[name] = pointer
        return name

    @staticmethod
    def settle(new: Mapping[str, str], committed: Mapping[str, str], table_names: Iterable[str]) -> dict[str, str]:
        """Renames that fit one load's new columns to what other loads committed meanwhile.

        Loads that run side by side each name new leaves from the table as it
        was when they started, so two of them can give one name to two paths
        (``first-name`` and ``first_name``), or two names to one path. Named
        again, in the order they arrived, after the committed ones: a path
        another load named takes that name; a name another path took gets the
        next free suffix.

        Parameters
        ----------
        new
            This load's new columns: name → leaf path (JSON pointer), in arrival order.
        committed
            Leaf path → column, as the committed loads recorded it.
        table_names
            The table's columns now.

        Returns
        -------
        dict[str, str]
            Old name → new name, for the columns whose name must change.

        Examples
        --------
        >>> UserColumns.settle({"variables__first_name": "/variables/first_name"},
        ...                    {"/variables/first-name": "variables__first_name"}, ["variables__first_name"])
        {'variables__first_name': 'variables__first_name_2'}
        """
        settled = UserColumns(dict(committed), max_columns=len(committed) + len(new) + 1)
        for name in table_names:
            settled.taken.setdefault(name.lower(), "")
        renames: dict[str, str] = {}
        for name, pointer in new.items():
            prefix, *path = _pointer_keys(pointer)
            final = settled.column(prefix, path)  # never None: the cap leaves room for every new column
            if final is not None and final != name:
                renames[name] = final
        return renames


@dataclass(slots=True)
class FlatBatch:
    """The outcome of flattening one batch.

    ``events`` holds every accepted record (duplicates not yet removed: that
    is the store's job), ``quarantine`` the rejected and skipped ones, and
    ``capped_keys`` the user columns left out because of ``max_user_columns``.
    """

    events: pa.Table
    quarantine: pa.Table
    records: int = 0
    capped_keys: set[str] = field(default_factory=set)
    too_deep: int = 0


def lines_table(chunks: Sequence[Chunk], *, max_record_bytes: int = 16 << 20) -> tuple[pa.Table, pa.Table]:
    """Raw lines of some chunks as an Arrow table (raw, source_file, source_line).

    Lines that are not valid UTF-8 cannot be handed to the JSON parser, and
    oversize records were never read whole; both come back in the second
    table as rejected records.

    Returns
    -------
    tuple[pyarrow.Table, pyarrow.Table]
        The lines, one record batch per chunk; and the rejected lines with
        columns kind, reason, trigger, raw, source_file, source_line.
    """
    batches = []
    bad: dict[str, list[Any]] = {k: [] for k in ("kind", "reason", "trigger", "raw", "source_file", "source_line")}

    def set_aside(reason: str, raw: bytes, line: int) -> None:
        bad["kind"].append("rejected")
        bad["reason"].append(reason)
        bad["trigger"].append(None)
        bad["raw"].append(raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace"))
        bad["source_file"].append(chunk.source_file)
        bad["source_line"].append(line)

    for chunk in chunks:
        n = len(chunk)
        if not n:
            continue
        for offset, marker in chunk.oversize.items():
            set_aside(
                f"record too large: {marker.size:,} bytes, over max_record_bytes={max_record_bytes:,} "
                "(only its first bytes are kept here)",
                marker, chunk.first_line + offset,
            )
        try:
            raw = chunk.lines.cast(pa.string())
        except pa.ArrowInvalid:
            decoded: list[str | None] = []
            for offset, line in enumerate(chunk.lines.to_pylist()):
                try:
                    decoded.append(None if line is None else line.decode("utf-8"))
                except UnicodeDecodeError as error:
                    decoded.append(None)
                    set_aside(f"invalid UTF-8: {error.reason} at byte {error.start}", line, chunk.first_line + offset)
            raw = pa.array(decoded, pa.string())
        batches.append(
            pa.record_batch(
                {
                    "raw": raw,
                    "source_file": pa.array([chunk.source_file], pa.string()).take(np.zeros(n, dtype=np.int32)),
                    "source_line": pa.array(np.arange(chunk.first_line, chunk.first_line + n, dtype=np.int64)),
                }
            )
        )
    lines = pa.Table.from_batches(batches, schema=_LINES_SCHEMA)
    return lines, pa.table(bad, schema=_SET_ASIDE_SCHEMA)


_LINES_SCHEMA: Final[pa.Schema] = pa.schema(
    [("raw", pa.string()), ("source_file", pa.string()), ("source_line", pa.int64())]
)
_SET_ASIDE_SCHEMA: Final[pa.Schema] = pa.schema(
    [QUARANTINE_SCHEMA.field(n) for n in ("kind", "reason", "trigger", "raw", "source_file", "source_line")]
)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _struct_type(kind: str) -> str:
    return "JSON" if kind in ("list", "json") else "VARCHAR"


def _stage1_sql() -> str:
    """Classify every line and extract typed fields of the events: one parse per line, the rest columnar.

    Layers: validity and one ``from_json`` into a struct of every known field;
    the kind of record (event / rejected / skipped / blank) and why; the raw
    values, each cast once; what is converted from those (whole numbers,
    lists, timestamps and their range); then what depends on them (entity,
    stage, event_time, a reject reason for typed values that do not parse).
    """
    data_struct = "{" + ",".join(f'"{name}":"{_struct_type(kind)}"' for name, (_, kind) in _DATA_FIELDS.items()) + "}"
    envelope = '{"trigger":"JSON","appId":"VARCHAR","region":"VARCHAR","webhook":"VARCHAR","data":' + data_struct + "}"
    triggers = ", ".join(_sql_string(t) for t in TRIGGERS)
    known = ", ".join(_sql_string(k) for k in _DATA_FIELDS)
    ids = ", ".join(f"r.data.{_sql_ident(k)}" for k in ("id", "pushNotificationId", "campaignId", "notificationId"))
    # One parse per line: a line the parser refuses gives NULL, and only then is it checked again.
    parsed = (
        "SELECT raw, source_file, source_line, _position, "
        "CASE WHEN r IS NOT NULL THEN true ELSE json_valid(raw) END AS ok, r FROM "
        f"(SELECT *, try(from_json(raw, {_sql_string(envelope)})) AS r FROM lines WHERE raw IS NOT NULL)"
    )
    kind = f"""CASE
        WHEN NOT ok THEN CASE WHEN trim(raw, ' ' || chr(9) || chr(10) || chr(13)) = '' THEN 'blank' ELSE 'rejected' END
        WHEN r IS NULL OR r.trigger IS NULL THEN 'rejected'
        WHEN json_type(r.trigger) <> 'VARCHAR' THEN 'rejected'
        WHEN (r.trigger ->> '$') NOT IN ({triggers}) THEN 'skipped'
        WHEN r.data IS NULL THEN 'rejected'
        WHEN coalesce({ids}) IS NULL AND json_type(raw, '$.data') <> 'OBJECT' THEN 'rejected'
        ELSE 'event' END"""
    why = f"""CASE
        WHEN NOT ok THEN 'invalid JSON'
        WHEN r IS NULL OR r.trigger IS NULL THEN CASE WHEN json_type(raw) <> 'OBJECT'
            THEN 'not a JSON object: got a JSON ' || _json_kind(json_type(raw)) ELSE 'no trigger' END
        WHEN json_type(r.trigger) <> 'VARCHAR' THEN 'trigger not a string: got a JSON ' || _json_kind(json_type(r.trigger))
        WHEN (r.trigger ->> '$') NOT IN ({triggers}) THEN 'not a campaign trigger: ' || left(r.trigger ->> '$', 80)
        WHEN r.data IS NULL OR json_type(raw, '$.data') <> 'OBJECT' THEN CASE WHEN json_type(raw, '$.data') IS NULL
            THEN 'no data object' ELSE 'no data object: data is a JSON ' || _json_kind(json_type(raw, '$.data')) END
        END"""
    classified = (
        f"SELECT raw, source_file, source_line, _position, ok, r, {kind} AS kind FROM ({parsed})"
    )
    typed = [
        "raw", "source_file", "source_line", "_position", "kind",
        f"CASE WHEN kind IN ('rejected', 'skipped') THEN {why} END AS set_aside_reason",
        "CASE WHEN json_type(r.trigger) = 'VARCHAR' THEN r.trigger ->> '$' END AS trigger",
        "coalesce(r.appId, r.data.appId) AS app_id", "r.region AS region", "r.webhook AS webhook_id",
        f"CASE WHEN kind = 'event' THEN list_filter(json_keys(raw, '$.data'), lambda k: NOT list_contains([{known}], k)) "
        "END AS _unknown",
    ]
    final = [
        "raw", "source_file", "source_line", "_position", "kind", "set_aside_reason", "trigger", "app_id", "region",
        "webhook_id",
    ]
    canonical = ["trigger", "app_id"]
    reasons = []
    stamps: list[str] = []
    converted: list[str] = []  # typed values computed from the layer above
    for name, (column, kind_) in _DATA_FIELDS.items():
        raw = f"r.data.{_sql_ident(name)}"
        if kind_ == "text":
            typed.append(f"{raw} AS {column}")
            canonical.append(column)
        elif kind_ in ("int32", "int64"):
            sql_type = "INTEGER" if kind_ == "int32" else "BIGINT"
            typed.append(f"{raw} AS _raw_{column}")
            typed.append(f"TRY_CAST({raw} AS DOUBLE) AS _number_{column}")
            converted.append(
                f"CASE WHEN _number_{column} = floor(_number_{column}) "
                f"THEN TRY_CAST(_number_{column} AS {sql_type}) END AS {column}"
            )
            reasons.append(
                f"CASE WHEN _raw_{column} IS NOT NULL AND {column} IS NULL THEN "
                f"'not a whole number: {name}=' || left(_raw_{column}, 60) END"
            )
            canonical.append(f"coalesce(CAST({column} AS VARCHAR), _raw_{column})")
        elif kind_ == "list":
            typed.append(f"CAST({raw} AS VARCHAR) AS _json_{column}")
            text = f"_json_{column}"
            converted.append(
                f"CASE WHEN {text} IS NULL THEN NULL ELSE CASE json_type({text}) "
                f"WHEN 'ARRAY' THEN from_json({text}, '[\"VARCHAR\"]') WHEN 'NULL' THEN NULL "
                f"WHEN 'VARCHAR' THEN [{text} ->> '$'] ELSE [{text}] END END AS {column}"
            )
            canonical.append(f"_json_{column}")
        elif kind_ == "json":
            # A JSON null arrives as SQL NULL already.
            typed.append(f"CAST({raw} AS VARCHAR) AS {column}")
        elif kind_ == "timestamp":
            typed.append(f"{raw} AS _raw_{column}")
            typed.append(f"TRY_CAST({raw} AS DOUBLE) AS _number_{column}")
            stamps.append(column)
            reasons.append(
                f"CASE WHEN _raw_{column} IS NOT NULL AND {column} IS NULL THEN "
                f"'unparseable timestamp: {name}=' || left(_raw_{column}, 60) || "
                "' (epoch seconds or ms, or ISO 8601, 1970-2199)' END"
            )
            canonical.append(f"_raw_{column}")
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
    reasons.append(f"CASE WHEN event_time IS NULL THEN {' '.join(missing)} END")
    final += [
        f"{entity} AS entity",
        f"{stage} AS stage",
        "event_time",
        # Every part is set (chr(29) marks a missing one), so concat with the separators between gives concat_ws's
        # text, a little faster.
        f"concat({', chr(31), '.join(f'coalesce({c}, chr(29))' for c in canonical)}) AS canonical_core",
        # Unknown fields of data, kept so nothing is lost (keys sorted, values verbatim).
        """CASE WHEN len(_unknown) > 0 THEN '{' || array_to_string(list_transform(list_sort(_unknown),
            lambda k: to_json(k) || ':' || json_extract(raw, '/data/' || replace(replace(k, '~', '~0'), '/', '~1'))),
            ',') || '}' END AS extra_json""",
        "CASE WHEN kind = 'event' THEN "
        f"NULLIF(concat_ws('; ', {', '.join(reasons)}), '') END AS typed_reason",
    ]
    # Epoch seconds, epoch milliseconds (>= 1e11) or an ISO-8601 text; NULL when none of these or out of range.
    # Each step is a layer of its own: written as one nested expression per field, the query
    # would cost more to plan than to run.
    converted += [
        f"CASE WHEN _number_{c} IS NOT NULL THEN TRY_CAST(round(CASE WHEN abs(_number_{c}) >= {_MILLISECONDS_FROM} "
        f"THEN _number_{c} ELSE _number_{c} * 1000 END) AS BIGINT) ELSE epoch_ms(TRY_CAST(_raw_{c} AS TIMESTAMPTZ)) END "
        f"AS _ms_{c}"
        for c in stamps
    ]
    in_range = ", ".join(
        f"CASE WHEN _ms_{c} >= {_MIN_EPOCH_MS} AND _ms_{c} < {_MAX_EPOCH_MS} THEN _ms_{c} END AS {c}" for c in stamps
    )
    stamped = (
        f"SELECT *, {in_range} FROM "
        f"(SELECT *, {', '.join(converted)} FROM (SELECT {', '.join(typed)} FROM ({classified})))"
    )
    with_time = f"SELECT *, {' '.join(event_time)} AS event_time FROM ({stamped})"
    return f"SELECT {', '.join(final)} FROM ({with_time})"


def _staged_sql() -> str:
    """Every record of the batch in its final form but for the event id and the user columns.

    Also kept: the record's position, the hash text of its typed fields and
    of its unknown fields, and what becomes of it (``_kind``: event, rejected,
    skipped or blank; ``_reason``; ``_raw``, the line of a record set aside).
    """
    core = []
    for column in CORE_SCHEMA.names:
        if column == "event_id":
            continue
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
    select = [
        *core, *RAW_JSON_COLUMNS.names, "source_file", "source_line", "_position", "canonical_core",
        f"coalesce({_canonical_sql('extra_json', 'nested')}, '') AS _extra_canonical",
        "CASE WHEN kind = 'event' AND typed_reason IS NULL THEN 'event' "
        "WHEN kind = 'event' THEN 'rejected' ELSE kind END AS _kind",
        "coalesce(set_aside_reason, typed_reason) AS _reason",
        "CASE WHEN kind <> 'event' OR typed_reason IS NOT NULL THEN rtrim(raw, chr(13) || chr(10)) END AS _raw",
    ]
    return f"SELECT {', '.join(select)} FROM ({_stage1_sql()})"


def _identity_sql(variables: _Leaves, metadata: _Leaves, content: _Leaves) -> str:
    """The event id and the user columns of every staged record, with its position."""
    objects = (variables, metadata, content)
    parts = ", ".join(
        ["canonical_core", *(f"coalesce(_{leaves.tag}_canonical, '')" for leaves in objects), "_extra_canonical"]
    )
    select = [
        "_position",
        f"CASE WHEN _kind = 'event' THEN md5(concat_ws(chr(30), {parts})) END AS event_id",
        *(_sql_ident(name) for name in variables.names + metadata.names),
    ]
    joins = "".join(
        f" LEFT JOIN ({_distinct_objects_sql(leaves)}) ON {leaves.source} = _{leaves.tag}_value" for leaves in objects
    )
    return f"SELECT {', '.join(select)} FROM {_STAGED}{joins}"


def _distinct_objects_sql(leaves: _Leaves) -> str:
    """The hash text and user columns of each distinct value of one user object in the batch.

    Objects repeat across a campaign's events (one content, a few metadata
    values), so each is read once however many records hold it.
    """
    inner = "".join(f", {expression}" for expression in leaves.inner)
    columns = "".join(f", {expression}" for expression in leaves.columns)
    # Each value read gets a name of its own, so the expressions that use it stay small to plan.
    named = "".join(f", _{leaves.tag}_json[{i}] AS _{leaves.tag}_leaf{i}" for i in range(1, leaves.extracted + 1))
    return (
        f"SELECT {leaves.source} AS _{leaves.tag}_value, {leaves.canonical} AS _{leaves.tag}_canonical{columns} "
        f"FROM (SELECT *{named} FROM (SELECT *{inner} FROM ({_objects_sql(leaves.source)}){leaves.join}))"
    )


_MACROS: Final[tuple[str, ...]] = (
    "CREATE OR REPLACE TEMP MACRO _json_kind(t) AS CASE t WHEN 'ARRAY' THEN 'array' WHEN 'OBJECT' THEN 'object' "
    "WHEN 'VARCHAR' THEN 'string' WHEN 'BOOLEAN' THEN 'boolean' WHEN 'NULL' THEN 'null' ELSE 'number' END",
)
# The staged batch (Arrow), as the queries that follow see it.
_STAGED: Final[str] = "_staged_batch"


def _objects_sql(source: str) -> str:
    """The distinct values of one user object in the staged batch, each with the position of its first record."""
    return f"SELECT {source}, min(_position) AS _first FROM {_STAGED} WHERE {source} IS NOT NULL GROUP BY ALL"


def _structures_sql(source: str) -> str:
    """The shapes of one user object in the batch, in the order of their first record (which leaves become columns)."""
    return (
        f"SELECT json_structure({source}) AS shape, min(_first) AS first FROM ({_objects_sql(source)}) "
        "GROUP BY shape ORDER BY first"
    )


def connect(*, threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB connection set up for flattening (UTC, macros)."""
    con = duckdb.connect()
    # Row order never matters here (positions travel as columns); not keeping it saves memory and time.
    con.execute("SET preserve_insertion_order = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = {_sql_string(memory_limit)}")
    _set_up(con)
    return con


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Another connection to the database of ``con``, set up for flattening.

    A DuckDB connection runs one query at a time; batches flattened side by
    side each need their own. They share the database's memory limit and
    threads.
    """
    other = con.cursor()
    _set_up(other)
    return other


def _set_up(con: duckdb.DuckDBPyConnection) -> None:
    # The session time zone and the temporary macros belong to one connection; functions to the database.
    con.execute("SET TimeZone = 'UTC'")
    for statement in _MACROS:
        con.execute(statement)
    if not con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = '_canonical_json'").fetchall()[0][0]:
        con.create_function("_canonical_json", _canonical_json, ["VARCHAR"], "VARCHAR", type="arrow")  # type: ignore[call-overload]  # DuckDB's stubs take no Arrow-typed Python function


def _canonical_json(texts: pa.Array) -> pa.Array:
    """JSON texts rewritten with the keys of every object sorted, for the event id.

    Called only for the few values that hold objects inside lists, objects
    past the depth cap and unknown fields with objects, so Python per value
    is fine here. Numbers and literals that only DuckDB's lenient parser
    takes (NaN, 1e999, 2**70) go through the standard library instead; a
    text neither reads is kept as it is.
    """
    out: list[str | None] = []
    for text in texts.to_pylist():
        if text is None:
            out.append(None)
            continue
        try:
            out.append(orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode())
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            try:
                out.append(json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False))
            except (ValueError, RecursionError):
                out.append(text)
    return pa.array(out, pa.string())


def _leaf_paths(structure: Any, max_depth: int, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], str]]:
    """(path, what) of every leaf of a DuckDB json_structure.

    what: "leaf" (a scalar, or a list with no object anywhere in it);
    "maybe-object" (an empty object); "object-list" (a list of objects whose
    values hold no object); "nested" (any other list that may hold an
    object); "cut" (an object at max_depth: not flattened).
    """
    for key, value in structure.items():
        here = (*path, key)
        if isinstance(value, dict) and value:
            if len(here) < max_depth:
                yield from _leaf_paths(value, max_depth, here)
            else:
                yield here, "cut"
        elif isinstance(value, list):
            element = value[0] if value else None
            if isinstance(element, dict) and element and not any(map(_may_hold_object, element.values())):
                yield here, "object-list"
            else:
                yield here, "nested" if _may_hold_object(value) else "leaf"
        else:
            yield here, "maybe-object" if value == "JSON" else "leaf"


def _may_hold_object(structure: Any) -> bool:
    """Whether a json_structure may stand for a value with an object in it ("JSON" is an empty object or mixed types)."""
    # Without recursion: lists may be nested hundreds deep.
    pending = [structure]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict) or item == "JSON":
            return True
    return False


def _load_structure(text: str, max_depth: int) -> Any:
    """Parse a json_structure text; anything nested past max_depth + 1 is replaced by "JSON" first.

    A hostile payload can nest thousands of levels deep; the parser refuses
    that, and nothing that deep becomes a column anyway.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    out: list[str] = []
    depth = 0
    skip_from: int | None = None
    in_string = escaped = False
    for char in text:
        if in_string:
            if skip_from is None:
                out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
            if skip_from is None:
                out.append(char)
        elif char in "[{":
            depth += 1
            if skip_from is None and depth > max_depth + 1:
                skip_from = depth
                out.append('"JSON"')
            elif skip_from is None:
                out.append(char)
        elif char in "]}":
            if skip_from is None:
                out.append(char)
            elif depth == skip_from:
                skip_from = None
            depth -= 1
        elif skip_from is None:
            out.append(char)
    return orjson.loads("".join(out))


def _json_pointer(path: Sequence[str]) -> str:
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in path)


def _pointer_keys(pointer: str) -> list[str]:
    """The keys of a JSON pointer (the inverse of :func:`_json_pointer`)."""
    return [key.replace("~1", "/").replace("~0", "~") for key in pointer.split("/")[1:]]


@dataclass(slots=True)
class _Leaves:
    """The SQL that flattens one user object of a batch, each distinct value once.

    ``inner`` reads the value (the JSON column ``source``) at the batch's
    paths; ``columns`` and ``canonical`` then give its user columns (named in
    ``names``) and its hash text. ``own`` (when set) maps each shape of the
    object in the batch to what each of the batch's paths is in it (or, past
    _MAX_HASHED_PATHS paths, to its own leaves); it is joined on the shape to
    hash every value by its own leaves.
    """

    source: str
    tag: str
    inner: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    canonical: str = "NULL"
    too_deep: int = 0
    own: pa.Table | None = None
    own_name: str = ""
    join: str = ""
    extracted: int = 0  # values read at once into _<tag>_json, each then named _<tag>_leaf<i>


# Of the kinds a path has in different shapes of one batch, the one that decides how it is read.
_KIND_RANK: Final[dict[str, int]] = {"leaf": 0, "object-list": 1, "nested": 1, "cut": 2, "maybe-object": 3}


def _union_reads_every_row_as_alone(kinds: dict[tuple[str, ...], set[str]]) -> bool:
    """Whether reading every path of the batch from every row gives each row exactly its own leaves.

    ``kinds`` holds, for every leaf path of the batch, what it is in each
    shape that has it. Reading the union works unless a path is a list
    holding objects in one shape and something else in another, an object at
    the depth cap in one and an empty object in another, or a path descends
    through what another shape holds as a list (a numeric key would then
    read a list element).
    """
    for found in kinds.values():
        if len(found) > 1 and ("object-list" in found or "nested" in found or {"cut", "maybe-object"} <= found):
            return False
    return not _list_readers(kinds)


def _list_readers(kinds: dict[tuple[str, ...], set[str]]) -> set[tuple[str, ...]]:
    """Paths that, read from some row of the batch, would give an element of a list that row holds."""
    not_objects = {path for path, found in kinds.items() if found - {"maybe-object"}}
    return {path for path in kinds if any(path[:i] in not_objects and path[i].isdigit() for i in range(1, len(path)))}


def _canonical_sql(value: str, kind: str) -> str:
    """Hash text of a value that may hold objects: their keys sorted at every depth, so a retry that reorders them matches.

    Only values that may hold an object are handed to the JSON rewrite, so
    plain values keep the text they arrived with (and their event ids).
    """
    if kind == "cut":
        return f"CASE WHEN starts_with({value}, '{{') THEN _canonical_json({value}) ELSE CAST({value} AS VARCHAR) END"
    return f"CASE WHEN contains(substr({value}, 2), '{{') THEN _canonical_json({value}) ELSE CAST({value} AS VARCHAR) END"


def _hash_text_sql(value: str, kind: str) -> str:
    """The text a leaf of this kind is hashed by."""
    if kind == "object-list":
        return _object_list_sql(value)
    if kind in ("nested", "cut"):
        return _canonical_sql(value, kind)
    return value


def _own_hash_text_sql(value: str, kind: str, possible: Iterable[str]) -> str:
    """The hash text of a value by the kind its row's own shape gives it (SQL ``kind``; NULL: not the row's leaf).

    ``possible`` are the kinds the value may have, so the CASE holds no branch that cannot be taken.
    """
    by_kind = "".join(
        f" WHEN {kind} = '{what}' THEN {_hash_text_sql(value, what)}"
        for what in sorted(set(possible) & {"object-list", "nested", "cut"})
    )
    return f"CASE WHEN {kind} IS NULL THEN NULL{by_kind} ELSE CAST({value} AS VARCHAR) END"


def _object_list_sql(value: str) -> str:
    """A list's hash text with the keys of its objects sorted (one level), so a retry that reorders them still matches."""
    # A list of objects only is cast in one go; a mixed list goes element by element.
    element_wise = (
        f"array_to_string(list_transform(from_json({value}, '[\"JSON\"]'), "
        "lambda e: CASE WHEN json_type(e) = 'OBJECT' "
        "THEN coalesce(try(CAST(to_json(list_sort(map_entries(CAST(e AS MAP(VARCHAR, JSON))))) AS VARCHAR)), "
        "CAST(e AS VARCHAR)) "
        "ELSE CAST(e AS VARCHAR) END), chr(28))"
    )
    objects_only = (
        f"try(array_to_string(list_transform(CAST({value} AS MAP(VARCHAR, JSON)[]), "
        "lambda m: CAST(to_json(list_sort(map_entries(m))) AS VARCHAR)), chr(28)))"
    )
    return (
        f"CASE WHEN json_type({value}) = 'ARRAY' THEN coalesce({objects_only}, {element_wise}) "
        f"ELSE CAST({value} AS VARCHAR) END"
    )


def _leaves_sql(
    structures: Iterable[str | None],
    source: str,
    prefix: str | None,
    limits: FlattenLimits,
    user_columns: UserColumns,
    capped: set[str],
) -> _Leaves:
    """Extraction of every leaf of the JSON column `source` (columns only when prefix is given).

    The hash text of a row is ``/pointer=JSON value`` for each of the row's
    own leaves, in path order. Every row is read once at the batch's union of
    paths. When that gives each row exactly its own leaves, the batch's kinds
    say how to hash them; when shapes clash, each row's own shape (joined on
    its json_structure) says which values are its leaves and what each is.
    Past _MAX_HASHED_PATHS paths, each row is read at its own leaves only.
    Either way a row's event id never depends on what else shares its batch.
    """
    tag = re.sub(r"\W", "_", source)
    out = _Leaves(source, tag)
    shapes: dict[str, dict[tuple[str, ...], str]] = {}
    kinds: dict[tuple[str, ...], set[str]] = {}
    for text in structures:
        if not text or text in shapes:
            continue
        structure = _load_structure(text, limits.max_depth)
        if not isinstance(structure, dict):
            continue
        shape = shapes[text] = dict(_leaf_paths(structure, limits.max_depth))
        for path, what in shape.items():
            kinds.setdefault(path, set()).add(what)
    leaves = {path: max(found, key=_KIND_RANK.__getitem__) for path, found in kinds.items()}
    # The hash part is never NULL, so an event hashes the same whatever else shares its batch.
    not_object = (
        f"CASE WHEN {source} IS NULL THEN '' WHEN NOT starts_with({source}, '{{') THEN {_canonical_sql(source, 'nested')} END"
    )
    if not leaves:
        out.canonical = f"coalesce({not_object}, '')"
        return out
    interior = {path[:i] for path in leaves for i in range(1, len(path))}
    paths = sorted(leaves)
    pointers = ", ".join(_sql_string(_json_pointer(p)) for p in paths)
    masked = [leaves[p] == "maybe-object" or (p in interior) for p in paths]

    # Read once per row at every path of the batch: the JSON text of each leaf (an object's
    # text starts with "{"), hashed as it is, so 15 and "15" stay different events. When shapes
    # clash, each row is still read at every path, but only its own leaves count, each hashed
    # by what it is in the row's own shape. Past _MAX_HASHED_PATHS paths, each row is read at
    # its own leaves only.
    if len(paths) > _MAX_HASHED_PATHS:
        mode = "own paths"
    elif _union_reads_every_row_as_alone(kinds):
        mode = "union"
    else:
        mode = "union, own kinds"

    def leaf(i: int, is_masked: bool) -> str:
        value = f"_{tag}_leaf{i}"
        if mode == "union, own kinds":
            return f"CASE WHEN _{tag}_kinds[{i}] IS NOT NULL THEN {value} END"
        # Where another shape has an object (its leaves are read on their own), only an empty object is this leaf's value.
        return f"CASE WHEN NOT starts_with({value}, '{{') OR {value} = '{{}}' THEN {value} END" if is_masked else value

    if mode != "own paths":
        out.inner.append(f"json_extract({source}, [{pointers}]) AS _{tag}_json")
        out.extracted = len(paths)
        pairs = []
        for i, (p, is_masked) in enumerate(zip(paths, masked, strict=True), start=1):
            if mode == "union":
                hashed = _hash_text_sql(leaf(i, is_masked), leaves[p])
            else:
                hashed = _own_hash_text_sql(f"_{tag}_leaf{i}", f"_{tag}_kinds[{i}]", kinds[p])
            pairs.append(f"{_sql_string(_json_pointer(p) + '=')} || {hashed}")
        out.canonical = f"coalesce({not_object}, concat_ws(chr(31), {', '.join(pairs)}), '')"
    if mode != "union":
        own: dict[str, list[Any]] = {f"_{tag}_shape": list(shapes)}
        if mode == "union, own kinds":
            own[f"_{tag}_kinds"] = [[shape.get(p) for p in paths] for shape in shapes.values()]
        else:
            own[f"_{tag}_pointers"] = [[_json_pointer(p) for p in sorted(shape)] for shape in shapes.values()]
            own[f"_{tag}_kinds"] = [[shape[p] for p in sorted(shape)] for shape in shapes.values()]
        out.own = pa.table(
            own, schema=pa.schema([(name, pa.string() if name.endswith("_shape") else pa.list_(pa.string())) for name in own])
        )
        out.own_name = f"_own_{tag}"
        out.join = f" LEFT JOIN {out.own_name} ON _{tag}_shape = json_structure({source})"
    if mode == "own paths":
        out.inner.append(f"list_transform(_{tag}_pointers, lambda p: json_extract({source}, p)) AS _{tag}_own")
        pair = f"_{tag}_pointers[i] || '=' || {_own_hash_text_sql(f'_{tag}_own[i]', f'_{tag}_kinds[i]', _KIND_RANK)}"
        out.canonical = (
            f"coalesce({not_object}, array_to_string(list_filter(list_transform(range(1, len(_{tag}_pointers) + 1), "
            f"lambda i: {pair}), lambda x: x IS NOT NULL), chr(31)), '')"
        )
    if prefix is None:
        return out
    # New leaves get their columns in the order they arrive (shapes come in the order of their first row).
    for shape in shapes.values():
        for path in shape:
            if leaves[path] != "cut":
                user_columns.column(prefix, path)
    columns: list[tuple[int, tuple[str, ...], bool, str]] = []
    for i, (path, is_masked) in enumerate(zip(paths, masked, strict=True), start=1):
        if leaves[path] == "cut":
            out.too_deep += 1
            continue
        name = user_columns.column(prefix, path)
        if name is None:
            capped.add(user_column_name(prefix, path))
            continue
        columns.append((i, path, is_masked, name))
    if not columns:
        return out
    if mode == "own paths":
        column_pointers = ", ".join(_sql_string(_json_pointer(p)) for _, p, _, _ in columns)
        out.inner.append(f"json_extract({source}, [{column_pointers}]) AS _{tag}_json")
        out.extracted = len(columns)
        columns = [(n, p, m, name) for n, (_, p, m, name) in enumerate(columns, start=1)]
    # Read at the union of paths, these could give an element of a list the row holds: each is read only by its own shape.
    list_readers = _list_readers(kinds) if mode == "own paths" else set()
    by_column: dict[str, list[str]] = {}
    for i, path, is_masked, name in columns:
        # The stored text: a string unquoted, null as NULL, anything else as its JSON text.
        value = leaf(i, is_masked)
        if path in list_readers:
            value = f"CASE WHEN list_contains(_{tag}_pointers, {_sql_string(_json_pointer(path))}) THEN {value} END"
        text = f"CASE WHEN starts_with({value}, '\"') THEN {value} ->> '$' WHEN {value} <> 'null' THEN CAST({value} AS VARCHAR) END"
        by_column.setdefault(name, []).append(text)
    for name, parts in sorted(by_column.items()):
        expression = parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
        out.columns.append(f"{expression} AS {_sql_ident(name)}")
        out.names.append(name)
    return out


_INVALID_JSON: Final[str] = "invalid JSON"
# Past this many distinct leaf paths in a batch, each row is read by its own shape's leaves.
_MAX_HASHED_PATHS: Final[int] = 256
# Rows per Arrow record batch of a flattened batch. DuckDB grows each Arrow buffer by
# reallocation as rows come; in small pieces the memory is reused instead of copied into
# fresh pages (a whole 50,000-record batch at once: about 10,000 page faults more, 10% slower).
_ARROW_BATCH_ROWS: Final[int] = 16384


_STAGED_SQL: Final[str] = _staged_sql()
# Columns of the staged batch that only serve to find the event ids.
_STAGED_ONLY: Final[frozenset[str]] = frozenset({"_position", "canonical_core", "_extra_canonical"})


def _explain_invalid(quarantine: pa.Table) -> pa.Table:
    """Name what is wrong with each invalid-JSON record (the per-record fallback)."""
    reasons = quarantine.column("reason").to_pylist()
    if _INVALID_JSON not in reasons:
        return quarantine
    raws = quarantine.column("raw").to_pylist()
    for i, (reason, raw) in enumerate(zip(reasons, raws, strict=True)):
        if reason != _INVALID_JSON:
            continue
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            reasons[i] = f"invalid JSON: {error}"
        else:
            reasons[i] = "invalid JSON: not accepted by the strict parser"
    quarantine = quarantine.set_column(quarantine.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string()))
    return quarantine.set_column(quarantine.schema.get_field_index("raw"), "raw", pa.array(raws, pa.string()))


def flatten_batch(
    con: duckdb.DuckDBPyConnection,
    lines: pa.Table,
    *,
    limits: FlattenLimits = FlattenLimits(),
    user_columns: UserColumns | None = None,
    naming: AbstractContextManager[Any] | None = None,
    relations: dict[str, duckdb.DuckDBPyRelation] | None = None,
) -> FlatBatch:
    """Flatten one batch of raw lines into event rows and set-aside records.

    Parameters
    ----------
    con
        A connection from :func:`connect`.
    lines
        Raw lines from :func:`lines_table`.
    limits
        Depth and width caps for user-defined objects.
    user_columns
        The leaf → column mapping so far; new leaves found here are added to
        it (the caller keeps it across batches and loads).
    naming
        Held while new leaves get their columns. Batches flattened side by
        side pass one that lets them through one at a time in batch order, so
        colliding names get the same suffixes as in a load of one batch at a time.
    relations
        The queries of earlier batches on ``con``, run again here (the caller
        keeps one per connection); new ones are added to it. Making a query
        parses and binds it, about 20 ms for a batch's largest; running one
        again binds the data registered for this batch.

    Returns
    -------
    FlatBatch
        Event rows (duplicates not yet removed: that is the store's job) with
        the core columns, the user columns and the raw JSON columns; rejected
        and skipped records with their reasons.

    Examples
    --------
    >>> from campaign_analytics.sources import Chunk
    >>> line = b'{"trigger": "after_feed_item_read", "appId": "a1", "data": {"id": "f1", "readAt": 1780004500, "variables": {"cart": {"items": 2}}}}'
    >>> lines, _ = lines_table([Chunk.of("example.ndjson", 1, [line, b"[1, 2]"])])
    >>> flat = flatten_batch(connect(), lines)
    >>> flat.events.column("variables__cart__items").to_pylist(), flat.quarantine.column("reason").to_pylist()
    (['2'], ['not a JSON object: got a JSON array'])
    """
    if user_columns is None:
        user_columns = UserColumns(max_columns=limits.max_user_columns)
    if relations is None:
        relations = {}
    # Arrival order within the batch, so new leaves are named in the order they first come.
    con.register("lines", lines.append_column("_position", pa.array(np.arange(lines.num_rows, dtype=np.int64))))
    sources = ("variables_json", "metadata_json", "content_json")
    own: dict[str, pa.Table] = {}
    try:
        staged = _query(con, _STAGED_SQL, relations).to_arrow_table(batch_size=_ARROW_BATCH_ROWS)
    finally:
        con.unregister("lines")
    staged = _in_input_order(staged)
    con.register(_STAGED, staged)
    try:
        structures = [
            [row[0] for row in _query(con, _structures_sql(source), relations).fetchall()] for source in sources
        ]
        capped: set[str] = set()
        with naming or nullcontext():
            variables = _leaves_sql(structures[0], "variables_json", "variables", limits, user_columns, capped)
            metadata = _leaves_sql(structures[1], "metadata_json", "metadata", limits, user_columns, capped)
        content = _leaves_sql(structures[2], "content_json", None, limits, user_columns, capped)
        own = {leaves.own_name: leaves.own for leaves in (variables, metadata, content) if leaves.own is not None}
        for name, table in own.items():
            con.register(name, table)
        identity = _query(con, _identity_sql(variables, metadata, content), relations).to_arrow_table(
            batch_size=_ARROW_BATCH_ROWS
        )
    finally:
        for name in own:
            con.unregister(name)
        con.unregister(_STAGED)
    out = _with_identity(staged, _in_input_order(identity))
    kinds = out.column("_kind")
    is_event = pc.equal(kinds, "event")
    # Usually every record is an event: then no copy of the batch is needed.
    all_events = out.num_rows == 0 or pc.all(is_event).as_py()
    events = (out if all_events else out.filter(is_event)).drop_columns(["_kind", "_reason", "_raw"])
    set_aside = out.slice(0, 0) if all_events else out.filter(pc.is_in(kinds, pa.array(["rejected", "skipped"])))
    quarantine = pa.table(
        {
            "kind": set_aside.column("_kind"),
            "reason": set_aside.column("_reason"),
            "trigger": set_aside.column("trigger"),
            "raw": set_aside.column("_raw"),
            "source_file": set_aside.column("source_file"),
            "source_line": set_aside.column("source_line"),
        }
    )
    quarantine = _explain_invalid(quarantine)
    return FlatBatch(
        events=_typed(events),
        quarantine=quarantine.cast(_SET_ASIDE_SCHEMA),
        records=out.num_rows - pc.sum(pc.equal(kinds, "blank")).as_py() if out.num_rows else 0,
        capped_keys=capped,
        too_deep=variables.too_deep + metadata.too_deep,
    )


def _query(
    con: duckdb.DuckDBPyConnection, sql: str, relations: dict[str, duckdb.DuckDBPyRelation]
) -> duckdb.DuckDBPyRelation:
    """The relation of a query on ``con``: one an earlier batch made (in ``relations``), else a new one kept there."""
    relation = relations.get(sql)
    if relation is None:
        if len(relations) >= _MAX_RELATIONS:
            relations.clear()
        relation = relations[sql] = con.sql(sql)
    return relation


# Relations kept for one connection: a load's batches share the staged batch's and shape queries and,
# when their user objects have the same shapes, the event id query.
_MAX_RELATIONS: Final[int] = 64


def _in_input_order(out: pa.Table) -> pa.Table:
    """The batch's rows in the order of its lines.

    DuckDB does not keep the order of rows (not keeping it saves memory and
    time); a short record batch between long ones, such as a line that
    straddles two read blocks or a file of one record, can come out last.
    """
    positions = out.column("_position").to_numpy()
    if len(positions) > 1 and not np.all(positions[1:] > positions[:-1]):
        out = rows_at(out, np.argsort(positions, kind="stable"))
    return out


def _with_identity(staged: pa.Table, identity: pa.Table) -> pa.Table:
    """The staged rows with their event id first and their user columns before the raw JSON ones.

    Both tables hold one row for each record of the batch, in the order of its lines.
    """
    if not staged.column("_position").equals(identity.column("_position")):
        raise AssertionError("the event ids of a batch do not line up with its records")
    names = [n for n in staged.column_names if n not in _STAGED_ONLY]
    at = names.index(RAW_JSON_COLUMNS.names[0])
    user = identity.column_names[2:]
    columns = [
        identity.column("event_id"),
        *(staged.column(n) for n in names[:at]),
        *(identity.column(n) for n in user),
        *(staged.column(n) for n in names[at:]),
    ]
    return pa.Table.from_arrays(columns, names=["event_id", *names[:at], *user, *names[at:]])


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
