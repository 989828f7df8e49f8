"""Query engines: open the events table as an Ibis table, run expressions.

Every metric is an Ibis expression; this module is the only place that knows
where the rows come from and which engine runs them. The default engine is an
in-process DuckDB connection with its ``TimeZone`` set to UTC; Spark (or any
Ibis backend) is chosen with ``backend=``.

A Delta table is opened with the ``deltalake`` package, never with DuckDB's
own ``delta`` extension (it downloads itself at run time). By default its
current data files, as listed by the Delta log, are read by the engine's own
Parquet reader; ``DeltaTable.to_pyarrow_dataset()`` is the fallback for tables
whose plain files are not the table (deletion vectors). A table with column
mapping is refused on DuckDB: that reader would give every value as null.

Spark
-----
``backend="spark"`` uses the active Spark session, else a new local one;
``backend=`` also takes a ``SparkSession`` or an Ibis PySpark connection.
Spark reads exactly the Parquet files the Delta log lists as live, with the
table's own schema from the log (no ``delta-spark`` needed); a table whose
plain files are not the table goes through Spark's Delta reader, which the
session must then have.

Time zones: every timestamp is an instant and comes back in UTC on every
backend. A Spark session this module starts itself runs in UTC. A session
or connection you pass (or an active session) keeps its
``spark.sql.session.timeZone``: nothing here changes it, and nothing depends
on it, because the expressions never format, parse or truncate a timestamp
in the session's zone (they work on epoch milliseconds) and :func:`execute`
fetches timestamp columns as epoch microseconds and rebuilds them as UTC.
One caveat is Ibis' own ``.to_pandas()`` on Spark: it returns timestamps as
naive wall-clock times of the session's zone; use :func:`execute` for UTC
values whatever that zone is.

Percentiles are exact on Spark too (``percentile``: linear interpolation,
like DuckDB's ``quantile_cont`` and numpy's default), equal to DuckDB's to
1e-9 s. The approximate ones (``time_to_delivery(..., approximate=True)``,
columns ``ttd_p50_approx`` ...) are DuckDB's t-digest ``approx_quantile``
and Spark's ``percentile_approx`` (accuracy 10,000: rank error 1/10,000; it
returns a value of the data, never an interpolation). Tolerance, on either
engine: the rank of an approximate p-quantile among the group's n measured
items is within max(0.01, 1/n) of p; e.g. in a large group the approximate
p90 lies between the exact p89 and p91.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import pandas as pd

from campaign_analytics.errors import BackendError, ParameterError, TableError
from campaign_analytics.store import data_files

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "EVENT_COLUMNS",
    "REQUIRED_EVENT_COLUMNS",
    "backend_name",
    "duckdb_backend",
    "epoch_milliseconds",
    "events_table",
    "execute",
    "frame_to_arrow",
]

_TIMESTAMP: Final = dt.Timestamp(timezone="UTC")

# Session settings ibis.pyspark.connect() overwrites; a caller's session gets
# its own values back (see _connect_spark).
_SPARK_SETTINGS_IBIS_CHANGES: Final[tuple[str, ...]] = (
    "spark.sql.session.timeZone",
    "spark.sql.mapKeyDedupPolicy",
)
# Configuration of a Spark session events_table() starts itself.
_OWN_SPARK_CONFIG: Final[dict[str, str]] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}

EVENT_COLUMNS: Final[Mapping[str, dt.DataType]] = {
    "event_id": dt.string,
    "trigger": dt.string,
    "entity": dt.string,
    "stage": dt.string,
    "app_id": dt.string,
    "region": dt.string,
    "webhook_id": dt.string,
    "campaign_id": dt.string,
    "notification_id": dt.string,
    "item_id": dt.string,
    "template_id": dt.string,
    "template_version": dt.int32,
    "receiver": dt.string,
    "channel_type": dt.string,
    "channel_id": dt.string,
    "status": dt.string,
    "label": dt.string,
    "category": dt.string,
    "tags": dt.Array(dt.string),
    "topic": dt.string,
    "error_message": dt.string,
    "name": dt.string,
    "total_targets": dt.int64,
    "sent_count": dt.int64,
    "failed_count": dt.int64,
    **{
        column: _TIMESTAMP
        for column in (
            "sent_at",
            "delivered_at",
            "read_at",
            "interacted_at",
            "engaged_at",
            "clicked_at",
            "failed_at",
            "created_at",
            "completed_at",
            "scheduled_at",
            "updated_at",
            "event_time",
        )
    },
    "event_date": dt.date,
}
"""The core columns of the events table contract and their Ibis types.

``variables__*`` and ``metadata__*`` columns (strings) come on top of these,
as do the verbatim JSON and provenance columns, which no metric reads.
"""

REQUIRED_EVENT_COLUMNS: Final[tuple[str, ...]] = ("entity", "stage", "event_time")
"""Columns an events table must have. Other contract columns may be missing
from a hand-built frame; the metrics then treat them as all null."""

_TIMESTAMP_COLUMNS: Final[tuple[str, ...]] = tuple(
    name for name, dtype in EVENT_COLUMNS.items() if dtype.is_timestamp()
)

# Native "timestamp -> epoch milliseconds" functions. Ibis has no such
# operation: its epoch_seconds() is whole seconds on Spark and a rounded
# double on DuckDB, and its timestamp delta() is a calendar-aware DATE_DIFF
# that costs DuckDB ten times more than epoch_ms().
_EPOCH_MS_FUNCTIONS: Final[dict[str, str]] = {"duckdb": "epoch_ms", "pyspark": "unix_millis"}

_default_lock = threading.Lock()
_default: list[ibis.BaseBackend] = []


# DuckDB would take up to 80% of the machine's memory; metrics on 10M events need far less,
# and a cap lets it spill instead of growing. Pass your own backend to use more.
DEFAULT_DUCKDB_MEMORY_LIMIT: Final[str] = "1GB"


def duckdb_backend(**config: Any) -> ibis.BaseBackend:
    """Open a new in-process Ibis DuckDB connection whose time zone is UTC.

    Parameters
    ----------
    **config
        DuckDB configuration options, e.g. ``threads=4`` or ``memory_limit="4GB"``
        (default memory limit: :data:`DEFAULT_DUCKDB_MEMORY_LIMIT`).

    Returns
    -------
    ibis.BaseBackend
        The connection; pass it as ``backend=`` to :func:`events_table`.

    Examples
    --------
    >>> con = duckdb_backend(threads=2)
    >>> con.raw_sql("SELECT current_setting('TimeZone')").fetchone()[0]
    'UTC'
    """
    config.setdefault("memory_limit", DEFAULT_DUCKDB_MEMORY_LIMIT)
    con = ibis.duckdb.connect(**config)
    # DATE/HOUR of a TIMESTAMPTZ follow the session time zone; pin it.
    con.raw_sql("SET TimeZone = 'UTC'")
    return con


def _default_backend() -> ibis.BaseBackend:
    with _default_lock:
        if not _default:
            _default.append(duckdb_backend())
        return _default[0]


def execute(expr: ibis.Expr) -> pd.DataFrame:
    """Run an Ibis table expression and return the (small) result as pandas.

    The expression runs on the backend its tables belong to; an expression
    built only from in-memory tables (``ibis.memtable``) runs on a shared
    UTC DuckDB connection rather than on Ibis' default backend, whose time
    zone is the machine's.

    Parameters
    ----------
    expr
        An Ibis table expression.

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> execute(ibis.memtable({"x": [1, 2]}).x.sum().name("total").as_table())
       total
    0      3
    """
    if not isinstance(expr, ibis.Table):
        raise ParameterError(f"execute() needs an Ibis table expression, got {type(expr).__name__}")
    bound = expr.op().find(ops.DatabaseTable)
    if not bound:
        return _default_backend().to_pandas(expr)
    con = bound[0].source
    if con.name == "pyspark":
        return _execute_spark(con, expr)
    return con.to_pandas(expr)


def _execute_spark(con: ibis.BaseBackend, expr: ibis.Table) -> pd.DataFrame:
    """Run ``expr`` on Spark with every timestamp column fetched as UTC.

    Spark hands timestamps to pandas as naive wall-clock times of the
    session's time zone; epoch microseconds do not depend on it.
    """
    schema = expr.schema()
    timestamps = [name for name, dtype in schema.items() if dtype.is_timestamp()]
    if not timestamps:
        return con.to_pandas(expr)
    micros = _epoch_function("unix_micros")
    frame = con.to_pandas(expr.mutate(**{name: micros(expr[name]) for name in timestamps}))
    for name in timestamps:
        values = pd.to_datetime(frame[name].astype("Int64"), unit="us", utc=True)
        frame[name] = values.astype("datetime64[us, UTC]")
    return frame


def backend_name(table: ibis.Table) -> str:
    """Name of the backend ``table`` runs on (``"duckdb"`` for in-memory tables).

    Examples
    --------
    >>> backend_name(ibis.memtable({"x": [1]}))
    'duckdb'
    """
    bound = table.op().find(ops.DatabaseTable)
    return bound[0].source.name if bound else "duckdb"


def epoch_milliseconds(value: ibis.TimestampValue, *, backend: str) -> ibis.IntegerValue:
    """Milliseconds since 1970-01-01 UTC of a UTC timestamp, as int64.

    Parameters
    ----------
    value
        A timestamp expression.
    backend
        The backend the expression runs on (see :func:`backend_name`): its
        native function is used where one is known, else a portable rounding
        of ``epoch_seconds()``.

    Examples
    --------
    >>> t = ibis.memtable({"ts": pd.to_datetime(["1970-01-01 00:00:01.5"], utc=True)})
    >>> int(execute(epoch_milliseconds(t.ts, backend="duckdb").name("ms").as_table()).ms[0])
    1500
    """
    function = _EPOCH_MS_FUNCTIONS.get(backend)
    if function is None:
        return (value.epoch_seconds().cast(dt.float64) * 1000).round().cast(dt.int64)
    return _epoch_function(function)(value)


@functools.cache
def _epoch_function(name: str) -> Callable[..., ibis.Value]:
    """A native "timestamp -> int64 since the epoch" function (``epoch_ms``, ``unix_micros``, ...)."""

    def epoch(value: object) -> object:  # the body never runs: a builtin
        ...

    return ibis.udf.scalar.builtin(epoch, name=name, signature=((_TIMESTAMP,), dt.int64))


def events_table(
    source: str | Path | pd.DataFrame | ibis.Table,
    *,
    backend: ibis.BaseBackend | SparkSession | str | None = None,
    scan: Literal["auto", "parquet", "arrow"] = "auto",
) -> ibis.Table:
    """Open the events table as a (lazy) Ibis table.

    Parameters
    ----------
    source
        A path to the events Delta table, a pandas DataFrame of events with the
        columns of the events table contract, or an Ibis table (returned as is
        after a check of its columns).
    backend
        Where a path or DataFrame is registered: an Ibis backend (connection),
        a ``pyspark.sql.SparkSession``, or ``"duckdb"`` (default: a new
        in-process connection with ``TimeZone = 'UTC'``) or ``"spark"`` (the
        active Spark session, else a new local one in UTC, web UI off, log
        level ERROR). A Spark session you pass, or the active one, keeps its
        own ``spark.sql.session.timeZone``; results are in UTC whatever it is
        (see the module notes).
    scan
        DuckDB only: how the Delta table's data files are read. ``"parquet"``
        lists the table's current data files with ``deltalake`` and reads them
        with DuckDB's native Parquet reader (fastest); ``"arrow"`` registers
        ``DeltaTable(path).to_pyarrow_dataset()``. ``"auto"`` (default) uses
        ``"parquet"`` unless the table uses a Delta feature the plain files do
        not capture (deletion vectors, column mapping), then ``"arrow"``.

    Returns
    -------
    ibis.Table
        Nothing is read until the expression (or one built on it) is executed.

    Raises
    ------
    TableError
        The path is not a Delta table, or the table or frame is not an events table.
    ParameterError
        ``source`` or ``scan`` has an unsupported type or value.
    BackendError
        The backend cannot read the table.

    Examples
    --------
    >>> import pandas as pd
    >>> ts = pd.Series(pd.to_datetime([1780003600], unit="s", utc=True), dtype="datetime64[ms, UTC]")
    >>> frame = pd.DataFrame({"event_id": ["e1"], "entity": ["feed_item"], "stage": ["sent"],
    ...                       "item_id": ["f1"], "event_time": ts, "sent_at": ts})
    >>> events_table(frame).count().to_pandas()
    1
    """
    if scan not in ("auto", "parquet", "arrow"):
        raise ParameterError(f"scan must be 'auto', 'parquet' or 'arrow', got {scan!r}")
    if isinstance(source, ibis.Table):
        _check_event_columns(source.columns, what="the Ibis table")
        return source
    if isinstance(source, pd.DataFrame):
        _check_event_columns(source.columns, what="the DataFrame")
        arrow = frame_to_arrow(source, what="the events DataFrame")
        con = _backend(backend)
        name = f"events_{uuid.uuid4().hex}"
        try:
            if con.name == "duckdb":
                return con.create_table(name, arrow, temp=True)
            if con.name == "pyspark":
                # Straight from Arrow: Ibis' route through pandas turns missing
                # strings into the text "NaN" on Spark. A temporary view is
                # session-scoped, like DuckDB's temporary table.
                con._session.createDataFrame(arrow).createOrReplaceTempView(name)
                return con.table(name)
            return con.create_view(name, ibis.memtable(arrow))
        except Exception as exc:
            raise BackendError(f"could not register the events DataFrame in {con.name}: {exc}") from exc
    if isinstance(source, (str, Path)):
        return _open_delta(Path(source), backend, scan)
    raise ParameterError(
        "source must be a path to the events Delta table, a pandas DataFrame of events "
        f"or an Ibis table, got {type(source).__name__}"
    )


def _backend(backend: Any) -> ibis.BaseBackend:
    """The Ibis backend ``backend`` names (or is, or wraps: a SparkSession)."""
    if backend is None or backend == "duckdb":
        return duckdb_backend()
    if isinstance(backend, str) and backend in ("spark", "pyspark"):
        return _spark_backend()
    if isinstance(backend, ibis.BaseBackend):
        return backend
    if _is_spark_session(backend):
        return _connect_spark(backend)
    raise ParameterError(
        f"backend must be 'duckdb', 'spark', a SparkSession or an Ibis backend, got {backend!r}"
    )


def _is_spark_session(value: object) -> bool:
    """Whether ``value`` is a PySpark session (classic, or Spark Connect where installed)."""
    classes: list[type] = []
    with contextlib.suppress(ImportError):
        from pyspark.sql import SparkSession

        classes.append(SparkSession)
    with contextlib.suppress(Exception):  # Spark Connect needs extra packages
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        classes.append(ConnectSession)
    return bool(classes) and isinstance(value, tuple(classes))


def _spark_backend() -> ibis.BaseBackend:
    """The active Spark session (left as configured), else a new local one in UTC."""
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise BackendError(
            "the spark backend needs PySpark: pip install 'campaign-analytics[spark]' (and a Java runtime)"
        ) from exc
    session = SparkSession.getActiveSession()
    if session is None and SparkContext._active_spark_context is not None:
        # A running Spark application whose session is not active in this
        # thread: the caller's, so take it as it is (a builder given our
        # settings would apply them to it).
        session = SparkSession.builder.getOrCreate()
    if session is not None:
        return _connect_spark(session)
    try:
        builder = SparkSession.builder.appName("campaign-analytics")
        for key, value in _OWN_SPARK_CONFIG.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
    except Exception as exc:
        raise BackendError(f"could not start a Spark session (is Java 17 or newer installed?): {exc}") from exc
    session.sparkContext.setLogLevel("ERROR")
    return ibis.pyspark.connect(session)


def _connect_spark(session: Any) -> ibis.BaseBackend:
    """An Ibis connection to a caller's Spark session, leaving its settings as they were.

    ``ibis.pyspark.connect`` sets the session's time zone to UTC (and its
    map key policy); the caller's values are put back, as nothing here
    depends on them.
    """
    before = {key: session.conf.get(key, None) for key in _SPARK_SETTINGS_IBIS_CHANGES}
    try:
        return ibis.pyspark.connect(session)
    finally:
        for key, value in before.items():
            with contextlib.suppress(Exception):  # a setting the platform does not allow
                if value is None:
                    session.conf.unset(key)
                else:
                    session.conf.set(key, value)


def _check_event_columns(columns: Any, *, what: str) -> None:
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in set(columns)]
    if missing:
        raise TableError(
            f"{what} is not an events table: it lacks the column(s) {', '.join(missing)}. "
            "Pass the events table written by `campaign-analytics ingest` "
            "(or a frame with the columns of its contract)."
        )


def frame_to_arrow(frame: pd.DataFrame, *, what: str = "the DataFrame") -> Any:
    """A pandas events (or items) frame as a ``pyarrow.Table`` fit for any engine.

    Every contract timestamp column becomes UTC (a naive datetime is taken as
    UTC), and a column with no value at all gets its contract type (string
    for user columns) instead of Arrow's ``null`` type, which engines reject.

    Parameters
    ----------
    frame
        Events or items.
    what
        How error messages name the frame.

    Returns
    -------
    pyarrow.Table

    Raises
    ------
    TableError
        A timestamp column holds something other than datetimes.

    Examples
    --------
    >>> table = frame_to_arrow(pd.DataFrame({"label": [None], "sent_at": [pd.Timestamp("2026-01-01")]}))
    >>> [str(t) for t in table.schema.types]
    ['string', 'timestamp[us, tz=UTC]']
    """
    import pyarrow as pa

    fixed = frame.copy(deep=False)
    # attrs (a load's summary and quarantine) are not table data; Arrow would try to store them.
    fixed.attrs = {}
    for column in _TIMESTAMP_COLUMNS:
        if column not in fixed.columns:
            continue
        values = fixed[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            fixed[column] = values.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(values.dtype):
            fixed[column] = values.dt.tz_localize("UTC")
        elif values.isna().all():
            fixed[column] = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ms, UTC]")
        else:
            raise TableError(
                f"column {column!r} of {what} has dtype {values.dtype}, not a datetime: "
                "convert it with pandas.to_datetime(..., utc=True)"
            )
    table = pa.Table.from_pandas(fixed, preserve_index=False).replace_schema_metadata(None)
    for position, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            dtype = EVENT_COLUMNS.get(field.name, dt.string)
            table = table.set_column(position, field.name, table.column(position).cast(dtype.to_pyarrow()))
    return table


def _open_delta(path: Path, backend: Any, scan: str) -> ibis.Table:
    import deltalake
    from deltalake.exceptions import TableNotFoundError

    if not path.exists():
        raise TableError(f"no events table at {path}: the path does not exist. Run `campaign-analytics ingest` first.")
    if not path.is_dir():
        raise TableError(f"{path} is a file, not an events table. Pass the directory `campaign-analytics ingest` wrote the table to.")
    try:
        table = deltalake.DeltaTable(str(path))
    except (TableNotFoundError, deltalake.exceptions.DeltaError) as exc:
        raise TableError(
            f"{path} is not a Delta table (no readable _delta_log). "
            "Pass the directory `campaign-analytics ingest` wrote the events table to."
        ) from exc
    columns = [field.name for field in table.schema().fields]
    _check_event_columns(columns, what=f"the Delta table at {path}")

    con = _backend(backend)
    name = f"events_{uuid.uuid4().hex}"
    exact = _plain_parquet_is_exact(table)
    if con.name == "pyspark" and exact:
        try:
            _spark_data_files(con._session, table, path).createOrReplaceTempView(name)
        except Exception as exc:
            raise BackendError(f"Spark could not read the data files of the Delta table at {path}: {exc}") from exc
        return con.table(name).select(*columns)
    if con.name != "duckdb":
        try:
            return con.read_delta(str(path), table_name=name)
        except Exception as exc:
            hint = (
                " Its data files alone are not the table (deletion vectors or column mapping), so Spark "
                "needs its Delta reader: start the session with the delta-spark package and "
                "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension."
                if con.name == "pyspark"
                else ""
            )
            raise BackendError(
                f"the {con.name} backend could not read the Delta table at {path}: {exc}.{hint}"
            ) from exc

    if _uses_column_mapping(table):
        # deltalake's Arrow reader finds the columns by their logical names while the files hold
        # physical ones: every value would come back null, with no error.
        raise BackendError(
            f"the Delta table at {path} uses column mapping, which the DuckDB backend cannot read "
            "(every value would read as null). Read it with Spark and delta-spark, or rewrite it "
            "without column mapping (as `campaign-analytics ingest` writes tables)."
        )
    if scan == "auto":
        scan = "parquet" if exact else "arrow"
    if scan == "parquet" and not exact:
        raise BackendError(
            f"scan='parquet' reads the data files alone, but those of the Delta table at {path} are not the "
            "table (it has deletion vectors). Use scan='auto'."
        )
    if scan == "arrow":
        try:
            dataset = table.to_pyarrow_dataset()
        except Exception as exc:  # deltalake raises several of its own kinds here
            raise BackendError(f"deltalake could not read the Delta table at {path}: {exc}") from exc
        con.con.register(name, dataset)
        return con.table(name)
    return _read_data_files(con, table, name, columns)


def _uses_column_mapping(table: Any) -> bool:
    features = set(table.protocol().reader_features or ())
    configuration = table.metadata().configuration or {}
    return "columnMapping" in features or configuration.get("delta.columnMapping.mode", "none") != "none"


def _spark_data_files(session: Any, table: Any, path: Path) -> Any:
    """A Spark DataFrame of the table's live data files, typed by the Delta schema.

    The files are the ones the Delta log lists (no ``delta-spark`` needed);
    the schema comes from the log too, so Spark neither reads every file's
    footer to merge schemas nor guesses the partition column's type, and a
    column no live file holds reads as null.
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = pa.schema(table.schema().to_arrow())  # deltalake >= 1.0 gives an arro3 schema
    spark_schema = from_arrow_schema(schema)
    # Spark reads every path as a glob pattern: a folder named "runs [1]" must match itself.
    files = [re.sub(r"([\\\[\]{}*?])", r"\\\1", file) for file in data_files(table)]
    if not files:
        return session.createDataFrame([], spark_schema)
    return session.read.schema(spark_schema).option("basePath", str(path)).parquet(*files)


def _plain_parquet_is_exact(table: Any) -> bool:
    """Whether the table's data files, read as plain Parquet, are the table."""
    return "deletionVectors" not in set(table.protocol().reader_features or ()) and not _uses_column_mapping(table)


def _read_data_files(con: ibis.BaseBackend, table: Any, name: str, columns: list[str]) -> ibis.Table:
    import pyarrow as pa
    import sqlglot.expressions as sge

    files = data_files(table)
    schema = pa.schema(table.schema().to_arrow())  # deltalake >= 1.0 gives an arro3 schema
    partition_columns = list(table.metadata().partition_columns)
    if not files:
        # An empty table: an empty Arrow table of the right schema.
        con.con.register(name, pa.Table.from_batches([], schema=schema))
        return con.table(name)
    # Partition values live in the directory names (Hive style); their types
    # come from the Delta schema, not from guessing.
    hive_types = sge.Struct(
        expressions=[
            sge.PropertyEQ(
                this=sge.Literal.string(column),
                expression=sge.Literal.string(
                    con.compiler.type_mapper.to_string(ibis.dtype(schema.field(column).type))
                ),
            )
            for column in partition_columns
        ]
    )
    options: dict[str, Any] = {"union_by_name": True}
    if partition_columns:
        options.update(hive_partitioning=True, hive_types=hive_types)
    events = con.read_parquet(files, table_name=name, **options)
    # A column the Delta schema has but no current file holds reads as null.
    missing = {
        field.name: ibis.null().cast(ibis.dtype(field.type))
        for field in schema
        if field.name not in events.columns
    }
    if missing:
        events = events.mutate(**missing)
    return events.select(*[c for c in columns if c in events.columns])
