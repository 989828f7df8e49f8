"""Several ingest processes loading into one table at the same time equal one serial load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import campaign_analytics as ca
from campaign_analytics.simulate import simulate
from campaign_analytics.sources import find_files


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
    assert len(ca.read_rejected(table)["source_line"]) >= truth.rejected  # overlapping loads see a bad line twice
    assert ca.vacuum(table, min_age_hours=0) == []
