"""Finding and reading payload files: files, directories, globs, every format and encoding quirk."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import campaign_analytics as ca
from campaign_analytics import sources
from campaign_analytics.errors import SourceError
from campaign_analytics.flatten import FlattenLimits
from campaign_analytics.sources import find_files, read_chunks

from conftest import BOM, make_event, write_payload


def _events(n: int, prefix: str = "feed") -> list[dict]:
    return [make_event("after_feed_item_sent", id=f"{prefix}-{i}") for i in range(n)]


def _records(path: Path | str, **options) -> list[tuple[int, bytes]]:
    """(position, raw record) of every non-blank record read_chunks yields for a file."""
    (file,) = find_files(str(path))
    out = []
    for chunk in read_chunks(file, **options):
        for offset, line in enumerate(chunk.lines.to_pylist()):
            if line is not None and line.strip():
                out.append((chunk.first_line + offset, line.rstrip(b"\r\n")))
    return out


def _positions(frame) -> list[tuple[str, int]]:
    return sorted(zip(frame["source_file"].map(os.path.basename), frame["source_line"].astype(int)))


def _summary(frame) -> dict:
    return frame.attrs["load_summary"]


# -- finding files ------------------------------------------------------------------------------


def test_single_file_path_is_kept_as_given(tmp_path, monkeypatch, write):
    write("in/a.ndjson", _events(2))
    monkeypatch.chdir(tmp_path)
    (found,) = find_files("in/a.ndjson")
    assert found.path == os.path.join("in", "a.ndjson")
    assert found.size == os.path.getsize(tmp_path / "in" / "a.ndjson")
    frame = ca.load("in/a.ndjson")
    assert set(frame["source_file"]) == {os.path.join("in", "a.ndjson")}


def test_directory_is_searched_recursively_skipping_hidden_and_underscore(tmp_path, write):
    keep = [
        "in/a.ndjson", "in/b.jsonl", "in/c.json", "in/d.ndjson.gz", "in/e.json.gz", "in/f.jsonl.gz",
        "in/sub/g.ndjson", "in/sub/deeper/h.json",
    ]
    skip = [
        "in/.hidden/x.ndjson", "in/_tmp/x.ndjson", "in/sub/_checkpoints/y.json", "in/.dot.ndjson",
    ]
    for name in keep + skip:
        write(name, _events(1))
    for name in ("in/notes.txt", "in/data.csv", "in/x.ndjson.bak", "in/y.gz"):
        (tmp_path / name).write_text("not a payload")
    found = [os.path.relpath(f.path, tmp_path) for f in find_files(str(tmp_path / "in"))]
    assert found == sorted(found)
    assert sorted(found) == sorted(keep)
    frame = ca.load(str(tmp_path / "in"))
    assert _summary(frame)["records"] == len(keep)
    assert len(frame) == 1  # the same event everywhere: one row, the rest duplicates
    assert _summary(frame)["duplicates"] == len(keep) - 1


def test_glob_patterns_including_recursive_double_star(tmp_path, write):
    write("in/a.ndjson", _events(1, "a"))
    write("in/b.json", _events(1, "b"))
    write("in/sub/c.ndjson", _events(1, "c"))
    write("in/sub/deep/d.ndjson", _events(1, "d"))
    flat = find_files(str(tmp_path / "in" / "*.ndjson"))
    assert [os.path.basename(f.path) for f in flat] == ["a.ndjson"]
    deep = find_files(str(tmp_path / "in" / "**" / "*.ndjson"))
    assert sorted(os.path.basename(f.path) for f in deep) == ["a.ndjson", "c.ndjson", "d.ndjson"]
    everything = find_files(str(tmp_path / "in" / "**" / "*"))  # directories are not files
    assert len(everything) == 4
    frame = ca.load(str(tmp_path / "in" / "**" / "*.ndjson"))
    assert sorted(frame["item_id"]) == ["a-0", "c-0", "d-0"]


def test_list_of_sources_keeps_order_and_lists_each_file_once(tmp_path, write):
    b = write("in/b.ndjson", _events(1, "b"))
    a = write("in/a.ndjson", _events(1, "a"))
    found = find_files([str(b), str(tmp_path / "in"), str(a), str(tmp_path / "in" / "*.ndjson")])
    assert [os.path.basename(f.path) for f in found] == ["b.ndjson", "a.ndjson"]


def test_missing_path_raises_source_error_naming_it(tmp_path):
    missing = str(tmp_path / "nope" / "x.ndjson")
    with pytest.raises(SourceError, match="does not exist") as info:
        find_files(missing)
    assert missing in str(info.value)
    with pytest.raises(SourceError):
        ca.load(missing)


def test_glob_matching_nothing_raises_source_error(tmp_path, write):
    write("in/a.ndjson", _events(1))
    pattern = str(tmp_path / "in" / "*.jsonl")
    with pytest.raises(SourceError, match="matches no file") as info:
        find_files(pattern)
    assert pattern in str(info.value)


def test_directory_without_payload_files_raises_source_error(tmp_path):
    (tmp_path / "empty" / "_skipped").mkdir(parents=True)
    (tmp_path / "empty" / "_skipped" / "a.ndjson").write_text("{}\n")
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(SourceError, match="no payload files"):
        find_files(str(tmp_path / "empty"))


def test_no_sources_at_all_raises_source_error():
    with pytest.raises(SourceError, match="at least one"):
        find_files([])


def test_unreadable_directory_raises_source_error(tmp_path, write, monkeypatch):
    write("in/a.ndjson", _events(1))
    target = str(tmp_path / "in")
    real_access = os.access
    monkeypatch.setattr(sources.os, "access", lambda p, mode: False if p == target else real_access(p, mode))
    with pytest.raises(SourceError, match="cannot be read") as info:
        find_files(target)
    assert "permission" in str(info.value).lower()


def test_unreadable_subdirectory_raises_source_error(tmp_path, write, monkeypatch):
    write("in/a.ndjson", _events(1))
    write("in/locked/b.ndjson", _events(1))
    locked = str(tmp_path / "in" / "locked")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match="cannot be read") as info:
        find_files(str(tmp_path / "in"))
    assert "locked" in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_directory_on_disk_raises_source_error(tmp_path, write):
    write("in/a.ndjson", _events(1))
    os.chmod(tmp_path / "in", 0)
    try:
        with pytest.raises(SourceError, match="cannot be read"):
            find_files(str(tmp_path / "in"))
    finally:
        os.chmod(tmp_path / "in", 0o755)


# -- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.ndjson", "a.jsonl", "a.ndjson.gz", "a.jsonl.gz"])
def test_line_formats_number_records_by_line(tmp_path, name):
    path = write_payload(tmp_path / name, _events(3))
    assert [pos for pos, _ in _records(path)] == [1, 2, 3]
    frame = ca.load(str(path))
    assert _positions(frame) == [(name, 1), (name, 2), (name, 3)]
    assert sorted(frame["item_id"]) == ["feed-0", "feed-1", "feed-2"]


@pytest.mark.parametrize("name", ["a.json", "a.json.gz"])
def test_json_array_positions_are_one_based_element_numbers(tmp_path, name):
    records = [*_events(2), 42, make_event("after_message", id="m")]
    path = write_payload(tmp_path / name, records, pretty=True)
    assert [pos for pos, _ in _records(path)] == [1, 2, 3, 4]
    frame = ca.load(str(path))
    assert _positions(frame) == [(name, 1), (name, 2)]
    quarantine = frame.attrs["quarantine"]
    assert sorted(zip(quarantine["kind"], quarantine["source_line"])) == [("rejected", 3), ("skipped", 4)]


def test_empty_json_array_has_no_records(tmp_path):
    path = write_payload(tmp_path / "a.json", [])
    frame = ca.load(str(path))
    assert _summary(frame)["records"] == 0 and len(frame) == 0


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("bom", [False, True])
def test_single_pretty_printed_post_body_is_one_record_at_line_1(tmp_path, bom, crlf):
    event = make_event("after_feed_item_read", variables={"firstName": "Zoë", "cart": {"items": 2}})
    path = write_payload(tmp_path / "posts" / "113000-1.json", [event], fmt="single", pretty=True, bom=bom, crlf=crlf)
    assert path.read_bytes().count(b"\n") > 5
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (1, 1, 0)
    assert frame["source_line"].tolist() == [1]
    assert frame["variables__firstName"].tolist() == ["Zoë"]
    assert json.loads(frame["variables_json"][0]) == event["data"]["variables"]


def test_single_body_on_one_line_under_json_name(tmp_path):
    path = write_payload(tmp_path / "one.json", [make_event()], fmt="single")
    frame = ca.load(str(path))
    assert frame["source_line"].tolist() == [1]


def test_gzip_is_detected_by_content_not_by_name(tmp_path):
    plain = write_payload(tmp_path / "zipped.ndjson", _events(2), gz=True)
    array = write_payload(tmp_path / "zipped.json", _events(2), gz=True)
    assert plain.read_bytes()[:2] == b"\x1f\x8b"
    for path in (plain, array):
        frame = ca.load(str(path))
        assert _summary(frame)["rejected"] == 0
        assert sorted(frame["source_line"]) == [1, 2]


def test_gz_suffix_on_uncompressed_content_is_read_as_is(tmp_path):
    path = write_payload(tmp_path / "plain.ndjson.gz", _events(2), gz=False)
    frame = ca.load(str(path))
    assert len(frame) == 2


@pytest.mark.parametrize("name", ["a.ndjson", "a.json", "a.ndjson.gz"])
def test_utf8_bom_and_crlf(tmp_path, name):
    records = [make_event(id="feed-é", variables={"name": "José"}), make_event(id="feed-2"), "42"]
    path = write_payload(tmp_path / name, records, bom=True, crlf=True)
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (3, 2, 1)
    assert sorted(frame["item_id"]) == ["feed-2", "feed-é"]
    assert frame.loc[frame["item_id"] == "feed-é", "variables__name"].tolist() == ["José"]
    for column in ("item_id", "status", "receiver"):
        assert not any("\r" in v for v in frame[column].dropna())
    rejected = frame.attrs["quarantine"]
    assert rejected["source_line"].tolist() == [3]


def test_blank_lines_are_not_records_and_line_numbers_stay_exact(tmp_path):
    lines = [json.dumps(make_event(id="f1")), "", "   ", json.dumps(make_event(id="f4")), "\t", "{bad", ""]
    path = write_payload(tmp_path / "a.ndjson", lines, crlf=True)
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert summary["records"] == 3
    assert summary["records"] == summary["written"] + summary["duplicates"] + summary["rejected"] + summary["skipped"]
    assert dict(zip(frame["item_id"], frame["source_line"])) == {"f1": 1, "f4": 4}
    assert frame.attrs["quarantine"]["source_line"].tolist() == [6]


def test_last_line_without_newline_is_read(tmp_path):
    path = write_payload(tmp_path / "a.ndjson", _events(3), trailing_newline=False)
    assert [pos for pos, _ in _records(path)] == [1, 2, 3]
    assert len(ca.load(str(path))) == 3


def test_empty_files_hold_no_records(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.ndjson", "b.json", "c.jsonl"):
        (tmp_path / "in" / name).write_bytes(b"")
    (tmp_path / "in" / "d.ndjson.gz").write_bytes(gzip.compress(b""))
    write_payload(tmp_path / "in" / "e.ndjson", _events(1))
    frame = ca.load(str(tmp_path / "in"))
    assert _summary(frame)["records"] == 1 and len(frame) == 1


def test_ndjson_saved_under_a_json_name(tmp_path):
    records = [*_events(3), "{truncated", make_event("after_message")]
    path = write_payload(tmp_path / "misnamed.json", records, fmt="lines")
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"], summary["skipped"]) == (5, 3, 1, 1)
    assert sorted(frame["source_line"]) == [1, 2, 3]
    assert sorted(frame.attrs["quarantine"]["source_line"]) == [4, 5]


def test_ndjson_under_json_name_with_bom_and_gzip(tmp_path):
    path = write_payload(tmp_path / "misnamed.json", _events(2), fmt="lines", bom=True, crlf=True, gz=True)
    frame = ca.load(str(path))
    assert sorted(frame["source_line"]) == [1, 2]


@pytest.mark.parametrize("read_size", [7, 64])
def test_records_split_across_read_blocks(tmp_path, monkeypatch, read_size):
    monkeypatch.setattr(sources, "_READ_SIZE", read_size)
    lines = [json.dumps(make_event(id=f"f{i}", variables={"pad": "x" * i})) for i in range(12)]
    lines.insert(5, "")
    path = write_payload(tmp_path / "a.ndjson", lines, bom=True, crlf=True, gz=True)
    read = _records(path, chunk_records=4)
    assert [pos for pos, _ in read] == [p for p in range(1, 14) if p != 6]
    assert [json.loads(raw) for _, raw in read] == [json.loads(line) for line in lines if line]


@settings(
    max_examples=300, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    final_newline=st.booleans(),
    read_size=st.integers(1, 64),
    max_record_bytes=st.integers(1, 50),
)
def test_lines_split_at_every_block_size_as_a_plain_split(
    tmp_path, monkeypatch, lines, final_newline, read_size, max_record_bytes
):
    monkeypatch.setattr(sources, "_READ_SIZE", read_size)
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    # A file that starts with a BOM or with gzip's magic bytes is read as such, not as these lines.
    assume(not data.startswith((BOM, b"\x1f\x8b")))
    path = tmp_path / "a.ndjson"
    path.write_bytes(data)
    (file,) = find_files(str(path))
    got: dict[int, bytes | int] = {}
    for chunk in read_chunks(file, chunk_records=3, max_record_bytes=max_record_bytes):
        for offset, line in enumerate(chunk.lines.to_pylist()):
            position = chunk.first_line + offset
            assert position not in got
            got[position] = chunk.oversize[offset].size if line is None else line.rstrip(b"\n")
    # A line over the limit is not kept: a marker with its size stands in for it. Blank lines may be left out.
    expected = {k: len(v) if len(v) > max_record_bytes else v for k, v in enumerate(lines, start=1) if v}
    assert {k: v for k, v in got.items() if v != b""} == expected


def test_chunking_keeps_positions(tmp_path):
    path = write_payload(tmp_path / "a.json", _events(10))
    (file,) = find_files(str(path))
    chunks = list(read_chunks(file, chunk_records=3))
    assert [c.first_line for c in chunks] == [1, 4, 7, 10]
    assert sum(len(c.lines) for c in chunks) == 10


# -- oversize and corrupt input -----------------------------------------------------------------


def test_oversize_line_is_rejected_with_a_preview(tmp_path):
    big = make_event(id="big", variables={"blob": "x" * 5000})
    lines = [make_event(id="f1"), big, make_event(id="f3")]
    path = write_payload(tmp_path / "a.ndjson", lines)
    frame = ca.load(str(path), limits=FlattenLimits(max_record_bytes=1000))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (3, 2, 1)
    assert dict(zip(frame["item_id"], frame["source_line"])) == {"f1": 1, "f3": 3}
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["source_line"] == 2
    assert "too large" in row["reason"]
    assert row["raw"].startswith('{"trigger": "after_feed_item_sent"')
    assert len(row["raw"]) <= sources.OVERSIZE_PREVIEW_BYTES


@pytest.mark.parametrize("read_size", [64, 1 << 20])
def test_the_preview_of_an_oversize_line_stops_at_its_end(tmp_path, monkeypatch, read_size):
    monkeypatch.setattr(sources, "_READ_SIZE", read_size)
    big = b'{"a":"' + b"x" * 92 + b'"}'
    path = tmp_path / "a.ndjson"
    path.write_bytes(big + b'\n{"next":1}\n' + big + b'\r\n{"after":2}\n')
    frame = ca.load(str(path), limits=FlattenLimits(max_record_bytes=50))
    quarantine = frame.attrs["quarantine"]
    too_large = quarantine[quarantine["reason"].str.startswith("record too large")].set_index("source_line")["raw"]
    assert sorted(too_large.index) == [1, 3]
    # Its first bytes, as far as they were read when it was found too large, and nothing of the next record.
    assert all(big.decode().startswith(raw) for raw in too_large)
    if read_size > len(big):
        assert too_large.to_dict() == {1: big.decode(), 3: big.decode()}


def test_oversize_line_spanning_read_blocks_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_READ_SIZE", 256)
    big = make_event(id="big", variables={"blob": "x" * 5000})
    path = write_payload(tmp_path / "a.ndjson", [make_event(id="f1"), big, make_event(id="f3")])
    frame = ca.load(str(path), limits=FlattenLimits(max_record_bytes=1000))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (3, 2, 1)
    assert dict(zip(frame["item_id"], frame["source_line"])) == {"f1": 1, "f3": 3}
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["source_line"] == 2 and "too large" in row["reason"]


def test_oversize_single_body_is_rejected(tmp_path):
    big = make_event(id="big", variables={"blob": "y" * 5000})
    path = write_payload(tmp_path / "post.json", [big], fmt="single", pretty=True)
    frame = ca.load(str(path), limits=FlattenLimits(max_record_bytes=1000))
    summary = _summary(frame)
    assert (summary["records"], summary["rejected"], len(frame)) == (1, 1, 0)
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["source_line"] == 1 and "too large" in row["reason"]


@pytest.mark.parametrize("name", ["a.json", "a.json.gz"])
@pytest.mark.parametrize("long_number", [False, True])
def test_json_array_element_over_max_record_bytes_is_rejected_as_in_ndjson(tmp_path, name, long_number):
    """Each element of an array file is held to max_record_bytes, like an NDJSON line or a single
    body: the big one becomes an oversize marker at its element number, the others load. A 19-digit
    number sends the array through the path that cuts elements out of the text; same outcome."""
    small = make_event(id="small", variables={"n": 10**19 if long_number else 1})
    big = make_event(id="big", variables={"blob": "x" * 5000})
    limits = FlattenLimits(max_record_bytes=2000)
    path = write_payload(tmp_path / name, [small, big], pretty=True)
    (file,) = find_files(str(path))
    chunks = list(read_chunks(file, max_record_bytes=2000))
    marked = {chunk.first_line + offset: marker for chunk in chunks for offset, marker in chunk.oversize.items()}
    assert list(marked) == [2] and marked[2].size > 5000
    frame = ca.load(str(path), limits=limits)
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (2, 1, 1)
    assert frame["item_id"].tolist() == ["small"]
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["source_line"] == 2 and row["reason"].startswith("record too large")
    assert row["raw"].lstrip("{ \n").startswith('"trigger"') and len(row["raw"]) <= sources.OVERSIZE_PREVIEW_BYTES
    for fmt in ("lines", "single"):
        same = write_payload(tmp_path / f"same-{fmt}.ndjson", [big], fmt=fmt)
        assert _summary(ca.load(str(same), limits=limits))["reject_reasons"] == summary["reject_reasons"]


def _cut_gzip(records: list, fraction: float = 0.5, *, array: bool = False) -> tuple[bytes, bytes]:
    """A gzip stream of records (NDJSON, or a JSON array) cut short, and the bytes it still decodes to."""
    texts = [json.dumps(r) for r in records]
    text = ("[" + ",\n".join(texts) + "]") if array else "\n".join(texts) + "\n"
    data = gzip.compress(text.encode(), mtime=0)
    cut = data[: int(len(data) * fraction)]
    return cut, zlib.decompressobj(wbits=31).decompress(cut)


@pytest.mark.parametrize("name", ["t.ndjson.gz", "t.ndjson", "t.json.gz", "t.jsonl.gz"])
def test_a_truncated_gzip_loads_the_records_before_the_break(tmp_path, name):
    """A gzip stream cut short (a capture killed mid-write), whatever the file is called: every
    complete line before the cut loads; the cut line is one rejected record naming the problem,
    at the line where reading stopped, holding the start of that line; the counts balance."""
    records = [make_event(id=f"f{i}", variables={"n": i}) for i in range(200)]
    cut, decoded = _cut_gzip(records)
    complete = decoded.count(b"\n")
    assert 10 < complete < 200
    path = tmp_path / name
    path.write_bytes(cut)
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (complete + 1, complete, 1)
    assert sorted(frame["source_line"]) == list(range(1, complete + 1))
    assert summary["partial_files"] == [str(path)]
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["reason"].startswith("corrupt or truncated gzip: ")
    assert "the records before this point were loaded" in row["reason"]
    assert row["source_line"] == complete + 1 and row["source_file"] == str(path)
    assert row["raw"] == decoded[decoded.rindex(b"\n") + 1:][:sources.OVERSIZE_PREVIEW_BYTES].decode()


def test_read_chunks_yields_the_records_before_the_break_then_raises_partial_read(tmp_path):
    records = [make_event(id=f"f{i}") for i in range(200)]
    cut, decoded = _cut_gzip(records, 0.3)
    path = tmp_path / "t.ndjson.gz"
    path.write_bytes(cut)
    (file,) = find_files(str(path))
    digest = hashlib.sha256()
    read = []
    with pytest.raises(sources.PartialRead) as info:
        for chunk in read_chunks(file, chunk_records=7, digest=digest):
            read.extend(chunk.lines.to_pylist())
    assert b"".join(read) == decoded[: decoded.rindex(b"\n") + 1]
    problem = info.value
    assert isinstance(problem, SourceError) and str(path) in str(problem)
    assert problem.line == len(read) + 1 and problem.hashed
    assert digest.hexdigest() == hashlib.sha256(cut).hexdigest()


def test_a_truncated_gzip_json_array_loads_the_elements_before_the_break(tmp_path):
    """An array cut short: the elements whose closing comma was read load; the cut element is the
    rejected record, at its element number, even when the cut falls inside a string holding commas."""
    records = [make_event(id=f"f{i}", variables={"text": "a, b, [c], {d}"}) for i in range(200)]
    cut, decoded = _cut_gzip(records, 0.5, array=True)
    complete = decoded.count(b",\n")
    path = tmp_path / "a.json.gz"
    path.write_bytes(cut)
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (complete + 1, complete, 1)
    assert sorted(frame["item_id"]) == sorted(f"f{i}" for i in range(complete))
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["source_line"] == complete + 1 and row["reason"].startswith("corrupt or truncated gzip")
    assert row["raw"].startswith('{"trigger"')


@pytest.mark.parametrize(("at", "complete"), [(0.4, 1), (0.9, 3)])
def test_leading_elements_of_an_array_cut_inside_a_string(tmp_path, at, complete):
    text = json.dumps([{"a": "x, y"}, "p, [q", {"b": ["z, {w"]}, "tail, end"]).encode()
    cut = text[: int(len(text) * at)]
    (tmp_path / "cut.json").write_bytes(cut)
    (file,) = find_files(str(tmp_path / "cut.json"))
    elements: list[bytes] = []
    with pytest.raises(sources.PartialRead) as stop:
        for chunk in read_chunks(file):
            elements += chunk.lines.to_pylist()
    assert len(elements) == complete and all(json.loads(e) is not None for e in elements)
    assert b",".join([*elements, stop.value.raw]).replace(b" ", b"") == cut[1:].replace(b" ", b"")
    assert stop.value.line == complete + 1 and stop.value.reason.startswith("JSON array cut short")


def test_a_plain_array_the_writer_left_unclosed_loads_its_complete_elements(tmp_path):
    events = [make_event(id=f"f{i}") for i in range(5)]
    text = json.dumps(events).encode()
    path = tmp_path / "capture.json"
    path.write_bytes(text[: text.index(b'"f3"') + 10])  # the writer stopped inside the 4th element
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (4, 3, 1)
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["source_line"] == 4 and row["reason"].startswith("JSON array cut short")
    assert row["raw"].startswith('{"trigger"')
    # a complete array followed by something else is still not an array: one rejected record
    path.write_bytes(text + b"[1]")
    summary = _summary(ca.load(str(path)))
    assert (summary["records"], summary["written"], summary["rejected"]) == (1, 0, 1)


def test_a_single_body_cut_short_is_one_rejected_record(tmp_path):
    body = json.dumps(make_event(id="post", variables={"k": "v" * 3000}), indent=2).encode()
    data = gzip.compress(body, mtime=0)
    path = tmp_path / "post.json.gz"
    path.write_bytes(data[: len(data) // 2])
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (1, 0, 1)
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["source_line"] == 1 and row["reason"].startswith("corrupt or truncated gzip")
    assert row["raw"].startswith("{\n")


def test_a_gzip_with_a_bad_checksum_loads_its_records_and_reports_the_corruption(tmp_path):
    records = [make_event(id=f"f{i}") for i in range(50)]
    data = bytearray(gzip.compress(("\n".join(json.dumps(r) for r in records) + "\n").encode(), mtime=0))
    data[-8] ^= 0xFF  # the CRC-32 of the trailer
    path = tmp_path / "crc.ndjson.gz"
    path.write_bytes(bytes(data))
    frame = ca.load(str(path))
    summary = _summary(frame)
    assert (summary["records"], summary["written"], summary["rejected"]) == (51, 50, 1)
    (row,) = frame.attrs["quarantine"].to_dict("records")
    assert row["source_line"] == 51 and row["raw"] == ""
    assert row["reason"].startswith("corrupt or truncated gzip: CRC check failed")


def test_a_broken_gzip_does_not_stop_the_other_files(tmp_path, table):
    (tmp_path / "in").mkdir()
    cut, decoded = _cut_gzip([make_event(id=f"c{i}") for i in range(300)])
    (tmp_path / "in" / "b-cut.ndjson.gz").write_bytes(cut)
    (tmp_path / "in" / "c-garbage.ndjson.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    write_payload(tmp_path / "in" / "a.ndjson", [make_event(id="a1")])
    write_payload(tmp_path / "in" / "d.ndjson", [make_event(id="d1")])
    summary = ca.ingest(str(tmp_path / "in"), table)
    complete = decoded.count(b"\n")
    assert (summary.records, summary.written, summary.rejected) == (complete + 4, complete + 2, 2)
    assert summary.balanced and summary.version == 0
    assert summary.reject_reasons == {"corrupt or truncated gzip": 2}
    assert sorted(map(os.path.basename, summary.partial_files)) == ["b-cut.ndjson.gz", "c-garbage.ndjson.gz"]
    assert "broke off part way" in str(summary) and "b-cut.ndjson.gz" in str(summary)
    rejected = ca.read_rejected(table)
    assert sorted(zip(rejected["source_file"].map(os.path.basename), rejected["source_line"])) == [
        ("b-cut.ndjson.gz", complete + 1), ("c-garbage.ndjson.gz", 1)]
    assert {"a1", "d1"} <= set(ca.read_events(table)["item_id"])


def _fail_reads_of(monkeypatch, path: Path, good: int) -> None:
    """Reads of path through the sources module fail with EIO after `good` bytes (a disk failing part way)."""
    real_open = open

    class Failing(io.FileIO):
        def readinto(self, buffer):
            position = self.tell()
            if position >= good:
                raise OSError(errno.EIO, "Input/output error")
            return super().readinto(memoryview(buffer)[: good - position])

    def failing_open(file, mode="r", buffering=-1, *args, **kwargs):
        if os.path.abspath(os.fspath(file)) != os.path.abspath(path):
            return real_open(file, mode, buffering, *args, **kwargs)
        raw = Failing(file, "rb")
        return raw if buffering == 0 else io.BufferedReader(raw)

    monkeypatch.setattr(sources, "open", failing_open, raising=False)


def test_a_plain_file_failing_part_way_loads_the_records_before(tmp_path, table, monkeypatch):
    """A read error part way through a plain file: the records before load, the break is one
    rejected record. Its bytes cannot all be hashed, so the ledger keeps no hash and the next load
    reads it again (rather than passing over bytes it never saw)."""
    lines = [json.dumps(make_event(id=f"f{i}")) for i in range(100)]
    path = write_payload(tmp_path / "in" / "disk.ndjson", lines)
    good = len("\n".join(lines[:40])) + 1 + 25  # 40 whole lines and a piece of the 41st
    _fail_reads_of(monkeypatch, path, good)
    summary = ca.ingest(str(path), table)
    assert (summary.records, summary.written, summary.rejected) == (41, 40, 1) and summary.balanced
    (row,) = ca.read_rejected(table).to_dict("records")
    assert row["source_line"] == 41 and row["raw"] == lines[40][:25]
    assert row["reason"].startswith("read error: ") and "Input/output error" in row["reason"]
    (entry,) = ca.read_loads(table, files=True).to_dict("records")
    assert (entry["status"], entry["hash"]) == ("partial", None)
    again = ca.ingest(str(path), table)  # same size as the ledger's entry: hashing it fails, it is read
    assert (again.files_unchanged, again.records, again.duplicates, again.rejected) == (0, 41, 40, 1)


def test_a_file_that_fails_before_its_first_byte_is_an_error(tmp_path, table, monkeypatch):
    path = write_payload(tmp_path / "in" / "disk.ndjson", [make_event(id="f1")])
    _fail_reads_of(monkeypatch, path, 0)
    with pytest.raises(SourceError, match="cannot be read") as info:
        ca.ingest(str(path), table)
    assert str(path) in str(info.value) and "Input/output error" in str(info.value)
    assert not os.path.isdir(os.path.join(table, "_delta_log"))


def test_bom_only_and_whitespace_only_files(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.ndjson").write_bytes(BOM + b"\n\n")
    (tmp_path / "in" / "b.json").write_bytes(BOM + b"  \r\n")
    write_payload(tmp_path / "in" / "c.ndjson", _events(1))
    frame = ca.load(str(tmp_path / "in"))
    assert _summary(frame)["records"] == 1
