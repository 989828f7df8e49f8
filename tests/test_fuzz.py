"""Hostile input never crashes the loader and nothing read is lost or counted twice.

A seeded mutation fuzzer (``scripts/fuzz.py``, the same engine as the longer
command-line run) feeds 11,000 mutated events through ``ingest`` in loads of
500; property tests (hypothesis, derandomized) feed generated envelopes, raw
bytes and JSON arrays through ``load``. After every load: the counts balance,
every non-blank line is exactly one event row, quarantine row or duplicate,
every quarantine row has a reason, file, line and the record's raw text, and
records whose fate is certain got it.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import campaign_analytics as ca
from campaign_analytics.triggers import TRIGGERS

from conftest import make_event, write_payload

_ROOT = Path(__file__).resolve().parents[1]


def _import_fuzz() -> ModuleType:
    """scripts/fuzz.py as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location("campaign_fuzz", _ROOT / "scripts" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fuzz = _import_fuzz()

FUZZ_SEED = 20_261_204
FUZZ_RECORDS = 11_000
FUZZ_PER_LOAD = 500


def _frame_outcome(frame: pd.DataFrame) -> tuple[dict[str, Any], list[tuple[str, int]], list[dict[str, Any]]]:
    """(summary, event positions, quarantine rows) of a ``ca.load`` frame, as check_outcome takes them."""
    summary = frame.attrs["load_summary"]
    events = list(zip(frame["source_file"].tolist(), [int(n) for n in frame["source_line"]], strict=True)) if len(frame) else []
    quarantine = frame.attrs["quarantine"]
    rows = quarantine[["kind", "reason", "raw", "source_file", "source_line"]].to_dict("records") if len(quarantine) else []
    return summary, events, rows


def _assert_clean(check: Any) -> None:
    """Fail with every violation listed."""
    assert not check.violations, "\n".join(check.violations[:40])


# -- the seeded mutation fuzzer -----------------------------------------------------------------


def test_mutation_fuzzer_11k_records_in_22_loads(tmp_path: Path) -> None:
    """11,000 mutated events (make_event and simulate output), 500 per NDJSON file and load,
    plain, gzip, CRLF, leading BOM and blank lines mixed: 0 crashes, every invariant holds."""
    total, used = fuzz.run(
        FUZZ_RECORDS, FUZZ_SEED, tmp_path, per_load=FUZZ_PER_LOAD, loads_per_table=8,
        limits=ca.FlattenLimits(max_user_columns=300),
    )
    _assert_clean(total)
    assert total.records == FUZZ_RECORDS
    assert total.records == total.written + total.duplicates + total.rejected + total.skipped
    assert min(total.written, total.duplicates, total.rejected, total.skipped) > 0, total
    # every kind of mutation was exercised
    assert set(used) == set(fuzz.FINAL_MUTATIONS), used


def test_fuzzer_is_reproducible_from_its_seed() -> None:
    """The same seed gives byte-identical records, so a CI failure can be replayed."""
    pool = fuzz.base_events(random.Random(3))
    first = fuzz.Fuzzer(11, pool).records(300)
    second = fuzz.Fuzzer(11, pool).records(300)
    assert [r.raw for r in first] == [r.raw for r in second]
    assert [r.mutation for r in first] == [r.mutation for r in second]


def test_fuzz_script_reports_counts_and_exits_0(tmp_path: Path) -> None:
    """The command-line fuzzer as users run it: a short run prints its counts, exits 0 when every
    invariant held, and keeps no payload file of a clean load."""
    out_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(_ROOT / "scripts" / "fuzz.py"), "--records", "400", "--seed", "5", "--per-load", "200",
         "--table", str(out_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "400 records" in result.stdout and "every invariant held" in result.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["payloads", "simulated", "table-0000"]
    assert list((out_dir / "payloads").iterdir()) == []


def test_fuzz_checker_catches_a_violation(tmp_path: Path) -> None:
    """The invariant checker itself: a record that must be rejected but is reported as written is caught."""
    record = fuzz.Record(raw=b'{"trigger": "after_feed_item_sent"', expect="rejected", mutation="truncate")
    path = tmp_path / "one.ndjson"
    layout = fuzz.write_lines(path, [record])
    lines = fuzz.expected_lines(path)
    summary = {"records": 1, "written": 1, "duplicates": 0, "rejected": 0, "skipped": 0}
    check = fuzz.check_outcome(str(path), lines, {1: layout[0]}, summary, [(str(path), 1)], [])
    assert any("should be rejected" in v for v in check.violations)
    summary = {"records": 2, "written": 0, "duplicates": 0, "rejected": 1, "skipped": 0}
    check = fuzz.check_outcome(str(path), lines, {1: layout[0]}, summary, [], [])
    assert any("do not add up" in v for v in check.violations)


# -- property tests -----------------------------------------------------------------------------

_SURROGATE_CHARS = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
_CONTROL_CHARS = st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\u2028", "\ufeff", "\u202e", "\r"])
_HOSTILE_TEXT = st.lists(st.one_of(st.characters(), _SURROGATE_CHARS, _CONTROL_CHARS), max_size=12).map("".join)
_CLEAN_TEXT = st.lists(st.one_of(st.characters(codec="utf-8"), _CONTROL_CHARS), max_size=12).map("".join)


def _json_values(text: st.SearchStrategy[str], *, finite: bool) -> st.SearchStrategy[Any]:
    """Any JSON value (unbounded integers; NaN and infinities unless finite) with keys and strings from text."""
    scalars = (
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=not finite, allow_infinity=not finite) | text
    )
    return st.recursive(
        scalars, lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=4), max_leaves=10
    )


_TRIGGER_NAMES = sorted(TRIGGERS)
_KNOWN_DATA_KEYS = [
    "id", "pushNotificationId", "campaignId", "notificationId", "appId", "templateId", "templateVersion", "receiver",
    "channelType", "tags", "variables", "metadata", "content", "sentAt", "deliveredAt", "readAt", "interactedAt",
    "engagedAt", "clickedAt", "createdAt", "completedAt", "updatedAt", "totalTargets", "label", "status",
]


def _encode(value: Any, ascii_only: bool) -> bytes:
    """JSON bytes; with ascii_only False, lone surrogates become raw (invalid UTF-8) bytes."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _hostile_envelope(draw: st.DrawFn) -> Any:
    """An envelope of any trigger whose data fields are overridden with any JSON values."""
    trigger = draw(st.sampled_from(_TRIGGER_NAMES + ["after_message", ""]))
    event = make_event(trigger, id=draw(st.text(max_size=8)))
    overrides = draw(st.dictionaries(st.sampled_from(_KNOWN_DATA_KEYS) | _HOSTILE_TEXT,
                                     _json_values(_HOSTILE_TEXT, finite=False), max_size=4))
    event["data"].update(overrides)
    if draw(st.booleans()):
        event[draw(st.sampled_from(["trigger", "appId", "region", "webhook", "data"]))] = draw(
            _json_values(_HOSTILE_TEXT, finite=False))
    return fuzz.Record(raw=_encode(event, draw(st.booleans())), expect=None, mutation="hypothesis-envelope")


@st.composite
def _valid_event(draw: st.DrawFn) -> Any:
    """A valid event with any user objects (no lone surrogates): it must load."""
    trigger = draw(st.sampled_from([t for t in _TRIGGER_NAMES if TRIGGERS[t].entity in ("feed_item", "push_notification")]))
    user = st.dictionaries(_CLEAN_TEXT, _json_values(_CLEAN_TEXT, finite=True), max_size=4)
    event = make_event(trigger, id=draw(_CLEAN_TEXT), pushNotificationId=draw(_CLEAN_TEXT),
                       variables=draw(user), metadata=draw(user))
    return fuzz.Record(raw=_encode(event, draw(st.booleans())), expect="event", mutation="hypothesis-valid")


@st.composite
def _edited_event(draw: st.DrawFn) -> Any:
    """A valid event's bytes with a few bytes inserted, replaced or deleted (never a newline)."""
    raw = bytearray(_encode(make_event(id=draw(st.text(max_size=6))), True))
    for position, byte, action in draw(st.lists(st.tuples(st.integers(0, len(raw)), st.integers(0, 255),
                                                          st.sampled_from("ird")), min_size=1, max_size=4)):
        byte = 13 if byte == 10 else byte
        if action == "i":
            raw.insert(min(position, len(raw)), byte)
        elif position < len(raw) and action == "r":
            raw[position] = byte
        elif position < len(raw) and len(raw) > 1:
            del raw[position]
    return fuzz.Record(raw=bytes(raw), expect=None, mutation="hypothesis-edit")


_raw_bytes = st.binary(max_size=80).map(lambda b: fuzz.Record(raw=b.replace(b"\n", b"\r"), expect=None, mutation="hypothesis-bytes"))
_any_record = st.one_of(_hostile_envelope(), _valid_event(), _edited_event(), _raw_bytes)


@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(records=st.lists(_any_record, min_size=1, max_size=40), crlf=st.booleans(), bom=st.booleans())
@example(records=[fuzz.Record(raw=b'{"trigger":"after_feed_item_sent","data":{"id":"\\ud800","sentAt":1780003600}}',
                              expect=None, mutation="surrogate"),
                  fuzz.Record(raw=b"\xef\xbb\xbf" + _encode(make_event(id="bom"), True), expect=None, mutation="bom"),
                  fuzz.Record(raw=b"{}" * 3, expect="rejected", mutation="concat")], crlf=True, bom=True)
def test_property_generated_lines_are_each_accounted_for(records: list[Any], crlf: bool, bom: bool) -> None:
    """Any mix of hostile envelopes, valid events, edited bytes and raw bytes, as NDJSON:
    load() never raises, and every non-blank line is an event, a quarantine row or a duplicate."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.ndjson"
        layout = fuzz.write_lines(path, records, crlf=crlf, bom=bom)
        lines = fuzz.expected_lines(path)
        frame = ca.load(str(path))
    summary, events, quarantine = _frame_outcome(frame)
    expects = {n: r for n, r in enumerate(layout, start=1) if r is not None}
    _assert_clean(fuzz.check_outcome(str(path), lines, expects, summary, events, quarantine))


_orjson_safe = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(elements=st.lists(st.one_of(_orjson_safe, st.builds(lambda i: make_event(id=f"e{i}"), st.integers(0, 5))),
                         min_size=1, max_size=30))
def test_property_json_array_elements_are_each_accounted_for(elements: list[Any]) -> None:
    """A JSON array file of arbitrary elements: one record per element, numbered 1..n."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.json"
        texts = [orjson.dumps(element) for element in elements]
        path.write_bytes(b"[" + b",".join(texts) + b"]")
        frame = ca.load(str(path))
    summary, events, quarantine = _frame_outcome(frame)
    lines = {n: text for n, text in enumerate(texts, start=1)}
    _assert_clean(fuzz.check_outcome(str(path), lines, {}, summary, events, quarantine))


# -- large values -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["variables", "metadata", "content"])
def test_a_batch_of_records_with_large_user_objects_loads(tmp_path: Path, field: str) -> None:
    """100 events each carrying a 200 KB string in variables, metadata or content: 20 MB in one
    batch, every record far under max_record_bytes. ingest loads them all (the engine does not
    run out of memory), and the raw JSON keeps each value whole."""
    events = [make_event(id=f"big-{i}", **{field: {"html": f"{i}:" + "x" * 200_000}}) for i in range(100)]
    path = write_payload(tmp_path / "big.ndjson", events)
    table = str(tmp_path / "events")
    summary = ca.ingest(str(path), table)
    assert (summary.records, summary.written, summary.rejected) == (100, 100, 0), summary
    stored = ca.read_events(table, columns=["item_id", f"{field}_json"]).set_index("item_id")
    assert json.loads(stored.loc["big-7", f"{field}_json"]) == {"html": "7:" + "x" * 200_000}


# -- hostile elements of JSON array files -------------------------------------------------------

_GOOD = make_event(id="good-in-array")
_HOSTILE_ELEMENTS = {
    "number_out_of_range": json.dumps(make_event(id="h", variables={"n": 0})).replace('"n": 0', '"n": 1e400'),
    "lone_surrogate_escape": json.dumps(make_event(id="h", variables={"s": "\ud800"})),
    "nested_2000_levels": json.dumps(make_event(id="h", variables={"n": 0})).replace('"n": 0', '"n": ' + "[" * 2000 + "]" * 2000),
}


@pytest.mark.parametrize("name", sorted(_HOSTILE_ELEMENTS))
def test_one_hostile_element_of_a_json_array_does_not_take_the_others_down(tmp_path: Path, name: str) -> None:
    """An array file with a valid event around one hostile element: the valid events load, the
    hostile element is accounted for on its own position (as it would be in an NDJSON file)."""
    hostile = _HOSTILE_ELEMENTS[name]
    path = write_payload(tmp_path / "in.json", [_GOOD, hostile, make_event(id="also-good")], fmt="array")
    frame = ca.load(str(path))
    summary = frame.attrs["load_summary"]
    assert summary["records"] == 3, (summary, frame.attrs["quarantine"].to_dict("records"))
    assert sorted(frame["item_id"]) == ["also-good", "good-in-array"] or sorted(frame["item_id"]) == [
        "also-good", "good-in-array", "h"]
    quarantine = frame.attrs["quarantine"]
    assert set(quarantine["source_line"]) <= {2}
    ndjson = ca.load(str(write_payload(tmp_path / "in.ndjson", [_GOOD, hostile, make_event(id="also-good")])))
    assert ndjson.attrs["load_summary"]["records"] == 3


def test_json_array_elements_keep_their_number_text(tmp_path: Path) -> None:
    """variables_json holds the original JSON: an integer past 2**70 keeps its digits in an array file
    as it does in NDJSON, and the same event in both formats is one event."""
    big = 2**70 + 1  # not a power of two, so a float cannot hold it
    variables = {"n": big, "f": 0.1, "e": 1e21}
    event = make_event(id="big", variables=variables)
    array = write_payload(tmp_path / "in.json", [event], fmt="array")
    ndjson = write_payload(tmp_path / "in.ndjson", [event])
    from_ndjson = ca.load(str(ndjson))
    assert json.loads(from_ndjson["variables_json"].iloc[0]) == variables
    from_array = ca.load(str(array))
    assert json.loads(from_array["variables_json"].iloc[0]) == variables, from_array["variables_json"].iloc[0]
    both = ca.load([str(array), str(ndjson)])
    assert (both.attrs["load_summary"]["written"], both.attrs["load_summary"]["duplicates"]) == (1, 1)
