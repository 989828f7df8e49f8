"""Several ingest processes loading into one table at the same time equal one serial load."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import campaign_analytics as ca
from campaign_analytics import store
from campaign_analytics.simulate import simulate
from campaign_analytics.sources import find_files
from conftest import make_event


def _ingest_in_process(files: list[str], table: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys, campaign_analytics as ca\n"
        "s = ca.ingest(sys.argv[2:], sys.argv[1], batch_records=500)\n"
        "assert s.balanced, s\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(table), *files])


def test_four_concurrent_loads_of_overlapping_and_disjoint_files_equal_a_serial_load(tmp_path: Path) -> None:
    truth = simulate(tmp_path / "raw", items=1500, seed=11, bad_records=4, other_triggers=3)
    files = [f.path for f in find_files(tmp_path / "raw")]
    half = len(files) // 2
    # Two disjoint halves, plus two loads that overlap both of them.
    sets = [files[:half], files[half:], files[::3], files[half // 2: half + half // 2]]

    table = tmp_path / "concurrent"
    processes = [_ingest_in_process(chunk, table) for chunk in sets]
    assert [p.wait(timeout=300) for p in processes] == [0, 0, 0, 0]

    serial = tmp_path / "serial"
    ca.ingest([str(tmp_path / "raw")], serial)

    together = ca.read_events(table).sort_values("event_id").reset_index(drop=True)
    alone = ca.read_events(serial).sort_values("event_id").reset_index(drop=True)
    assert len(together) == truth.unique_events == len(alone)
    assert together["event_id"].is_unique
    assert together["event_id"].tolist() == alone["event_id"].tolist()
    columns = [c for c in alone.columns if c not in ("source_file", "source_line", "load_id", "ingested_at")]
    # The same events with the same values, whichever load wrote each one first.
    assert together[columns].astype(str).equals(alone[columns].astype(str))

    loads = ca.read_loads(table)
    assert len(loads) == 4
    assert int(loads["written"].sum()) == truth.unique_events
    for _, load in loads.iterrows():
        assert load["records"] == load["written"] + load["duplicates"] + load["rejected"] + load["skipped"]
    # A bad line of a file two loads read at once is kept once, as in the serial load.
    assert len(ca.read_rejected(table)) == truth.rejected == len(ca.read_rejected(serial))
    assert len(ca.read_skipped(table)) == truth.skipped
    assert ca.vacuum(table, min_age_hours=0) == []


def _while_loading(monkeypatch: pytest.MonkeyPatch, other: Callable[[], object]) -> None:
    """Make the next ingest run ``other`` (another whole load) after it has read its files, just before it commits."""
    original = store._commit_lock
    ran: list[bool] = []

    @contextlib.contextmanager
    def lock(uri: str) -> Iterator[None]:
        if not ran:
            ran.append(True)
            other()
        with original(uri):
            yield

    monkeypatch.setattr(store, "_commit_lock", lock)


def _variables_event(item: str, variables: dict[str, object]) -> dict[str, object]:
    return make_event(id=item, variables=variables)


def test_keys_that_clash_in_loads_side_by_side_keep_their_own_columns(
    monkeypatch: pytest.MonkeyPatch, write: Callable[..., Path], table: str
) -> None:
    first = write("a.ndjson", [_variables_event("feed-a", {"first-name": "Ann", "Name": "A"})])
    second = write("b.ndjson", [_variables_event("feed-b", {"first_name": "Bob", "name": "B", "plan": "pro"})])
    _while_loading(monkeypatch, lambda: ca.ingest(first, table))

    summary = ca.ingest(second, table)

    assert summary.new_columns == ["variables__first_name_2", "variables__name_2", "variables__plan"]
    events = ca.read_events(table).set_index("item_id")
    # The same columns and values as one serial load of both files, nothing merged.
    serial = ca.load([first, second]).set_index("item_id")
    user = sorted(c for c in serial.columns if c.startswith("variables__"))
    assert sorted(c for c in events.columns if c.startswith("variables__")) == user
    assert events.loc[["feed-a", "feed-b"], user].astype(str).equals(serial.loc[["feed-a", "feed-b"], user].astype(str))
    assert events.loc["feed-b", "variables__first_name_2"] == "Bob"
    assert events.loc["feed-a", "variables__first_name"] == "Ann"
    assert events.loc["feed-b", "variables__name_2"] == "B"
    loads = ca.read_loads(table)
    assert summary.load_id in set(loads["load_id"])
    # A later load puts each path in the column its first load recorded.
    monkeypatch.undo()
    third = write("c.ndjson", [_variables_event("feed-c", {"first_name": "Cy", "first-name": "Di"})])
    ca.ingest(third, table)
    later = ca.read_events(table).set_index("item_id")
    assert later.loc["feed-c", "variables__first_name_2"] == "Cy"
    assert later.loc["feed-c", "variables__first_name"] == "Di"


def test_a_load_whose_events_another_load_committed_meanwhile_adds_no_columns(
    monkeypatch: pytest.MonkeyPatch, write: Callable[..., Path], table: str, tmp_path: Path
) -> None:
    events = [_variables_event("feed-a", {"plan": "pro"})]
    original = write("a.ndjson", events)
    copy = write("copy/a.ndjson", events)
    _while_loading(monkeypatch, lambda: ca.ingest(original, table))

    summary = ca.ingest(copy, table)

    assert (summary.written, summary.duplicates) == (0, 1)
    assert summary.new_columns == []
    ledger = ca.read_loads(table)
    assert ledger.set_index("load_id").loc[summary.load_id, "new_columns"] == []


def test_records_of_a_file_another_load_committed_meanwhile_are_kept_once(
    monkeypatch: pytest.MonkeyPatch, write: Callable[..., Path], table: str
) -> None:
    source = write("a.ndjson", [_variables_event("feed-a", {"plan": "pro"}), "{bad", make_event("after_message")])
    _while_loading(monkeypatch, lambda: ca.ingest(source, table))

    summary = ca.ingest(source, table)

    assert (summary.records, summary.written, summary.duplicates, summary.rejected, summary.skipped) == (3, 0, 3, 0, 0)
    assert summary.balanced and summary.reject_reasons == {}
    assert ca.read_rejected(table)["raw"].tolist() == ["{bad"]
    assert len(ca.read_skipped(table)) == 1
    loads = ca.read_loads(table).set_index("load_id")
    assert loads.loc[summary.load_id, ["rejected", "skipped", "duplicates"]].tolist() == [0, 0, 3]
