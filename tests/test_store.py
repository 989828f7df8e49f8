"""The events table on disk: counts that balance, dedupe (within files, across files, across
loads), re-ingest idempotence, schema growth, reading back, the ledger, and the simulator's truth."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import campaign_analytics as ca
from campaign_analytics import store
from campaign_analytics.errors import ParameterError, SourceError, TableError
from campaign_analytics.simulate import simulate

from conftest import T0, make_event, reordered, write_payload


def balanced(summary: ca.LoadSummary) -> bool:
    return summary.balanced and summary.records == summary.written + summary.duplicates + summary.rejected + summary.skipped


def counts(summary: ca.LoadSummary) -> tuple[int, int, int, int, int]:
    return summary.records, summary.written, summary.duplicates, summary.rejected, summary.skipped


def event_count(table: str) -> int:
    return len(ca.read_events(table, columns=["event_id"]))


# -- counts and dedupe --------------------------------------------------------------------------


def test_ingest_writes_a_table_and_the_counts_balance(tmp_path, table):
    events = [make_event(id=f"f{i}", variables={"n": i}) for i in range(5)]
    path = write_payload(tmp_path / "in.ndjson", [*events, "{bad", make_event("after_message")])
    summary = ca.ingest(str(path), table)
    assert counts(summary) == (7, 5, 0, 1, 1) and balanced(summary)
    assert summary.files == 1 and summary.version is not None
    assert summary.load_id and summary.table == os.path.abspath(table)
    assert os.path.isdir(os.path.join(table, "_delta_log"))
    frame = ca.read_events(table)
    assert sorted(frame["item_id"]) == [f"f{i}" for i in range(5)]
    assert set(frame["load_id"]) == {summary.load_id}
    assert frame["event_id"].is_unique
    assert sum(summary.reject_reasons.values()) == 2
    assert str(summary).startswith("load ")
    assert json.loads(json.dumps(summary.to_dict()))["records"] == 7


def test_data_files_have_statistics_where_readers_can_skip_row_groups_with_them(tmp_path, table):
    events = [make_event(id=f"f{i}", campaignId=f"c{i % 2}", variables={"n": i}) for i in range(5)]
    ca.ingest(str(write_payload(tmp_path / "in.ndjson", events)), table)
    (file,) = [os.path.join(root, n) for root, _, names in os.walk(table) for n in names if n.endswith(".parquet")]
    row_group = pq.ParquetFile(file).metadata.row_group(0)
    with_statistics = {
        row_group.column(i).path_in_schema for i in range(row_group.num_columns) if row_group.column(i).is_stats_set
    }
    assert {"event_time", "sent_at", "template_version", "campaign_id", "trigger", "source_line"} <= with_statistics
    assert not {"event_id", "item_id", "variables_json", "variables__n"} & with_statistics
    columns = [row_group.column(i) for i in range(row_group.num_columns)]
    (campaign,) = [c for c in columns if c.path_in_schema == "campaign_id"]
    assert (campaign.statistics.min, campaign.statistics.max) == ("c0", "c1")


@pytest.mark.parametrize("with_duplicates", [False, True])
def test_events_of_days_in_no_order_are_written_per_day_in_arrival_order(tmp_path, table, with_duplicates):
    day = 86_400
    events = [make_event(id=f"f{i}", sentAt=T0 + (i % 3) * day + i) for i in range(30)]
    if with_duplicates:
        events[7:7] = [events[3], events[12]]
    summary = ca.ingest(str(write_payload(tmp_path / "in.ndjson", events)), table)
    assert (summary.written, summary.duplicates) == (30, 2 if with_duplicates else 0)
    files = sorted(os.path.join(root, n) for root, _, names in os.walk(table) for n in names if n.endswith(".parquet"))
    per_day = {os.path.basename(os.path.dirname(f)): pq.read_table(f).column("item_id").to_pylist() for f in files}
    start = dt.datetime.fromtimestamp(T0, dt.UTC).date()
    arrived = list(dict.fromkeys(int(e["data"]["id"][1:]) for e in events))  # first copies, in file order
    assert per_day == {
        f"event_date={start + dt.timedelta(days=k)}": [f"f{i}" for i in arrived if i % 3 == k] for k in range(3)
    }


def test_rows_keep_the_order_of_their_lines_when_lines_straddle_read_blocks(tmp_path, table, monkeypatch):
    from campaign_analytics import sources

    monkeypatch.setattr(sources, "_READ_SIZE", 64 << 10)  # lines here and there straddle two blocks
    path = write_payload(tmp_path / "in.ndjson", [make_event(id=f"f{i}", sentAt=T0 + i) for i in range(600)])
    assert ca.load(str(path))["source_line"].tolist() == list(range(1, 601))
    ca.ingest(str(path), table)
    (file,) = [os.path.join(root, n) for root, _, names in os.walk(table) for n in names if n.endswith(".parquet")]
    assert pq.read_table(file).column("source_line").to_pylist() == list(range(1, 601))


def test_rows_keep_file_and_line_order_when_a_one_record_file_sits_between_big_ones(tmp_path):
    for name, ids in {"a.ndjson": range(3000), "b.ndjson": range(3000, 3001), "c.ndjson": range(3001, 6001)}.items():
        write_payload(tmp_path / "in" / name, [make_event(id=f"f{i}", sentAt=T0 + i) for i in ids])
    frame = ca.load(str(tmp_path / "in"))
    assert frame["item_id"].tolist() == [f"f{i}" for i in range(6001)]


def test_dedupe_within_a_file_keeps_the_first_copy(tmp_path, table):
    records = [
        make_event(id="f1", webhook="wh-first"),
        make_event(id="f2"),
        make_event(id="f1", webhook="wh-retry-1"),
        make_event(id="f1", webhook="wh-retry-2"),
    ]
    path = write_payload(tmp_path / "in.ndjson", records)
    summary = ca.ingest(str(path), table)
    assert counts(summary) == (4, 2, 2, 0, 0) and balanced(summary)
    frame = ca.read_events(table).set_index("item_id")
    assert frame.loc["f1", "webhook_id"] == "wh-first"
    assert frame.loc["f1", "source_line"] == 1


def test_dedupe_across_files_of_one_load(tmp_path, table):
    write_payload(tmp_path / "in" / "a.ndjson", [make_event(id="f1"), make_event(id="f2")])
    write_payload(tmp_path / "in" / "b.json", [make_event(id="f2", webhook="wh-2"), make_event(id="f3")])
    write_payload(tmp_path / "in" / "c.ndjson.gz", [make_event(id="f1", webhook="wh-3")])
    summary = ca.ingest(str(tmp_path / "in"), table)
    assert counts(summary) == (5, 3, 2, 0, 0) and balanced(summary)
    frame = ca.read_events(table).set_index("item_id")
    assert os.path.basename(frame.loc["f2", "source_file"]) == "a.ndjson"


@pytest.mark.parametrize("batch_records", [1, 2, 100_000])
def test_dedupe_across_batches(tmp_path, table, batch_records):
    records = [make_event(id=f"f{i % 3}", webhook=f"wh-{i}", variables={"k": i % 3}) for i in range(9)]
    path = write_payload(tmp_path / "in.ndjson", records)
    summary = ca.ingest(str(path), table, batch_records=batch_records)
    assert counts(summary) == (9, 3, 6, 0, 0) and balanced(summary)
    frame = ca.read_events(table).set_index("item_id")
    assert frame.loc[["f0", "f1", "f2"], "webhook_id"].tolist() == ["wh-0", "wh-1", "wh-2"]


def test_dedupe_across_loads(tmp_path, table):
    first = write_payload(tmp_path / "a.ndjson", [make_event(id="f1"), make_event(id="f2")])
    second = write_payload(tmp_path / "b.ndjson", [make_event(id="f2", webhook="wh-late"), make_event(id="f3")])
    s1 = ca.ingest(str(first), table)
    s2 = ca.ingest(str(second), table)
    assert counts(s1) == (2, 2, 0, 0, 0)
    assert counts(s2) == (2, 1, 1, 0, 0) and balanced(s2)
    assert event_count(table) == 3
    frame = ca.read_events(table).set_index("item_id")
    assert frame.loc["f2", "load_id"] == s1.load_id
    assert frame.loc["f3", "load_id"] == s2.load_id


def test_retry_with_reordered_keys_is_a_duplicate(tmp_path, table):
    event = make_event("after_feed_item_read", id="f1", tags=["a", "b"],
                       variables={"firstName": "Ana", "cart": {"items": 2, "value": 9.5}},
                       metadata={"experiment": {"id": 7, "arm": "B"}})
    retry = reordered(event)
    retry["webhook"] = "wh-retry"
    assert json.dumps(retry) != json.dumps(event)
    path = write_payload(tmp_path / "in.ndjson", [event, retry])
    summary = ca.ingest(str(path), table)
    assert counts(summary) == (2, 1, 1, 0, 0)
    # and once more in a later load
    later = write_payload(tmp_path / "later.ndjson", [reordered(event)])
    assert counts(ca.ingest(str(later), table)) == (1, 0, 1, 0, 0)


def test_retry_with_reordered_keys_inside_lists_is_a_duplicate(tmp_path, table):
    event = make_event(id="f1", variables={"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]},
                       content={"blocks": [{"type": "text", "text": "hi"}]})
    path = write_payload(tmp_path / "in.ndjson", [event, reordered(event)])
    assert counts(ca.ingest(str(path), table)) == (2, 1, 1, 0, 0)


def test_a_retry_is_a_duplicate_whatever_else_shares_its_batch(tmp_path, table):
    """The event id depends on the event alone, not on the other records read with it."""
    plain = make_event("after_push_notification_delivered", pushNotificationId="p1")  # no variables/metadata/content
    rich = make_event("after_feed_item_sent", id="f9", variables={"cart": {"items": 2}}, metadata={"m": 1},
                      content={"title": "hi"})
    alone = write_payload(tmp_path / "alone.ndjson", [plain])
    mixed = write_payload(tmp_path / "mixed.ndjson", [rich, plain])
    ids_alone = ca.load(str(alone)).set_index("item_id")["event_id"]
    ids_mixed = ca.load(str(mixed)).set_index("item_id")["event_id"]
    assert ids_alone["p1"] == ids_mixed["p1"]
    assert counts(ca.ingest(str(alone), table)) == (1, 1, 0, 0, 0)
    assert counts(ca.ingest(str(mixed), table)) == (2, 1, 1, 0, 0)
    assert event_count(table) == 2


def test_numeric_string_template_version_retry_is_a_duplicate(tmp_path, table):
    path = write_payload(tmp_path / "in.ndjson", [make_event(id="f1", templateVersion=2),
                                                   make_event(id="f1", templateVersion="2")])
    assert counts(ca.ingest(str(path), table)) == (2, 1, 1, 0, 0)
    later = write_payload(tmp_path / "later.ndjson", [make_event(id="f1", templateVersion="2")])
    assert counts(ca.ingest(str(later), table)) == (1, 0, 1, 0, 0)
    assert ca.read_events(table)["template_version"].tolist() == [2]


def test_what_is_not_a_duplicate(tmp_path, table):
    base = make_event("after_feed_item_delivered", id="f1")
    other_app = make_event("after_feed_item_delivered", id="f1", app_id="app-2")
    other_trigger = make_event("after_feed_item_sent")
    other_trigger["data"] = dict(base["data"])  # the very same data, another trigger
    other_value = make_event("after_feed_item_delivered", id="f1", deliveredAt=T0 + 61)
    number = make_event("after_feed_item_delivered", id="f1", variables={"discount": 15})
    text = make_event("after_feed_item_delivered", id="f1", variables={"discount": "15"})
    boolean = make_event("after_feed_item_delivered", id="f1", variables={"discount": True})
    boolean_text = make_event("after_feed_item_delivered", id="f1", variables={"discount": "true"})
    records = [base, other_app, other_trigger, other_value, number, text, boolean, boolean_text]
    path = write_payload(tmp_path / "in.ndjson", records)
    summary = ca.ingest(str(path), table)
    assert counts(summary) == (8, 8, 0, 0, 0)


def test_webhook_id_is_not_part_of_the_event_id(tmp_path, table):
    path = write_payload(tmp_path / "in.ndjson", [make_event(webhook="wh-a"), make_event(webhook="wh-b"),
                                                   make_event(webhook="wh-c", region="us")])
    summary = ca.ingest(str(path), table)
    assert (summary.written, summary.duplicates) == (1, 2)


# -- re-ingest ----------------------------------------------------------------------------------


def test_reingest_of_the_same_files_adds_nothing(tmp_path, table):
    write_payload(tmp_path / "in" / "a.ndjson", [make_event(id="f1"), "{bad", make_event("after_message")])
    write_payload(tmp_path / "in" / "b.json", [make_event(id="f2"), make_event(id="f1")])
    first = ca.ingest(str(tmp_path / "in"), table)
    assert counts(first) == (5, 2, 1, 1, 1)
    before = ca.read_events(table)
    again = ca.ingest(str(tmp_path / "in"), table)
    assert again.files == 2 and again.files_unchanged == 2
    assert counts(again) == (0, 0, 0, 0, 0) and balanced(again)
    after = ca.read_events(table)
    assert len(after) == len(before) == 2
    assert len(ca.read_rejected(table)) == 1 and len(ca.read_skipped(table)) == 1



@pytest.mark.parametrize("name", ["a.ndjson", "a.ndjson.gz", "a.json", "a.json.gz", "a.jsonl"])
def test_a_file_hashed_while_read_has_the_hash_of_its_stored_bytes(tmp_path, table, name):
    path = write_payload(tmp_path / "in" / name, [make_event(id="f1"), make_event(id="f2")])
    ca.ingest(str(path), table)
    (row,) = ca.read_loads(table, files=True).to_dict("records")
    assert row["hash"] == hashlib.sha256(path.read_bytes()).hexdigest() and row["size"] == path.stat().st_size
    again = ca.ingest(str(path), table)
    assert again.files_unchanged == 1 and again.records == 0

def test_reingest_with_force_rereads_but_writes_nothing(tmp_path, table):
    path = write_payload(tmp_path / "in.ndjson", [make_event(id="f1"), make_event(id="f1"), make_event(id="f2"), "[1]"])
    first = ca.ingest(str(path), table)
    forced = ca.ingest(str(path), table, force=True)
    assert forced.files_unchanged == 0
    assert forced.records == first.records == 4
    assert forced.written == 0
    assert forced.duplicates == first.written + first.duplicates == 3
    assert forced.rejected == first.rejected == 1
    assert balanced(forced)
    assert event_count(table) == 2


def test_a_copy_of_a_loaded_file_is_unchanged_and_a_grown_file_is_reread(tmp_path, table):
    path = write_payload(tmp_path / "a.ndjson", [make_event(id="f1"), make_event(id="f2")])
    ca.ingest(str(path), table)
    copy = tmp_path / "copy.ndjson"
    shutil.copy(path, copy)
    assert ca.ingest(str(copy), table).files_unchanged == 1
    grown = write_payload(tmp_path / "a.ndjson", [make_event(id="f1"), make_event(id="f2"), make_event(id="f3")])
    summary = ca.ingest(str(grown), table)
    assert summary.files_unchanged == 0
    assert counts(summary) == (3, 1, 2, 0, 0)
    assert event_count(table) == 3



def test_copies_within_one_load_are_read_once_and_same_size_files_keep_their_own_hashes(tmp_path, table):
    first = write_payload(tmp_path / "in" / "a.ndjson", [make_event(id="f1")])
    shutil.copy(first, tmp_path / "in" / "b.ndjson")
    other = write_payload(tmp_path / "in" / "c.ndjson", [make_event(id="f2")])  # same size, other bytes
    assert other.stat().st_size == first.stat().st_size
    summary = ca.ingest(str(tmp_path / "in"), table)
    assert (summary.files, summary.files_unchanged, summary.records, summary.written) == (3, 1, 2, 2)
    files = ca.read_loads(table, files=True).set_index("path")
    for path in (first, other):
        assert files.loc[str(path), "hash"] == hashlib.sha256(path.read_bytes()).hexdigest()

def test_reingest_of_simulated_stream_is_idempotent(tmp_path, table):
    truth = simulate(tmp_path / "sim", items=120, seed=11, bad_records=3, other_triggers=2)
    first = ca.ingest(str(tmp_path / "sim"), table)
    second = ca.ingest(str(tmp_path / "sim"), table)
    third = ca.ingest(str(tmp_path / "sim"), table, force=True)
    assert first.written == truth.unique_events
    assert second.files_unchanged == len(truth.files) and second.records == 0
    assert third.written == 0 and third.records == truth.records and balanced(third)
    assert event_count(table) == truth.unique_events
    assert len(ca.read_loads(table)) == 3


def _cut_gzip(path: Path, ids: list[str]) -> int:
    """Write a gzip NDJSON file of events cut off halfway; the number of whole lines it still holds."""
    data = gzip.compress(b"\n".join(json.dumps(make_event(id=i)).encode() for i in ids) + b"\n", mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return zlib.decompressobj(wbits=31).decompress(path.read_bytes()).count(b"\n")


def test_a_file_that_broke_off_is_in_the_ledger_with_its_stored_bytes_and_passed_over_next_time(tmp_path, table):
    cut = tmp_path / "in" / "cut.ndjson.gz"
    complete = _cut_gzip(cut, [f"c{i}" for i in range(300)])
    good = write_payload(tmp_path / "in" / "good.ndjson", [make_event(id="g1")])
    first = ca.ingest(str(tmp_path / "in"), table)
    assert counts(first) == (complete + 2, complete + 1, 0, 1, 0) and balanced(first)
    assert first.partial_files == [str(cut)]
    files = ca.read_loads(table, files=True).set_index("path")
    assert files.loc[str(cut), "status"] == "partial" and files.loc[str(good), "status"] == "loaded"
    assert files.loc[str(cut), "size"] == cut.stat().st_size
    assert files.loc[str(cut), "hash"] == hashlib.sha256(cut.read_bytes()).hexdigest()
    again = ca.ingest(str(tmp_path / "in"), table)
    assert again.files_unchanged == 2 and counts(again) == (0, 0, 0, 0, 0)
    shutil.copy(cut, tmp_path / "copy.ndjson.gz")  # hashed before reading, as same-size files are
    assert ca.ingest(str(tmp_path / "copy.ndjson.gz"), table).files_unchanged == 1
    forced = ca.ingest(str(cut), table, force=True)
    assert counts(forced) == (complete + 1, 0, complete, 1, 0) and forced.partial_files == [str(cut)]
    assert len(ca.read_rejected(table)) == 2 and event_count(table) == complete + 1


def test_a_record_that_needs_more_memory_than_a_batch_may_use_loads_when_under_max_record_bytes(tmp_path):
    """12 MiB of variables (default max_record_bytes, 16 MiB) and 17 MiB with the limit raised to
    64 MiB: each needs more engine memory than the load's batches share, and loads, alone, with
    memory sized from max_record_bytes; the small records around them load as usual."""
    pad = "x" * (12 << 20)
    path = write_payload(tmp_path / "a.ndjson", [make_event(id="s1"), make_event(id="big", variables={"pad": pad}),
                                                 make_event(id="s2")])
    table = str(tmp_path / "t1")
    summary = ca.ingest(str(path), table)
    assert counts(summary) == (3, 3, 0, 0, 0) and summary.new_columns == ["variables__pad"]
    stored = ca.read_events(table, columns=["item_id", "variables__pad"]).set_index("item_id")
    assert stored.loc["big", "variables__pad"] == pad
    del pad, stored
    bigger = [make_event(id=f"big{i}", variables={"pad": f"{i}" * (17 << 20)}) for i in range(2)]
    path = write_payload(tmp_path / "b.ndjson", [make_event(id="s1"), *bigger, make_event(id="s2")])
    # One record per batch: the two big ones are flattened by both workers at once.
    summary = ca.ingest(str(path), str(tmp_path / "t2"), limits=ca.FlattenLimits(max_record_bytes=64 << 20),
                        batch_records=1)
    assert counts(summary) == (4, 4, 0, 0, 0), summary.reject_reasons


def test_a_record_too_large_to_flatten_even_alone_is_rejected_and_adds_no_column(tmp_path, table, monkeypatch):
    from deltalake import DeltaTable


    monkeypatch.setattr(store, "_MEMORY_LIMIT_BYTES", 64 << 20)
    monkeypatch.setattr(store, "_ALONE_MEMORY_PER_RECORD_BYTE", 1)
    path = write_payload(tmp_path / "a.ndjson", [make_event(id="s1", variables={"a": "1"}),
                                                 make_event(id="big", variables={"pad": "x" * (4 << 20)}),
                                                 make_event(id="s2")])
    summary = ca.ingest(str(path), table)
    assert counts(summary) == (3, 2, 0, 1, 0) and balanced(summary)
    (row,) = ca.read_rejected(table).to_dict("records")
    assert row["source_line"] == 2 and row["reason"].startswith("too large to flatten: the record needs more than 64 MiB")
    assert summary.new_columns == ["variables__a"]
    assert store._column_paths(DeltaTable(table)) == {"/variables/a": "variables__a"}
    assert "variables__pad" not in ca.read_events(table).columns


def test_columns_of_records_that_were_never_written_are_not_new_columns(tmp_path, table):
    """A rejected record alone in its batch gets names for its keys, but no row ever has them: they
    are neither in the summary's new columns nor in the ledger, and a later load that brings the key
    in a valid event gives it its plain name."""
    from deltalake import DeltaTable


    records = [make_event(id="f1", variables={"a": "1"}), make_event(id="f2", sentAt="soon", variables={"ghost": "x"})]
    first = ca.ingest(str(write_payload(tmp_path / "a.ndjson", records)), table, batch_records=1)
    assert counts(first) == (2, 1, 0, 1, 0)
    assert first.new_columns == ["variables__a"]
    assert ca.read_loads(table)["new_columns"].tolist() == [["variables__a"]]
    assert store._column_paths(DeltaTable(table)) == {"/variables/a": "variables__a"}
    assert "variables__ghost" not in ca.read_events(table).columns
    second = ca.ingest(str(write_payload(tmp_path / "b.ndjson", [make_event(id="f3", variables={"ghost": "y"})])), table)
    assert second.new_columns == ["variables__ghost"]
    assert ca.read_events(table).set_index("item_id").loc["f3", "variables__ghost"] == "y"


# -- schema growth ------------------------------------------------------------------------------


def test_schema_grows_when_a_later_load_brings_new_keys(tmp_path, table):
    first = write_payload(tmp_path / "a.ndjson", [make_event(id="old", variables={"a": "1x"})])
    second = write_payload(tmp_path / "b.ndjson", [make_event(id="new", variables={"b": "2y", "nested": {"c": "z"}},
                                                              metadata={"m": "q"})])
    s1 = ca.ingest(str(first), table)
    s2 = ca.ingest(str(second), table)
    assert s1.new_columns == ["variables__a"]
    assert sorted(s2.new_columns) == ["metadata__m", "variables__b", "variables__nested__c"]
    frame = ca.read_events(table).set_index("item_id")
    assert frame.loc["old", "variables__a"] == "1x"
    assert pd.isna(frame.loc["old", "variables__b"]) and pd.isna(frame.loc["old", "variables__nested__c"])
    assert pd.isna(frame.loc["old", "metadata__m"])
    assert frame.loc["new", "variables__b"] == "2y" and frame.loc["new", "variables__nested__c"] == "z"
    assert pd.isna(frame.loc["new", "variables__a"])
    # user columns sit between the core columns and the raw JSON / provenance columns
    names = list(frame.reset_index().columns)
    assert names.index("event_date") < names.index("metadata__m") < names.index("variables_json")
    assert names.index("variables__a") < names.index("variables_json") < names.index("source_file")
    s3 = ca.ingest(str(write_payload(tmp_path / "c.ndjson", [make_event(id="third", variables={"a": "3"})])), table)
    assert s3.new_columns == []


def test_events_dataset_reads_live_files_with_arrow_s_own_file_system(tmp_path, table):
    """The dataset holds no Python-implemented file system: one that an Arrow worker thread releases
    while the interpreter shuts down aborts the process (seen as a rare exit with SIGABRT)."""
    import pyarrow.fs as pafs

    ca.ingest(str(write_payload(tmp_path / "a.ndjson", [make_event(id="f1", variables={"a": "1"})])), table)
    ca.ingest(str(write_payload(tmp_path / "b.ndjson", [make_event(id="f2", variables={"b": "2"})])), table)
    dataset = ca.events_dataset(table)
    assert isinstance(dataset.filesystem, pafs.LocalFileSystem)
    rows = dataset.to_table(columns=["item_id", "variables__a", "variables__b", "event_date"]).to_pylist()
    assert sorted((r["item_id"], r["variables__a"], r["variables__b"]) for r in rows) == [("f1", "1", None), ("f2", None, "2")]
    assert {r["event_date"] for r in rows} == {dt.datetime.fromtimestamp(T0, dt.timezone.utc).date()}


def test_a_path_keeps_its_column_across_loads_and_colliding_paths_never_share_one(tmp_path, table):
    loads = [("a", {"first-name": "A"}), ("b", {"first_name": "B"}), ("c", {"first-name": "C"}), ("d", {"First_Name": "D"})]
    for item, variables in loads:
        ca.ingest(str(write_payload(tmp_path / f"{item}.ndjson", [make_event(id=item, variables=variables)])), table)
    frame = ca.read_events(table).set_index("item_id")
    user = [c for c in frame.columns if c.startswith("variables__")]

    def column_of(item: str) -> str:
        (column,) = [c for c in user if frame.loc[item, c] == item.upper()]
        return column

    assert column_of("a") == column_of("c")
    assert len({column_of("a"), column_of("b"), column_of("d")}) == 3
    assert all(c.lower().startswith("variables__first_name") for c in user)



def test_batches_flattened_side_by_side_keep_their_order(tmp_path, table, monkeypatch):
    """The first batch is held back, so the second finishes flattening first: names and kept copies still follow the file."""
    import threading
    import time

    import campaign_analytics.store as store

    real = store.flatten_batch
    first = threading.Event()

    def slow_first(*args, **kwargs):
        if not first.is_set():
            first.set()
            time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "flatten_batch", slow_first)
    records = [
        make_event(id="a", webhook="wh-first", variables={"first-name": "A"}),
        make_event(id="b", variables={"first_name": "B"}),
        make_event(id="a", webhook="wh-retry", variables={"first-name": "A"}),
    ]
    summary = ca.ingest(str(write_payload(tmp_path / "in.ndjson", records)), table, batch_records=1)
    assert counts(summary) == (3, 2, 1, 0, 0) and balanced(summary)
    frame = ca.read_events(table).set_index("item_id")
    assert frame.loc["a", "variables__first_name"] == "A" and frame.loc["b", "variables__first_name_2"] == "B"
    assert frame.loc["a", "webhook_id"] == "wh-first"


# -- reading back -------------------------------------------------------------------------------


@pytest.fixture
def days_table(tmp_path, table):
    """Events around day boundaries of 2026-11-03 (UTC)."""
    moments = {
        "late-02": "2026-11-02T23:59:59Z",
        "start-03": "2026-11-03T00:00:00Z",
        "noon-03": "2026-11-03T12:00:00Z",
        "end-03": "2026-11-03T23:59:59.999Z",
        "start-04": "2026-11-04T00:00:00Z",
    }
    records = [make_event(id=item, sentAt=pd.Timestamp(moment).value // 1_000_000) for item, moment in moments.items()]
    ca.ingest(str(write_payload(tmp_path / "days.ndjson", records)), table)
    return table


def _items(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["item_id"])


def test_read_events_whole_day_bounds(days_table):
    assert _items(ca.read_events(days_table, start="2026-11-03", end="2026-11-03")) == ["end-03", "noon-03", "start-03"]
    assert _items(ca.read_events(days_table, start=dt.date(2026, 11, 3), end=dt.date(2026, 11, 3))) == [
        "end-03", "noon-03", "start-03"]
    assert _items(ca.read_events(days_table, start="2026-11-04")) == ["start-04"]
    assert _items(ca.read_events(days_table, end="2026-11-02")) == ["late-02"]
    assert len(ca.read_events(days_table)) == 5


def test_read_events_time_bounds_are_half_open(days_table):
    frame = ca.read_events(days_table, start="2026-11-03T00:00:00Z", end="2026-11-03T12:00:00Z")
    assert _items(frame) == ["start-03"]
    frame = ca.read_events(days_table, start=dt.datetime(2026, 11, 3, 12, tzinfo=dt.timezone.utc),
                           end=dt.datetime(2026, 11, 4, tzinfo=dt.timezone.utc))
    assert _items(frame) == ["end-03", "noon-03"]


def test_read_events_columns_and_bad_arguments(days_table):
    frame = ca.read_events(days_table, columns=["source_line", "item_id", "event_time"])
    assert set(frame.columns) == {"item_id", "event_time", "source_line"}
    assert list(frame.columns) == ["item_id", "event_time", "source_line"]  # the table's order
    assert str(frame["event_time"].dtype) == "datetime64[ms, UTC]"
    assert ca.read_events(days_table, columns=[]).shape == (len(frame), 0)  # the rows, no columns
    with pytest.raises(ParameterError, match="nope"):
        ca.read_events(days_table, columns=["item_id", "nope"])
    with pytest.raises(ParameterError):
        ca.read_events(days_table, start="not a date")
    with pytest.raises(ParameterError, match="more than once"):
        ca.read_events(days_table, columns=["item_id", "item_id"])
    with pytest.raises(ParameterError, match="list of column names"):
        ca.read_events(days_table, columns="item_id")
    assert list(ca.read_events(days_table, columns=(c for c in ["item_id", "event_time"])).columns) == ["item_id", "event_time"]


def test_read_events_bounds_are_iso_8601_and_never_guessed(days_table):
    # Every ISO form of a day is that whole day.
    for day in ("2026-11-03", "20261103", " 2026-11-03 ", dt.date(2026, 11, 3)):
        assert _items(ca.read_events(days_table, start=day, end=day)) == ["end-03", "noon-03", "start-03"], day
    # A time without an offset is UTC; one with an offset is converted.
    assert _items(ca.read_events(days_table, start="2026-11-03T12:00", end="2026-11-03T13:30+01:00")) == ["noon-03"]
    # Day-first or month-first? Not guessed, refused, and so are numbers and empty text.
    for bad in ("03/11/2026", "11.03.2026", "Nov 3 2026", "2026-11-3", "", 2026, 1.5e9):
        with pytest.raises(ParameterError, match="start"):
            ca.read_events(days_table, start=bad)
    for start, end in (("2026-11-04", "2026-11-02"), ("2026-11-04", "2026-11-03"), ("2026-11-03T12:00Z", "2026-11-03T12:00Z")):
        with pytest.raises(ParameterError, match="not before"):
            ca.read_events(days_table, start=start, end=end)
    # Converted to UTC before being held to the years an event can have.
    assert _items(ca.read_events(days_table, start="2026-11-04T00:30+01:00")) == ["end-03", "start-04"]
    assert len(ca.read_events(days_table, start="1970-01-01T00:30+01:00")) == 5
    # Bounds far outside the years an event can have (1970-2199) select everything, without overflow.
    far = ca.read_events(days_table, start="0001-01-01", end="9999-12-31")
    assert len(far) == 5
    assert len(ca.read_events(days_table, end=dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5))))) == 5


def test_read_events_types_user_columns(tmp_path, table):
    rows = [
        {"int": 15, "float": 1.5, "mixed_num": 2, "bool": True, "padded": "0012", "mixed": 15, "sparse": 3, "neg": -4},
        {"int": "20", "float": 2, "mixed_num": 2.25, "bool": False, "padded": "0007", "mixed": "10%", "neg": "-5"},
        {"int": 7, "float": -0.5, "mixed_num": "3", "bool": "true", "padded": "12", "mixed": True},
    ]
    records = [make_event(id=f"f{i}", variables=v) for i, v in enumerate(rows)]
    ca.ingest(str(write_payload(tmp_path / "in.ndjson", records)), table)
    frame = ca.read_events(table).set_index("item_id").sort_index()
    assert pd.api.types.is_integer_dtype(frame["variables__int"])
    assert frame["variables__int"].tolist() == [15, 20, 7]
    assert pd.api.types.is_integer_dtype(frame["variables__neg"]) and frame.loc["f1", "variables__neg"] == -5
    assert pd.api.types.is_float_dtype(frame["variables__float"])
    assert frame["variables__float"].tolist() == [1.5, 2.0, -0.5]
    assert pd.api.types.is_float_dtype(frame["variables__mixed_num"])
    assert pd.api.types.is_bool_dtype(frame["variables__bool"])
    assert frame["variables__bool"].tolist() == [True, False, True]
    assert frame["variables__padded"].tolist() == ["0012", "0007", "12"]
    assert frame["variables__mixed"].tolist() == ["15", "10%", "true"]
    assert pd.api.types.is_integer_dtype(frame["variables__sparse"])
    assert frame.loc["f0", "variables__sparse"] == 3
    assert pd.isna(frame.loc["f1", "variables__sparse"]) and pd.isna(frame.loc["f2", "variables__sparse"])


def test_user_columns_come_variables_first_then_metadata_as_the_contract_lists_them(tmp_path, table):
    from deltalake import DeltaTable

    record = make_event(variables={"zeta": 1, "alpha": 2}, metadata={"beta": 3, "aardvark": 4})
    ca.ingest(str(write_payload(tmp_path / "in.ndjson", [record])), table)
    expected = ["variables__alpha", "variables__zeta", "metadata__aardvark", "metadata__beta"]
    assert [c for c in ca.read_events(table).columns if "__" in c] == expected
    assert [c for c in DeltaTable(table).schema().to_arrow().names if "__" in c] == expected
    assert [c for c in ca.load(str(tmp_path / "in.ndjson")).columns if "__" in c] == expected


def test_read_events_never_loses_digits_of_big_numbers(tmp_path, table):
    rows = [{"order": 12345678901234567890, "near": 9007199254740993, "ok": 123456789012345, "mix": 12345678901234567},
            {"order": 1, "near": 2, "ok": 0.5, "mix": 0.5}]
    records = [make_event(id=f"f{i}", variables=v) for i, v in enumerate(rows)]
    ca.ingest(str(write_payload(tmp_path / "in.ndjson", records)), table)
    frame = ca.read_events(table).set_index("item_id").sort_index()
    assert frame["variables__order"].tolist() == ["12345678901234567890", "1"]  # past int64: text
    assert frame["variables__near"].tolist() == [9007199254740993, 2]  # fits int64: exact integers
    assert pd.api.types.is_float_dtype(frame["variables__ok"])  # 15 digits: exact as float64
    assert frame["variables__mix"].tolist() == ["12345678901234567", "0.5"]  # 17 digits beside decimals: text


def test_read_events_of_a_missing_table_is_a_table_error(tmp_path):
    with pytest.raises(TableError):
        ca.read_events(str(tmp_path / "nothing"))
    with pytest.raises(TableError):
        ca.read_loads(str(tmp_path / "nothing"))


def test_read_rejected_skipped_and_loads(tmp_path, table):
    a = write_payload(tmp_path / "in" / "a.ndjson", [make_event(id="f1"), "{bad", make_event("after_message")])
    s1 = ca.ingest(str(a), table)
    b = write_payload(tmp_path / "in" / "b.ndjson", [make_event(id="f2"), "7"])
    s2 = ca.ingest(str(tmp_path / "in"), table)  # a is unchanged, b is new
    loads = ca.read_loads(table)
    assert loads["load_id"].tolist() == [s1.load_id, s2.load_id]
    for column in ("load_id", "table_version", "committed_at", "started_at", "seconds", "files", "files_unchanged",
                   "records", "written", "duplicates", "rejected", "skipped", "new_columns", "capped_keys"):
        assert column in loads.columns, column
    assert loads[["files", "files_unchanged", "records", "written", "rejected", "skipped"]].values.tolist() == [
        [1, 0, 3, 1, 1, 1], [2, 1, 2, 1, 1, 0]]
    files = ca.read_loads(table, files=True)
    assert list(files.columns) == ["load_id", "path", "size", "hash", "status"]
    by_load = {k: g.set_index(g["path"].map(os.path.basename)) for k, g in files.groupby("load_id")}
    assert by_load[s1.load_id].loc["a.ndjson", "status"] == "loaded"
    assert by_load[s2.load_id].loc["a.ndjson", "status"] == "unchanged"
    assert by_load[s2.load_id].loc["b.ndjson", "status"] == "loaded"
    for path in (a, b):
        row = by_load[s2.load_id].loc[path.name]
        assert row["size"] == path.stat().st_size
        assert row["hash"] == hashlib.sha256(path.read_bytes()).hexdigest()
    rejected = ca.read_rejected(table)
    assert list(rejected.columns) == ["kind", "reason", "trigger", "raw", "source_file", "source_line", "load_id", "ingested_at"]
    assert list(ca.load(str(a)).attrs["quarantine"].columns) == list(rejected.columns)
    assert rejected["raw"].tolist() == ["{bad", "7"]
    assert rejected["load_id"].tolist() == [s1.load_id, s2.load_id]
    assert ca.read_rejected(table, load_id=s2.load_id)["raw"].tolist() == ["7"]
    assert ca.read_skipped(table)["trigger"].tolist() == ["after_message"]
    assert len(ca.read_skipped(table, load_id=s2.load_id)) == 0
    with pytest.raises(ParameterError):
        ca.read_rejected(table, load_id="no-such-load")


def test_read_rejected_of_a_table_without_rejects_is_empty(tmp_path, table):
    ca.ingest(str(write_payload(tmp_path / "in.ndjson", [make_event()])), table)
    rejected = ca.read_rejected(table)
    assert len(rejected) == 0
    assert {"reason", "raw", "source_file", "source_line", "load_id"} <= set(rejected.columns)


# -- tables that cannot be used -----------------------------------------------------------------


def _listing(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_a_directory_that_is_not_a_table_is_refused_and_left_alone(tmp_path):
    source = write_payload(tmp_path / "in.ndjson", [make_event()])
    target = tmp_path / "not-a-table"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    before = _listing(target)
    with pytest.raises(TableError, match="not a Delta table"):
        ca.ingest(str(source), str(target))
    assert _listing(target) == before
    with pytest.raises(TableError):
        ca.read_events(str(target))
    # vacuum only cleans up: it says what the folder is not, without talking of writing into it.
    with pytest.raises(TableError, match="not a Delta table") as refused:
        ca.vacuum(str(target))
    assert "Refusing to write" not in str(refused.value)
    assert _listing(target) == before


def test_a_table_whose_path_holds_a_space_is_written_deduplicated_and_read(tmp_path):
    table = str(tmp_path / "my tables" / "campaign events")
    source = write_payload(tmp_path / "in.ndjson", [make_event(id="f1"), make_event(id="f2"), "{bad"])
    assert ca.ingest(str(source), table).written == 2
    again = ca.ingest(str(source), table, force=True)  # dedupe reads the table's own files
    assert (again.written, again.duplicates) == (0, 2)
    assert sorted(ca.read_events(table)["item_id"]) == ["f1", "f2"]
    assert ca.read_rejected(table)["raw"].tolist() == ["{bad", "{bad"]
    assert ca.items(table).count().execute() == 2
    for refused in ("100%ABtables", "tables#1", "which?", "back\\slash", "tab\there"):
        with pytest.raises(TableError, match="URL"):
            ca.ingest(str(source), str(tmp_path / refused))
        assert not (tmp_path / refused).exists()


def test_a_file_is_not_a_table(tmp_path):
    source = write_payload(tmp_path / "in.ndjson", [make_event()])
    target = tmp_path / "file.parquet"
    target.write_bytes(b"PAR1")
    with pytest.raises(TableError):
        ca.ingest(str(source), str(target))
    assert target.read_bytes() == b"PAR1"


def test_a_delta_table_that_is_not_an_events_table_is_refused(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    source = write_payload(tmp_path / "in.ndjson", [make_event()])
    other = tmp_path / "other"
    write_deltalake(str(other), pa.table({"x": [1, 2]}))
    before = _listing(other)
    with pytest.raises(TableError, match="not a campaign events table"):
        ca.ingest(str(source), str(other))
    assert _listing(other) == before


def test_an_empty_directory_becomes_a_table(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    summary = ca.ingest(str(write_payload(tmp_path / "in.ndjson", [make_event()])), str(target))
    assert summary.written == 1 and event_count(str(target)) == 1


def test_a_missing_source_writes_nothing(tmp_path, table):
    with pytest.raises(SourceError):
        ca.ingest(str(tmp_path / "missing.ndjson"), table)
    assert not os.path.exists(os.path.join(table, "_delta_log"))


@pytest.mark.parametrize("load", ["ingest", "load"])
def test_bad_load_options_are_parameter_errors(tmp_path, table, load):
    source = str(write_payload(tmp_path / "in.ndjson", [make_event()]))
    run = (lambda **o: ca.ingest(source, table, **o)) if load == "ingest" else (lambda **o: ca.load(source, **o))
    for batch_records in (0, -5, "10", 2.5, True):
        with pytest.raises(ParameterError, match="batch_records"):
            run(batch_records=batch_records)
    with pytest.raises(ParameterError, match="FlattenLimits"):
        run(limits={"max_depth": 3})
    assert not os.path.exists(table)
    assert run(batch_records=np.int64(10)) is not None  # a NumPy whole number is one too


def test_sources_and_table_of_the_wrong_type_are_clear_errors(tmp_path, table):
    source = str(write_payload(tmp_path / "in.ndjson", [make_event()]))
    for sources in ([1, 2], None, 7, b"in.ndjson", {"path": source}):
        with pytest.raises(SourceError, match="path"):
            ca.ingest(sources, table)
    with pytest.raises(ParameterError, match="folder path"):
        ca.ingest(source, None)
    with pytest.raises(ParameterError, match="min_age_hours"):
        ca.vacuum(table, min_age_hours="1")
    with pytest.raises(ParameterError, match="force"):
        ca.ingest(source, table, force="no")


# -- load() -------------------------------------------------------------------------------------


def test_load_gives_the_same_rows_as_ingest_then_read_events(tmp_path, table):
    truth = simulate(tmp_path / "sim", items=150, seed=5, bad_records=4, other_triggers=2)
    frame = ca.load(str(tmp_path / "sim"))
    summary = ca.ingest(str(tmp_path / "sim"), table)
    stored = ca.read_events(table)
    assert len(frame) == len(stored) == summary.written == truth.unique_events
    loaded = frame.attrs["load_summary"]
    for key in ("records", "written", "duplicates", "rejected", "skipped"):
        assert loaded[key] == getattr(summary, key), key
    assert len(frame.attrs["quarantine"]) == summary.rejected + summary.skipped
    drop = ["load_id", "ingested_at"]
    left = frame.drop(columns=drop).sort_values("event_id").reset_index(drop=True)
    right = stored.drop(columns=drop).sort_values("event_id").reset_index(drop=True)
    assert list(left.columns) == list(right.columns)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)


def test_load_of_nothing_but_rejects_is_an_empty_frame_with_the_core_columns(tmp_path):
    frame = ca.load(str(write_payload(tmp_path / "in.ndjson", ["{bad", "[]"])))
    assert len(frame) == 0
    assert {"event_id", "trigger", "event_time", "source_file"} <= set(frame.columns)
    assert frame.attrs["load_summary"]["rejected"] == 2


# -- against the simulator ----------------------------------------------------------------------

_REASONS = {
    "invalid_json": "invalid JSON",
    "not_an_object": "not a JSON object",
    "missing_data": "no data object",
    "bad_timestamp": "unparseable timestamp",
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ingest_of_a_simulated_stream_matches_its_truth(tmp_path, table, seed):
    out = tmp_path / "sim"
    truth = simulate(out, items=250, seed=seed, bad_records=7, other_triggers=4)
    summary = ca.ingest(str(out), table)
    assert summary.files == len(truth.files)
    assert summary.records == truth.records
    assert summary.written == truth.unique_events
    assert summary.duplicates == truth.duplicates
    assert summary.rejected == truth.rejected == 7
    assert summary.skipped == truth.skipped == 4
    assert balanced(summary)
    events = ca.read_events(table, columns=["event_id", "trigger"])
    assert len(events) == truth.unique_events and events["event_id"].is_unique

    rejected = ca.read_rejected(table)
    got = sorted(
        (os.path.relpath(f, out), int(line), reason)
        for f, line, reason in zip(rejected["source_file"], rejected["source_line"], rejected["reason"])
    )
    expected = sorted(truth.rejected_records[["source_file", "source_line", "reason"]].itertuples(index=False, name=None))
    assert [(f, line) for f, line, _ in got] == [(f, int(line)) for f, line, _ in expected]
    for (_, _, reason), (_, _, kind) in zip(got, expected):
        assert reason.startswith(_REASONS[kind]), (reason, kind)

    skipped = ca.read_skipped(table)
    got_skipped = sorted(
        (os.path.relpath(f, out), int(line), trigger)
        for f, line, trigger in zip(skipped["source_file"], skipped["source_line"], skipped["trigger"])
    )
    expected_skipped = sorted(
        (f, int(line), trigger)
        for f, line, trigger in truth.skipped_records[["source_file", "source_line", "trigger"]].itertuples(index=False)
    )
    assert got_skipped == expected_skipped


def test_simulated_stream_split_over_two_loads_dedupes_across_them(tmp_path, table):
    out = tmp_path / "sim"
    truth = simulate(out, items=200, seed=4, bad_records=2, other_triggers=1, duplicate_rate=0.1,
                     cross_file_duplicate_share=0.5)
    assert truth.quirks.get("cross_file_duplicates", 0) > 0
    files = [str(out / f) for f in truth.files]
    half = len(files) // 2
    first = ca.ingest(files[:half], table)
    second = ca.ingest(files[half:], table)
    assert balanced(first) and balanced(second)
    assert first.records + second.records == truth.records
    assert first.written + second.written == truth.unique_events
    assert first.duplicates + second.duplicates == truth.duplicates
    assert second.duplicates > 0
    assert event_count(table) == truth.unique_events
