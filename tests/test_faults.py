"""Faults: the loader never crashes, never loses, never duplicates.

* crash safety: ingest is killed with SIGKILL at random moments and at exact
  points (reading, flattening, writing files, committing); the same ingest run
  again gives a table equal to one clean load, the ledger stays consistent,
  and what the killed writer left is never read, is listed by
  ``campaign-analytics vacuum`` and removed with ``--apply``;
* limits that protect the user (nesting, user columns across loads, record
  size and the memory it takes);
* no harm to inputs or to the rest of the disk;
* errors people can act on, also as ``--json``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from deltalake import DeltaTable

import campaign_analytics as ca
import campaign_analytics.store as store
from campaign_analytics.cli import main
from campaign_analytics.errors import SourceError, TableError
from campaign_analytics.simulate import simulate

from conftest import make_event, write_payload

PYTHON = sys.executable
# Columns that differ between two loads of the same data.
_PER_LOAD = ["load_id", "ingested_at"]


# -- comparing tables ---------------------------------------------------------------------------


def _sorted_frame(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """frame without per-load columns, columns by name, rows by keys."""
    frame = frame.drop(columns=[c for c in _PER_LOAD if c in frame.columns])
    frame = frame[sorted(frame.columns)]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


@dataclass
class TableState:
    """What a reader sees in a table: events, rejected and skipped rows (per-load columns left out)."""

    events: pd.DataFrame
    rejected: pd.DataFrame
    skipped: pd.DataFrame

    @classmethod
    def read(cls, table: str) -> TableState:
        """Read a table through the public readers."""
        return cls(
            events=_sorted_frame(ca.read_events(table), ["event_id"]),
            rejected=_sorted_frame(ca.read_rejected(table), ["source_file", "source_line"]),
            skipped=_sorted_frame(ca.read_skipped(table), ["source_file", "source_line"]),
        )

    def assert_equals(self, other: TableState, context: str) -> None:
        """Fail unless both states hold the same rows."""
        for name in ("events", "rejected", "skipped"):
            mine, theirs = getattr(self, name), getattr(other, name)
            assert len(mine) == len(theirs), f"{context}: {name}: {len(mine)} rows, a clean load has {len(theirs)}"
            pd.testing.assert_frame_equal(mine, theirs, obj=f"{context}: {name}")


def _visible_state(table: str) -> TableState | None:
    """The state readers see, or None when there is no committed table to read."""
    try:
        return TableState.read(table)
    except TableError:
        return None


def _assert_ledger_consistent(table: str) -> None:
    """Every listed load balances, its written rows are all present, and the counts add up to the table."""
    loads = ca.read_loads(table)
    events = ca.read_events(table, columns=["event_id", "load_id"])
    assert events["event_id"].is_unique, "an event id appears twice"
    per_load = events["load_id"].value_counts().to_dict()
    rejected = ca.read_rejected(table)["load_id"].value_counts().to_dict()
    skipped = ca.read_skipped(table)["load_id"].value_counts().to_dict()
    for entry in loads.to_dict("records"):
        load = entry["load_id"]
        assert entry["records"] == entry["written"] + entry["duplicates"] + entry["rejected"] + entry["skipped"], entry
        assert per_load.get(load, 0) == entry["written"], (load, per_load.get(load, 0), entry["written"])
        assert rejected.get(load, 0) == entry["rejected"], (load, rejected.get(load, 0), entry["rejected"])
        assert skipped.get(load, 0) == entry["skipped"], (load, skipped.get(load, 0), entry["skipped"])
    assert set(per_load) <= set(loads["load_id"]), "rows of a load the ledger does not list"
    assert int(loads["written"].sum()) == len(events)


def _files_on_disk(table: str) -> set[str]:
    """Every file under the table, relative, except the commit logs and the lock file."""
    found = set()
    for root, dirs, files in os.walk(table):
        dirs[:] = [d for d in dirs if d != "_delta_log"]
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), table)
            if relative != "_commit.lock":
                found.add(relative)
    return found


def _live_files(table: str) -> set[str]:
    """Files the events log and the quarantine log list, relative to the table."""
    live = set()
    for root, prefix in ((table, ""), (os.path.join(table, "_quarantine"), "_quarantine/")):
        if os.path.isdir(os.path.join(root, "_delta_log")):
            live |= {prefix + os.path.relpath(uri, root) for uri in DeltaTable(root).file_uris()}
    return live


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command line in-process; (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_json(text: str) -> Any:
    """The single JSON object of a --json output."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return json.loads(lines[0])


def _assert_vacuum_cleans(table: str, capsys: pytest.CaptureFixture[str], reference: TableState, context: str) -> list[str]:
    """vacuum lists exactly the files no log lists (dry run by default, fresh files only with
    --min-age-hours 0) and --apply removes them and nothing else: readers see the same rows after.
    (The caller checked the rows with the files still there: they were never read.)"""
    orphans = _files_on_disk(table) - _live_files(table)
    code, out, _ = _cli(capsys, "vacuum", "--table", table, "--json")
    assert code == 0 and _one_json(out)["files"] == [], f"{context}: fresh files listed without --min-age-hours 0"
    code, out, _ = _cli(capsys, "vacuum", "--table", table, "--min-age-hours", "0", "--json")
    listed = _one_json(out)
    assert code == 0 and listed["dry_run"] is True
    assert set(listed["files"]) == orphans, f"{context}: vacuum lists {listed['files']}, left behind: {sorted(orphans)}"
    assert orphans <= _files_on_disk(table), f"{context}: the dry run deleted files"
    code, out, _ = _cli(capsys, "vacuum", "--table", table, "--min-age-hours", "0", "--apply", "--json")
    assert code == 0 and set(_one_json(out)["files"]) == orphans
    assert _files_on_disk(table) == _live_files(table), f"{context}: files left after vacuum --apply"
    TableState.read(table).assert_equals(reference, f"{context}, after vacuum --apply")
    code, out, _ = _cli(capsys, "vacuum", "--table", table, "--min-age-hours", "0", "--json")
    assert _one_json(out)["files"] == []
    return sorted(orphans)


# -- killing ingest -----------------------------------------------------------------------------

# A fork server: `python -c` imports the package once and says "ready"; for each job line
# (sources, table, batch size, hooks, delay) it forks a child that sets the hooks and ingests,
# waits for it at most `delay` seconds from the fork, SIGKILLs it if it still runs (the child is
# unreaped until then, so its pid cannot have been reused), and answers one JSON line. Hooks
# SIGKILL the child at the n-th call of a loader function, before or after it runs; they are set
# from outside, the package is not changed. Forking saves the ~1.5 s import per kill.
_FORK_SERVER = textwrap.dedent(
    """
    import json, os, select, signal, sys, time
    import campaign_analytics as ca
    import campaign_analytics.store as store

    def hook(owner, name, nth, when):
        original = getattr(owner, name)
        calls = [0]
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == nth and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if calls[0] == nth and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        setattr(owner, name, wrapper)

    def child(job):
        owners = {"store": store, "writer": store._PartitionWriter, "dedupe": store._Deduplicator}
        for owner, name, nth, when in job["hooks"]:
            hook(owners[owner], name, nth, when)
        ca.ingest(job["sources"], job["table"], batch_records=job["batch_records"])

    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(job)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            os._exit(code)
        handle = os.pidfd_open(pid)
        done, _, _ = select.select([handle], [], [], job["delay"] if job["delay"] is not None else job["timeout"])
        if not done:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(handle)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started}), flush=True)
    """
)

Hook = tuple[str, str, int, str]
_Kill = tuple[float | None, Hook | None]  # after a delay, or at a hook

# Exact points: (owner, function, n-th call, before/after it).
KILL_POINTS: dict[str, Hook] = {
    "reading: before the 2nd batch of lines": ("store", "lines_table", 2, "before"),
    "reading: after the 4th batch of lines": ("store", "lines_table", 4, "after"),
    "flattening: before the 1st batch": ("store", "flatten_batch", 1, "before"),
    "flattening: after the 4th batch": ("store", "flatten_batch", 4, "after"),
    "deduplicating: after the 3rd batch": ("dedupe", "new_rows", 3, "after"),
    "writing: a Parquet file half written": ("writer", "_write_part", 3, "after"),
    "writing: after closing the 2nd file": ("writer", "_close", 2, "after"),
    "committing: before the quarantine commit": ("store", "_commit", 1, "before"),
    "committing: quarantine committed, events not": ("store", "_commit", 1, "after"),
    "committing: events committed, before ingest returns": ("store", "_commit", 2, "after"),
}


class _ForkServer:
    """The fork server subprocess (started by the test, ended by closing its stdin)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                [PYTHON, "-c", _FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                text=True, bufsize=1,
            )
        assert self._line() == "ready", self._log_tail()

    def _log_tail(self) -> str:
        """The end of the server's and its children's stderr."""
        return self.log.read_text(errors="replace")[-3000:]

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the fork server died:\n{self._log_tail()}"
        return line.strip()

    def ingest(self, sources: list[str], table: str, *, batch_records: int, hooks: list[Hook] | None = None,
               delay: float | None = None, timeout: float = 300) -> tuple[bool, float]:
        """Ingest in a forked child, SIGKILLed after delay seconds (None: let it end or hit a hook).

        Returns whether it was killed, and the seconds from fork to its end.
        """
        assert self.process.stdin is not None
        job = {"sources": sources, "table": table, "batch_records": batch_records, "hooks": hooks or [],
               "delay": delay, "timeout": timeout}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self._line())
        assert answer["exit"] in (0, -signal.SIGKILL), f"ingest failed in the child (exit {answer['exit']}):\n{self._log_tail()}"
        return answer["exit"] == -signal.SIGKILL, answer["seconds"]

    def close(self) -> None:
        """End the server: it leaves its loop when stdin closes."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class World:
    """A simulated stream, a clean reference load of it, and the clean load's duration."""

    root: Path
    sources: list[str]
    first: list[str]
    second: list[str]
    reference: TableState
    reference_two_loads: TableState
    clean_seconds: float
    server: _ForkServer

    def table(self, name: str) -> str:
        """A fresh table path under the world's folder."""
        path = self.root / "tables" / name
        assert not path.exists()
        return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One simulated dataset (about 4,800 records, rejects and skips included) and its reference loads.

    The reference is a clean ingest by the same forked-child path the kill tests use, and its
    duration is the window the random kill delays are drawn from.
    """
    root = tmp_path_factory.mktemp("faults")
    source = root / "payloads"
    simulate(source, items=2000, seed=29, bad_records=24, other_triggers=8)
    days = sorted(p.name for p in source.iterdir() if p.name != "posts")
    first = [str(source / d) for d in days[:3]]
    second = [str(source / d) for d in days[3:]] + [str(source / "posts")]
    server = _ForkServer(root / "fork-server.log")
    try:
        reference_table = str(root / "reference")
        killed, clean_seconds = server.ingest([str(source)], reference_table, batch_records=2000)
        assert not killed
        two_loads = str(root / "reference-two-loads")
        ca.ingest(first, two_loads, batch_records=2000)
        ca.ingest(second, two_loads, batch_records=2000)
        yield World(
            root=root, sources=[str(source)], first=first, second=second,
            reference=TableState.read(reference_table), reference_two_loads=TableState.read(two_loads),
            clean_seconds=clean_seconds, server=server,
        )
    finally:
        server.close()


def _kill(world: World, sources: list[str], table: str, *, delay: float | None = None, hook: Hook | None = None,
          batch_records: int = 2000) -> bool:
    """Run ingest in a child and kill it after delay seconds or at hook; True when it was killed."""
    killed, _ = world.server.ingest(sources, table, batch_records=batch_records, hooks=[hook] if hook else None,
                                    delay=delay)
    return killed


def _check_after_kill(table: str, expected_if_committed: TableState | None, context: str) -> None:
    """What a killed load leaves is never visible: readers see no table or a fully committed one."""
    state = _visible_state(table)
    if state is not None and expected_if_committed is not None:
        state.assert_equals(expected_if_committed, f"{context}, right after the kill")


def _rerun_and_check(world: World, sources: list[str], table: str, reference: TableState,
                     capsys: pytest.CaptureFixture[str], context: str) -> list[str]:
    """Ingest the same sources into the same table again; the table must equal the clean reference
    while the killed writer's files are still there, the ledger be consistent, and vacuum list
    and remove exactly those files."""
    summary = ca.ingest(sources, table, batch_records=2000)
    assert summary.balanced, f"{context}: {summary}"
    TableState.read(table).assert_equals(reference, context)
    _assert_ledger_consistent(table)
    return _assert_vacuum_cleans(table, capsys, reference, context)


KILL_RUNS_AT_RANDOM = 12
HOOK_BATCH_RECORDS = 600  # several batches, so the n-th call hooks land inside the load


def test_kill_at_random_moments_and_exact_points_then_rerun_equals_one_clean_load(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """22 SIGKILLs of a first load: 12 after delays spread over [0, clean duration], 10 at exact
    points (reading, flattening, deduplicating, writing, committing, with 600-record batches).
    Each time the re-run gives one clean load: 0 rows lost, 0 duplicated, nothing of the killed
    load visible, a consistent ledger; vacuum lists the leftovers and --apply removes them."""
    rng = random.Random(7)
    runs: list[tuple[str, float | None, Hook | None]] = [
        (f"random delay {i + 1}", world.clean_seconds * (i + rng.random()) / KILL_RUNS_AT_RANDOM, None)
        for i in range(KILL_RUNS_AT_RANDOM)
    ]
    runs += [(name, None, hook) for name, hook in KILL_POINTS.items()]
    killed = 0
    leftovers = 0
    for n, (name, delay, hook) in enumerate(runs):
        table = world.table(f"kill-{n:02d}")
        context = f"run {n} ({name}{f', {delay:.2f} s' if delay is not None else ''})"
        was_killed = _kill(world, world.sources, table, delay=delay, hook=hook, batch_records=HOOK_BATCH_RECORDS if hook else 2000)
        killed += was_killed
        if hook is not None:
            assert was_killed, f"{context}: the hook was never reached"
        _check_after_kill(table, world.reference, context)
        leftovers += len(_rerun_and_check(world, world.sources, table, world.reference, capsys, context))
        shutil.rmtree(table)
    assert killed >= len(KILL_POINTS) + KILL_RUNS_AT_RANDOM // 2, f"only {killed} of {len(runs)} runs were killed"
    assert leftovers > 0, "no run left files behind: the kills never hit a writer"


def test_two_kills_in_a_row_then_a_clean_rerun(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A load killed twice (a random moment then an exact point, and the other way round) before
    one clean re-run still gives one clean load, and vacuum cleans both killed writers' files."""
    rng = random.Random(11)
    plans: list[tuple[_Kill, _Kill]] = [
        ((rng.uniform(0.2, 0.8) * world.clean_seconds, None), (None, KILL_POINTS["writing: after closing the 2nd file"])),
        ((None, KILL_POINTS["committing: quarantine committed, events not"]), (rng.uniform(0.2, 0.8) * world.clean_seconds, None)),
    ]
    for n, kills in enumerate(plans):
        table = world.table(f"twice-{n}")
        for k, (delay, hook) in enumerate(kills, start=1):
            context = f"double kill {n}, kill {k}"
            was_killed = _kill(world, world.sources, table, delay=delay, hook=hook, batch_records=HOOK_BATCH_RECORDS)
            assert was_killed or hook is None, f"{context}: the hook was never reached"
            _check_after_kill(table, world.reference, context)
        _rerun_and_check(world, world.sources, table, world.reference, capsys, f"double kill {n}")


def test_kill_during_an_incremental_load_on_a_committed_table(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A first load committed, the second killed (random moments and exact points), the second run
    again: the table equals a clean first-then-second load, and the first load stays visible
    and unchanged throughout."""
    base = world.table("incremental-base")
    ca.ingest(world.first, base, batch_records=2000)
    after_first = TableState.read(base)
    rng = random.Random(5)
    plans: list[tuple[str, float | None, Hook | None]] = [
        ("random delay", rng.uniform(0.2, 0.8) * world.clean_seconds, None),
        ("flattening", None, KILL_POINTS["flattening: after the 4th batch"]),
        ("writing", None, KILL_POINTS["writing: a Parquet file half written"]),
        ("committing", None, KILL_POINTS["committing: quarantine committed, events not"]),
        ("committed", None, KILL_POINTS["committing: events committed, before ingest returns"]),
    ]
    for n, (name, delay, hook) in enumerate(plans):
        table = world.table(f"incremental-{n}")
        shutil.copytree(base, table)
        context = f"incremental kill {n} ({name})"
        _kill(world, world.second, table, delay=delay, hook=hook, batch_records=HOOK_BATCH_RECORDS if hook else 2000)
        state = _visible_state(table)
        assert state is not None, f"{context}: the committed first load is no longer readable"
        if len(state.events) != len(world.reference_two_loads.events):
            state.assert_equals(after_first, f"{context}: right after the kill")
        else:
            state.assert_equals(world.reference_two_loads, f"{context}: right after the kill")
        _rerun_and_check(world, world.second, table, world.reference_two_loads, capsys, context)


_STAGING_NAME = "00000000000000000000.json#1"


@pytest.mark.parametrize("log", ["events", "quarantine"])
def test_a_first_commit_killed_mid_write_does_not_block_the_rerun(
    world: World, capsys: pytest.CaptureFixture[str], log: str
) -> None:
    """Delta's local store writes a commit to ``<version>.json#1`` and then links it into place; a
    kill in between leaves a ``_delta_log`` holding only that partial file (the name was seen by a
    watcher thread during real commits). The re-run must still give one clean load, not refuse
    the table or crash on it."""
    table = world.table(f"staging-{log}")
    point = "committing: quarantine committed, events not" if log == "events" else "committing: before the quarantine commit"
    assert _kill(world, world.sources, table, hook=KILL_POINTS[point], batch_records=2000)
    folder = Path(table) / ("_delta_log" if log == "events" else "_quarantine/_delta_log")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _STAGING_NAME).write_bytes(b'{"commitInfo":{"timestamp":1780003600000,"operation":"CRE')
    _check_after_kill(table, None, f"{log} staging file")
    _rerun_and_check(world, world.sources, table, world.reference, capsys, f"{log} staging file")


def test_vacuum_lists_what_a_killed_first_load_left(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A first load killed after writing its files and before any commit: vacuum (dry run) lists
    those files and --apply removes them, even though no commit exists yet."""
    table = world.table("vacuum-first")
    assert _kill(world, world.sources, table, hook=KILL_POINTS["committing: before the quarantine commit"])
    left = _files_on_disk(table)
    assert left, "the killed load wrote nothing"
    code, out, err = _cli(capsys, "vacuum", "--table", table, "--min-age-hours", "0", "--json")
    assert code == 0, err
    assert set(_one_json(out)["files"]) == left
    code, out, err = _cli(capsys, "vacuum", "--table", table, "--min-age-hours", "0", "--apply", "--json")
    assert code == 0 and _files_on_disk(table) == set()


def test_a_load_that_fails_part_way_leaves_the_table_as_it_was(tmp_path: Path, table: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A second load whose second file vanishes after many good records were read (a capture
    rotated away mid-load): nothing of it is committed or visible, and it removed its own files
    (vacuum finds nothing)."""
    first = write_payload(tmp_path / "a" / "first.ndjson", [make_event(id=f"a{i}") for i in range(50)])
    ca.ingest(str(first), table)
    before = TableState.read(table)
    good = write_payload(tmp_path / "b" / "1-good.ndjson", [make_event(id=f"b{i}", variables={"n": i}) for i in range(3000)])
    vanishing = write_payload(tmp_path / "b" / "2-vanishing.ndjson", [make_event(id=f"c{i}") for i in range(3000)])
    found = store.find_files

    def find_then_lose(sources: Any) -> Any:
        files = found(sources)
        vanishing.unlink()
        return files

    monkeypatch.setattr(store, "find_files", find_then_lose)
    with pytest.raises(SourceError, match="2-vanishing.ndjson"):
        ca.ingest(str(tmp_path / "b"), table, batch_records=500)
    TableState.read(table).assert_equals(before, "after the failed load")
    assert len(ca.read_loads(table)) == 1
    assert _files_on_disk(table) == _live_files(table)
    assert good.exists()


@pytest.mark.parametrize("interrupted", ["after the quarantine commit", "after the events commit"])
@pytest.mark.parametrize("first_load", [True, False])
def test_ctrl_c_just_after_a_commit_never_removes_files_a_commit_lists(
    tmp_path: Path, table: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    interrupted: str, first_load: bool,
) -> None:
    """Ctrl-C lands when the commit call has returned but before the load knew: the table stays readable."""
    if not first_load:
        ca.ingest(str(write_payload(tmp_path / "a" / "first.ndjson", [make_event(id="a1"), "{bad"])), table)
    source = write_payload(tmp_path / "b" / "second.ndjson", [make_event(id=f"b{i}") for i in range(20)] + ["{also bad"])
    commit = store._commit
    which = 1 if interrupted == "after the quarantine commit" else 2

    def commit_then_interrupt(*args: Any, **kwargs: Any) -> Any:
        result = commit(*args, **kwargs)
        calls.append(args[0])
        if len(calls) == which:
            raise KeyboardInterrupt
        return result

    calls: list[str] = []
    monkeypatch.setattr(store, "_commit", commit_then_interrupt)
    assert main(["ingest", str(source), "--table", table]) == 130
    message = capsys.readouterr().err
    monkeypatch.undo()
    assert _files_on_disk(table) == _live_files(table)  # nothing listed was removed, nothing unlisted kept
    committed = interrupted == "after the events commit"
    assert ("had committed before this" in message) == committed
    if committed or not first_load:  # else no load has committed to the table yet
        ca.read_rejected(table)  # readable, whatever it holds
        assert sorted(ca.read_events(table)["item_id"]).count("b1") == int(committed)
    # A re-run completes the load exactly once.
    again = ca.ingest(str(source), table)
    assert (again.files_unchanged == 1) == committed
    events = ca.read_events(table)
    assert sorted(i for i in events["item_id"] if i.startswith("b")) == sorted(f"b{i}" for i in range(20))
    assert list(ca.read_rejected(table)["raw"]).count("{also bad") == 1


# -- limits that protect the user ---------------------------------------------------------------


def _nested_text(depth: int, kind: str) -> str:
    """Compact JSON nested depth levels deep."""
    if kind == "object":
        return '{"k":' * depth + '"leaf"' + "}" * depth
    return "[" * depth + '"leaf"' + "]" * depth


@pytest.mark.parametrize("depth", [500, 5000])
def test_nesting_thousands_of_levels_deep_stays_in_raw_json_only(tmp_path: Path, depth: int) -> None:
    """variables and metadata nested thousands of levels deep: the event loads, nothing past
    max_depth becomes a column, the raw JSON columns keep the objects, and the summary says so."""
    variables = '{"plan":"pro","deep":' + _nested_text(depth, "object") + ',"list":' + _nested_text(depth, "list") + "}"
    metadata = '{"a":' + _nested_text(depth, "object") + "}"
    event = json.dumps(make_event(id="deep", variables={}, metadata={}))
    line = event.replace('"variables": {}', '"variables": ' + variables).replace('"metadata": {}', '"metadata": ' + metadata)
    path = write_payload(tmp_path / "deep.ndjson", [line, make_event(id="plain", variables={"plan": "free"})])
    table = str(tmp_path / "events")
    summary = ca.ingest(str(path), table)
    assert (summary.records, summary.written, summary.rejected) == (2, 2, 0), summary
    assert summary.too_deep >= 2
    assert "deeper than max_depth" in str(summary)
    events = ca.read_events(table).set_index("item_id")
    assert events.loc["deep", "variables__plan"] == "pro"
    max_depth = ca.FlattenLimits().max_depth
    for column in events.columns:
        if column.startswith(("variables__", "metadata__")):
            assert column.count("__") <= max_depth, column
    assert events.loc["deep", "variables_json"].replace(" ", "") == variables
    assert events.loc["deep", "metadata_json"].replace(" ", "") == metadata


def test_user_column_cap_holds_across_loads_and_the_summary_says_so(tmp_path: Path, table: str) -> None:
    """max_user_columns caps the table, not one load: a later load's new keys past the cap stay in
    raw JSON only, are listed in capped_keys, in str(summary) and in the ledger."""
    limits = ca.FlattenLimits(max_user_columns=5)
    first = write_payload(tmp_path / "1.ndjson", [make_event(id="f1", variables={"a": 1, "b": 2, "c": 3})])
    second = write_payload(tmp_path / "2.ndjson", [make_event(id="f2", variables={"d": 4, "e": 5},
                                                              metadata={"m1": "x", "m2": "y"})])
    one = ca.ingest(str(first), table, limits=limits)
    assert one.capped_keys == []
    two = ca.ingest(str(second), table, limits=limits)
    events = ca.read_events(table).set_index("item_id")
    user = sorted(c for c in events.columns if c.startswith(("variables__", "metadata__")))
    assert len(user) == 5, user
    assert len(two.capped_keys) == 2 and two.balanced and two.written == 1
    assert not set(two.capped_keys) & set(user)
    text = str(two)
    assert "max_user_columns" in text and all(key in text for key in two.capped_keys)
    ledger = ca.read_loads(table).set_index("load_id")
    assert sorted(ledger.loc[two.load_id, "capped_keys"]) == sorted(two.capped_keys)
    assert json.loads(events.loc["f2", "variables_json"]) == {"d": 4, "e": 5}
    assert json.loads(events.loc["f2", "metadata_json"]) == {"m1": "x", "m2": "y"}


# Peak memory of each load, from a reset peak. ru_maxrss cannot be reset once threads have exited
# (the kernel folds each exiting thread's peak into it), so the peak is the process's VmHWM,
# reset through /proc/self/clear_refs before each load (what ru_maxrss reports for a process
# that never had threads).
_MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys
    import campaign_analytics as ca

    def peak_mb():
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return peak_mb()

    small, half, big, table = sys.argv[1:5]
    limits = ca.FlattenLimits(max_record_bytes=1 << 20)
    ca.ingest(small, table + "-warm-up", limits=limits)
    growth = {}
    for name, source in (("small", small), ("half", half), ("big", big), ("small-again", small)):
        base = reset_peak()
        summary = ca.ingest(source, table + "-" + name, limits=limits)
        growth[name] = peak_mb() - base
        if name == "big":
            big_summary = summary
    rejected = ca.read_rejected(table + "-big")
    print(json.dumps({"growth": growth, "summary": big_summary.to_dict(),
                      "rejected": rejected[["reason", "raw", "source_line"]].to_dict("records")}))
    """
)


def _can_reset_peak_memory() -> bool:
    """Whether this system lets a process reset its peak resident memory."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _huge_file(folder: Path, name: str, megabytes: int) -> tuple[Path, list[Any], str]:
    """A payload file holding one record of about megabytes MB (between two small ones, for lines)."""
    big = json.dumps(make_event(id="huge", variables={"blob": "x" * (megabytes << 20)}))
    records: list[Any] = [big] if name.endswith(".json") else [make_event(id="before"), big, make_event(id="after")]
    path = write_payload(folder / f"{megabytes}mb-{name}", records, fmt="single" if name.endswith(".json") else None)
    return path, records, big


@pytest.mark.skipif(not _can_reset_peak_memory(), reason="needs /proc/self/clear_refs to measure peak memory")
@pytest.mark.parametrize("name", ["huge.ndjson", "huge.ndjson.gz", "huge.json"])
def test_a_50_mb_record_is_rejected_without_being_held_in_memory(tmp_path: Path, name: str) -> None:
    """A 50 MB record with max_record_bytes=1 MB: rejected with a reason naming its size and the
    limit, only a preview kept, the other records loaded. Measured in a subprocess, its load's
    peak memory grows less than the record's size over a small load, and no more than a 25 MB
    record's load does: memory does not follow the record's size."""
    half, _, _ = _huge_file(tmp_path, name, 25)
    path, records, big = _huge_file(tmp_path, name, 50)
    small = write_payload(tmp_path / "small.ndjson", [make_event(id="s1"), make_event(id="s2")])
    try:
        result = subprocess.run([PYTHON, "-c", _MEMORY_CHILD, str(small), str(half), str(path), str(tmp_path / "t")],
                                capture_output=True, text=True, timeout=300)
    finally:
        path.unlink()
        half.unlink()
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    summary = report["summary"]
    assert summary["rejected"] == 1 and summary["written"] == len(records) - 1 and summary["records"] == len(records)
    (row,) = report["rejected"]
    assert "too large" in row["reason"] and "max_record_bytes" in row["reason"]
    sizes = [int(number.replace(",", "")) for number in re.findall(r"\d[\d,]*", row["reason"])]
    assert any(n >= len(big) for n in sizes), row["reason"]
    assert len(row["raw"]) <= 1024 and row["raw"].startswith('{"trigger"')
    growth = report["growth"]
    over_small = growth["big"] - max(growth["small"], growth["small-again"])
    assert over_small < 50, f"the load of a 50 MB record took {over_small:.0f} MB more at peak than a small load: {growth}"
    assert growth["big"] - growth["half"] < 10, f"peak memory follows the record's size: {growth}"


# -- no harm to inputs or to the rest of the disk -----------------------------------------------


def _snapshot(root: Path, *, skip: Path | None = None) -> dict[str, tuple[Any, ...]]:
    """Every path under root (except skip and below): kind, content hash, size, mtime, mode, inode."""
    out: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = here / name
            info = path.lstat()
            relative = str(path.relative_to(root))
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[relative] = ("file", digest, info.st_size, info.st_mtime_ns, info.st_mode, info.st_ino)
            elif stat.S_ISLNK(info.st_mode):
                out[relative] = ("link", os.readlink(path))
            else:
                out[relative] = ("dir", info.st_mode)
    return out


def test_ingest_never_modifies_or_deletes_its_sources(tmp_path: Path, table: str) -> None:
    """Every kind of source (NDJSON, gzip, array, single body, a file rejected whole, an oversize
    body, a read-only file) is byte-for-byte and mtime-for-mtime the same after loads that
    succeed, are forced, and fail; nothing is added next to them."""
    sources = tmp_path / "in"
    write_payload(sources / "a.ndjson", [make_event(id="a1"), "{broken", make_event("after_message")])
    write_payload(sources / "b.ndjson.gz", [make_event(id="b1")], crlf=True, bom=True)
    write_payload(sources / "c.json", [make_event(id="c1"), make_event(id="c2")], fmt="array")
    write_payload(sources / "d.json", [make_event(id="d1")], fmt="single", pretty=True)
    (sources / "rejected-whole.json").write_bytes(b'[{"trigger": "after_feed_item_sent", "data": {"id": 1}}, oops]')
    write_payload(sources / "oversize.json", [make_event(id="big", variables={"x": "y" * 5000})], fmt="single")
    readonly = write_payload(sources / "readonly.jsonl", [make_event(id="r1")])
    readonly.chmod(0o444)
    (sources / "notes.txt").write_text("not a payload")
    before = _snapshot(sources)
    limits = ca.FlattenLimits(max_record_bytes=2000)
    summary = ca.ingest(str(sources), table, limits=limits)
    assert summary.rejected >= 3 and summary.written >= 5
    assert _snapshot(sources) == before
    ca.ingest(str(sources), table, limits=limits, force=True)
    ca.load(str(sources), limits=limits)
    assert _snapshot(sources) == before
    broken = gzip.compress(b"\n".join(json.dumps(make_event(id=f"z{i}")).encode() for i in range(500)))
    (sources / "zz-truncated.ndjson.gz").write_bytes(broken[: len(broken) // 2])
    before = _snapshot(sources)
    summary = ca.ingest(str(sources), table, limits=limits)
    assert [Path(p).name for p in summary.partial_files] == ["zz-truncated.ndjson.gz"]
    assert _snapshot(sources) == before


_TRAVERSAL = ["../../etc/passwd", "/etc/passwd", "..\\..\\evil", "a/../../../b", "\x00", "nul\x00/../x", "~/.ssh",
              "event_date=../../escape", "_delta_log/../../x", "C:\\Windows\\x", "file:///tmp/x", "..", "/"]


def _traversal_events() -> list[Any]:
    """Events whose every string field, user key and value is a path-like or NUL-laden string."""
    events: list[Any] = []
    for n, text in enumerate(_TRAVERSAL):
        data = {
            "id": text + str(n), "appId": text, "receiver": text, "templateId": text, "label": text,
            "channelId": text, "status": text, "tags": [text, "/abs", "../up"], "templateCategory": text,
            "variables": {text: text, "nested": {text: {text: text}}},
            "metadata": {text: [text], "path": text}, "content": {"url": text},
        }
        events.append(make_event(app_id=text, region=text, webhook=text, **data))
        events.append(make_event("after_push_notification_clicked", pushNotificationId=text, tag=text, category=text))
        events.append({"trigger": text, "appId": text, "data": {"id": text}})  # skipped: not a campaign trigger
    return events


def test_payload_strings_never_choose_output_paths(tmp_path: Path) -> None:
    """Strings with ../, absolute paths and NUL in every field and key: nothing is written outside
    the table directory, and inside it only the layout's own names appear."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("sentinel")
    (root / "deep" / "etc").mkdir(parents=True)
    source = write_payload(root / "in" / "..odd name;$(x).ndjson", _traversal_events())
    table = root / "deep" / "er" / "events"
    before = _snapshot(root)
    summary = ca.ingest(str(source), str(table))
    assert summary.written > 0 and summary.skipped > 0 and summary.balanced
    after = _snapshot(root, skip=table)
    created = {p: v for p, v in after.items() if p not in before or before[p] != v}
    assert set(created) <= {"deep/er", "deep/er/events"}, created
    assert {p: v for p, v in before.items() if p not in after} == {}
    allowed = re.compile(
        r"_commit\.lock|_delta_log/[^/]+|_quarantine/_delta_log/[^/]+|_quarantine/part-[0-9TZ]+-[0-9a-f]{8}-\d{5}(-r)?\.parquet"
        r"|event_date=\d{4}-\d{2}-\d{2}/part-[0-9TZ]+-[0-9a-f]{8}-\d{5}(-r)?\.parquet"
    )
    for folder, _, files in os.walk(table):
        for name in files:
            relative = os.path.relpath(os.path.join(folder, name), table)
            assert allowed.fullmatch(relative), relative
            assert not os.path.islink(os.path.join(folder, name))
    assert (root / "etc" / "passwd").read_text() == "sentinel"
    assert not any((root / "deep" / "etc").iterdir())


def _refused_table(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A table path that exists (or resolves) but cannot be a table; and the folder to watch."""
    if kind == "below_a_regular_file":
        (tmp_path / "occupied.txt").write_text("mine")
        return tmp_path / "occupied.txt" / "events", tmp_path
    if kind == "symlink_to_a_foreign_directory":
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        (foreign / "report.csv").write_text("a,b\n")
        (tmp_path / "link").symlink_to(foreign, target_is_directory=True)
        return tmp_path / "link", tmp_path
    if kind == "dangling_symlink":
        (tmp_path / "link").symlink_to(tmp_path / "unmounted" / "events")
        return tmp_path / "link", tmp_path
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["below_a_regular_file", "symlink_to_a_foreign_directory", "dangling_symlink"])
def test_a_table_path_that_cannot_be_a_table_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """ingest into a path that cannot be a table raises TableError naming it, writes nothing
    anywhere, and the command line says so as one JSON object with exit code 2."""
    source = write_payload(tmp_path / "src" / "in.ndjson", [make_event(id="x")])
    target, watch = _refused_table(tmp_path, kind)
    before = _snapshot(watch)
    with pytest.raises(TableError) as info:
        ca.ingest(str(source), str(target))
    assert str(target) in str(info.value) or os.path.abspath(target) in str(info.value)
    assert _snapshot(watch) == before
    code, out, err = _cli(capsys, "ingest", str(source), "--table", str(target), "--json")
    assert code == 2 and _one_json(out)["error"] == "TableError"
    assert _snapshot(watch) == before


# -- errors people can act on -------------------------------------------------------------------


@dataclass
class ErrorCase:
    """A command line that cannot do its job: the error class and words its message must hold."""

    argv: list[str]
    error: str
    must_mention: list[str]


def _error_case(tmp_path: Path, name: str) -> ErrorCase:
    """Build the files of one error scenario."""
    good = write_payload(tmp_path / "in" / "good.ndjson", [make_event(id="g")])
    table = str(tmp_path / "events")
    if name == "dangling_symlink_source":
        (tmp_path / "in" / "gone.ndjson").symlink_to(tmp_path / "nowhere.ndjson")
        return ErrorCase(["ingest", str(tmp_path / "in"), "--table", table], "SourceError", ["gone.ndjson"])
    if name == "table_below_a_file":
        return ErrorCase(["ingest", str(good), "--table", str(good) + "/events"], "TableError", [str(good)])
    if name == "negative_max_record_bytes":
        return ErrorCase(["ingest", str(good), "--table", table, "--max-record-bytes", "-5"], "ParameterError",
                         ["max_record_bytes", "-5"])
    if name == "max_record_bytes_over_the_cap":
        return ErrorCase(["ingest", str(good), "--table", table, "--max-record-bytes", str(4 << 30)], "ParameterError",
                         ["max_record_bytes", "1 GiB"])
    if name == "negative_max_depth":
        return ErrorCase(["ingest", str(good), "--table", table, "--max-depth", "-1"], "ParameterError",
                         ["max_depth", "-1"])
    if name == "vacuum_of_a_foreign_directory":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "a.txt").write_text("x")
        return ErrorCase(["vacuum", "--table", str(tmp_path / "docs")], "TableError", [str(tmp_path / "docs"), "not a Delta table"])
    if name == "loads_of_a_regular_file":
        return ErrorCase(["loads", "--table", str(good)], "TableError", [str(good), "not a table"])
    raise ValueError(name)


ERROR_CASES = ["dangling_symlink_source", "table_below_a_file", "negative_max_record_bytes",
               "max_record_bytes_over_the_cap", "negative_max_depth", "vacuum_of_a_foreign_directory",
               "loads_of_a_regular_file"]


@pytest.mark.parametrize("name", ERROR_CASES)
def test_errors_name_the_problem_and_stay_machine_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            name: str) -> None:
    """Each failure: exit 2; with --json stdout is exactly one JSON object with "error" and "message";
    the message names the file and what was wrong; stderr is one line, no traceback; and a failed
    ingest commits nothing."""
    case = _error_case(tmp_path, name)
    code, out, err = _cli(capsys, *case.argv, "--json")
    assert code == 2, (out, err)
    payload = _one_json(out)
    assert set(payload) >= {"error", "message"} and payload["error"] == case.error, payload
    for word in case.must_mention:
        assert word in payload["message"], (word, payload["message"])
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"campaign-analytics {case.argv[0]}: ")
    code, out, err = _cli(capsys, *case.argv)
    assert code == 2 and out == "" and "Traceback" not in err
    if case.argv[0] == "ingest":
        assert not os.path.isdir(tmp_path / "events" / "_delta_log")


def test_a_fifo_among_the_sources_does_not_hang_ingest(tmp_path: Path) -> None:
    """A named pipe called *.ndjson inside a source directory (nothing will ever write to it):
    ingest does not block on it; it names it as unusable (exit 2) or passes over it (exit 0)."""
    write_payload(tmp_path / "in" / "good.ndjson", [make_event(id="g")])
    os.mkfifo(tmp_path / "in" / "pipe.ndjson")
    command = [PYTHON, "-m", "campaign_analytics.cli", "ingest", str(tmp_path / "in"), "--table",
               str(tmp_path / "events"), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.communicate()
        pytest.fail("ingest blocked for 15 s on a named pipe among its sources (a load of one small file takes ~2 s)")
    payload = _one_json(out)
    if process.returncode == 2:
        assert payload["error"] == "SourceError" and "pipe.ndjson" in payload["message"]
    else:
        assert process.returncode == 0 and payload["written"] == 1, (out, err)
