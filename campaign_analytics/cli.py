"""`campaign-analytics ingest | metrics | report | simulate | vacuum | loads`.

Exit codes: 0 when the command finished (a load with rejected records is
finished), 1 when a report notebook failed, 2 on a usage error or input that
cannot be used (missing file, a path that is not a table, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import CampaignAnalyticsError, ReportError

__all__ = ["main"]


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=False) + "\n")


def _ingest(args: argparse.Namespace) -> int:
    from .flatten import FlattenLimits
    from .store import ingest

    limits = FlattenLimits(
        max_depth=args.max_depth, max_user_columns=args.max_user_columns, max_record_bytes=args.max_record_bytes
    )
    summary = ingest(
        args.sources, args.table, force=args.force, limits=limits, progress=None if not args.json else False
    )
    if args.json:
        keys = ("load_id", "files", "records", "written", "duplicates", "rejected", "skipped")
        payload = {k: summary.to_dict()[k] for k in keys}
        payload.update(
            files_unchanged=summary.files_unchanged,
            reject_reasons=summary.reject_reasons,
            new_columns=summary.new_columns,
            capped_keys=summary.capped_keys,
            too_deep=summary.too_deep,
            partial_files=summary.partial_files,
            version=summary.version,
            seconds=summary.seconds,
        )
        _print_json(payload)
    else:
        print(summary)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate

    truth = simulate(
        args.out_dir, items=args.items, seed=args.seed, start=args.start, days=args.days,
        bad_records=args.bad_records, other_triggers=args.other_triggers,
    )
    payload = {
        "out_dir": args.out_dir, "items": len(truth.items), "records": truth.records,
        "unique_events": truth.unique_events, "duplicates": truth.duplicates,
        "rejected": truth.rejected, "skipped": truth.skipped,
    }
    if args.json:
        _print_json(payload)
    else:
        print("\n".join(f"{k:>14}  {v}" for k, v in payload.items()))
    return 0


def _loads(args: argparse.Namespace) -> int:
    from .store import read_loads

    frame = read_loads(args.table, files=args.files)
    if args.json:
        sys.stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
    else:
        shown = frame if args.files else frame.drop(columns=["new_columns", "capped_keys"])
        print(shown.to_string(index=False) if len(shown) else "no loads yet")
    return 0


def _vacuum(args: argparse.Namespace) -> int:
    from .store import vacuum

    files = vacuum(args.table, dry_run=not args.apply, min_age_hours=args.min_age_hours)
    if args.json:
        _print_json({"dry_run": not args.apply, "files": files})
    else:
        verb = "removed" if args.apply else "would remove (dry run; --apply to delete)"
        print(f"{verb} {len(files)} file(s) no commit refers to")
        for path in files:
            print(f"  {path}")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    import pandas as pd

    from .backends import events_table
    from .items import items
    from .metrics import summary

    by = [c.strip() for c in args.by.split(",") if c.strip()] if args.by else None
    per_item = items(events_table(args.table, backend=args.backend) if args.backend else args.table)
    frame = summary(per_item, by=by, tz=args.tz, exclude_delivered_on_read=args.exclude_delivered_on_read)
    keys = by or []
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        for column in frame.columns:
            if column.endswith("_date") and pd.api.types.is_datetime64_any_dtype(frame[column]):
                frame[column] = frame[column].dt.strftime("%Y-%m-%d")  # a day, as CSV shows it
        sys.stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
    elif frame.empty:
        print("no items in the table" + (f" to group by {', '.join(keys)}" if keys else ""))
    else:
        with pd.option_context("display.max_columns", None, "display.width", 200):
            shown = [*keys, "sent", "delivered", "read", "interacted", "clicked", "delivery_rate", "read_rate",
                     "click_rate", "ttd_n", "ttd_p50", "ttd_p90", "ttd_p99"]
            print(frame[[c for c in shown if c in frame.columns]].to_string(index=False))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import run_report

    parameters = dict(args.parameter or [])
    written = run_report(args.source, args.table, args.out, parameters=parameters)
    for path in written:
        print(path)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign-analytics",
        description="CometChat campaign webhook events → a Delta Lake table, metrics and reports.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="load raw payload files into the events table")
    ingest.add_argument("sources", nargs="+", metavar="SOURCE", help="files, directories or glob patterns")
    ingest.add_argument("--table", required=True, help="the events table directory (created on first load)")
    ingest.add_argument("--json", action="store_true", help="print one JSON object instead of the text summary")
    ingest.add_argument("--force", action="store_true", help="read files again even if already loaded")
    ingest.add_argument("--max-depth", type=int, default=8, help="user objects deeper than this stay in raw JSON")
    ingest.add_argument("--max-user-columns", type=int, default=1000, help="cap on variables__/metadata__ columns")
    ingest.add_argument("--max-record-bytes", type=int, default=16 << 20, help="larger records are rejected (default 16 MiB, at most 1 GiB)")
    ingest.set_defaults(run=_ingest)

    loads = commands.add_parser("loads", help="show the ledger of loads")
    loads.add_argument("--table", required=True, help="the events table directory")
    loads.add_argument("--files", action="store_true", help="one row per loaded file")
    loads.add_argument("--json", action="store_true", help="print JSON (an array of loads) instead of a table")
    loads.set_defaults(run=_loads)

    metrics = commands.add_parser("metrics", help="engagement rates and time to delivery per group")
    metrics.add_argument("--table", required=True, help="the events table directory")
    metrics.add_argument("--by", default="", help="comma-separated group columns of the items, e.g. "
                         "template_id,template_version, label, channel_type, tag, send_date, send_hour or a "
                         "variables__/metadata__ column (default: one row for everything)")
    metrics.add_argument("--format", choices=("table", "csv", "json"), default="table")
    metrics.add_argument("--tz", default=None, help="time zone for send_date / send_hour (default UTC)")
    metrics.add_argument("--exclude-delivered-on-read", action="store_true",
                         help="leave items marked read through the REST API out of time to delivery")
    metrics.add_argument("--backend", choices=("duckdb", "spark"), default=None,
                         help="query engine (default: embedded DuckDB)")
    metrics.set_defaults(run=_metrics)

    report = commands.add_parser("report", help="execute the notebooks into OUT and export them as HTML")
    report.add_argument("--source", required=True, help="raw payload files, directories or globs")
    report.add_argument("--table", required=True, help="the events table (ingested first)")
    report.add_argument("--out", required=True, help="directory for executed notebooks and HTML")
    report.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="notebook parameter: start, end (UTC send days, YYYY-MM-DD; default: from the first "
                             "item to the day before run_date), run_date (default: today, UTC), template, "
                             "breakdown_key; e.g. -p breakdown_key variables__plan")
    report.set_defaults(run=_report)

    vacuum = commands.add_parser("vacuum", help="list (or --apply: delete) files left by loads that never committed")
    vacuum.add_argument("--table", required=True, help="the events table directory")
    vacuum.add_argument("--apply", action="store_true", help="delete the files (default: only list them)")
    vacuum.add_argument("--min-age-hours", type=float, default=1.0, help="leave files younger than this")
    vacuum.add_argument("--json", action="store_true", help="print the files as a JSON object")
    vacuum.set_defaults(run=_vacuum)

    simulate = commands.add_parser("simulate", help="write realistic synthetic payload files")
    simulate.add_argument("out_dir", metavar="OUTDIR", help="a new or empty directory for the payload files")
    simulate.add_argument("--items", type=int, default=2000, help="feed items and push notifications to simulate")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (0 or more): the same seed, the same files")
    simulate.add_argument("--start", default="2026-11-02", help="first UTC day (YYYY-MM-DD)")
    simulate.add_argument("--days", type=int, default=7, help="days the sends are spread over")
    simulate.add_argument("--bad-records", type=int, default=0, help="malformed records to mix in")
    simulate.add_argument("--other-triggers", type=int, default=0, help="records of other CometChat triggers")
    simulate.add_argument("--json", action="store_true", help="print the truth's counts as one JSON object")
    simulate.set_defaults(run=_simulate)

    for register in _EXTRA_COMMANDS:
        register(commands)
    return parser


_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = parser.parse_args(arguments)
    except SystemExit as exit_:
        sys.stderr.write(said.getvalue())
        # A usage error (argparse exits 2): with --json, it is a JSON object on stdout too, as every other error.
        if exit_.code == 2 and "--json" in arguments:
            lines = said.getvalue().strip().splitlines()
            _print_json({"error": "UsageError", "message": lines[-1] if lines else "invalid arguments"})
        raise
    sys.stderr.write(said.getvalue())
    try:
        return int(args.run(args))
    except ReportError as error:
        _report_error(args, error)
        return 1
    except CampaignAnalyticsError as error:
        _report_error(args, error)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; not an error of ours.
        sys.stderr.close()
        return 0
    except OSError as error:
        # A path the system refuses (a file where a folder must be, no such device, no space): input that cannot be used.
        place = f" {error.filename}" if error.filename else ""
        _report_error(args, OSError(f"cannot use{place}: {error.strerror or error}. Check the path and its permissions."))
        return 2
    except KeyboardInterrupt as error:
        notes = getattr(error, "__notes__", None)
        print(f"interrupted; {'; '.join(notes) if notes else 'nothing was committed by the interrupted step'}", file=sys.stderr)
        return 130


def _report_error(args: argparse.Namespace, error: Exception) -> None:
    if getattr(args, "json", False):
        _print_json({"error": type(error).__name__, "message": str(error)})
    print(f"campaign-analytics {args.command}: {error}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
