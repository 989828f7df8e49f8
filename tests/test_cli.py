"""The command line: ingest (text and --json), loads, simulate, and exit codes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import campaign_analytics as ca
from campaign_analytics.cli import main

from conftest import make_event, write_payload

INGEST_KEYS = {"load_id", "files", "records", "written", "duplicates", "rejected", "skipped"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_json(text: str):
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return json.loads(lines[0])


@pytest.fixture
def payloads(tmp_path: Path) -> Path:
    write_payload(tmp_path / "in" / "a.ndjson", [make_event(id="f1"), make_event(id="f1", webhook="wh-2"),
                                                  "{broken", make_event("after_message")])
    write_payload(tmp_path / "in" / "b.json", [make_event(id="f2", variables={"plan": "pro"})])
    return tmp_path / "in"


def test_ingest_json_prints_one_object_and_exits_0_with_rejects(capsys, payloads, table):
    code, out, _ = run(capsys, "ingest", str(payloads), "--table", table, "--json")
    assert code == 0
    payload = one_json(out)
    assert INGEST_KEYS <= set(payload)
    assert {k: payload[k] for k in INGEST_KEYS - {"load_id"}} == {
        "files": 2, "records": 5, "written": 2, "duplicates": 1, "rejected": 1, "skipped": 1}
    assert payload["records"] == payload["written"] + payload["duplicates"] + payload["rejected"] + payload["skipped"]
    assert payload["load_id"] == ca.read_loads(table)["load_id"].tolist()[0]
    assert len(ca.read_events(table)) == 2


def test_ingest_twice_then_force(capsys, payloads, table):
    run(capsys, "ingest", str(payloads), "--table", table, "--json")
    code, out, _ = run(capsys, "ingest", str(payloads), "--table", table, "--json")
    again = one_json(out)
    assert code == 0 and again["records"] == 0 and again["written"] == 0
    assert again.get("files_unchanged", 2) == 2
    code, out, _ = run(capsys, "ingest", str(payloads), "--table", table, "--json", "--force")
    forced = one_json(out)
    assert code == 0 and forced["records"] == 5 and forced["written"] == 0 and forced["duplicates"] == 3


def test_ingest_text_summary(capsys, payloads, table):
    code, out, _ = run(capsys, "ingest", str(payloads), "--table", table)
    assert code == 0
    assert "records" in out and "written" in out and "rejected" in out


def test_ingest_several_sources_and_globs(capsys, payloads, table):
    code, out, _ = run(capsys, "ingest", str(payloads / "a.ndjson"), str(payloads / "*.json"), "--table", table, "--json")
    assert code == 0 and one_json(out)["files"] == 2


def test_ingest_limits_are_passed_on(capsys, tmp_path, table):
    big = make_event(id="big", variables={"blob": "x" * 3000})
    write_payload(tmp_path / "in" / "a.ndjson", [make_event(id="f1")])
    write_payload(tmp_path / "in" / "post.json", [big], fmt="single", pretty=True)
    code, out, _ = run(capsys, "ingest", str(tmp_path / "in"), "--table", table, "--json", "--max-record-bytes", "1000")
    payload = one_json(out)
    assert code == 0 and payload["rejected"] == 1 and payload["written"] == 1


def test_ingest_holds_json_array_elements_to_max_record_bytes(capsys, tmp_path, table):
    source = write_payload(tmp_path / "b.json", [make_event(id="small"), make_event(id="big", variables={"s": "x" * 5000})])
    code, out, _ = run(capsys, "ingest", str(source), "--table", table, "--json", "--max-record-bytes", "2000")
    payload = one_json(out)
    assert code == 0 and (payload["written"], payload["rejected"]) == (1, 1)
    assert list(payload["reject_reasons"]) == ["record too large"]


def test_ingest_goes_on_past_a_truncated_gzip_and_exits_0(capsys, tmp_path, table):
    data = gzip.compress(b"\n".join(json.dumps(make_event(id=f"c{i}")).encode() for i in range(300)) + b"\n", mtime=0)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a-cut.ndjson.gz").write_bytes(data[: len(data) // 2])
    complete = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2]).count(b"\n")
    write_payload(tmp_path / "in" / "b.ndjson", [make_event(id="after")])
    code, out, err = run(capsys, "ingest", str(tmp_path / "in"), "--table", table, "--json")
    payload = one_json(out)
    assert code == 0 and err == ""
    assert (payload["records"], payload["written"], payload["rejected"]) == (complete + 2, complete + 1, 1)
    assert payload["reject_reasons"] == {"corrupt or truncated gzip": 1}
    code, out, _ = run(capsys, "ingest", str(tmp_path / "in"), "--table", table, "--force")
    assert code == 0 and "broke off part way" in out and "a-cut.ndjson.gz" in out


def test_ingest_max_user_columns(capsys, tmp_path, table):
    source = write_payload(tmp_path / "in.ndjson", [make_event(variables={"a": 1, "b": 2, "c": 3})])
    code, out, _ = run(capsys, "ingest", str(source), "--table", table, "--json", "--max-user-columns", "1")
    payload = one_json(out)
    assert code == 0 and len(payload["capped_keys"]) == 2


def test_missing_source_exits_2_with_a_json_error(capsys, tmp_path, table):
    missing = str(tmp_path / "nope.ndjson")
    code, out, err = run(capsys, "ingest", missing, "--table", table, "--json")
    assert code == 2
    payload = one_json(out)
    assert payload["error"] == "SourceError" and missing in payload["message"]
    assert "nope.ndjson" in err
    assert not os.path.exists(os.path.join(table, "_delta_log"))


def test_missing_source_without_json_exits_2_with_a_message(capsys, tmp_path, table):
    code, out, err = run(capsys, "ingest", str(tmp_path / "nope.ndjson"), "--table", table)
    assert code == 2 and out == "" and "does not exist" in err


def test_paths_the_system_refuses_exit_2_with_a_message_not_a_traceback(capsys, payloads, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, out, err = run(capsys, "simulate", str(tmp_path / "afile" / "sub"), "--items", "5", "--json")
    assert code == 2 and one_json(out)["error"] == "OSError" and "afile" in err and "Traceback" not in err
    code, out, err = run(capsys, "metrics", "--table", str(tmp_path / "afile"))
    assert code == 2 and "is a file, not an events table" in err


def test_reading_commands_on_a_folder_that_is_not_a_table_exit_2(capsys, payloads, tmp_path, table):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    code, _, err = run(capsys, "loads", "--table", str(tmp_path / "docs"))
    assert code == 2 and "is not a Delta table" in err and "Refusing to write" not in err
    run(capsys, "ingest", str(payloads), "--table", table)
    code, _, err = run(capsys, "vacuum", "--table", table, "--min-age-hours", "nan")
    assert code == 2 and "min_age_hours" in err


def test_non_table_path_exits_2_with_a_json_error(capsys, payloads, tmp_path):
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    code, out, err = run(capsys, "ingest", str(payloads), "--table", str(target), "--json")
    assert code == 2
    payload = one_json(out)
    assert payload["error"] == "TableError" and str(target) in payload["message"]
    assert sorted(os.listdir(target)) == ["keep.txt"]


def test_loads_lists_the_ledger(capsys, payloads, table):
    run(capsys, "ingest", str(payloads), "--table", table, "--json")
    run(capsys, "ingest", str(payloads), "--table", table, "--json")
    code, out, _ = run(capsys, "loads", "--table", table, "--json")
    assert code == 0
    loads = json.loads(out)
    assert len(loads) == 2
    assert [entry["records"] for entry in loads] == [5, 0]
    assert [entry["files_unchanged"] for entry in loads] == [0, 2]
    code, out, _ = run(capsys, "loads", "--table", table, "--files", "--json")
    files = json.loads(out)
    assert code == 0 and len(files) == 4
    assert sorted(entry["status"] for entry in files) == ["loaded", "loaded", "unchanged", "unchanged"]
    code, out, _ = run(capsys, "loads", "--table", table)
    assert code == 0 and "records" in out


def test_loads_of_a_missing_table_exits_2(capsys, tmp_path):
    code, out, _ = run(capsys, "loads", "--table", str(tmp_path / "none"), "--json")
    assert code == 2 and one_json(out)["error"] == "TableError"


def test_simulate_writes_files_and_reports_the_truth(capsys, tmp_path):
    out_dir = tmp_path / "sim"
    code, out, _ = run(capsys, "simulate", str(out_dir), "--items", "60", "--seed", "3", "--days", "2",
                       "--bad-records", "2", "--other-triggers", "1", "--json")
    assert code == 0
    payload = one_json(out)
    assert payload["items"] == 60 and payload["rejected"] == 2 and payload["skipped"] == 1
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert files
    assert payload["records"] == payload["unique_events"] + payload["duplicates"] + payload["rejected"] + payload["skipped"]
    summary = ca.ingest(str(out_dir), str(tmp_path / "events"))
    assert (summary.records, summary.written, summary.rejected, summary.skipped) == (
        payload["records"], payload["unique_events"], 2, 1)


def test_simulate_into_a_non_empty_directory_exits_2(capsys, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    code, _, err = run(capsys, "simulate", str(tmp_path / "busy"), "--items", "5")
    assert code == 2 and "not empty" in err


def test_metrics_json_gives_days_as_days_and_an_empty_table_says_so(capsys, payloads, table):
    run(capsys, "ingest", str(payloads), "--table", table)
    code, out, _ = run(capsys, "metrics", "--table", table, "--by", "send_date", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert rows and all(len(row["send_date"]) == 10 for row in rows)  # "2026-05-28", as the CSV has it
    campaigns_only = write_payload(Path(table).parent / "c.ndjson", [make_event("after_campaign_completed")])
    other = str(Path(table).parent / "other")
    run(capsys, "ingest", str(campaigns_only), "--table", other)
    code, out, _ = run(capsys, "metrics", "--table", other, "--by", "label")
    assert (code, out.strip()) == (0, "no items in the table to group by label")


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["ingest"])
    assert info.value.code == 2
    assert capsys.readouterr().out == ""
    # With --json a usage error is a JSON object on stdout too, as every other error is.
    for argv in (["ingest", "x", "--table", "t", "--max-depth", "abc", "--json"], ["vacuum", "--table", "t", "--json", "--min-age-hours", "abc"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        captured = capsys.readouterr()
        said = json.loads(captured.out)
        assert said["error"] == "UsageError" and "invalid" in said["message"]
        assert "usage:" in captured.err


def test_the_module_runs_as_a_program(tmp_path, payloads):
    table = str(tmp_path / "events")
    done = subprocess.run(
        [sys.executable, "-m", "campaign_analytics.cli", "ingest", str(payloads), "--table", table, "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert INGEST_KEYS <= set(one_json(done.stdout))
    done = subprocess.run(
        [sys.executable, "-m", "campaign_analytics.cli", "ingest", str(tmp_path / "missing"), "--table", table, "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and one_json(done.stdout)["error"] == "SourceError"
