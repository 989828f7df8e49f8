"""Ingest speed and memory, side by side with the peer tools, on the same NDJSON file.

    python benchmarks/ingest.py                      # 1,000,000 simulated events
    python benchmarks/ingest.py --events 200000      # a quicker look
    python benchmarks/ingest.py --input my.ndjson    # your own capture
    python benchmarks/ingest.py --rounds 3           # on a noisy machine: the median of 3 rounds

Each contender runs once per round, in a fresh process, on the same file:

* ours:            campaign_analytics.ingest (parse, validate, flatten, dedupe, Delta commit)
* duckdb:          read_json(..., sample_size=-1) -> COPY ... TO parquet
* json_normalize:  orjson per line + pandas.json_normalize -> to_parquet

It prints events/s, peak RSS and the ratios (with several rounds, the contenders take turns
and each figure is the median over the rounds). Targets (issue 2): ours >= 1.0x DuckDB's
rate, >= 8x json_normalize, peak RSS <= 1 GiB. Figures vary with the machine; compare
ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONTENDERS: dict[str, str] = {
    "ours": """
        import campaign_analytics as ca
        summary = ca.ingest(INPUT, OUT + "/table", progress=False)
        rows = summary.written
    """,
    "duckdb": """
        import duckdb
        duckdb.sql(f"COPY (SELECT * FROM read_json('{INPUT}', sample_size=-1)) TO '{OUT}/duckdb.parquet' (FORMAT parquet)")
        rows = duckdb.sql(f"SELECT count(*) FROM '{OUT}/duckdb.parquet'").fetchall()[0][0]
    """,
    "json_normalize": """
        import orjson, pandas as pd
        with open(INPUT, "rb") as handle:
            records = [orjson.loads(line) for line in handle if line.strip()]
        frame = pd.json_normalize(records)
        # Columns whose values change type between events cannot be written as they are.
        for column in frame.columns:
            if frame[column].dtype == object:
                frame[column] = frame[column].map(lambda v: None if v is None else str(v))
        frame.to_parquet(OUT + "/normalize.parquet")
        rows = len(frame)
    """,
}


def _run(name: str, source: Path, out: Path) -> dict[str, float]:
    code = textwrap.dedent(CONTENDERS[name])
    program = (
        "import time, json\n"
        # The peak RSS a process inherits from its parent survives exec: reset it first.
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        f"INPUT, OUT = {str(source)!r}, {str(out)!r}\n"
        "start = time.perf_counter()\n"
        f"{code}\n"
        "seconds = time.perf_counter() - start\n"
        "status = open('/proc/self/status').read()\n"
        "peak = int(status.split('VmHWM:')[1].split()[0]) * 1024\n"
        "print(json.dumps({'seconds': seconds, 'rows': rows, 'peak_rss': peak}))\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _make_input(events: int, work: Path, seed: int) -> Path:
    """One NDJSON file of about `events` simulated webhook records (duplicates included, as in real traffic)."""
    from campaign_analytics.simulate import simulate
    from campaign_analytics.sources import find_files, read_chunks

    target = work / f"events-{events}-{seed}.ndjson"
    if target.exists():
        return target
    raw = work / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    truth = simulate(raw, items=max(1, int(events / 2.3)), seed=seed)
    written = 0
    with open(target, "wb") as out:
        for file in find_files(raw):
            for chunk in read_chunks(file):
                for line in chunk.lines.to_pylist():
                    if line and line.strip() and written < events:
                        out.write(line.strip().replace(b"\n", b" ").replace(b"\r", b" ") + b"\n")
                        written += 1
    shutil.rmtree(raw, ignore_errors=True)
    print(f"input: {written:,} records from {len(truth.items):,} simulated items -> {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--input", type=Path, help="an NDJSON file to use instead of simulated events")
    parser.add_argument("--work", type=Path, default=HERE / "_work")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", choices=sorted(CONTENDERS), help="run only these contenders")
    parser.add_argument("--rounds", type=int, default=1, help="run every contender this many times, taking turns")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")

    args.work.mkdir(parents=True, exist_ok=True)
    source = args.input.resolve() if args.input else _make_input(args.events, args.work, args.seed)
    records = sum(1 for line in open(source, "rb") if line.strip())
    size = os.path.getsize(source)
    print(f"input: {records:,} records, {size / 2**20:,.0f} MiB, {os.cpu_count()} cores\n")

    rounds: dict[str, list[dict[str, float]]] = {}
    for round_ in range(1, args.rounds + 1):
        for name in args.only or list(CONTENDERS):
            out = args.work / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            rounds.setdefault(name, []).append(_run(name, source, out))
            shutil.rmtree(out, ignore_errors=True)
            print(f"  round {round_}: ran {name} in {time.perf_counter() - started:,.1f} s")
    results = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for name, runs in rounds.items()
    }
    for r in results.values():
        r["rate"] = records / r["seconds"]

    print()
    print(f"{'contender':<16}{'seconds':>10}{'events/s':>12}{'peak RSS MiB':>14}{'rows out':>12}{'ours is':>12}")
    ours = results.get("ours")
    for name, r in results.items():
        ratio = f"{ours['rate'] / r['rate']:.2f}x" if ours and name != "ours" else ""
        print(
            f"{name:<16}{r['seconds']:>10.2f}{r['rate']:>12,.0f}{r['peak_rss'] / 2**20:>14,.0f}"
            f"{int(r['rows']):>12,}{ratio:>12}"
        )
    if ours:
        print()
        print("targets: ours >= 1.0x duckdb, >= 8x json_normalize, peak RSS <= 1024 MiB")


if __name__ == "__main__":
    main()
