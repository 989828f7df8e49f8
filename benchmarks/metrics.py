"""Metrics speed and memory: campaign_analytics on DuckDB and Spark against hand-written SQL.

    python benchmarks/metrics.py                                # 10,000,000 synthetic events
    python benchmarks/metrics.py --events 1000000               # a quicker look
    python benchmarks/metrics.py --scale 1000000,10000000       # growth from 1M to 10M events
    python benchmarks/metrics.py --input warehouse/events       # your own events table
    python benchmarks/metrics.py --events 1000000 --no-spark    # DuckDB only
    python benchmarks/metrics.py --duckdb-memory-limit 1GB      # cap DuckDB's memory (both DuckDB contenders)

The workload is what an analyst runs first: ``items`` then ``engagement`` and
``time_to_delivery`` grouped by ``template_id, template_version, label,
channel_type`` (sent, delivered, read, interacted, clicked, the six rates,
ttd_n, ttd_mean and the exact ttd_p50 / p90 / p99). Contenders, each in a
fresh process on the same Delta table:

* ``hand``:  one hand-written DuckDB SQL query over the table's live Parquet
  files (listed from the Delta log with ``deltalake``), computing the same
  numbers the way someone who knows the events table would write it;
* ``ours``:  ``items(events_table(path))`` then ``summary(...)`` (engagement and
  time_to_delivery in one pass) on the default in-process DuckDB;
* ``spark``: the same three calls on a local Spark session (``local[2]``,
  ``--spark-partitions`` shuffle partitions, ``--spark-memory`` driver heap).
  Session start-up is reported apart and not counted in its seconds.

Each contender runs ``--repeat`` times in its process and reports its best
time; peak RSS is that process's own (``VmHWM``, reset at its start), plus, for
Spark, the peak RSS (``VmHWM``) of its Java process (the sum of two peaks, so
an upper bound). The numbers of all contenders are checked against each
other: counts and rates identical, mean and percentiles within 1e-9 s. The
Wilson intervals ``engagement`` adds are computed from the counts on the
client and are not part of the comparison.

Targets (issue 3): ours <= 1.3x the hand-written query, peak RSS <= 2 GiB.
Figures vary with the machine; compare ratios, not seconds.

Data. Simulating 10M events through ``simulate()`` and ``ingest`` takes
long, so without ``--input`` the table is written directly by
:func:`generate`: a synthetic events table with the columns and types of the
events table contract (partitioned by ``event_date``), in which every item
has a sent event and, cumulatively carried on later events as CometChat does,
delivered (90%), read (45% of delivered; 10% of reads "marked read" with
``deliveredAt == readAt``), interacted (30% of feed reads; ``engagedAt`` for a
third of them) or clicked (push), with log-normal latencies; 3% of the
non-sent events are lost. 20 templates x 3 versions, 5 labels, 2 channels
(120 groups), 30 days. Tables are cached under ``benchmarks/_work``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from campaign_analytics.metrics import RATES

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"

KEYS: list[str] = ["template_id", "template_version", "label", "channel_type"]
COUNTS: list[str] = ["sent", "delivered", "read", "interacted", "clicked"]
LATENCY: list[str] = ["ttd_mean", "ttd_p50", "ttd_p90", "ttd_p99"]
RESULT_COLUMNS: list[str] = [*KEYS, *COUNTS, *RATES, "ttd_n", *LATENCY]
TOLERANCE = 1e-9  # seconds, for the mean and the percentiles
RSS_TARGET = 2 * 1024**3
RATIO_TARGET = 1.3

# ---------------------------------------------------------------- contenders


def _hand_sql(files: list[str]) -> str:
    """The hand-written query: events -> items -> per-group counts, rates and latency."""
    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    rates = ",\n        ".join(
        f"{numerator} / nullif({denominator}, 0)::DOUBLE AS {name}"
        for name, (numerator, denominator) in RATES.items()
    )
    return f"""
    WITH events AS (
        SELECT entity, item_id, stage, channel_type, template_id, template_version, label,
               sent_at, delivered_at, read_at, interacted_at, engaged_at, clicked_at,
               -- an item's earliest event first: by event time, then stage rank
               coalesce(epoch_ms(event_time), 288230376151711744) * 8
                 + CASE stage WHEN 'sent' THEN 0 WHEN 'delivered' THEN 1 WHEN 'read' THEN 2
                              WHEN 'interacted' THEN 3 WHEN 'clicked' THEN 3 ELSE 4 END AS k
        FROM read_parquet([{listing}], hive_partitioning = true, union_by_name = true)
        WHERE entity IN ('feed_item', 'push_notification')
    ), item_rows AS (
        SELECT coalesce(arg_min(channel_type, k), CASE WHEN entity = 'feed_item' THEN 'in_app' ELSE 'push' END)
                 AS channel_type,
               arg_min(template_id, k) AS template_id,
               arg_min(template_version, k) AS template_version,
               arg_min(label, k) AS label,
               min(sent_at) AS sent_at,
               min(delivered_at) AS delivered_at,
               min(read_at) IS NOT NULL OR bool_or(stage = 'read') AS is_read,
               min(interacted_at) IS NOT NULL OR min(engaged_at) IS NOT NULL OR bool_or(stage = 'interacted')
                 AS is_interacted,
               min(clicked_at) IS NOT NULL OR bool_or(stage = 'clicked') AS is_clicked,
               bool_or(stage = 'delivered') AS delivered_event
        FROM events
        GROUP BY entity, item_id
    ), items AS (
        SELECT *,
               delivered_at IS NOT NULL OR delivered_event OR is_read OR is_interacted OR is_clicked AS is_delivered,
               (epoch_ms(delivered_at) - epoch_ms(sent_at)) / 1000.0 AS ttd
        FROM item_rows
    ), groups AS (
        SELECT template_id, template_version, label, channel_type,
               count(*) AS sent,
               count_if(is_delivered) AS delivered,
               count_if(is_read) AS read,
               count_if(is_interacted) AS interacted,
               count_if(is_clicked) AS clicked,
               count(ttd) AS ttd_n,
               avg(ttd) AS ttd_mean,
               quantile_cont(ttd, [0.5, 0.9, 0.99]) AS q
        FROM items
        GROUP BY ALL
    )
    SELECT template_id, template_version, label, channel_type, sent, delivered, read, interacted, clicked,
        {rates},
        ttd_n, ttd_mean, q[1] AS ttd_p50, q[2] AS ttd_p90, q[3] AS ttd_p99
    FROM groups
    """


def _run_hand(table: str, memory_limit: str | None = None) -> Any:
    import deltalake
    import duckdb

    files = deltalake.DeltaTable(table).file_uris()
    con = duckdb.connect(config={"memory_limit": memory_limit} if memory_limit else {})
    con.execute("SET TimeZone = 'UTC'")
    try:
        return con.execute(_hand_sql(files)).df()
    finally:
        con.close()


def _run_ours(table: str, backend: Any = None, split: list[float] | None = None) -> Any:
    """items -> summary: engagement and time_to_delivery computed in one pass over the items.

    ``split`` is kept for the report's shape; one pass has nothing to split.
    """
    from campaign_analytics.backends import events_table
    from campaign_analytics.items import items
    from campaign_analytics.metrics import summary

    return summary(items(events_table(table, backend=backend)), by=KEYS)


def _spark_session(partitions: int, memory: str) -> Any:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("campaign-analytics-benchmark")
        .config("spark.driver.memory", memory)
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def _descendants_peak_rss() -> int:
    """Sum of the peak RSS (VmHWM) of this process's descendants (Spark's JVM), in bytes."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, stack = 0, list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _own_peak_rss() -> int:
    """Peak RSS of this process in bytes (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(args: argparse.Namespace) -> None:
    """Run one contender ``--repeat`` times; print one JSON line; write the result frame."""
    import warnings

    warnings.filterwarnings("ignore")
    # A process starts with the peak RSS of the parent it was forked from; reset it.
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    # Imports are not part of the timing.
    import deltalake  # noqa: F401
    import duckdb  # noqa: F401

    import campaign_analytics.metrics  # noqa: F401

    startup = 0.0
    split: list[float] = []
    if args.child == "spark":
        start = time.perf_counter()
        session = _spark_session(args.spark_partitions, args.spark_memory)
        startup = time.perf_counter() - start

        def run() -> Any:
            return _run_ours(args.input, backend=session, split=split)
    elif args.child == "ours":
        from campaign_analytics.backends import duckdb_backend

        def run() -> Any:
            # Without --duckdb-memory-limit: the library's default connection, as users get it.
            backend = duckdb_backend(memory_limit=args.duckdb_memory_limit) if args.duckdb_memory_limit else None
            return _run_ours(args.input, backend=backend, split=split)
    else:

        def run() -> Any:
            return _run_hand(args.input, args.duckdb_memory_limit)

    seconds: list[float] = []
    best_split: list[float] = []
    result = None
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
        if seconds[-1] == min(seconds):
            best_split = list(split)
    python_rss = _own_peak_rss()
    jvm_rss = _descendants_peak_rss() if args.child == "spark" else 0
    result[RESULT_COLUMNS].to_parquet(args.result)
    print(json.dumps({"seconds": seconds, "split": best_split, "python_rss": python_rss, "jvm_rss": jvm_rss,
                      "startup": startup}))
    sys.stdout.flush()
    if args.child == "spark":
        session.stop()


def _run_child(name: str, table: Path, args: argparse.Namespace, result: Path) -> dict[str, Any]:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", name, "--input", str(table),
        "--result", str(result), "--repeat", str(args.repeat),
        "--spark-partitions", str(args.spark_partitions), "--spark-memory", args.spark_memory,
        *(["--duckdb-memory-limit", args.duckdb_memory_limit] if args.duckdb_memory_limit else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-5000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["best"] = min(figures["seconds"])
    figures["rss"] = figures["python_rss"] + figures["jvm_rss"]
    return figures


# ---------------------------------------------------------------- data


def generate(events: int, out: Path, *, seed: int = 1, chunk_items: int = 1_000_000) -> int:
    """Write a synthetic events table of about ``events`` events (see the module notes).

    Parameters
    ----------
    events
        Target number of events; the table holds this many give or take 0.1%.
    out
        Directory of the new Delta table (must not exist).
    seed
        Seed of the random generator.
    chunk_items
        Items generated (and appended to the table) at a time, to bound memory.

    Returns
    -------
    int
        The number of events written.
    """
    import numpy as np
    from deltalake import write_deltalake

    read = 0.9 * (0.45 + 0.1 / 3)  # P(read) of an item, versions alike
    per_item = 1 + 0.97 * (0.9 + 0.6 * read * (1 + 0.3) + 0.4 * read)  # 3% of later events lost
    n_items = max(1, round(events / per_item))
    rng = np.random.default_rng(seed)
    written = 0
    for first in range(0, n_items, chunk_items):
        table = _generate_chunk(rng, first, min(chunk_items, n_items - first))
        write_deltalake(str(out), table, partition_by=["event_date"], mode="append")
        written += table.num_rows
    return written


def _generate_chunk(rng: Any, first: int, n: int) -> Any:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = np.arange(first, first + n)
    push = rng.random(n) < 0.4
    template = rng.integers(0, 20, n)
    version = rng.integers(1, 4, n).astype(np.int32)
    sent = 1_780_000_000_000 + rng.integers(0, 30 * 86_400_000, n)
    delivered = sent + rng.lognormal(8.5, 1.8, n).astype(np.int64)
    read = delivered + rng.lognormal(10, 1.5, n).astype(np.int64)
    interacted = read + rng.lognormal(8, 1.0, n).astype(np.int64)
    has_delivered = rng.random(n) < 0.9
    has_read = has_delivered & (rng.random(n) < 0.45 + 0.1 * (version == 2))
    marked = has_read & ~push & (rng.random(n) < 0.1)
    delivered = np.where(marked, read, delivered)  # marked read through the REST API
    has_interacted = has_read & ~push & (rng.random(n) < 0.3)
    engaged = rng.random(n) < 1 / 3

    # One row per (item, stage): item index, stage code, event time.
    stages = [
        (np.ones(n, bool), 0, sent),
        (has_delivered, 1, delivered),
        (has_read & ~push, 2, read),
        (has_interacted, 3, interacted),
        (has_read & push, 4, read),
    ]
    index = np.concatenate([np.flatnonzero(mask) for mask, _, _ in stages])
    code = np.concatenate([np.full(mask.sum(), c, np.int8) for mask, c, _ in stages])
    when = np.concatenate([times[mask] for mask, _, times in stages])
    kept = (code == 0) | (rng.random(len(code)) >= 0.03)  # lost stage events
    order = rng.permutation(np.flatnonzero(kept))
    index, code, when = index[order], code[order], when[order]
    rows = len(index)
    is_push = push[index]

    def carried(times: np.ndarray, from_code: int, reached: np.ndarray) -> pa.Array:
        """A stage timestamp carried on the events of its stage and the later ones."""
        later = (code >= from_code) & reached[index]
        values = times[index].astype("datetime64[ms]")
        return pa.array(values, type=pa.timestamp("ms", tz="UTC"), mask=~later)

    def labelled(prefix: str, values: np.ndarray) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pa.array(values).cast(pa.string()), "")

    names = np.array(["sent", "delivered", "read", "interacted", "clicked"])
    stage = pa.array(names[code])
    entity = pa.array(np.where(is_push, "push_notification", "feed_item"))
    interacted_at = carried(interacted, 3, has_interacted & ~engaged)
    engaged_at = carried(interacted, 3, has_interacted & engaged)
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype="S1")
    nibbles = rng.integers(0, 16, (rows, 32), dtype=np.uint8)
    event_id = pa.array(hex_digits[nibbles].view("S32").ravel()).cast(pa.string())
    event_time = pa.array(when.astype("datetime64[ms]"), type=pa.timestamp("ms", tz="UTC"))
    # tags: ["offer", "vip"], ["offer"] or [] by item
    tag_kind = ids[index] % 3
    offsets = np.concatenate([[0], np.cumsum(np.array([2, 1, 0])[tag_kind])]).astype(np.int32)
    tag_values = np.full(offsets[-1], "offer", dtype=object)
    tag_values[offsets[:-1][tag_kind == 0] + 1] = "vip"
    tags = pa.ListArray.from_arrays(pa.array(offsets), pa.array(tag_values, pa.string()))
    null_string = pa.nulls(rows, pa.string())
    null_time = pa.nulls(rows, pa.timestamp("ms", tz="UTC"))
    null_long = pa.nulls(rows, pa.int64())
    columns: dict[str, pa.Array] = {
        "event_id": event_id,
        "trigger": pc.binary_join_element_wise("after_", entity, "_", stage, ""),
        "entity": entity,
        "stage": stage,
        "app_id": pa.array(np.full(rows, "app-7f3a9c")),
        "region": pa.array(np.full(rows, "eu")),
        "webhook_id": pa.array(np.full(rows, "wh-1")),
        "campaign_id": labelled("cmp-", template[index] * 3 + version[index]),
        "notification_id": labelled("ntf-", ids[index] // 1000),
        "item_id": labelled("item-", ids[index]),
        "template_id": labelled("tpl-", template[index]),
        "template_version": pa.array(version[index]),
        "receiver": labelled("uid-", ids[index] % 200_000),
        "channel_type": pa.array(np.where(is_push, "push", "in_app")),
        "channel_id": pa.array(np.where(is_push, "chn-fcm", "chn-1")),
        "status": stage,
        "label": labelled("label-", template[index] % 5),
        "category": pa.array(np.full(rows, "promotions")),
        "tags": tags,
        "topic": null_string,
        "error_message": null_string,
        "name": null_string,
        "total_targets": null_long,
        "sent_count": null_long,
        "failed_count": null_long,
        "sent_at": carried(sent, 0, np.ones(n, bool)),
        "delivered_at": carried(delivered, 1, has_delivered),
        "read_at": carried(read, 2, has_read & ~push),
        "interacted_at": interacted_at,
        "engaged_at": engaged_at,
        "clicked_at": carried(read, 4, has_read & push),
        "failed_at": null_time,
        "created_at": null_time,
        "completed_at": null_time,
        "scheduled_at": null_time,
        "updated_at": null_time,
        "event_time": event_time,
        "event_date": event_time.cast(pa.date32()),
        "variables__firstName": labelled("name-", ids[index] % 1000),
        "variables__discount": pa.array((ids[index] % 30).astype(str)),
        "metadata__source": pa.array(np.where(ids[index] % 2 == 0, "crm", "api")),
        "metadata__experiment__arm": pa.array(np.where(ids[index] % 3 == 0, "A", "B")),
        "variables_json": pc.binary_join_element_wise(
            '{"discount": ', pa.array((ids[index] % 30).astype(str)), "}", ""
        ),
        "metadata_json": pa.array(np.where(ids[index] % 2 == 0, '{"source": "crm"}', '{"source": "api"}')),
        "content_json": null_string,
        "source_file": pa.array(np.full(rows, "synthetic.ndjson")),
        "source_line": pa.array(np.arange(rows, dtype=np.int64)),
        "load_id": pa.array(np.full(rows, "synthetic")),
        "ingested_at": pa.array(np.full(rows, np.datetime64("2026-07-01T00:00:00", "ms")),
                                type=pa.timestamp("ms", tz="UTC")),
    }
    return pa.table(columns)


def _table_for(events: int, seed: int) -> tuple[Path, int]:
    """The cached synthetic table of ``events`` events (generated in a subprocess on first use)."""
    path = WORK / f"metrics-events-{events}-seed{seed}"
    marker = path / "_events"
    if not marker.exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        WORK.mkdir(parents=True, exist_ok=True)
        print(f"generating {events:,} synthetic events into {path} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        command = [sys.executable, str(Path(__file__).resolve()), "--generate-into", str(path),
                   "--events", str(events), "--seed", str(seed)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"generating the table failed:\n{done.stderr[-5000:]}")
        marker.write_text(done.stdout.strip().splitlines()[-1])
        print(f"  done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return path, int(marker.read_text())


# ---------------------------------------------------------------- comparing and printing


def _compare(frames: dict[str, Any]) -> list[str]:
    """Differences between the contenders' results (empty when they agree)."""
    import numpy as np

    problems = []
    names = list(frames)
    sorted_frames = {
        name: frame.sort_values(KEYS, ignore_index=True, na_position="last") for name, frame in frames.items()
    }
    reference = sorted_frames[names[0]]
    for name in names[1:]:
        other = sorted_frames[name]
        if len(other) != len(reference):
            problems.append(f"{name}: {len(other)} groups, {names[0]}: {len(reference)}")
            continue
        for column in KEYS:
            if _texts(other[column]) != _texts(reference[column]):
                problems.append(f"{name}: group column {column} differs from {names[0]}")
        for column in [*COUNTS, "ttd_n"]:
            if not np.array_equal(other[column].to_numpy("int64"), reference[column].to_numpy("int64")):
                problems.append(f"{name}: {column} differs from {names[0]}")
        for column in RATES:
            a, b = other[column].to_numpy("float64"), reference[column].to_numpy("float64")
            if not np.array_equal(a, b, equal_nan=True):
                problems.append(f"{name}: {column} differs from {names[0]}")
        for column in LATENCY:
            a, b = other[column].to_numpy("float64"), reference[column].to_numpy("float64")
            if not np.allclose(a, b, rtol=0.0, atol=TOLERANCE, equal_nan=True):
                worst = np.nanmax(np.abs(a - b))
                problems.append(f"{name}: {column} differs from {names[0]} by up to {worst:.3g} s")
    return problems


def _texts(values: Any) -> list[str | None]:
    """Group keys as text, every kind of missing value as None."""
    import pandas as pd

    return [None if pd.isna(value) else str(value) for value in values]


def _mib(value: float) -> str:
    return f"{value / 1024**2:,.0f} MiB"


def _report(events: int, table: Path, figures: dict[str, dict[str, Any]], groups: int, problems: list[str]) -> None:
    hand = figures["hand"]["best"]
    print(f"\n{events:,} events, {groups} groups  ({table})")
    print(f"  {'contender':<30} {'seconds':>8} {'peak RSS':>10} {'vs hand':>8}")
    labels = {"hand": "hand-written DuckDB SQL", "ours": "campaign_analytics on DuckDB", "spark": "campaign_analytics on Spark"}
    for name, result in figures.items():
        line = f"  {labels[name]:<30} {result['best']:>8.2f} {_mib(result['rss']):>10} {result['best'] / hand:>7.2f}x"
        if result.get("split"):
            engagement_s, latency_s = result["split"]
            line += f"   (engagement {engagement_s:.2f} s + time_to_delivery {latency_s:.2f} s)"
        print(line)
        if name == "spark":
            print(f"  {'':<30} peak RSS = python {_mib(result['python_rss'])} + JVM {_mib(result['jvm_rss'])};"
                  f" session start {result['startup']:.1f} s not counted")
    ours = figures["ours"]
    ratio_ok = ours["best"] / hand <= RATIO_TARGET
    rss_ok = ours["rss"] <= RSS_TARGET
    print(f"  targets: ours/hand {ours['best'] / hand:.2f}x <= {RATIO_TARGET}x "
          f"{'ok' if ratio_ok else 'MISSED'}; ours peak RSS {_mib(ours['rss'])} <= 2 GiB {'ok' if rss_ok else 'MISSED'}")
    all_times = "; ".join(f"{name} " + ", ".join(f"{s:.2f}" for s in r["seconds"]) for name, r in figures.items())
    print(f"  every run (s): {all_times}")
    if problems:
        print("  RESULTS DIFFER:\n    " + "\n    ".join(problems))
    else:
        print("  results equal: counts and rates identical, mean and percentiles within 1e-9 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="synthetic events (default 10,000,000)")
    parser.add_argument("--scale", default=None, help="comma-separated event counts, e.g. 1000000,10000000")
    parser.add_argument("--input", default=None, help="an existing events table instead of synthetic data")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the best counts")
    parser.add_argument("--no-spark", action="store_true", help="leave Spark out")
    parser.add_argument("--spark-partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    parser.add_argument("--spark-memory", default="2g", help="spark.driver.memory")
    parser.add_argument("--duckdb-memory-limit", default=None,
                        help="DuckDB memory_limit for hand and ours, e.g. 1GB (default: DuckDB's 80%% of RAM for hand, "
                             "the library's default for ours)")
    parser.add_argument("--child", choices=("hand", "ours", "spark"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--generate-into", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate_into:
        print(generate(args.events, Path(args.generate_into), seed=args.seed))
        return 0
    if args.child:
        _child(args)
        return 0

    contenders = ["hand", "ours"] if args.no_spark else ["hand", "ours", "spark"]
    if args.input:
        import deltalake

        path = Path(args.input)
        runs = [(path, sum(deltalake.DeltaTable(str(path)).get_add_actions(flatten=True).column("num_records").to_pylist()))]
    else:
        sizes = [int(s) for s in args.scale.split(",")] if args.scale else [args.events]
        runs = [_table_for(size, args.seed) for size in sizes]

    import pandas as pd

    everything: list[tuple[int, dict[str, dict[str, Any]]]] = []
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        for table, events in runs:
            figures, frames = {}, {}
            for name in contenders:
                result = Path(scratch) / f"{name}-{events}.parquet"
                figures[name] = _run_child(name, table, args, result)
                frames[name] = pd.read_parquet(result)
            problems = _compare(frames)
            failed = failed or bool(problems)
            _report(events, table, figures, len(frames["hand"]), problems)
            everything.append((events, figures))
    if len(everything) > 1:
        (small, low), (large, high) = everything[0], everything[-1]
        growth = ", ".join(f"{name} {high[name]['best'] / low[name]['best']:.1f}x" for name in contenders)
        print(f"\ngrowth from {small:,} to {large:,} events ({large / small:.0f}x the data), time: {growth}")
        memory = ", ".join(f"{name} {high[name]['rss'] / low[name]['rss']:.1f}x" for name in contenders)
        print(f"growth of peak RSS: {memory}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
