"""The report: notebooks executed with papermill into a folder and exported to standalone HTML."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs_version

import campaign_analytics as ca
from campaign_analytics import cli, report
from campaign_analytics.errors import ParameterError, ReportError, SourceError, TableError
from campaign_analytics.simulate import simulate

PLOTLY = "application/vnd.plotly.v1+json"
PARAMETERS = {
    "template": "tpl-promo,tpl-welcome",
    "breakdown_key": "variables__plan",
    "start": "2026-11-03",
    "run_date": "2026-11-10",
}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.ipynb"))}


def _plotly_outputs(notebook: Path) -> list[dict]:
    nb = nbformat.read(notebook, as_version=4)
    return [o["data"][PLOTLY] for c in nb.cells for o in c.get("outputs", []) if PLOTLY in o.get("data", {})]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    simulate(raw, items=600, seed=21, bad_records=3, other_triggers=2)
    return raw


@pytest.fixture(scope="module")
def ran(simulated: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict[str, str]]:
    """One report run on simulated data with non-default parameters (about 20 s)."""
    committed = _digests(report.NOTEBOOKS_DIR)
    out = tmp_path_factory.mktemp("report")
    written = report.run_report(simulated, out / "events", out, parameters=PARAMETERS)
    return out, written, committed


@pytest.mark.slow
def test_report_writes_an_executed_notebook_and_an_html_file_per_notebook(ran) -> None:
    out, written, _ = ran
    stems = [Path(name).stem for name in report.NOTEBOOKS]
    assert written == [out / f"{stem}{suffix}" for stem in stems for suffix in (".ipynb", ".html")]
    assert all(path.is_file() and path.stat().st_size > 0 for path in written)
    assert (out / "events" / "_delta_log").is_dir()  # notebook 01 ingested into --table


@pytest.mark.slow
def test_html_embeds_plotly_js_and_draws_every_chart_of_its_notebook(ran) -> None:
    out, _, _ = ran
    minimum = {"01_load_and_check": 1, "02_time_to_delivery": 7, "03_engagement": 10}
    for stem, at_least in minimum.items():
        page = (out / f"{stem}.html").read_text(encoding="utf-8")
        charts = _plotly_outputs(out / f"{stem}.ipynb")
        assert len(charts) >= at_least, stem
        # plotly.js is inlined once, in the head; nothing is fetched from the network.
        assert page.count(f"plotly.js v{get_plotlyjs_version()}") == 1, stem
        assert page.index("window.Plotly = Plotly") < page.index("</head>"), stem
        assert 'src="http' not in page and "<script src=" not in page, stem
        # Every chart: its div, its Plotly.newPlot call, its title and data.
        assert page.count("Plotly.newPlot(") == len(charts), stem
        for number, chart in enumerate(charts, start=1):
            assert f'id="chart-{number}"' in page, (stem, number)
            assert re.search(rf'Plotly\.newPlot\(\s*"chart-{number}"', page), (stem, number)
            title = chart["layout"]["title"]["text"]
            assert json.dumps(title)[1:-1] in page, (stem, title)
            for trace in chart["data"]:
                if trace.get("name"):
                    assert json.dumps(trace["name"])[1:-1] in page, (stem, trace["name"])


@pytest.mark.slow
def test_parameters_reach_the_notebooks_and_outputs_hold_no_machine_paths(ran, simulated: Path) -> None:
    out, _, _ = ran
    for name in report.NOTEBOOKS:
        nb = nbformat.read(out / name, as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1, name
        assert f"source = {str(simulated)!r}".replace("'", '"') in injected[0].source, name
        assert 'template = "tpl-promo,tpl-welcome"' in injected[0].source, name
        outputs = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
        assert str(simulated) not in outputs and str(out) not in outputs, name
        assert "error" not in {o.get("output_type") for c in nb.cells for o in c.get("outputs", [])}, name
    summary = (out / "01_load_and_check.ipynb").read_text(encoding="utf-8")
    # end defaults to the day before run_date
    assert "sends from 2026-11-03 to 2026-11-09 (run date 2026-11-10)" in summary
    engagement = _plotly_outputs(out / "03_engagement.ipynb")
    assert any(chart["layout"]["title"]["text"].endswith("by variables__plan") for chart in engagement)


@pytest.mark.slow
def test_committed_notebooks_are_never_written(ran) -> None:
    _, _, before = ran
    assert _digests(report.NOTEBOOKS_DIR) == before
    assert set(before) == set(report.NOTEBOOKS)


@pytest.mark.slow
def test_a_failing_notebook_exits_1_and_names_the_notebook_and_cell(simulated: Path, tmp_path: Path, capsys) -> None:
    code = cli.main(
        [
            "report",
            "--source",
            str(simulated),
            "--table",
            str(tmp_path / "events"),
            "--out",
            str(tmp_path / "out"),
            "-p",
            "template",
            "tpl-nope",
        ]
    )
    assert code == 1
    message = capsys.readouterr().err
    assert "01_load_and_check.ipynb failed at cell" in message
    assert "ParameterError: no item has template 'tpl-nope'" in message
    assert (tmp_path / "out" / "01_load_and_check.ipynb").is_file()  # with the traceback
    assert not (tmp_path / "out" / "02_time_to_delivery.ipynb").exists()  # later notebooks do not run


def _failing_notebooks(folder: Path) -> Path:
    """Stand-in notebooks: the second one fails in its third cell."""
    for name in report.NOTEBOOKS:
        params = nbformat.v4.new_code_cell('source = None\ntable = None\nrun_date = "2026-11-09"')
        params.metadata["tags"] = ["parameters"]
        cells = [nbformat.v4.new_markdown_cell("# stand-in"), params, nbformat.v4.new_code_cell("x = 1")]
        if name == report.NOTEBOOKS[1]:
            cells.append(nbformat.v4.new_code_cell("# the failing cell\nraise ValueError('boom')"))
        nb = nbformat.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / name)
    return folder


def test_report_error_names_notebook_cell_and_error(tmp_path: Path) -> None:
    notebooks = _failing_notebooks(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ReportError) as caught:
        report.run_report(None, None, out, parameters={"run_date": "2026-11-10"}, notebooks_dir=notebooks)
    message = str(caught.value)
    # cell 0 markdown, 1 parameters, 2 injected parameters, 3 "x = 1", 4 the failing cell
    assert message.startswith("02_time_to_delivery.ipynb failed at cell 4 (In [4]: '# the failing cell')")
    assert "ValueError: boom" in message
    assert str(out / "02_time_to_delivery.ipynb") in message
    assert (out / "01_load_and_check.html").is_file()


def test_a_run_without_run_date_reports_on_the_day_it_runs_not_on_the_notebooks_fixed_day(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in report.NOTEBOOKS:
        params = nbformat.v4.new_code_cell('source = None\ntable = None\nrun_date = "2026-11-09"')
        params.metadata["tags"] = ["parameters"]
        nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell("print(run_date)")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, notebooks / name)
    before = dt.datetime.now(dt.UTC).date()
    report.run_report(None, None, tmp_path / "out", notebooks_dir=notebooks)
    after = dt.datetime.now(dt.UTC).date()
    for name in report.NOTEBOOKS:
        printed = nbformat.read(tmp_path / "out" / name, as_version=4).cells[-1].outputs[0]["text"].strip()
        assert printed in {before.isoformat(), after.isoformat()}
    report.run_report(None, None, tmp_path / "out", parameters={"run_date": "2026-11-10"}, notebooks_dir=notebooks)
    assert nbformat.read(tmp_path / "out" / report.NOTEBOOKS[0], as_version=4).cells[-1].outputs[0]["text"].strip() == "2026-11-10"
    report.run_report(None, None, tmp_path / "out", parameters={"run_date": "None"}, notebooks_dir=notebooks)  # as -p gives it
    printed = nbformat.read(tmp_path / "out" / report.NOTEBOOKS[0], as_version=4).cells[-1].outputs[0]["text"].strip()
    assert printed in {before.isoformat(), dt.datetime.now(dt.UTC).date().isoformat()}


def test_a_failed_run_leaves_no_report_of_an_earlier_run_looking_current(tmp_path: Path) -> None:
    (tmp_path / "notebooks").mkdir()
    notebooks = _failing_notebooks(tmp_path / "notebooks")
    out = tmp_path / "out"
    out.mkdir()
    for name in report.NOTEBOOKS:  # an earlier run's files
        (out / name).write_text("{}")
        (out / name).with_suffix(".html").write_text("old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ReportError):
        report.run_report(None, None, out, parameters={"run_date": "2026-11-10"}, notebooks_dir=notebooks)
    assert sorted(p.name for p in out.iterdir()) == [
        "01_load_and_check.html", "01_load_and_check.ipynb", "02_time_to_delivery.ipynb", "notes.txt"
    ]
    assert (out / "01_load_and_check.html").read_text() != "old"


def test_an_out_or_table_path_that_cannot_be_used_fails_before_any_notebook_runs(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(ParameterError, match="choose a folder for the report"):
            report.run_report("data/sample", tmp_path / "events", out)
    (tmp_path / "not-a-table").mkdir()
    (tmp_path / "not-a-table" / "x.txt").write_text("x")
    for table in (tmp_path / "afile", tmp_path / "not-a-table"):
        with pytest.raises(TableError):
            report.run_report("data/sample", table, tmp_path / "out")
    with pytest.raises(TableError, match="no table"):
        report.run_report(None, tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["nothing quarantined", "no user columns"])
def test_report_runs_on_data_with_no_rejects_or_no_user_columns(tmp_path: Path, case: str) -> None:
    """Clean captures (nothing rejected or skipped), and captures without variables or metadata:
    every notebook runs; the breakdown by a key the items lack is left out with a note."""
    raw = tmp_path / "raw"
    simulate(raw, items=120, seed=5, days=2)
    if case == "no user columns":
        from campaign_analytics.sources import find_files, read_chunks

        records = [json.loads(line) for file in find_files(str(raw)) for chunk in read_chunks(file)
                   for line in chunk.lines.to_pylist()]
        for record in records:
            record["data"].pop("variables", None)
            record["data"].pop("metadata", None)
        raw = tmp_path / "stripped"
        raw.mkdir()
        (raw / "all.ndjson").write_text("\n".join(map(json.dumps, records)))
    out = tmp_path / "out"
    written = report.run_report(raw, tmp_path / "events", out, parameters={"run_date": "2026-11-04"})
    assert len(written) == 6
    if case == "no user columns":
        executed = nbformat.read(out / "03_engagement.ipynb", as_version=4)
        printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
        assert "No breakdown: 'metadata__experiment__arm' is not" in printed


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"colour": "red"}, "unknown report parameter 'colour'"),
        ({"table": "x"}, "pass table as its own argument"),
        ({"start": "2026-13-01"}, "start='2026-13-01' is not a date"),
        ({"start": "2026-11-05", "end": "2026-11-04"}, "start 2026-11-05 is after end 2026-11-04"),
        # The end by default: the day before run_date, today unless given.
        ({"start": "2099-01-01"}, "start 2099-01-01 is after end"),
        ({"start": "2026-11-05", "run_date": "2026-11-05"}, "start 2026-11-05 is after end 2026-11-04"),
    ],
)
def test_bad_parameters_fail_before_any_notebook_runs(tmp_path: Path, parameters: dict, expected: str) -> None:
    with pytest.raises(ParameterError, match=expected):
        report.run_report("data/sample", tmp_path / "events", tmp_path / "out", parameters=parameters)
    assert not (tmp_path / "out").exists()


def test_missing_source_and_out_in_the_notebooks_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        report.run_report(tmp_path / "nothing-here", tmp_path / "events", tmp_path / "out")
    with pytest.raises(ParameterError, match="notebooks' own folder"):
        report.run_report("data/sample", tmp_path / "events", report.NOTEBOOKS_DIR)


def test_cli_maps_parameter_errors_to_exit_2(tmp_path: Path, capsys) -> None:
    code = cli.main(
        [
            "report",
            "--source",
            "data/sample",
            "--table",
            str(tmp_path / "t"),
            "--out",
            str(tmp_path / "o"),
            "-p",
            "colour",
            "red",
        ]
    )
    assert code == 2
    assert "unknown report parameter 'colour'" in capsys.readouterr().err


def test_none_spelled_as_text_is_none() -> None:
    assert report._parameter_values({"template": "None", "end": "", "start": "null"}, {"template", "end", "start"}) == {
        "template": None,
        "end": None,
        "start": None,
    }


def test_report_window_defaults_to_the_day_before_the_run() -> None:
    assert report.report_window(None, None, "2026-11-09") == (None, dt.date(2026, 11, 8))
    assert report.report_window("2026-11-01", None, dt.date(2026, 11, 3)) == (
        dt.date(2026, 11, 1),
        dt.date(2026, 11, 2),
    )
    assert report.report_window(None, "2026-11-20", "2026-11-09")[1] == dt.date(2026, 11, 20)
    with pytest.raises(ParameterError, match="run_date"):
        report.report_window(None, None, "tomorrow")


def test_select_items_keeps_the_send_days_and_templates(tmp_path: Path) -> None:
    table = tmp_path / "events"
    ca.ingest("data/sample", table, progress=False)
    every = report.select_items(table).to_pandas()
    chosen = report.select_items(table, start="2026-11-03", end="2026-11-04", template=["tpl-promo", "tpl-reminder"])
    frame = chosen.to_pandas()
    days = frame["sent_at"].dt.tz_convert("UTC").dt.date
    expected = every[
        every["template_id"].isin(["tpl-promo", "tpl-reminder"])
        & every["sent_at"].dt.tz_convert("UTC").dt.date.between(dt.date(2026, 11, 3), dt.date(2026, 11, 4))
    ]
    assert len(frame) == len(expected) > 0
    assert days.min() >= dt.date(2026, 11, 3) and days.max() <= dt.date(2026, 11, 4)
    campaigns = report.select_campaigns(table, start="2026-11-03", end="2026-11-04", template="tpl-promo")
    assert campaigns["template_id"].eq("tpl-promo").all()
    assert campaigns["sent_at"].dt.date.between(dt.date(2026, 11, 3), dt.date(2026, 11, 4)).all()


def test_short_paths_and_for_display_show_nothing_machine_specific() -> None:
    assert report.short_paths([]) == []
    assert report.short_paths(["/a/b/x.json", "/a/b/x.json"]) == ["x.json", "x.json"]
    frame = pd.DataFrame(
        {
            "sent_at": pd.to_datetime(["2026-11-02T10:00:01Z", None], utc=True),
            "difference": [-0.25, 0.0],
            "chi2": [1.23456, float("nan")],
            "trigger": pd.Series(["a", None], dtype="str"),
        }
    )
    shown = report.for_display(frame)
    assert shown.to_dict("list") == {
        "sent_at": ["2026-11-02 10:00:01", ""],
        "difference": ["-25.0%", "0.0%"],
        "chi2": [1.23, ""],
        "trigger": ["a", "(none)"],
    }
