"""Plotly figures from metric frames.

Every function here takes a frame that is already computed (an engagement frame
or a time-to-delivery frame from :mod:`campaign_analytics.metrics`, or the items
frame from :mod:`campaign_analytics.items`) and only draws it: no metric is
computed in this module.

Conventions shared by every chart:

* Channels have fixed colours (:data:`CHANNEL_COLORS`) and template versions
  have fixed colours indexed by version number (:func:`version_color`), so
  version 2 is the same colour in every chart. Other group columns (label,
  tag, template id, ...) take colours from :data:`CATEGORY_COLORS` in sorted
  order, which is stable within one figure only.
* Categories are sorted (numbers numerically, text alphabetically, missing
  values last as ``"(none)"``), the template is :data:`TEMPLATE`, and no random
  ids are generated, so ``fig.to_json()`` is identical across builds.
* Rates stay fractions (0..1) in the figure data and are displayed as
  percentages through the axis and hover formats.
* A frame without rows gives a figure with the annotation
  :data:`NO_DATA_TEXT`; a frame without the columns a chart needs raises
  :class:`~campaign_analytics.errors.ParameterError` naming them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from campaign_analytics._order import value_order
from campaign_analytics.errors import ParameterError

__all__ = [
    "funnel",
    "delivery_ecdf",
    "delivery_histogram",
    "rate_bars",
    "percentile_bars",
    "trend",
    "use_notebook_renderer",
    "version_color",
    "channel_color",
    "CHANNEL_COLORS",
    "VERSION_COLORS",
    "CATEGORY_COLORS",
    "TEMPLATE",
    "NOTEBOOK_RENDERER",
    "NO_DATA_TEXT",
]

TEMPLATE: Final = "plotly_white"
NOTEBOOK_RENDERER: Final = "plotly_mimetype"
NO_DATA_TEXT: Final = "No data for this selection"

#: Okabe-Ito blue and vermillion: distinguishable with the common colour-vision deficiencies.
CHANNEL_COLORS: Final[Mapping[str, str]] = MappingProxyType({"in_app": "#0072B2", "push": "#D55E00"})
#: Tableau 10; version ``v`` takes ``VERSION_COLORS[(v - 1) % 10]``.
VERSION_COLORS: Final[tuple[str, ...]] = (
    "#4E79A7",
    "#F28E2B",
    "#E15759",
    "#76B7B2",
    "#59A14F",
    "#EDC948",
    "#B07AA1",
    "#FF9DA7",
    "#9C755F",
    "#BAB0AC",
)
#: D3 category 10, for group columns without a fixed mapping (label, tag, template id, ...).
CATEGORY_COLORS: Final[tuple[str, ...]] = (
    "#1F77B4",
    "#FF7F0E",
    "#2CA02C",
    "#D62728",
    "#9467BD",
    "#8C564B",
    "#E377C2",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
)
_MISSING_COLOR: Final = "#9E9E9E"
_SINGLE_COLOR: Final = "#4C78A8"
_MISSING_LABEL: Final = "(none)"
_USER_COLUMN_PREFIXES: Final = ("variables__", "metadata__")

_CHANNEL_LABELS: Final[Mapping[str, str]] = MappingProxyType({"in_app": "In-app", "push": "Push"})
_COLUMN_LABELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "channel_type": "Channel",
        "template_id": "Template",
        "template_version": "Template version",
        "label": "Label",
        "tag": "Tag",
        "category": "Category",
        "campaign_id": "Campaign",
        "notification_id": "Notification",
        "receiver": "Receiver",
        "send_date": "Send date (UTC)",
    }
)

_STAGE_LABELS: Final[Mapping[str, str]] = MappingProxyType(
    {"sent": "Sent", "delivered": "Delivered", "read": "Read", "interacted": "Interacted", "clicked": "Clicked"}
)
_STAGES: Final[tuple[str, ...]] = tuple(_STAGE_LABELS)
# Feed items are read and interacted with; push notifications are clicked.
_CHANNEL_STAGES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "in_app": ("sent", "delivered", "read", "interacted"),
        "push": ("sent", "delivered", "clicked"),
    }
)


@dataclass(frozen=True)
class _Rate:
    label: str
    numerator: str
    denominator: str

    @property
    def axis_title(self) -> str:
        return f"{self.label} (% of {self.denominator})"


_RATES: Final[Mapping[str, _Rate]] = MappingProxyType(
    {
        "delivery_rate": _Rate("Delivery rate", "delivered", "sent"),
        "read_rate": _Rate("Read rate", "read", "sent"),
        "interaction_rate": _Rate("Interaction rate", "interacted", "sent"),
        "click_rate": _Rate("Click rate", "clicked", "sent"),
        "read_rate_of_delivered": _Rate("Read rate", "read", "delivered"),
        "click_rate_of_delivered": _Rate("Click rate", "clicked", "delivered"),
    }
)

_TTD_LABELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ttd_mean": "Time to delivery, mean",
        "ttd_p50": "Time to delivery, median (p50)",
        "ttd_p90": "Time to delivery, 90th percentile (p90)",
        "ttd_p99": "Time to delivery, 99th percentile (p99)",
    }
)
_PERCENTILES: Final[tuple[tuple[str, str], ...]] = (("ttd_p50", "p50"), ("ttd_p90", "p90"), ("ttd_p99", "p99"))
_PERCENTILE_COLORS: Final[Mapping[str, str]] = MappingProxyType(
    {"ttd_p50": "#9ECAE1", "ttd_p90": "#4292C6", "ttd_p99": "#08519C"}
)

_ENGAGEMENT_SOURCE: Final = (
    "the engagement metrics of campaign_analytics.metrics produce them (counts sent, delivered, read, "
    "interacted, clicked, the rates, and <rate>_lo/<rate>_hi 95% Wilson bounds)"
)
_TTD_SOURCE: Final = (
    "the time-to-delivery metrics of campaign_analytics.metrics produce them "
    "(ttd_n, ttd_mean, ttd_p50, ttd_p90, ttd_p99 in seconds)"
)
_ITEMS_SOURCE: Final = (
    "campaign_analytics.items produces them (one row per item, with time_to_delivery_s in seconds)"
)
_METRIC_SOURCE: Final = "the metric that produced the frame must include them"

# An ECDF of millions of items is drawn from at most this many exact (x, F(x)) points;
# the step between two kept points is then at most 1/_ECDF_MAX_POINTS high.
_ECDF_MAX_POINTS: Final = 2000
_OVERLAY_OPACITY: Final = 0.55
_BAND_ALPHA: Final = 0.2


# ---------------------------------------------------------------------------
# Public helpers


def use_notebook_renderer() -> None:
    """Render figures as Plotly MIME bundles, the renderer JupyterLab and nbconvert use.

    Sets ``plotly.io.renderers.default`` to :data:`NOTEBOOK_RENDERER`
    (``"plotly_mimetype"``). Call it once at the top of a notebook.

    Examples
    --------
    >>> import plotly.io as pio
    >>> from campaign_analytics.charts import use_notebook_renderer
    >>> use_notebook_renderer()
    >>> pio.renderers.default
    'plotly_mimetype'
    """
    pio.renderers.default = NOTEBOOK_RENDERER


def version_color(version: int | float | str | None) -> str:
    """Return the fixed colour of a template version.

    Version ``v`` takes ``VERSION_COLORS[(v - 1) % len(VERSION_COLORS)]``, so
    version 1 is the first colour and a version keeps its colour in every chart.
    A missing version is grey.

    Parameters
    ----------
    version
        Template version number; numeric strings and integral floats are accepted.

    Returns
    -------
    str
        Hex colour.

    Examples
    --------
    >>> from campaign_analytics.charts import version_color
    >>> version_color(1), version_color(2), version_color(11)
    ('#4E79A7', '#F28E2B', '#4E79A7')
    """
    if _is_missing(version):
        return _MISSING_COLOR
    try:
        number = int(float(version))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _MISSING_COLOR
    return VERSION_COLORS[(number - 1) % len(VERSION_COLORS)]


def channel_color(channel: str | None) -> str:
    """Return the fixed colour of a channel (``"in_app"`` or ``"push"``); grey otherwise.

    Charts give any other channel value a colour from :data:`CATEGORY_COLORS`
    in sorted order, so several unknown channels stay distinguishable.

    Examples
    --------
    >>> from campaign_analytics.charts import channel_color
    >>> channel_color("in_app"), channel_color("push")
    ('#0072B2', '#D55E00')
    """
    if _is_missing(channel):
        return _MISSING_COLOR
    return CHANNEL_COLORS.get(str(channel), _MISSING_COLOR)


# ---------------------------------------------------------------------------
# Charts


def funnel(engagement: pd.DataFrame, *, by: str | None = "channel_type", title: str | None = None) -> go.Figure:
    """Funnel of items from sent to delivered to read/interacted (in-app) or clicked (push).

    One funnel trace per value of ``by``. In-app groups show sent → delivered →
    read → interacted, push groups sent → delivered → clicked; a group whose
    channel is not known (``by`` is not ``channel_type`` and the frame has no
    single channel per row) shows all five stages. Hover shows each count and its
    share of sent.

    Parameters
    ----------
    engagement
        Engagement frame with one row per value of ``by`` and the counts
        ``sent``, ``delivered``, ``read``, ``interacted``, ``clicked``.
    by
        Group column; one trace per value. ``None`` draws a single funnel from a
        one-row (ungrouped) frame.
    title
        Figure title; a plain-words default when omitted.

    Returns
    -------
    plotly.graph_objects.Figure

    Raises
    ------
    ParameterError
        When columns are missing or ``by`` has repeated values (the frame is
        grouped by more columns than ``by``, and summing its counts could count
        an item twice).

    Examples
    --------
    >>> import pandas as pd
    >>> from campaign_analytics.charts import funnel
    >>> engagement = pd.DataFrame({
    ...     "channel_type": ["push", "in_app"],
    ...     "sent": [800, 1000], "delivered": [700, 950], "read": [0, 600],
    ...     "interacted": [0, 120], "clicked": [90, 0],
    ... })
    >>> fig = funnel(engagement)
    >>> [trace.name for trace in fig.data]
    ['In-app', 'Push']
    >>> list(fig.data[1].y)
    ['Sent', 'Delivered', 'Clicked']
    """
    func = "funnel"
    keys = [by] if by is not None else []
    default_title = "Delivery and engagement funnel" + (f" by {_lower_first(_column_label(by))}" if by else "")
    title = title or default_title
    x_title, y_title = "Items (count)", "Stage"
    if _has_no_columns(engagement):
        return _no_data_figure(title, x_title, y_title)
    _require_columns(engagement, func, "engagement", list(_STAGES), keys, _ENGAGEMENT_SOURCE)
    if engagement.empty:
        return _no_data_figure(title, x_title, y_title)
    rows = _index_rows(engagement, keys, func)

    fig = go.Figure()
    used_stages: set[str] = set()
    categories = _categories_of_keys(rows, keys, 0) if by is not None else [_Category(None, "All items", _SINGLE_COLOR)]
    for category in categories:
        row = rows[(category.value,)] if by is not None else rows[()]
        channel = category.value if by == "channel_type" else row.get("channel_type")
        stages = _CHANNEL_STAGES.get(channel, _STAGES) if isinstance(channel, str) else _STAGES
        used_stages.update(stages)
        counts = [int(row[stage]) for stage in stages]
        sent = counts[0]
        hover = [
            f"<b>{_escape(category.label)}</b><br>{_STAGE_LABELS[stage]}: {count:,} ({_percent(count, sent)} of sent)"
            for stage, count in zip(stages, counts, strict=True)
        ]
        fig.add_trace(
            go.Funnel(
                name=category.label,
                y=[_STAGE_LABELS[stage] for stage in stages],
                x=counts,
                marker={"color": category.color},
                textinfo="value+percent initial",
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    _apply_layout(fig, title=title, x_title=x_title, y_title=y_title, legend_title=_column_label(by) if by else None)
    fig.update_layout(funnelmode="group", showlegend=by is not None)
    fig.update_yaxes(
        categoryorder="array", categoryarray=[_STAGE_LABELS[stage] for stage in _STAGES if stage in used_stages]
    )
    return fig


def delivery_ecdf(
    items: pd.DataFrame,
    *,
    by: str | None = "channel_type",
    log_x: bool = True,
    title: str | None = None,
) -> go.Figure:
    """Cumulative share of delivered items by time to delivery (empirical CDF).

    One step line per value of ``by``, over the items with a known
    ``time_to_delivery_s``. The height at *t* seconds is the share of the
    group's delivered items delivered within *t* seconds.

    A log axis cannot place a time of 0 seconds or less; such items still count
    in the shares, so the curve then starts above 0 and the subtitle says how many.

    Parameters
    ----------
    items
        Items frame: one row per item with ``time_to_delivery_s`` (seconds,
        NaN when not delivered) and the ``by`` column.
    by
        Group column, one line per value; ``None`` draws one line for all items.
    log_x
        Draw the time axis on a log scale.
    title
        Figure title; a plain-words default when omitted.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from campaign_analytics.charts import delivery_ecdf
    >>> items = pd.DataFrame({
    ...     "channel_type": ["in_app", "in_app", "push", "push", "push"],
    ...     "time_to_delivery_s": [0.5, 2.0, 1.0, 30.0, float("nan")],
    ... })
    >>> fig = delivery_ecdf(items)
    >>> [trace.name for trace in fig.data]
    ['In-app', 'Push']
    >>> fig.layout.xaxis.title.text
    'Time to delivery (seconds, log scale)'
    """
    func = "delivery_ecdf"
    keys = [by] if by is not None else []
    title = title or "Time to delivery: cumulative share of delivered items" + _by_suffix(by)
    x_title = _seconds_title("Time to delivery", log_x)
    y_title = "Delivered within time (% of delivered items)"
    if _has_no_columns(items):
        return _no_data_figure(title, x_title, y_title)
    _require_columns(items, func, "items", ["time_to_delivery_s"], keys, _ITEMS_SOURCE)
    delivered = items.loc[items["time_to_delivery_s"].notna()]
    if delivered.empty:
        return _no_data_figure(title, x_title, y_title)

    fig = go.Figure()
    hidden: list[tuple[str, int]] = []
    for category, group in _groups(delivered, by):
        times = np.sort(group["time_to_delivery_s"].to_numpy(dtype=float))
        x, y = _ecdf_points(times)
        if log_x:
            keep = x > 0
            not_shown = int(np.count_nonzero(times <= 0))
            if not_shown:
                hidden.append((category.label, not_shown))
            first = int(np.argmax(keep)) if keep.any() else len(x)
            start = float(y[first - 1]) if first > 0 else 0.0
            x, y = x[keep], y[keep]
        else:
            start = 0.0
        if len(x):
            # Start the step at the height reached before the first drawn time.
            x = np.concatenate([[x[0]], x])
            y = np.concatenate([[start], y])
        fig.add_trace(
            go.Scatter(
                name=category.label,
                x=x,
                y=y,
                mode="lines",
                line={"shape": "hv", "color": category.color, "width": 2},
                hovertemplate=(
                    f"<b>{_escape(category.label)}</b><br>"
                    f"%{{y:.1%}} of {len(times):,} delivered items within %{{x:,.3~g}} s<extra></extra>"
                ),
            )
        )
    _apply_layout(fig, title=title, x_title=x_title, y_title=y_title, legend_title=_column_label(by) if by else None)
    fig.update_xaxes(type="log" if log_x else "linear")
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
    if hidden:
        fig.update_layout(title_subtitle_text=_not_on_log_axis_note(hidden))
    return fig


def delivery_histogram(
    items: pd.DataFrame,
    *,
    by: str | None = "channel_type",
    bins_per_decade: int = 10,
    normalize: bool = True,
    title: str | None = None,
) -> go.Figure:
    """Histogram of time to delivery on a log-scaled seconds axis, groups overlaid.

    Bins are log-spaced, ``bins_per_decade`` per factor of ten, aligned to powers
    of ten and shared by all groups so overlaid bars compare bin by bin. Items
    delivered in 0 seconds or less cannot be placed on the log axis; the subtitle
    says how many were left out.

    Parameters
    ----------
    items
        Items frame: one row per item with ``time_to_delivery_s`` (seconds,
        NaN when not delivered) and the ``by`` column.
    by
        Group column, one overlaid histogram per value; ``None`` for one histogram.
    bins_per_decade
        Number of bins per factor of ten in seconds.
    normalize
        Show each bin as a share of the group's delivered items (comparable across
        groups of different size) instead of a count.
    title
        Figure title; a plain-words default when omitted.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from campaign_analytics.charts import delivery_histogram
    >>> items = pd.DataFrame({
    ...     "channel_type": ["in_app", "in_app", "push", "push"],
    ...     "time_to_delivery_s": [0.5, 2.0, 1.0, 30.0],
    ... })
    >>> fig = delivery_histogram(items)
    >>> [trace.name for trace in fig.data], fig.layout.barmode
    (['In-app', 'Push'], 'overlay')
    """
    func = "delivery_histogram"
    if isinstance(bins_per_decade, bool) or not isinstance(bins_per_decade, int) or bins_per_decade < 1:
        raise ParameterError(f"bins_per_decade must be a positive integer; got {bins_per_decade!r}.")
    keys = [by] if by is not None else []
    title = title or "Time to delivery distribution" + _by_suffix(by)
    x_title = _seconds_title("Time to delivery", log=True)
    y_title = "Delivered items (% of group)" if normalize else "Delivered items (count)"
    if _has_no_columns(items):
        return _no_data_figure(title, x_title, y_title)
    _require_columns(items, func, "items", ["time_to_delivery_s"], keys, _ITEMS_SOURCE)
    delivered = items.loc[items["time_to_delivery_s"].notna()]
    positive = delivered["time_to_delivery_s"].to_numpy(dtype=float)
    positive = positive[positive > 0]
    if positive.size == 0:
        return _no_data_figure(title, x_title, y_title)
    edges = _log_edges(float(positive.min()), float(positive.max()), bins_per_decade)
    lower, upper = edges[:-1], edges[1:]

    fig = go.Figure()
    hidden: list[tuple[str, int]] = []
    for category, group in _groups(delivered, by):
        times = group["time_to_delivery_s"].to_numpy(dtype=float)
        counts, _ = np.histogram(times[times > 0], bins=edges)
        if np.count_nonzero(times <= 0):
            hidden.append((category.label, int(np.count_nonzero(times <= 0))))
        filled = counts > 0
        shares = counts / len(times)
        hover = [
            f"<b>{_escape(category.label)}</b><br>{_format_seconds(a)} to {_format_seconds(b)}<br>"
            f"{count:,} items ({share:.1%} of {len(times):,} delivered)"
            for a, b, count, share in zip(lower[filled], upper[filled], counts[filled], shares[filled], strict=True)
        ]
        fig.add_trace(
            go.Bar(
                name=category.label,
                # On a log axis plotly places a bar from x - width/2 to x + width/2 in data
                # units, so the arithmetic midpoint and the bin width span the bin exactly.
                x=(lower[filled] + upper[filled]) / 2,
                width=upper[filled] - lower[filled],
                y=shares[filled] if normalize else counts[filled],
                marker={"color": category.color, "line": {"width": 0}},
                opacity=_OVERLAY_OPACITY,
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    _apply_layout(fig, title=title, x_title=x_title, y_title=y_title, legend_title=_column_label(by) if by else None)
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(type="log")
    if normalize:
        fig.update_yaxes(tickformat=".0%")
    if hidden:
        fig.update_layout(title_subtitle_text=_not_on_log_axis_note(hidden))
    return fig


def rate_bars(
    engagement: pd.DataFrame,
    rate: str = "read_rate",
    *,
    x: str = "template_version",
    color: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """Bars of one rate per group, with asymmetric 95% Wilson error bars.

    Without ``color`` there is one trace and each bar takes the colour of its
    ``x`` value when ``x`` is ``template_version`` or ``channel_type``. With
    ``color`` there is one trace per colour value, bars grouped side by side.
    Hover shows the rate, its interval and the counts behind it, e.g.
    ``read 412 of 1,003 sent``.

    Parameters
    ----------
    engagement
        Engagement frame with one row per (``x``, ``color``) and the columns
        ``<rate>``, ``<rate>_lo``, ``<rate>_hi`` and the rate's numerator and
        denominator counts.
    rate
        One of ``delivery_rate``, ``read_rate``, ``interaction_rate``,
        ``click_rate``, ``read_rate_of_delivered``, ``click_rate_of_delivered``.
    x
        Group column on the horizontal axis.
    color
        Optional second group column, one colour per value.
    title
        Figure title; a plain-words default when omitted.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from campaign_analytics.charts import rate_bars
    >>> engagement = pd.DataFrame({
    ...     "template_version": [1, 2], "sent": [1003, 980], "read": [412, 480],
    ...     "read_rate": [0.4108, 0.4898],
    ...     "read_rate_lo": [0.3806, 0.4586], "read_rate_hi": [0.4416, 0.5211],
    ... })
    >>> fig = rate_bars(engagement, "read_rate")
    >>> fig.layout.yaxis.title.text
    'Read rate (% of sent)'
    >>> "read 412 of 1,003 sent" in fig.data[0].hovertext[0]
    True
    """
    func = "rate_bars"
    spec = _rate_spec(rate)
    keys = _unique_keys([x, color])
    title = title or f"{spec.label}{_of_delivered_suffix(spec)} by {_lower_first(_column_label(x))}" + (
        f" and {_lower_first(_column_label(color))}" if color and color != x else ""
    )
    x_title, y_title = _column_label(x), spec.axis_title
    if _has_no_columns(engagement):
        return _no_data_figure(title, x_title, y_title)
    needed = [rate, f"{rate}_lo", f"{rate}_hi", spec.numerator, spec.denominator]
    _require_columns(engagement, func, "engagement", needed, keys, _ENGAGEMENT_SOURCE)
    if engagement.empty:
        return _no_data_figure(title, x_title, y_title)
    rows = _index_rows(engagement, keys, func)
    x_categories = _categories_of_keys(rows, keys, 0)

    fig = go.Figure()
    series = _series_by_color(rows, keys, x_categories, color, x)
    for series_category, points in series:
        present = [(x_category, row) for x_category, row in points if row is not None]
        values = np.array([_float(row[rate]) for _, row in present], dtype=float)
        lo = np.array([_float(row[f"{rate}_lo"]) for _, row in present], dtype=float)
        hi = np.array([_float(row[f"{rate}_hi"]) for _, row in present], dtype=float)
        heading = [_point_heading(x_category, series_category) for x_category, _ in present]
        hover = [
            f"{head}<br>{_rate_line(spec, value, low, high)}<br>{_count_line(spec, row)}"
            for head, value, low, high, (_, row) in zip(heading, values, lo, hi, present, strict=True)
        ]
        if series_category is None:
            name = spec.label
            marker_color: str | list[str] = (
                [c.color for c, _ in present] if x in ("template_version", "channel_type") else _SINGLE_COLOR
            )
        else:
            name, marker_color = series_category.label, series_category.color
        fig.add_trace(
            go.Bar(
                name=name,
                x=[x_category.label for x_category, _ in present],
                y=values,
                marker={"color": marker_color},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": hi - values,
                    "arrayminus": values - lo,
                    "color": "#444444",
                    "thickness": 1.2,
                },
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    legend_title = _column_label(color) if color else None
    _apply_layout(fig, title=title, x_title=x_title, y_title=y_title, legend_title=legend_title)
    fig.update_layout(barmode="group", showlegend=color is not None and color != x)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=[c.label for c in x_categories])
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def percentile_bars(
    ttd: pd.DataFrame,
    *,
    x: str = "template_version",
    color: str | None = None,
    log_y: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Grouped bars of the p50, p90 and p99 time to delivery per group.

    Without ``color`` there are three traces named ``p50``, ``p90``, ``p99``
    (shades of blue, light to dark) grouped under each ``x`` value. With
    ``color`` there is one trace per colour value and the horizontal axis has two
    levels, the ``x`` value and below it the percentile. Hover shows the time and
    the number of delivered items behind it (``ttd_n``).

    Parameters
    ----------
    ttd
        Time-to-delivery frame with one row per (``x``, ``color``) and the columns
        ``ttd_n``, ``ttd_p50``, ``ttd_p90``, ``ttd_p99`` (seconds).
    x
        Group column on the horizontal axis.
    color
        Optional second group column, one colour per value.
    log_y
        Draw the seconds axis on a log scale (p99 is often orders of magnitude
        above p50).
    title
        Figure title; a plain-words default when omitted.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from campaign_analytics.charts import percentile_bars
    >>> ttd = pd.DataFrame({
    ...     "template_version": [1, 2], "ttd_n": [950, 900],
    ...     "ttd_p50": [1.2, 0.9], "ttd_p90": [8.5, 6.1], "ttd_p99": [95.0, 60.2],
    ... })
    >>> fig = percentile_bars(ttd)
    >>> [trace.name for trace in fig.data]
    ['p50', 'p90', 'p99']
    >>> "from 950 delivered items" in fig.data[2].hovertext[0]
    True
    """
    func = "percentile_bars"
    keys = _unique_keys([x, color])
    title = title or f"Time to delivery percentiles by {_lower_first(_column_label(x))}" + (
        f" and {_lower_first(_column_label(color))}" if color and color != x else ""
    )
    x_title = _column_label(x)
    y_title = _seconds_title("Time to delivery", log_y)
    if _has_no_columns(ttd):
        return _no_data_figure(title, x_title, y_title)
    needed = ["ttd_n", *(column for column, _ in _PERCENTILES)]
    _require_columns(ttd, func, "time-to-delivery", needed, keys, _TTD_SOURCE)
    if ttd.empty:
        return _no_data_figure(title, x_title, y_title)
    rows = _index_rows(ttd, keys, func)
    x_categories = _categories_of_keys(rows, keys, 0)

    fig = go.Figure()
    if color is None or color == x:
        points = [(category, rows[(category.value,)]) for category in x_categories]
        for column, short in _PERCENTILES:
            fig.add_trace(
                go.Bar(
                    name=short,
                    x=[category.label for category, _ in points],
                    y=np.array([_float(row[column]) for _, row in points], dtype=float),
                    marker={"color": _PERCENTILE_COLORS[column]},
                    hovertext=[_percentile_hover(category, None, short, row[column], row) for category, row in points],
                    hovertemplate="%{hovertext}<extra></extra>",
                )
            )
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=[c.label for c in x_categories])
        legend_title = "Percentile"
    else:
        # Every trace carries every (x, percentile) slot, so the two-level axis keeps the sorted order.
        for series_category, slots in _series_by_color(rows, keys, x_categories, color, x):
            assert series_category is not None
            outer = [x_category.label for x_category, _ in slots for _ in _PERCENTILES]
            inner = [short for _ in slots for _, short in _PERCENTILES]
            values = [
                _float(row[column]) if row is not None else math.nan for _, row in slots for column, _ in _PERCENTILES
            ]
            hover = [
                _percentile_hover(x_category, series_category, short, row[column], row) if row is not None else ""
                for x_category, row in slots
                for column, short in _PERCENTILES
            ]
            fig.add_trace(
                go.Bar(
                    name=series_category.label,
                    x=[outer, inner],
                    y=np.array(values, dtype=float),
                    marker={"color": series_category.color},
                    hovertext=hover,
                    hovertemplate="%{hovertext}<extra></extra>",
                )
            )
        fig.update_xaxes(type="multicategory")
        legend_title = _column_label(color)
    _apply_layout(fig, title=title, x_title=x_title, y_title=y_title, legend_title=legend_title)
    fig.update_layout(barmode="group")
    fig.update_yaxes(type="log" if log_y else "linear", rangemode="tozero" if not log_y else "normal")
    if log_y:
        _note_values_off_the_log_axis(fig, "bars")
    return fig


def trend(
    frame: pd.DataFrame,
    y: str,
    *,
    x: str = "send_date",
    color: str | None = None,
    log_y: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Lines of a rate or a time-to-delivery statistic over days.

    One line per ``color`` value (or one line), with markers. When the frame has
    ``<y>_lo`` and ``<y>_hi`` (the Wilson bounds of a rate) a shaded 95% band is
    drawn under each line as a separate trace just before it. Rates are shown as
    percentages; ``ttd_*`` columns in seconds. Hover shows the counts behind each
    point when the frame has them.

    Parameters
    ----------
    frame
        Engagement or time-to-delivery frame with one row per (``x``, ``color``).
    y
        Column to draw, e.g. ``read_rate`` or ``ttd_p90``.
    x
        Time column, usually ``send_date``.
    color
        Optional group column, one line per value.
    log_y
        Draw a time-to-delivery statistic on a log scale, so that channels
        seconds apart and channels hours apart both show their changes. Points
        at 0 seconds cannot be placed on it; the subtitle counts them.
    title
        Figure title; a plain-words default when omitted.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> from campaign_analytics.charts import trend
    >>> daily = pd.DataFrame({
    ...     "send_date": pd.to_datetime(["2024-05-01", "2024-05-02"]),
    ...     "sent": [500, 520], "read": [200, 230], "read_rate": [0.4, 0.4423],
    ...     "read_rate_lo": [0.358, 0.400], "read_rate_hi": [0.444, 0.485],
    ... })
    >>> fig = trend(daily, "read_rate")
    >>> [trace.name for trace in fig.data]
    ['Read rate (95% interval)', 'Read rate']
    """
    func = "trend"
    keys = _unique_keys([x, color])
    spec = _RATES.get(y)
    is_rate = spec is not None or y.endswith("_rate") or "_rate_of_" in y
    if log_y and (not y.startswith("ttd_") or y == "ttd_n"):
        raise ParameterError(f"trend(log_y=True) is for time-to-delivery statistics (ttd_mean, ttd_p50, ...), not {y!r}.")
    y_title = _value_title(y)
    if log_y:
        y_title = y_title.replace("(seconds)", "(seconds, log scale)")
    title = title or f"{_value_short_label(y)} by {_lower_first(_column_label(x))}" + (
        f" and {_lower_first(_column_label(color))}" if color and color != x else ""
    )
    x_title = _column_label(x)
    if _has_no_columns(frame):
        return _no_data_figure(title, x_title, y_title)
    source = _ENGAGEMENT_SOURCE if is_rate or y in _STAGES else _TTD_SOURCE if y.startswith("ttd_") else _METRIC_SOURCE
    _require_columns(frame, func, "metric", [y], keys, source)
    if frame.empty:
        return _no_data_figure(title, x_title, y_title)
    rows = _index_rows(frame, keys, func)
    x_categories = [c for c in _categories_of_keys(rows, keys, 0) if c.value is not None]
    has_band = f"{y}_lo" in frame.columns and f"{y}_hi" in frame.columns
    has_counts = spec is not None and spec.numerator in frame.columns and spec.denominator in frame.columns

    fig = go.Figure()
    for series_category, points in _series_by_color(rows, keys, x_categories, color, x):
        present = [(x_category, row) for x_category, row in points if row is not None]
        name = series_category.label if series_category is not None else _value_short_label(y)
        line_color = series_category.color if series_category is not None else _SINGLE_COLOR
        xs = [x_category.value for x_category, _ in present]
        values = np.array([_float(row[y]) for _, row in present], dtype=float)
        if has_band:
            lo = np.array([_float(row[f"{y}_lo"]) for _, row in present], dtype=float)
            hi = np.array([_float(row[f"{y}_hi"]) for _, row in present], dtype=float)
            valid = ~(np.isnan(lo) | np.isnan(hi))
            band_x = [value for value, ok in zip(xs, valid, strict=True) if ok]
            fig.add_trace(
                go.Scatter(
                    name=f"{name} (95% interval)",
                    x=band_x + band_x[::-1],
                    y=np.concatenate([hi[valid], lo[valid][::-1]]),
                    fill="toself",
                    fillcolor=_rgba(line_color, _BAND_ALPHA),
                    line={"width": 0},
                    mode="lines",
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=name,
                )
            )
        hover = []
        for x_category, row in present:
            lines = [_point_heading(x_category, series_category)]
            if spec is not None:
                lines.append(
                    _rate_line(spec, _float(row[y]), _float(row.get(f"{y}_lo")), _float(row.get(f"{y}_hi")))
                    if has_band
                    else f"{spec.label}: {_percent_value(_float(row[y]))}"
                )
                if has_counts:
                    lines.append(_count_line(spec, row))
            elif is_rate:
                lines.append(f"{_value_short_label(y)}: {_percent_value(_float(row[y]))}")
            elif y.startswith("ttd_") and y != "ttd_n":
                lines.append(f"{_value_short_label(y)}: {_format_seconds(_float(row[y]))}")
                if "ttd_n" in row:
                    lines.append(f"from {_format_count(row['ttd_n'])} delivered items")
            else:
                lines.append(f"{_value_short_label(y)}: {_format_number(row[y])}")
            hover.append("<br>".join(lines))
        fig.add_trace(
            go.Scatter(
                name=name,
                x=xs,
                y=values,
                mode="lines+markers",
                line={"color": line_color, "width": 2},
                marker={"color": line_color, "size": 6},
                legendgroup=name,
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    legend_title = _column_label(color) if color else None
    _apply_layout(fig, title=title, x_title=x_title, y_title=y_title, legend_title=legend_title)
    fig.update_layout(showlegend=color is not None and color != x)
    if is_rate:
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    elif log_y:
        fig.update_yaxes(type="log")
        _note_values_off_the_log_axis(fig, "points")
    else:
        fig.update_yaxes(rangemode="tozero")
    return fig


# ---------------------------------------------------------------------------
# Categories and colours


@dataclass(frozen=True)
class _Category:
    value: Any
    label: str
    color: str


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        # Lists and arrays (e.g. tags) are values, not missing markers.
        return False


def _normalize(value: object) -> Hashable:
    if _is_missing(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | np.ndarray):
        return tuple(value)
    return value  # type: ignore[return-value]


def _sorted_values(values: Iterable[Hashable]) -> list[Hashable]:
    unique = list(dict.fromkeys(values))
    present = [value for value in unique if value is not None]
    ordered = [present[i] for i in value_order(present)]
    return ordered + ([None] if len(present) < len(unique) else [])


def _value_label(column: str | None, value: Hashable) -> str:
    if value is None:
        return _MISSING_LABEL
    if column == "channel_type":
        return _CHANNEL_LABELS.get(str(value), str(value))
    if column == "template_version":
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value)
        return f"v{int(number)}" if number.is_integer() else f"v{number:g}"
    if isinstance(value, pd.Timestamp):
        if value == value.normalize():
            return value.date().isoformat()
        return value.isoformat()
    return str(value)


def _category_list(column: str | None, values: Iterable[Hashable]) -> list[_Category]:
    ordered = _sorted_values(values)
    categories = []
    other_index = 0
    for value in ordered:
        if value is None:
            color = _MISSING_COLOR
        elif column == "template_version":
            color = version_color(value)  # type: ignore[arg-type]
        elif column == "channel_type" and str(value) in CHANNEL_COLORS:
            color = CHANNEL_COLORS[str(value)]
        else:
            color = CATEGORY_COLORS[other_index % len(CATEGORY_COLORS)]
            other_index += 1
        categories.append(_Category(value, _value_label(column, value), color))
    return categories


def _groups(frame: pd.DataFrame, by: str | None) -> list[tuple[_Category, pd.DataFrame]]:
    """Split a (possibly large) items frame by one column, in sorted category order."""
    if by is None:
        return [(_Category(None, "All items", _SINGLE_COLOR), frame)]
    column = frame[by]
    values = [_normalize(value) for value in column.dropna().drop_duplicates().tolist()]
    if column.isna().any():
        values.append(None)
    groups = []
    for category in _category_list(by, values):
        if category.value is None:
            mask = column.isna().to_numpy(dtype=bool)
        else:
            mask = column.eq(category.value).to_numpy(dtype=bool, na_value=False)
        groups.append((category, frame.loc[mask]))
    return groups


def _index_rows(frame: pd.DataFrame, keys: Sequence[str], func: str) -> dict[tuple[Hashable, ...], dict[str, Any]]:
    """Map each row's group key to the row; a repeated key is an error, never summed."""
    rows: dict[tuple[Hashable, ...], dict[str, Any]] = {}
    for record in frame.to_dict("records"):
        key = tuple(_normalize(record[column]) for column in keys)
        if key in rows:
            described = ", ".join(f"{column}={value!r}" for column, value in zip(keys, key, strict=True))
            if keys:
                raise ParameterError(
                    f"{func}() needs one row per {', '.join(keys)}, but the frame has several rows with "
                    f"{described}: it is grouped by more columns. Compute the metrics grouped by exactly "
                    f"{list(keys)}, or filter the frame to one value of the other group columns."
                )
            raise ParameterError(
                f"{func}() with by=None needs a one-row frame (metrics without grouping); got {len(frame)} rows."
            )
        rows[key] = record
    return rows


def _categories_of_keys(
    rows: Mapping[tuple[Hashable, ...], Any], keys: Sequence[str], position: int
) -> list[_Category]:
    return _category_list(keys[position], (key[position] for key in rows))


def _series_by_color(
    rows: Mapping[tuple[Hashable, ...], dict[str, Any]],
    keys: Sequence[str],
    x_categories: Sequence[_Category],
    color: str | None,
    x: str,
) -> list[tuple[_Category | None, list[tuple[_Category, dict[str, Any] | None]]]]:
    """Rows per colour value, each aligned to the sorted x categories (None where absent)."""
    if color is None or color == x:
        return [(None, [(category, rows.get((category.value,))) for category in x_categories])]
    series: list[tuple[_Category | None, list[tuple[_Category, dict[str, Any] | None]]]] = []
    for color_category in _categories_of_keys(rows, keys, 1):
        points = [(category, rows.get((category.value, color_category.value))) for category in x_categories]
        series.append((color_category, points))
    return series


def _unique_keys(columns: Sequence[str | None]) -> list[str]:
    return [column for column in dict.fromkeys(columns) if column is not None]


# ---------------------------------------------------------------------------
# Validation


def _has_no_columns(frame: pd.DataFrame) -> bool:
    if not isinstance(frame, pd.DataFrame):
        raise ParameterError(f"expected a pandas DataFrame; got {type(frame).__name__}.")
    return len(frame.columns) == 0 and len(frame) == 0


def _require_columns(
    frame: pd.DataFrame,
    func: str,
    kind: str,
    metric_columns: Sequence[str],
    group_columns: Sequence[str],
    source: str,
) -> None:
    present = set(frame.columns)
    missing_metrics = [column for column in metric_columns if column not in present]
    missing_groups = [column for column in group_columns if column not in present]
    if not (missing_metrics or missing_groups):
        return
    parts = []
    if missing_metrics:
        parts.append(f"the {kind} frame lacks column(s) {_quoted(missing_metrics)}; {source}")
    if missing_groups:
        parts.append(
            f"the frame lacks group column(s) {_quoted(missing_groups)}; a group column is in a metric frame "
            "only when the metrics are computed grouped by it"
        )
    raise ParameterError(
        f"{func}(): " + ". Also, ".join(parts) + f". Columns present: {_quoted(sorted(map(str, frame.columns)))}."
    )


def _rate_spec(rate: str) -> _Rate:
    if rate not in _RATES:
        raise ParameterError(f"rate must be one of {_quoted(list(_RATES))}; got {rate!r}.")
    return _RATES[rate]


def _quoted(columns: Iterable[str]) -> str:
    return ", ".join(repr(column) for column in columns) or "none"


# ---------------------------------------------------------------------------
# Layout and text


def _apply_layout(
    fig: go.Figure, *, title: str, x_title: str, y_title: str, legend_title: str | None = None
) -> None:
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title},
        xaxis_title_text=x_title,
        yaxis_title_text=y_title,
        legend_title_text=legend_title,
        hoverlabel_align="left",
    )


def _no_data_figure(title: str, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    _apply_layout(fig, title=title, x_title=x_title, y_title=y_title)
    fig.add_annotation(
        text=NO_DATA_TEXT, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 16}
    )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    return fig


def _column_label(column: str | None) -> str:
    if column is None:
        return ""
    if column.startswith(_USER_COLUMN_PREFIXES):
        # A user's key is a name of theirs: the column as they name it (e.g. as breakdown_key), case and all.
        return column
    return _COLUMN_LABELS.get(column, column.replace("_", " ").strip().capitalize())


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _by_suffix(by: str | None) -> str:
    return f" by {_lower_first(_column_label(by))}" if by else ""


def _of_delivered_suffix(spec: _Rate) -> str:
    return " of delivered" if spec.denominator == "delivered" else ""


def _seconds_title(label: str, log: bool) -> str:
    return f"{label} (seconds, log scale)" if log else f"{label} (seconds)"


def _value_short_label(column: str) -> str:
    if column in _RATES:
        spec = _RATES[column]
        return spec.label + _of_delivered_suffix(spec)
    if column in _TTD_LABELS:
        return _TTD_LABELS[column]
    if column == "ttd_n":
        return "Delivered items with a time to delivery"
    return _column_label(column)


def _value_title(column: str) -> str:
    if column in _RATES:
        return _RATES[column].axis_title
    if column in _TTD_LABELS:
        return f"{_TTD_LABELS[column]} (seconds)"
    if column == "ttd_n" or column in _STAGES:
        return f"{_value_short_label(column)} (items)"
    if column.endswith("_rate") or "_rate_of_" in column:
        return f"{_column_label(column)} (%)"
    return _column_label(column)


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def _point_heading(x_category: _Category, series_category: _Category | None) -> str:
    heading = _escape(x_category.label)
    if series_category is not None:
        heading += f" · {_escape(series_category.label)}"
    return f"<b>{heading}</b>"


def _float(value: object) -> float:
    if _is_missing(value):
        return math.nan
    return float(value)  # type: ignore[arg-type]


def _percent(part: float, whole: float) -> str:
    if _is_missing(whole) or whole == 0:
        return "n/a"
    return f"{part / whole:.1%}"


def _percent_value(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def _format_count(value: object) -> str:
    return "n/a" if _is_missing(value) else f"{int(value):,}"  # type: ignore[call-overload]


def _format_number(value: object) -> str:
    if _is_missing(value):
        return "n/a"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    try:
        return f"{float(value):,.4g}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def _format_seconds(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if abs(seconds) < 1:
        text = f"{seconds:.3g} s"
    elif abs(seconds) < 10:
        text = f"{seconds:.2f} s"
    elif abs(seconds) < 100:
        text = f"{seconds:.1f} s"
    else:
        text = f"{seconds:,.0f} s"
    if abs(seconds) >= 2 * 86400:
        text += f" ({seconds / 86400:.1f} days)"
    elif abs(seconds) >= 2 * 3600:
        text += f" ({seconds / 3600:.1f} h)"
    elif abs(seconds) >= 120:
        text += f" ({seconds / 60:.1f} min)"
    return text


def _rate_line(spec: _Rate, value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return f"{spec.label}: n/a (no items {spec.denominator})"
    interval = "" if math.isnan(low) or math.isnan(high) else f" (95% CI {low:.1%} to {high:.1%})"
    return f"{spec.label}: {value:.1%}{interval}"


def _count_line(spec: _Rate, row: Mapping[str, Any]) -> str:
    return (
        f"{spec.numerator} {_format_count(row[spec.numerator])} of "
        f"{_format_count(row[spec.denominator])} {spec.denominator}"
    )


def _percentile_hover(
    x_category: _Category, series_category: _Category | None, short: str, value: object, row: Mapping[str, Any]
) -> str:
    return (
        f"{_point_heading(x_category, series_category)}<br>{short}: {_format_seconds(_float(value))}"
        f"<br>from {_format_count(row['ttd_n'])} delivered items"
    )


def _note_values_off_the_log_axis(fig: go.Figure, what: str) -> None:
    """Say in the subtitle how many drawn values are 0 seconds or less: a log axis has no place for them."""
    off = sum(int(np.sum(np.asarray(trace.y, dtype=float) <= 0)) for trace in fig.data if trace.y is not None and trace.hoverinfo != "skip")
    if off:
        fig.update_layout(
            title_subtitle_text=f"Not placeable on the log axis: {off:,} {what if off > 1 else what.removesuffix('s')} "
            "at 0 seconds or less (delivered within the second of sending, or timestamps that disagree)"
        )


def _not_on_log_axis_note(hidden: Sequence[tuple[str, int]]) -> str:
    counts = ", ".join(f"{count:,} {_escape(label)}" for label, count in hidden)
    return f"Not placeable on the log axis: {counts} items delivered in 0 seconds or less"


def _rgba(hex_color: str, alpha: float) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {alpha})"


# ---------------------------------------------------------------------------
# Distributions


def _ecdf_points(sorted_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ECDF corners (each distinct time, share at or below it), thinned to at most _ECDF_MAX_POINTS."""
    values, counts = np.unique(sorted_times, return_counts=True)
    shares = np.cumsum(counts) / len(sorted_times)
    if len(values) > _ECDF_MAX_POINTS:
        keep = np.unique(np.linspace(0, len(values) - 1, _ECDF_MAX_POINTS).round().astype(int))
        values, shares = values[keep], shares[keep]
    return values.astype(float), shares.astype(float)


def _log_edges(smallest: float, largest: float, bins_per_decade: int) -> np.ndarray:
    """Bin edges at 10**(k / bins_per_decade) covering [smallest, largest]."""
    first = math.floor(math.log10(smallest) * bins_per_decade)
    last = math.ceil(math.log10(largest) * bins_per_decade)
    if last <= first:
        last = first + 1
    edges = 10.0 ** (np.arange(first, last + 1) / bins_per_decade)
    # Rounding in log10/pow can put an edge a hair inside the data; never drop the extremes.
    edges[0] = min(edges[0], smallest)
    edges[-1] = max(edges[-1], largest)
    return edges
