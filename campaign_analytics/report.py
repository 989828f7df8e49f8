"""The report: the three analysis notebooks, executed with papermill and exported to HTML.

:func:`run_report` is what ``campaign-analytics report`` runs: it executes
``notebooks/01_load_and_check.ipynb``, ``02_time_to_delivery.ipynb`` and
``03_engagement.ipynb`` with the given parameters into an output folder and
exports each to a standalone HTML file whose charts stay interactive offline
(plotly.js is embedded; nothing is fetched from a CDN).

The other functions are the small helpers the notebooks share, so that the
notebooks hold no logic of their own beyond calls and display:
:func:`report_window` (the date range of a run), :func:`template_ids` (the
template filter), :func:`select_items` and :func:`select_campaigns` (the
items and campaigns of that range and those templates),
:func:`breakdown_column` (a checked ``variables__*`` / ``metadata__*``
column), :func:`short_paths` (file names without the machine-specific
folder), :func:`for_display` (rounded, deterministic tables) and
:func:`seconds_text` (durations in the summary sentences).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pandas as pd

from campaign_analytics.errors import ParameterError, ReportError

if TYPE_CHECKING:  # pragma: no cover
    import ibis

__all__ = [
    "KERNEL_NAME",
    "NOTEBOOKS",
    "NOTEBOOKS_DIR",
    "PARAMETERS",
    "breakdown_column",
    "export_html",
    "for_display",
    "report_window",
    "run_report",
    "seconds_text",
    "select_campaigns",
    "select_items",
    "short_paths",
    "template_ids",
]

NOTEBOOKS_DIR: Final[Path] = Path(__file__).resolve().parent.parent / "notebooks"
"""Where the committed notebooks live (the ``notebooks/`` folder of the repository)."""

NOTEBOOKS: Final[tuple[str, ...]] = (
    "01_load_and_check.ipynb",
    "02_time_to_delivery.ipynb",
    "03_engagement.ipynb",
)
"""The report's notebooks, in the order they run (01 loads the table the others read)."""

KERNEL_NAME: Final[str] = "python3"
"""The kernel the notebooks name and the report runs them with."""

PARAMETERS: Final[Mapping[str, str]] = {
    "source": "raw payload files: a file, folder or glob (the report passes --source)",
    "table": "the events table; None: ingest source into a fresh temporary table (the report passes --table)",
    "start": "first UTC send day, YYYY-MM-DD; None: from the first item",
    "end": "last UTC send day, YYYY-MM-DD; None: the day before run_date",
    "run_date": "the day the report is run for, YYYY-MM-DD; the report's default: today (UTC)",
    "template": "template id(s) to keep, comma-separated; None: every template",
    "breakdown_key": "a variables__* or metadata__* column to break engagement down by",
}
"""The notebook parameters (the ``parameters`` cell of every notebook) and what they mean."""

_PLOTLY_MIMETYPE: Final[str] = "application/vnd.plotly.v1+json"
_NONE_TEXTS: Final[frozenset[str]] = frozenset({"", "none", "null"})
_CELL_TIMEOUT_S: Final[int] = 600
_CHART_HEIGHT: Final[str] = "500px"

# The JupyterLab look of nbconvert's "lab" template, with plotly.js inlined in the
# head and every script that would be fetched from a CDN (require.js, MathJax,
# mermaid) left out: the reports are read on machines without internet.
_HTML_TEMPLATE_NAME: Final[str] = "campaign_analytics_report.html.j2"
_HTML_TEMPLATE: Final[str] = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}
<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>
<script type="text/javascript">{{ resources.plotly_js }}</script>
{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


# ---------------------------------------------------------------- run the report


def run_report(
    source: str | os.PathLike[str] | None,
    table: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    *,
    notebooks_dir: str | os.PathLike[str] | None = None,
    timeout: int = _CELL_TIMEOUT_S,
) -> list[Path]:
    """Execute the report notebooks into ``out`` and export each to standalone HTML.

    The notebooks run in order (01 ingests ``source`` into ``table``, 02 and 03
    read the table) with papermill, in a kernel of this Python interpreter,
    with the notebooks' folder as working directory. Each executed notebook
    is written to ``out/<name>.ipynb`` and exported to ``out/<name>.html``,
    plotly.js embedded so the charts are interactive without internet. The
    files of an earlier run there are removed first, so after a failed run
    ``out`` holds only what this run produced. The committed notebooks are
    never written to.

    Parameters
    ----------
    source
        Raw payload files, folders or a glob, passed to the notebooks as an
        absolute path. ``None``: do not ingest, only read ``table``.
    table
        The events table, passed as an absolute path; created by notebook 01
        when it does not exist. ``None``: every notebook ingests ``source``
        into a temporary table of its own.
    out
        Output folder (created if missing). It must not be the notebooks' folder.
    parameters
        Other notebook parameters by name (see :data:`PARAMETERS`): ``start``,
        ``end``, ``run_date``, ``template``, ``breakdown_key``. Values may be
        text, as the command line gives them; ``"None"``, ``"null"`` or ``""``
        mean None. Each notebook receives the parameters it declares.
        ``run_date`` defaults to today (UTC), so a scheduled run reports up to
        yesterday; the committed notebooks fix their own for reproducible outputs.
    notebooks_dir
        Folder holding the notebooks (default :data:`NOTEBOOKS_DIR`).
    timeout
        Seconds one cell may run before the run fails.

    Returns
    -------
    list[pathlib.Path]
        The files written: for each notebook, the executed ``.ipynb`` then its ``.html``.

    Raises
    ------
    ParameterError
        An unknown parameter name, ``source`` or ``table`` among ``parameters``,
        a date that cannot be read, or ``out`` is the notebooks' folder or
        cannot be a folder.
    TableError
        ``table`` is not an events table (or does not exist and ``source`` is None).
    SourceError
        ``source`` matches no readable file.
    ReportError
        A notebook failed: the message names the notebook, the cell (its index
        in the executed notebook and its first line) and the error; the
        executed notebook with the traceback is in ``out``.

    Examples
    --------
    Parameters are checked before anything runs:

    >>> import tempfile
    >>> run_report("data/sample", None, tempfile.mkdtemp(), parameters={"colour": "red"})
    Traceback (most recent call last):
    ...
    campaign_analytics.errors.ParameterError: unknown report parameter 'colour'; the notebooks take: breakdown_key, end, run_date, start, template (source and table are arguments of their own)

    A run on the sample (about 20 seconds):

    >>> written = run_report("data/sample", "reports/events", "reports",
    ...                      parameters={"template": "tpl-promo"})  # doctest: +SKIP
    >>> [path.name for path in written]  # doctest: +SKIP
    ['01_load_and_check.ipynb', '01_load_and_check.html', '02_time_to_delivery.ipynb', ...]
    """
    folder = Path(notebooks_dir).resolve() if notebooks_dir is not None else NOTEBOOKS_DIR
    inputs = [folder / name for name in NOTEBOOKS]
    missing = [str(path) for path in inputs if not path.is_file()]
    if missing:
        raise ReportError(
            f"the report notebooks are missing: {', '.join(missing)}. Run the report from a checkout of the "
            "repository (the notebooks are not part of the installed package) or pass notebooks_dir."
        )
    out_dir = Path(out).resolve()
    if out_dir == folder:
        raise ParameterError(f"--out {out_dir} is the notebooks' own folder; choose another folder for the report")
    _check_out_dir(out_dir)

    papermill = _import_papermill()
    declared = {path.name: set(papermill.inspect_notebook(str(path))) for path in inputs}
    values = _parameter_values(parameters, set().union(*declared.values()))
    # Not the date fixed in the notebooks' parameters cell: a run reports on the day it runs.
    if values.get("run_date") is None:
        values["run_date"] = dt.datetime.now(dt.UTC).date().isoformat()
    _check_dates(values)
    if source is not None:
        from campaign_analytics.sources import find_files

        find_files(os.path.abspath(os.fspath(source)))  # SourceError now rather than in a cell
    values["source"] = os.path.abspath(os.fspath(source)) if source is not None else None
    values["table"] = os.path.abspath(os.fspath(table)) if table is not None else None
    if values["table"] is not None:
        from campaign_analytics.store import _open_table

        # A path that is not an events table (or no table, with nothing to ingest): TableError now rather than in a cell.
        _open_table(values["table"], must_exist=source is None)

    out_dir.mkdir(parents=True, exist_ok=True)
    # Last run's files go first, so a run that fails part way never leaves them looking current.
    for path in inputs:
        for stale in (out_dir / path.name, (out_dir / path.name).with_suffix(".html")):
            stale.unlink(missing_ok=True)
    written: list[Path] = []
    for path in inputs:
        executed = out_dir / path.name
        own = {name: value for name, value in values.items() if name in declared[path.name]}
        _execute(papermill, path, executed, own, cwd=folder, timeout=timeout)
        written.append(executed)
        written.append(export_html(executed, executed.with_suffix(".html")))
    return written


def _check_out_dir(out_dir: Path) -> None:
    """The report folder is, or can be made, a folder: no file in its place or on the way to it."""
    for place in (out_dir, *out_dir.parents):
        if place.exists():
            if not place.is_dir():
                what = "is a file" if place == out_dir else f"cannot be made: {place} is a file"
                raise ParameterError(f"--out {out_dir} {what}; choose a folder for the report")
            return


def _import_papermill() -> Any:
    try:
        import papermill
    except ImportError as error:  # pragma: no cover - the notebooks extra is part of every install we make
        raise ReportError(
            "the report needs papermill and nbconvert: pip install 'campaign-analytics[notebooks]'"
        ) from error
    return papermill


def _parameter_values(parameters: Mapping[str, Any] | None, declared: set[str]) -> dict[str, Any]:
    """The parameters to inject: names checked, None spelled as text turned into None."""
    values: dict[str, Any] = {}
    for name, value in (parameters or {}).items():
        if name in ("source", "table"):
            raise ParameterError(f"pass {name} as its own argument (--{name}), not as a -p parameter")
        if name not in declared:
            valid = ", ".join(sorted(declared - {"source", "table"}))
            raise ParameterError(
                f"unknown report parameter {name!r}; the notebooks take: {valid} (source and table are arguments of their own)"
            )
        values[name] = None if isinstance(value, str) and value.strip().lower() in _NONE_TEXTS else value
    return values


def _check_dates(values: Mapping[str, Any]) -> None:
    """Read the date parameters now, so a typo or an empty range fails before any notebook runs."""
    report_window(values.get("start"), values.get("end"), values.get("run_date"))


def _execute(
    papermill: Any, notebook: Path, executed: Path, parameters: dict[str, Any], *, cwd: Path, timeout: int
) -> None:
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            cwd=str(cwd),
            progress_bar=False,
            log_output=False,
            execution_timeout=timeout,
            kernel_manager_class=_this_interpreter_kernel_manager(),
        )
    except PapermillExecutionError as error:
        first_line = next((line for line in str(error.source).splitlines() if line.strip()), "")
        raise ReportError(
            f"{notebook.name} failed at cell {error.cell_index} (In [{error.exec_count}]: {first_line.strip()!r}): "
            f"{error.ename}: {error.evalue}. The executed notebook with the traceback is {executed}"
        ) from error


@functools.cache
def _this_interpreter_kernel_manager() -> type:
    """A kernel manager whose ``python3`` kernel is this interpreter.

    The report must run in the environment that has campaign_analytics, even
    where no kernelspec was installed or a user-level ``python3`` kernelspec
    points at another Python.
    """
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from traitlets import default

    class _Specs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name == KERNEL_NAME:
                return self.kernel_spec_class(resource_dir=RESOURCES, **get_kernel_dict())
            return super().get_kernel_spec(kernel_name)

    class _Manager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _default_specs(self) -> KernelSpecManager:
            return _Specs(data_dir=self.data_dir)

    return _Manager


def export_html(notebook: str | os.PathLike[str], html: str | os.PathLike[str]) -> Path:
    """Export an executed notebook to one standalone HTML file with interactive charts.

    Every plotly output (``application/vnd.plotly.v1+json``, what
    :func:`campaign_analytics.charts.use_notebook_renderer` makes) becomes a
    ``<div>`` drawn by ``Plotly.newPlot``; plotly.js itself is inlined once in
    the page head, so the file needs no network. Other outputs look as in
    JupyterLab.

    Parameters
    ----------
    notebook
        The executed ``.ipynb``.
    html
        The file to write.

    Returns
    -------
    pathlib.Path
        ``html``.

    Examples
    --------
    >>> import tempfile, nbformat, plotly.graph_objects as go
    >>> folder = Path(tempfile.mkdtemp())
    >>> cell = nbformat.v4.new_code_cell("fig.show()", execution_count=1, outputs=[nbformat.v4.new_output(
    ...     "display_data", data={"application/vnd.plotly.v1+json": go.Figure(go.Bar(y=[1, 2])).to_plotly_json()})])
    >>> nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / "n.ipynb")
    >>> page = export_html(folder / "n.ipynb", folder / "n.html").read_text()
    >>> page.count("Plotly.newPlot("), 'src="http' in page
    (1, False)
    """
    import jinja2
    import nbformat
    import plotly.io as pio
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    source = Path(notebook)
    target = Path(html)
    nb = nbformat.read(source, as_version=4)
    figure = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            bundle = output.get("data", {})
            if _PLOTLY_MIMETYPE not in bundle:
                continue
            figure += 1
            spec = bundle[_PLOTLY_MIMETYPE]
            bundle["text/html"] = pio.to_html(
                {"data": spec.get("data", []), "layout": spec.get("layout", {})},
                config=spec.get("config") or None,
                include_plotlyjs=False,
                full_html=False,
                div_id=f"chart-{figure}",
                default_height=_CHART_HEIGHT,
                validate=False,
            )
            del bundle[_PLOTLY_MIMETYPE]
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({_HTML_TEMPLATE_NAME: _HTML_TEMPLATE})],
        template_file=_HTML_TEMPLATE_NAME,
    )
    body, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"name": source.stem}, "plotly_js": get_plotlyjs()}
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return target


# ---------------------------------------------------------------- notebook helpers


def report_window(
    start: str | dt.date | None, end: str | dt.date | None, run_date: str | dt.date | None
) -> tuple[dt.date | None, dt.date]:
    """The UTC send days a run covers: ``start`` to ``end``, both included.

    ``end`` defaults to the day before ``run_date`` (the last whole day before
    the run), so a scheduled run with ``run_date`` set to today reports up
    to yesterday. ``run_date`` None means today (UTC).

    Parameters
    ----------
    start, end, run_date
        ISO dates (``"2026-11-09"``), ``datetime.date`` or None.

    Returns
    -------
    tuple
        ``(first day or None, last day)``.

    Raises
    ------
    ParameterError
        A value that is not a date, or ``start`` after ``end``.

    Examples
    --------
    >>> report_window(None, None, "2026-11-09")
    (None, datetime.date(2026, 11, 8))
    >>> report_window("2026-11-03", "2026-11-04", "2026-11-09")
    (datetime.date(2026, 11, 3), datetime.date(2026, 11, 4))
    """
    first = _as_date(start, "start")
    day = _as_date(run_date, "run_date") or dt.datetime.now(dt.UTC).date()
    last = _as_date(end, "end") or day - dt.timedelta(days=1)
    if first is not None and first > last:
        raise ParameterError(f"start {first} is after end {last}: the date range is empty")
    return first, last


def _as_date(value: str | dt.date | None, name: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if text.lower() in _NONE_TEXTS:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ParameterError(f"{name}={value!r} is not a date; use YYYY-MM-DD, e.g. '2026-11-09'") from None


def select_items(
    source: str | os.PathLike[str] | pd.DataFrame | ibis.Table,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    template: str | Sequence[str] | None = None,
) -> ibis.Table:
    """The items of a report: sent on the UTC days ``start`` to ``end``, of the given templates.

    Parameters
    ----------
    source
        An events source (table path, events frame or Ibis table), as for
        :func:`campaign_analytics.items.items`.
    start, end
        First and last UTC day of ``sent_at``, both included; None leaves
        that side open. With either bound, items whose ``sent_at`` is
        unknown are left out.
    template
        Template id, comma-separated ids or a list of ids; None keeps all.

    Returns
    -------
    ibis.Table
        The items table (lazy), filtered.

    Raises
    ------
    ParameterError
        A template that no item of ``source`` has (the message lists those
        that exist), or a date that cannot be read.

    Examples
    --------
    >>> import campaign_analytics as ca, tempfile
    >>> path = tempfile.mkdtemp() + "/events"
    >>> _ = ca.ingest("data/sample", path)
    >>> chosen = select_items(path, start="2026-11-03", end="2026-11-04", template="tpl-promo")
    >>> sorted(chosen.template_id.to_pandas().unique())
    ['tpl-promo']
    >>> select_items(path, template="tpl-nope")
    Traceback (most recent call last):
    ...
    campaign_analytics.errors.ParameterError: no item has template 'tpl-nope'; the templates are: tpl-digest, tpl-promo, tpl-reminder, tpl-welcome, tpl-winback
    """
    import ibis

    from campaign_analytics.backends import execute
    from campaign_analytics.items import items

    table = items(source)
    wanted = template_ids(template)
    if wanted:
        known = execute(table.select("template_id").distinct())["template_id"].dropna().tolist()
        unknown = [t for t in wanted if t not in known]
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            names = ", ".join(repr(t) for t in unknown)
            raise ParameterError(f"no item has template {names}; the templates are: {listed}")
        table = table.filter(table.template_id.isin(wanted))
    first, last = _as_date(start, "start"), _as_date(end, "end")
    if first is not None:
        table = table.filter(table.sent_at >= ibis.literal(pd.Timestamp(first, tz="UTC")))
    if last is not None:
        table = table.filter(table.sent_at < ibis.literal(pd.Timestamp(last + dt.timedelta(days=1), tz="UTC")))
    return table


def template_ids(template: str | Sequence[str] | None) -> list[str]:
    """The template ids of a ``template`` parameter, sorted; empty for None (every template).

    Examples
    --------
    >>> template_ids("tpl-welcome, tpl-promo")
    ['tpl-promo', 'tpl-welcome']
    >>> template_ids(None)
    []
    """
    if template is None:
        return []
    parts = template.split(",") if isinstance(template, str) else list(template)
    return sorted({str(part).strip() for part in parts if str(part).strip()})


def select_campaigns(
    source: str | os.PathLike[str] | pd.DataFrame | ibis.Table,
    *,
    start: str | dt.date | None = None,
    end: str | dt.date | None = None,
    template: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """The campaigns of a report: :func:`campaign_analytics.metrics.campaigns`, filtered like :func:`select_items`.

    A campaign's day is the UTC day of its ``sent_at``, or of ``scheduled_at``
    when it has no ``sent_at``; with a bound, campaigns with neither are left out.

    Parameters
    ----------
    source
        An events source, as for :func:`campaign_analytics.metrics.campaigns`.
    start, end
        First and last UTC day, both included; None leaves that side open.
    template
        Template id(s) to keep; None keeps all.

    Returns
    -------
    pandas.DataFrame
        The campaigns frame, same columns, sorted by ``campaign_id``.

    Examples
    --------
    >>> import campaign_analytics as ca, tempfile
    >>> path = tempfile.mkdtemp() + "/events"
    >>> _ = ca.ingest("data/sample", path)
    >>> select_campaigns(path, start="2026-11-05", template="tpl-promo")[["name", "status"]]
                  name     status
    0  Black Friday #5  completed
    """
    from campaign_analytics.metrics import campaigns

    frame = campaigns(source)
    keep = pd.Series(True, index=frame.index)
    wanted = template_ids(template)
    if wanted:
        keep &= frame["template_id"].isin(wanted)
    first, last = _as_date(start, "start"), _as_date(end, "end")
    if first is not None or last is not None:
        day = frame["sent_at"].fillna(frame["scheduled_at"]).dt.tz_convert("UTC").dt.date
        known = day.notna()
        if first is not None:
            keep &= known & (day >= first)
        if last is not None:
            keep &= known & (day <= last)
    return frame.loc[keep.to_numpy(dtype=bool)].reset_index(drop=True)


def seconds_text(seconds: float | None) -> str:
    """A duration in words for a summary sentence: seconds, minutes, hours or days.

    Examples
    --------
    >>> [seconds_text(s) for s in (0.4, 29.0, 1355.2, 17954.04, 200000.0, float("nan"))]
    ['0.4 s', '29 s', '22.6 min', '5.0 h', '2.3 days', 'n/a']
    """
    if seconds is None or pd.isna(seconds):
        return "n/a"
    value = float(seconds)
    if abs(value) < 10:
        return f"{value:.1f} s"
    if abs(value) < 120:
        return f"{value:.0f} s"
    if abs(value) < 2 * 3600:
        return f"{value / 60:.1f} min"
    if abs(value) < 2 * 86400:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} days"


def breakdown_column(table: ibis.Table | pd.DataFrame, key: str | None, *, required: bool = True) -> str | None:
    """Check that ``key`` is a ``variables__*`` / ``metadata__*`` column of ``table``.

    Parameters
    ----------
    table
        Items (or events), Ibis or pandas.
    key
        The column name, e.g. ``"metadata__experiment__arm"``.
    required
        False: a ``key`` that is None or not such a column gives None instead
        of an error (a scheduled report then leaves its breakdown out rather
        than failing on a day whose data lacks the key).

    Returns
    -------
    str or None
        ``key``, or None (only when not ``required``).

    Raises
    ------
    ParameterError
        ``key`` is not such a column (and ``required``); the message lists the ones there are.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame(columns=["item_id", "variables__plan", "metadata__source"])
    >>> breakdown_column(frame, "variables__plan")
    'variables__plan'
    >>> breakdown_column(frame, "plan")
    Traceback (most recent call last):
    ...
    campaign_analytics.errors.ParameterError: breakdown_key 'plan' is not a variables__/metadata__ column of the items; choose one of: metadata__source, variables__plan
    >>> print(breakdown_column(frame, "plan", required=False))
    None
    """
    from campaign_analytics.items import user_columns

    columns = user_columns(list(table.columns))
    if key not in columns:
        if not required:
            return None
        raise ParameterError(
            f"breakdown_key {key!r} is not a variables__/metadata__ column of the items; "
            f"choose one of: {', '.join(sorted(columns)) or 'none (the items have no user columns)'}"
        )
    return key


def short_paths(paths: Iterable[str]) -> list[str]:
    """File paths relative to the folder they all share, so no machine-specific prefix is shown.

    Examples
    --------
    >>> short_paths(["/data/in/2026-11-02/a.ndjson", "/data/in/posts/b.json"])
    ['2026-11-02/a.ndjson', 'posts/b.json']
    >>> short_paths(["/data/in/a.ndjson"])
    ['a.ndjson']

    Paths loaded from another working folder (relative) and absolute ones are
    shortened each among their own kind:

    >>> short_paths(["captures/a.ndjson", "/data/in/b.ndjson", "captures/c.ndjson"])
    ['a.ndjson', 'b.ndjson', 'c.ndjson']
    """
    items = [os.path.normpath(str(p)) for p in paths]
    shortened: dict[int, str] = {}
    for absolute in (True, False):
        group = [i for i, p in enumerate(items) if os.path.isabs(p) == absolute]
        if not group:
            continue
        distinct = {items[i] for i in group}
        root = os.path.commonpath(distinct)
        if len(distinct) == 1 or root in distinct:
            root = os.path.dirname(root)
        for i in group:
            shortened[i] = os.path.relpath(items[i], root or os.curdir).replace(os.sep, "/")
    return [shortened[i] for i in range(len(items))]


_PERCENT_COLUMNS: Final = re.compile(
    r"^(?:(?:delivery|read|interaction|click)_rate(?:_of_delivered)?(?:_lo|_hi)?|rate_a|rate_b|difference|.*_share)$"
)
_P_VALUE_COLUMNS: Final[frozenset[str]] = frozenset({"p_value", "p_holm", "chi2_p_value"})
_MISSING_TEXT: Final[str] = "(none)"


def for_display(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of a metric frame that reads well and prints the same on every machine.

    Rates and shares become percentages with one decimal (``"44.5%"``),
    p-values two significant digits, seconds and other floats are rounded to
    one decimal (``chi2`` to two), timestamps become UTC text (dates alone
    when every value is a midnight, e.g. ``send_date``), lists become
    comma-joined text, missing text becomes ``"(none)"`` (as in the charts)
    and a missing number an empty cell.

    Parameters
    ----------
    frame
        Any frame of :mod:`campaign_analytics.metrics` (or a part of one).

    Returns
    -------
    pandas.DataFrame
        The same rows and columns, for display only.

    Examples
    --------
    >>> frame = pd.DataFrame({"label": ["a", None], "sent": [3, 4], "read_rate": [2 / 3, None],
    ...                       "ttd_p50": [1.234, 2.0], "p_holm": [0.000123, None],
    ...                       "tags": [["vip", "web"], []],
    ...                       "send_date": pd.to_datetime(["2026-11-02", "2026-11-03"])})
    >>> for_display(frame)
        label  sent read_rate  ttd_p50   p_holm      tags   send_date
    0       a     3     66.7%      1.2  0.00012  vip, web  2026-11-02
    1  (none)     4                2.0                     2026-11-03
    """
    shown = frame.copy()
    for column in shown.columns:
        values = shown[column]
        name = str(column)
        if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values.dtype):
            stamps = values.dt.tz_convert("UTC") if isinstance(values.dtype, pd.DatetimeTZDtype) else values
            known = stamps.dropna()
            layout = "%Y-%m-%d" if (known == known.dt.normalize()).all() else "%Y-%m-%d %H:%M:%S"
            shown[column] = stamps.dt.strftime(layout).fillna("")
        elif _PERCENT_COLUMNS.match(name) and pd.api.types.is_numeric_dtype(values.dtype):
            shown[column] = [_percent(v) for v in values]
        elif name in _P_VALUE_COLUMNS:
            shown[column] = ["" if pd.isna(v) else f"{float(v):.2g}" for v in values]
        elif pd.api.types.is_float_dtype(values.dtype):
            shown[column] = [
                ("" if pd.isna(v) else v) for v in values.astype("float64").round(2 if name == "chi2" else 1)
            ]
        elif values.dtype == object:
            shown[column] = [_text(v) for v in values]
        elif pd.api.types.is_string_dtype(values.dtype):
            shown[column] = values.fillna(_MISSING_TEXT)
    return shown


def _percent(value: object) -> str:
    return "" if pd.isna(value) else f"{float(value):.1%}"  # type: ignore[arg-type]


def _text(value: object) -> object:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return _MISSING_TEXT
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if hasattr(value, "tolist") and not isinstance(value, str):
        listed = value.tolist()  # type: ignore[union-attr]
        return ", ".join(str(v) for v in listed) if isinstance(listed, list) else listed
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
