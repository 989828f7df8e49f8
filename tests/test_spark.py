"""The metrics on local PySpark equal the DuckDB ones over the same events table.

One simulated stream (``simulate`` + ``ingest`` into a temporary table) is
read by both engines; counts, rates and exact percentiles must agree (the
percentiles to 1e-9 s), approximate percentiles must be within the tolerance
documented in :mod:`campaign_analytics.backends`.

The module's single Spark session (local[2], 4 shuffle partitions, no UI)
runs in ``Asia/Kathmandu`` (UTC+05:45) on purpose: it plays a caller's
session whose time zone is not UTC, which the library must neither change
nor depend on. Skipped only when PySpark or Java is missing.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest


def _missing_requirement() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "PySpark is not installed (pip install 'campaign-analytics[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and Path(java_home, "bin", "java").exists()):
        return "no Java runtime (no java on PATH, no JAVA_HOME): Spark needs Java 17 or newer"
    return None


if (_reason := _missing_requirement()) is not None:
    pytest.skip(_reason, allow_module_level=True)

import ibis

from campaign_analytics.backends import events_table, execute
from campaign_analytics.items import items
from campaign_analytics.metrics import (
    campaigns,
    compare_versions,
    engagement,
    time_to_delivery,
)
from campaign_analytics.simulate import simulate
from campaign_analytics.store import ingest, read_events

pytestmark = pytest.mark.spark

CALLER_TIME_ZONE = "Asia/Kathmandu"
BENCHMARK_KEYS = ["template_id", "template_version", "label", "channel_type"]
PERCENTILES = {"ttd_p50": 0.5, "ttd_p90": 0.9, "ttd_p99": 0.99}
EXACT_TOLERANCE = 1e-9  # seconds
APPROX_RANK_TOLERANCE = 0.01  # see campaign_analytics.backends: max(0.01, 1/n) in rank
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated stream ingested into a fresh events table (its path holds a space and glob characters, as real ones may)."""
    root = tmp_path_factory.mktemp("spark")
    simulate(root / "raw", items=1500, seed=11, days=5, bad_records=2, other_triggers=2)
    ingest(root / "raw", root / "campaign events [1]", progress=False)
    return root / "campaign events [1]"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """The module's one local Spark session, configured as a caller would (non-UTC zone)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("campaign-analytics-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", CALLER_TIME_ZONE)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def engines(table: Path, spark: Any) -> dict[str, ibis.Table]:
    """The events table opened on DuckDB and on the Spark session."""
    return {"duckdb": events_table(table), "spark": events_table(table, backend=spark)}


@pytest.fixture(scope="module")
def per_item(engines: dict[str, ibis.Table]) -> dict[str, ibis.Table]:
    """The items expression on each engine (lazy: each test runs what it needs)."""
    return {name: items(events) for name, events in engines.items()}


@pytest.fixture(autouse=True)
def _caller_zone_is_left_alone(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test leaves the caller's session time zone as it was."""
    yield
    if "spark" in request.fixturenames:
        session = request.getfixturevalue("spark")
        assert session.conf.get("spark.sql.session.timeZone") == CALLER_TIME_ZONE


def assert_same(spark_frame: pd.DataFrame, duckdb_frame: pd.DataFrame, *, atol: float = 0.0) -> None:
    """Identical frames: same columns, dtypes and values (floats within ``atol``)."""
    if atol:
        pd.testing.assert_frame_equal(spark_frame, duckdb_frame, check_exact=False, rtol=0.0, atol=atol)
    else:
        pd.testing.assert_frame_equal(spark_frame, duckdb_frame, check_exact=True)


def test_the_spark_table_is_the_delta_table(engines: dict[str, ibis.Table], table: Path) -> None:
    events = engines["spark"]
    assert events.columns == engines["duckdb"].columns
    assert events.schema()["event_date"].is_date()
    assert int(events.count().to_pandas()) == len(read_events(table))


def test_spark_reads_only_the_files_the_delta_log_lists(table: Path, spark: Any, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(table, tmp_path / "events"))
    live = sorted(copy.glob("event_date=*/*.parquet"))
    # A data file no commit refers to (a load that never committed).
    shutil.copy(live[0], live[0].with_name("part-uncommitted-00001.parquet"))
    on_spark = int(events_table(copy, backend=spark).count().to_pandas())
    on_duckdb = int(events_table(copy).count().to_pandas())
    assert on_spark == on_duckdb == len(read_events(table))


def test_items_are_identical(per_item: dict[str, ibis.Table]) -> None:
    spark_items, duckdb_items = (
        execute(per_item[name]).sort_values(["channel_type", "item_id"], ignore_index=True)
        for name in ("spark", "duckdb")
    )
    assert len(duckdb_items) > 1000
    # Timestamps come back as UTC instants, whatever the session's zone.
    assert str(spark_items["sent_at"].dtype) == "datetime64[us, UTC]"
    assert_same(spark_items, duckdb_items)


@pytest.mark.parametrize(
    ("by", "tz"),
    [
        (None, None),
        (BENCHMARK_KEYS, None),
        (["tag"], None),
        (["send_date", "send_hour"], None),
        (["send_date", "send_hour"], "America/New_York"),
    ],
    ids=["all", "template-version-label-channel", "tag", "send-hour-utc", "send-hour-new-york"],
)
def test_engagement_counts_and_rates_are_identical(
    per_item: dict[str, ibis.Table], by: list[str] | None, tz: str | None
) -> None:
    duckdb_frame = engagement(per_item["duckdb"], by=by, tz=tz)
    assert duckdb_frame["sent"].sum() > 1000
    assert_same(engagement(per_item["spark"], by=by, tz=tz), duckdb_frame)


@pytest.mark.parametrize(
    ("by", "exclude"),
    [(BENCHMARK_KEYS, False), (None, True), (["send_date"], False)],
    ids=["template-version-label-channel", "all-without-delivered-on-read", "send-date"],
)
def test_time_to_delivery_exact_percentiles_agree(
    per_item: dict[str, ibis.Table], by: list[str] | None, exclude: bool
) -> None:
    spark_frame = time_to_delivery(per_item["spark"], by=by, exclude_delivered_on_read=exclude)
    duckdb_frame = time_to_delivery(per_item["duckdb"], by=by, exclude_delivered_on_read=exclude)
    assert duckdb_frame["ttd_n"].sum() > 500
    assert list(spark_frame.columns[-3:]) == list(PERCENTILES)
    # Counts exactly; the mean (a sum in another order) and the percentiles to 1e-9 s.
    assert_same(spark_frame[spark_frame.columns[: -4]], duckdb_frame[duckdb_frame.columns[: -4]])
    assert_same(spark_frame, duckdb_frame, atol=EXACT_TOLERANCE)


def test_time_to_delivery_approximate_percentiles_are_labelled_and_within_tolerance(
    per_item: dict[str, ibis.Table],
) -> None:
    truth = execute(per_item["duckdb"].select(*BENCHMARK_KEYS, "sent_at", "delivered_at", "time_to_delivery_s"))
    truth = truth[truth.sent_at.notna() & truth.delivered_at.notna()]
    values = {
        _group_key(key): np.sort(group["time_to_delivery_s"].to_numpy())
        for key, group in truth.groupby(BENCHMARK_KEYS, dropna=False)
    }
    exact = time_to_delivery(per_item["duckdb"], by=BENCHMARK_KEYS)
    for engine in ("spark", "duckdb"):
        frame = time_to_delivery(per_item[engine], by=BENCHMARK_KEYS, approximate=True)
        approx_columns = [f"{name}_approx" for name in PERCENTILES]
        assert list(frame.columns[-3:]) == approx_columns
        assert not set(PERCENTILES) & set(frame.columns)
        assert_same(frame[exact.columns[:-3]], exact[exact.columns[:-3]], atol=EXACT_TOLERANCE)
        checked = 0
        for row in frame[frame.ttd_n > 0].itertuples(index=False):
            key = _group_key(tuple(getattr(row, column) for column in BENCHMARK_KEYS))
            measured = values[key]
            n = len(measured)
            assert n == row.ttd_n
            for name, p in PERCENTILES.items():
                estimate = getattr(row, f"{name}_approx")
                below = np.searchsorted(measured, estimate, side="left") / n
                at_or_below = np.searchsorted(measured, estimate, side="right") / n
                rank_error = max(below - p, p - at_or_below, 0.0)
                assert rank_error <= max(APPROX_RANK_TOLERANCE, 1.0 / n) + 1e-12, (engine, key, name, n, estimate)
                checked += 1
        assert checked >= 30


def _group_key(key: Any) -> tuple[Any, ...]:
    """A group key with every missing value as None (pandas gives NaN, None or NA)."""
    key = key if isinstance(key, tuple) else (key,)
    return tuple(None if pd.isna(value) else value for value in key)


def test_compare_versions_is_identical(per_item: dict[str, ibis.Table]) -> None:
    for metric in ("read_rate", "click_rate_of_delivered"):
        duckdb_frame = compare_versions(per_item["duckdb"], metric=metric)
        assert len(duckdb_frame) > 0
        assert_same(compare_versions(per_item["spark"], metric=metric), duckdb_frame)


def test_campaigns_are_identical(engines: dict[str, ibis.Table]) -> None:
    duckdb_frame = campaigns(engines["duckdb"])
    assert len(duckdb_frame) > 0
    assert_same(campaigns(engines["spark"]), duckdb_frame)


def test_a_session_or_connection_of_the_caller_keeps_its_time_zone(
    table: Path, spark: Any, per_item: dict[str, ibis.Table]
) -> None:
    expected = engagement(per_item["duckdb"], by=["send_date", "send_hour"])
    # The active session, by name: used as it is.
    via_name = events_table(table, backend="spark")
    assert spark.conf.get("spark.sql.session.timeZone") == CALLER_TIME_ZONE
    assert_same(engagement(items(via_name), by=["send_date", "send_hour"]), expected)
    # An Ibis connection of the caller's (ibis.pyspark.connect switches the
    # session to UTC; the caller switched it back).
    connection = ibis.pyspark.connect(spark)
    spark.conf.set("spark.sql.session.timeZone", CALLER_TIME_ZONE)
    via_connection = events_table(table, backend=connection)
    assert_same(engagement(items(via_connection), by=["send_date", "send_hour"]), expected)
    columns = ["channel_type", "item_id", "sent_at", "delivered_at"]
    times = [
        execute(items(events).select(*columns)).sort_values(columns[:2], ignore_index=True)
        for events in (via_connection, events_table(table))
    ]
    assert_same(*times)


def test_an_events_dataframe_runs_on_spark(table: Path, spark: Any) -> None:
    frame = read_events(table)
    on_spark = items(events_table(frame, backend=spark))
    on_duckdb = items(events_table(frame))
    by = ["template_id", "template_version"]
    assert_same(engagement(on_spark, by=by), engagement(on_duckdb, by=by))
    assert_same(time_to_delivery(on_spark, by=by), time_to_delivery(on_duckdb, by=by), atol=EXACT_TOLERANCE)


def test_an_empty_table_gives_the_same_answers(tmp_path: Path, table: Path, spark: Any) -> None:
    import deltalake
    import pyarrow as pa

    schema = pa.schema(deltalake.DeltaTable(str(table)).schema().to_arrow())
    empty = tmp_path / "empty"
    deltalake.write_deltalake(str(empty), schema.empty_table(), partition_by=["event_date"])
    on_spark, on_duckdb = items(events_table(empty, backend=spark)), items(events_table(empty))
    assert_same(engagement(on_spark), engagement(on_duckdb))
    assert_same(time_to_delivery(on_spark, by="label"), time_to_delivery(on_duckdb, by="label"))


def test_cli_metrics_on_spark_prints_only_the_result(tmp_path: Path) -> None:
    """`metrics --backend spark` starts its own local session; stdout holds nothing but the CSV."""
    events = tmp_path / "events"
    ingest(SAMPLE, events, progress=False)
    by = "template_id,template_version,label,channel_type"
    done = subprocess.run(
        [sys.executable, "-m", "campaign_analytics.cli", "metrics", "--table", str(events), "--by", by,
         "--format", "csv", "--backend", "spark"],
        check=False, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    on_spark = pd.read_csv(io.StringIO(done.stdout))
    keys = by.split(",")
    per_item = items(events)
    rates = engagement(per_item, by=keys)
    latency = time_to_delivery(per_item, by=keys)
    expected = rates.merge(latency, on=keys, how="outer")
    assert list(on_spark.columns) == list(expected.columns)
    assert len(on_spark) == len(expected) > 5
    duckdb_csv = pd.read_csv(io.StringIO(expected.to_csv(index=False)))
    pd.testing.assert_frame_equal(on_spark, duckdb_csv, check_exact=False, rtol=0.0, atol=EXACT_TOLERANCE)
