"""Engagement rates, time to delivery, version comparisons and campaign summaries.

Each metric is one grouped Ibis aggregation over the items table
(:func:`campaign_analytics.items.items`), run by the engine that holds the
events; only the small per-group result comes back as pandas, where the
confidence intervals and tests are computed from the counts.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ibis
import ibis.expr.datatypes as dt
import numpy as np
import pandas as pd
from scipy import stats

from campaign_analytics._order import JSON_NUMBER, value_order
from campaign_analytics._stats import holm, two_proportion_z_test, wilson_interval
from campaign_analytics.backends import (
    backend_name,
    epoch_milliseconds,
    events_table,
    execute,
    frame_to_arrow,
)
from campaign_analytics.errors import ParameterError, TableError
from campaign_analytics.items import (
    _earliest_with_value,
    _event_order_keys,
    _latest_with_value,
    _with_contract_columns,
)
from campaign_analytics.items import (
    items as _build_items,  # the metric functions' first parameter is named items
)

__all__ = [
    "COMPARISON_VERDICTS",
    "DERIVED_GROUP_COLUMNS",
    "RATES",
    "campaigns",
    "compare_versions",
    "engagement",
    "summary",
    "time_to_delivery",
]

RATES: Final[dict[str, tuple[str, str]]] = {
    "delivery_rate": ("delivered", "sent"),
    "read_rate": ("read", "sent"),
    "interaction_rate": ("interacted", "sent"),
    "click_rate": ("clicked", "sent"),
    "read_rate_of_delivered": ("read", "delivered"),
    "click_rate_of_delivered": ("clicked", "delivered"),
}
"""Every rate as (numerator count, denominator count)."""

DERIVED_GROUP_COLUMNS: Final[tuple[str, ...]] = ("tag", "send_date", "send_hour")
"""Group columns computed from item columns: ``tag`` (one row per tag of
``tags``), ``send_date`` and ``send_hour`` (of ``sent_at``, UTC or ``tz``)."""

COMPARISON_VERDICTS: Final[tuple[str, ...]] = (
    "a higher",
    "b higher",
    "no significant difference",
    "insufficient data",
)

_STAGE_COUNTS: Final[tuple[str, ...]] = ("sent", "delivered", "read", "interacted", "clicked")
_PERCENTILES: Final[tuple[tuple[str, float], ...]] = (("ttd_p50", 0.5), ("ttd_p90", 0.9), ("ttd_p99", 0.99))
_MIN_EXPECTED: Final[float] = 5.0
_ITEM_TIMESTAMPS: Final[tuple[str, ...]] = ("sent_at", "delivered_at", "read_at", "interacted_at", "clicked_at")
_MS_PER_HOUR: Final[int] = 3_600_000
_MS_PER_DAY: Final[int] = 86_400_000
# UTC offsets are tabulated for this span; outside it the nearest offset applies.
_ZONE_YEARS: Final[tuple[int, int]] = (1970, 2100)

ItemsSource: TypeAlias = ibis.Table | pd.DataFrame | str | Path


def engagement(
    items: ItemsSource,
    by: str | Sequence[str] | None = None,
    *,
    tz: str | None = None,
) -> pd.DataFrame:
    """Sent, delivered, read, interacted and clicked items and their rates per group.

    Parameters
    ----------
    items
        The items table (the Ibis expression of
        :func:`campaign_analytics.items.items`, or its pandas frame), or an
        events source (path, events DataFrame, events Ibis table), which is
        turned into items first.
    by
        Column(s) to group by: any item column (``label``, ``template_version``,
        ``channel_type``, ``variables__*``, ``metadata__*``, ...), or
        ``"tag"`` (one row per tag: an item counts once under each of its
        distinct tags), ``"send_date"``, ``"send_hour"`` (of ``sent_at``).
        ``None`` gives one row for all items.
    tz
        IANA time zone for ``send_date`` / ``send_hour``, e.g.
        ``"Europe/Madrid"``; default UTC.

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted by the group columns (missing values last):
        the group columns; ``sent, delivered, read, interacted, clicked``
        (distinct items; every item counts as sent); ``delivery_rate,
        read_rate, interaction_rate, click_rate`` (over sent),
        ``read_rate_of_delivered, click_rate_of_delivered``; and for every
        rate ``<rate>_lo`` and ``<rate>_hi``, its 95% Wilson score interval.
        A rate whose denominator is 0 is NaN. Items without a value of a
        group column (no tags, no label, no ``sent_at``, ...) form a group
        whose key is missing.

    Raises
    ------
    ParameterError
        ``by`` names an unknown column (the message lists the valid ones),
        or ``tz`` is not a known time zone.
    TableError
        ``items`` is neither an items nor an events table.

    Examples
    --------
    >>> import pandas as pd
    >>> sent = pd.Series(pd.to_datetime([1780003600] * 3, unit="s", utc=True), dtype="datetime64[ms, UTC]")
    >>> frame = pd.DataFrame({"item_id": ["a", "b", "c"], "label": ["x", "x", "y"],
    ...                       "sent_at": sent, "delivered_at": sent, "read_at": sent.where([True, False, False])})
    >>> engagement(frame, by="label")[["label", "sent", "read", "read_rate"]]
      label  sent  read  read_rate
    0     x     2     1        0.5
    1     y     1     0        0.0
    """
    table = _as_items(items)
    grouped, keys = _with_group_columns(table, by, tz)
    return _with_rates(_aggregate(grouped, keys, _stage_aggregates(grouped)))


def time_to_delivery(
    items: ItemsSource,
    by: str | Sequence[str] | None = None,
    *,
    exclude_delivered_on_read: bool = False,
    tz: str | None = None,
    approximate: bool = False,
) -> pd.DataFrame:
    """Time from sent to delivered per group: count, mean and percentiles in seconds.

    Only items with both ``sent_at`` and ``delivered_at`` are measured
    (delivery implied by a later stage has no time). The per-item values are
    the ``time_to_delivery_s`` column of the items table, e.g. for an ECDF.

    Parameters
    ----------
    items
        As for :func:`engagement`.
    by
        As for :func:`engagement`.
    exclude_delivered_on_read
        Leave out items whose ``delivered_at`` equals ``read_at``: their
        delivery was reported by the read (their "time to delivery" is a
        time to read).
    tz
        Time zone of ``send_date`` / ``send_hour``; default UTC.
    approximate
        Use the engine's approximate quantiles (for a distributed engine on
        very large groups). The percentile columns are then named
        ``ttd_p50_approx``, ``ttd_p90_approx``, ``ttd_p99_approx``.

    Returns
    -------
    pandas.DataFrame
        The group columns, then ``ttd_n`` (measured items, int64),
        ``ttd_mean``, ``ttd_p50``, ``ttd_p90``, ``ttd_p99`` (seconds). The
        percentiles are exact, with linear interpolation between order
        statistics like ``numpy.percentile``'s default. Every group of
        :func:`engagement` appears; one without a measured item has
        ``ttd_n == 0`` and NaN statistics. Sorted by the group columns.

    Raises
    ------
    ParameterError
        Unknown ``by`` column or time zone.
    TableError
        ``items`` is neither an items nor an events table.

    Examples
    --------
    >>> import pandas as pd
    >>> ts = lambda *s: pd.Series(pd.to_datetime(list(s), unit="s", utc=True), dtype="datetime64[ms, UTC]")
    >>> frame = pd.DataFrame({"item_id": ["a", "b", "c"], "sent_at": ts(0, 0, 0),
    ...                       "delivered_at": ts(1, 3, None), "read_at": ts(None, None, None)})
    >>> time_to_delivery(frame)[["ttd_n", "ttd_mean", "ttd_p50", "ttd_p90"]]
       ttd_n  ttd_mean  ttd_p50  ttd_p90
    0      2       2.0      2.0      2.8
    """
    table = _as_items(items)
    grouped, keys = _with_group_columns(table, by, tz)
    metrics = _delivery_aggregates(grouped, exclude_delivered_on_read, approximate)
    return _with_percentiles(_aggregate(grouped, keys, metrics), approximate)


def summary(
    items: ItemsSource,
    by: str | Sequence[str] | None = None,
    *,
    exclude_delivered_on_read: bool = False,
    approximate: bool = False,
    tz: str | None = None,
) -> pd.DataFrame:
    """:func:`engagement` and :func:`time_to_delivery` side by side, in one pass over the items.

    The same numbers as calling both and merging on the group columns, for
    about half the work: the engine groups the items once.

    Parameters
    ----------
    items, by, tz
        As for :func:`engagement`.
    exclude_delivered_on_read, approximate
        As for :func:`time_to_delivery`.

    Returns
    -------
    pandas.DataFrame
        The group columns, the columns of :func:`engagement`, then those of
        :func:`time_to_delivery`.

    Examples
    --------
    >>> import pandas as pd
    >>> ts = lambda *s: pd.Series(pd.to_datetime(list(s), unit="s", utc=True), dtype="datetime64[ms, UTC]")
    >>> frame = pd.DataFrame({"item_id": ["a", "b", "c"], "label": ["x", "x", "y"], "sent_at": ts(0, 0, 0),
    ...                       "delivered_at": ts(1, 3, None), "read_at": ts(5, None, None)})
    >>> summary(frame, by="label")[["label", "sent", "read_rate", "ttd_n", "ttd_p50"]]
      label  sent  read_rate  ttd_n  ttd_p50
    0     x     2        0.5      2      2.0
    1     y     1        0.0      0      NaN
    """
    table = _as_items(items)
    grouped, keys = _with_group_columns(table, by, tz)
    metrics = {**_stage_aggregates(grouped), **_delivery_aggregates(grouped, exclude_delivered_on_read, approximate)}
    frame = _with_percentiles(_with_rates(_aggregate(grouped, keys, metrics)), approximate)
    latency = [c for c in frame.columns if c.startswith("ttd_")]
    return frame[[c for c in frame.columns if c not in latency] + latency]


def _stage_aggregates(table: ibis.Table) -> dict[str, ibis.Value]:
    return {
        "sent": table.count(),
        "delivered": table.count(where=table.delivered),
        "read": table.count(where=table.read),
        "interacted": table.count(where=table.interacted),
        "clicked": table.count(where=table.clicked),
    }


def _delivery_aggregates(table: ibis.Table, exclude_delivered_on_read: bool, approximate: bool) -> dict[str, ibis.Value]:
    measured = table.sent_at.notnull() & table.delivered_at.notnull()
    if exclude_delivered_on_read:
        measured = measured & ~table.delivered_on_read
    seconds = table.time_to_delivery_s
    quantiles = [q for _, q in _PERCENTILES]
    if approximate:
        percentiles = seconds.approx_quantile(quantiles, where=measured)
    else:
        percentiles = seconds.quantile(quantiles, where=measured)
    return {
        "ttd_n": seconds.count(where=measured),
        "ttd_mean": seconds.mean(where=measured),
        "_percentiles": percentiles,
    }


def _aggregate(table: ibis.Table, keys: list[str], metrics: dict[str, ibis.Value]) -> pd.DataFrame:
    expr = table.group_by(keys).aggregate(**metrics) if keys else table.aggregate(**metrics)
    return _to_frame(expr, keys)


def _integer_counts(frame: pd.DataFrame) -> pd.DataFrame:
    for column in _STAGE_COUNTS:
        frame[column] = frame[column].fillna(0).astype("int64")
    return frame


def _with_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Stage counts as integers, then every rate with its Wilson interval."""
    frame = _integer_counts(frame)
    for rate, (numerator, denominator) in RATES.items():
        successes = frame[numerator].to_numpy(dtype=np.float64)
        trials = frame[denominator].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            frame[rate] = np.where(trials > 0, successes / trials, np.nan)
        lower, upper = wilson_interval(successes, trials)
        frame[f"{rate}_lo"] = lower
        frame[f"{rate}_hi"] = upper
    return frame


def _with_percentiles(frame: pd.DataFrame, approximate: bool) -> pd.DataFrame:
    """The engine's list of percentiles as ttd_p50 / ttd_p90 / ttd_p99 (``_approx`` when approximate)."""
    quantiles = [q for _, q in _PERCENTILES]
    suffix = "_approx" if approximate else ""
    values = [_as_list(v, len(quantiles)) for v in frame.pop("_percentiles")]
    matrix = np.array(values, dtype=np.float64).reshape(len(frame), len(quantiles))
    for position, (name, _) in enumerate(_PERCENTILES):
        frame[f"{name}{suffix}"] = matrix[:, position]
    frame["ttd_n"] = frame["ttd_n"].fillna(0).astype("int64")
    frame["ttd_mean"] = frame["ttd_mean"].astype("float64")
    return frame


def compare_versions(
    items: ItemsSource,
    metric: str = "read_rate",
    by: str = "template_version",
    within: str | Sequence[str] | None = "template_id",
    *,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Do the versions of a template differ in a rate? Chi-square and pairwise z-tests.

    For each group of ``within`` (e.g. each template), the items are split by
    ``by`` (e.g. template version) and:

    * a chi-square test of independence of the k x 2 table (successes,
      failures per version), without continuity correction, also for two
      versions: it then equals the two-sided z-test of the pair, so the
      omnibus and the pairwise result never disagree;
    * a two-proportion z-test (pooled) for every pair of versions, with
      Holm's correction over the pairs of the group.

    A group where any expected count of the table is below 5 (or whose
    versions have no denominator) is reported with verdict
    ``"insufficient data"`` and no p-values, never as (not) significant;
    likewise a pair whose own 2 x 2 table has an expected count below 5.
    Items with a missing ``by`` value are left out; a ``within`` group with
    a single version has no pair and no row.

    Parameters
    ----------
    items
        As for :func:`engagement`.
    metric
        One of :data:`RATES`: ``read_rate``, ``click_rate``,
        ``interaction_rate``, ``delivery_rate``, ``read_rate_of_delivered``,
        ``click_rate_of_delivered``.
    by
        The column whose values are compared (``version_a`` / ``version_b``
        hold its values, whatever it is).
    within
        Column(s) defining independent comparisons; ``None`` compares over
        all items.
    alpha
        Significance level for the verdict (on the Holm-adjusted p-value).

    Returns
    -------
    pandas.DataFrame
        One row per pair (a < b), sorted by the ``within`` columns then the
        versions: the ``within`` columns, ``version_a, version_b, n_a, n_b``
        (denominators), ``successes_a, successes_b, rate_a, rate_b,
        difference`` (rate_a - rate_b), ``p_value`` (z-test), ``p_holm``,
        ``verdict`` (one of :data:`COMPARISON_VERDICTS`), and the group's
        omnibus test repeated on each of its rows: ``chi2, chi2_dof,
        chi2_p_value``.

    Raises
    ------
    ParameterError
        Unknown metric or column, ``by`` also in ``within``, or ``alpha``
        outside (0, 1).

    Examples
    --------
    >>> import pandas as pd
    >>> n = 200
    >>> sent = pd.Series(pd.to_datetime([1780003600] * n, unit="s", utc=True), dtype="datetime64[ms, UTC]")
    >>> frame = pd.DataFrame({"item_id": [str(i) for i in range(n)], "template_id": "t",
    ...                       "template_version": [1] * 100 + [2] * 100, "sent_at": sent, "delivered_at": sent,
    ...                       "read_at": sent.where([i < 30 or 100 <= i < 160 for i in range(n)])})
    >>> compare_versions(frame)[["version_a", "version_b", "rate_a", "rate_b", "verdict"]]
       version_a  version_b  rate_a  rate_b   verdict
    0          1          2     0.3     0.6  b higher
    """
    if metric not in RATES:
        raise ParameterError(f"metric must be one of {', '.join(RATES)}; got {metric!r}")
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    if not isinstance(by, str):
        raise ParameterError(f"by must be one column name, got {by!r}")
    within_columns = _as_column_list(within, "within")
    if by in within_columns:
        raise ParameterError(f"by={by!r} is also in within={within_columns}: compare across a column, not within it")
    table = _as_items(items)
    grouped, keys = _with_group_columns(table, [*within_columns, by], None)
    counts = _integer_counts(_aggregate(grouped, keys, _stage_aggregates(grouped)))
    counts = counts[counts[by].notna()]
    numerator, denominator = RATES[metric]

    columns = [
        *within_columns, "version_a", "version_b", "n_a", "n_b", "successes_a", "successes_b",
        "rate_a", "rate_b", "difference", "p_value", "p_holm", "verdict", "chi2", "chi2_dof", "chi2_p_value",
    ]
    rows: list[list[object]] = []
    groups = counts.groupby(within_columns, dropna=False, sort=False) if within_columns else [((), counts)]
    for key, group in groups:
        key_values = list(key) if isinstance(key, tuple) else [key]
        rows.extend(
            [*key_values, *row]
            for row in _compare_group(
                group[by].tolist(),
                group[numerator].to_numpy(dtype=np.float64),
                group[denominator].to_numpy(dtype=np.float64),
                alpha,
            )
        )
    frame = pd.DataFrame(rows, columns=columns)
    for column in within_columns:
        frame[column] = frame[column].astype(counts[column].dtype)
    for column in ("version_a", "version_b"):
        frame[column] = frame[column].astype(counts[by].dtype)
    for column in ("n_a", "n_b", "successes_a", "successes_b"):
        frame[column] = frame[column].astype("int64")
    for column in ("rate_a", "rate_b", "difference", "p_value", "p_holm", "chi2", "chi2_p_value"):
        frame[column] = frame[column].astype("float64")
    frame["chi2_dof"] = frame["chi2_dof"].astype("Int64")
    frame["verdict"] = frame["verdict"].astype("str")
    return _in_value_order(frame, [*within_columns, "version_a", "version_b"])


def campaigns(source: str | Path | pd.DataFrame | ibis.Table) -> pd.DataFrame:
    """One row per campaign: outcome, counts, timing and notifications.

    Built from the ``after_campaign_completed`` / ``after_campaign_failed``
    events and, for context, ``after_notification_created``. Repeated
    campaign events are resolved deterministically: each state column
    (name, status, template, counts, ``completed_at``, ``updated_at``) comes
    from the latest campaign event that has a value (ordered like item
    events: event_time, then a hash of event_id), ``scheduled_at`` and
    ``sent_at`` are the earliest values seen. A campaign known only from
    notification events (not finished yet) has a row with a missing status
    and its template from its earliest notification.

    Parameters
    ----------
    source
        An events source accepted by
        :func:`campaign_analytics.backends.events_table`.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``campaign_id``: ``campaign_id, name, status, template_id,
        template_version, total_targets, sent_count, failed_count,
        scheduled_at, sent_at, completed_at, updated_at, time_to_complete_s``
        (seconds from ``sent_at``, or ``scheduled_at`` when ``sent_at`` is
        missing, to ``completed_at``; a failed campaign without
        ``completed_at`` ends at its failed event's time, i.e. ``updatedAt``)
        and ``notifications`` (distinct notifications created for the
        campaign).

    Examples
    --------
    >>> import pandas as pd
    >>> ts = lambda *s: pd.Series(pd.to_datetime(list(s), unit="s", utc=True), dtype="datetime64[ms, UTC]")
    >>> events = pd.DataFrame({
    ...     "event_id": ["c1", "n1"], "entity": ["campaign", "notification"],
    ...     "stage": ["completed", "created"], "campaign_id": ["cmp-1", "cmp-1"],
    ...     "notification_id": [None, "ntf-1"], "status": ["completed", "dispatching"],
    ...     "event_time": ts(200, 100), "sent_at": ts(100, None), "completed_at": ts(200, None)})
    >>> campaigns(events)[["campaign_id", "status", "time_to_complete_s", "notifications"]]
      campaign_id     status  time_to_complete_s  notifications
    0       cmp-1  completed               100.0              1
    """
    events = _with_contract_columns(events_table(source))
    backend = backend_name(events)
    first, last = _event_order_keys(events, backend)
    events = events.mutate(_first=first, _last=last)
    e = events.filter(events.entity == "campaign", events.campaign_id.notnull())
    state = {
        column: _latest_with_value(e, column, backend)
        for column in (
            "name", "status", "template_id", "template_version", "total_targets",
            "sent_count", "failed_count", "completed_at", "updated_at",
        )
    }
    finished = e.group_by("campaign_id").aggregate(
        **state,
        _stage=_latest_with_value(e, "stage", backend),
        _ended_at=_latest_with_value(e, "event_time", backend),
        scheduled_at=e.scheduled_at.min(),
        sent_at=e.sent_at.min(),
    )
    n = events.filter(events.entity == "notification", events.campaign_id.notnull())
    created = n.group_by(_campaign_id="campaign_id").aggregate(
        notifications=n.notification_id.nunique(),
        _template_id=_earliest_with_value(n, "template_id", backend),
        _template_version=_earliest_with_value(n, "template_version", backend),
    )
    joined = finished.outer_join(created, finished.campaign_id == created._campaign_id)
    j = joined
    start = j.sent_at.fill_null(j.scheduled_at)
    result = j.select(
        campaign_id=j.campaign_id.fill_null(j._campaign_id),
        name=j.name,
        status=j.status.fill_null(j._stage),
        template_id=j.template_id.fill_null(j._template_id),
        template_version=j.template_version.fill_null(j._template_version),
        total_targets=j.total_targets,
        sent_count=j.sent_count,
        failed_count=j.failed_count,
        scheduled_at=j.scheduled_at,
        sent_at=j.sent_at,
        completed_at=j.completed_at,
        updated_at=j.updated_at,
        time_to_complete_s=(
            epoch_milliseconds(j.completed_at.fill_null(j._ended_at), backend=backend)
            - epoch_milliseconds(start, backend=backend)
        ).cast(dt.float64)
        / 1000.0,
        notifications=j.notifications.fill_null(0),
    )
    frame = _to_frame(result, ["campaign_id"])
    frame["notifications"] = frame["notifications"].astype("int64")
    return frame


# ---------------------------------------------------------------- items input


def _as_items(source: ItemsSource) -> ibis.Table:
    """The items table of ``source`` (items or events, Ibis or pandas, or a path)."""
    if isinstance(source, (str, Path)):
        return _build_items(source)
    if isinstance(source, (ibis.Table, pd.DataFrame)):
        columns = set(source.columns)
        if {"stage", "event_time"} <= columns:
            return _build_items(source)
        if isinstance(source, ibis.Table):
            _check_item_columns(columns, "the Ibis table")
            return _with_item_flags(source)
        _check_item_columns(columns, "the DataFrame")
        return _with_item_flags(ibis.memtable(frame_to_arrow(source, what="the items DataFrame")))
    raise ParameterError(
        "items must be the items table (Ibis or pandas), or an events source "
        f"(path, events DataFrame or Ibis table); got {type(source).__name__}"
    )


def _check_item_columns(columns: set[str], what: str) -> None:
    required = ("item_id", "sent_at", "delivered_at", "read_at")
    missing = [c for c in required if c not in columns]
    if missing:
        raise TableError(
            f"{what} is neither an items table nor an events table: it lacks {', '.join(missing)}. "
            "Pass campaign_analytics.items.items(events) or the events table itself."
        )


def _with_item_flags(table: ibis.Table) -> ibis.Table:
    """Add the stage flags and latency an items table from elsewhere may lack."""
    t = table
    missing_times = {
        c: ibis.null(dt.Timestamp(timezone="UTC")) for c in _ITEM_TIMESTAMPS if c not in t.columns
    }
    if missing_times:
        t = t.mutate(**missing_times)
    flags: dict[str, ibis.Value] = {}
    for stage in ("read", "interacted", "clicked"):
        if stage not in t.columns:
            flags[stage] = t[f"{stage}_at"].notnull()
    if flags:
        t = t.mutate(**flags)
    if "delivered" not in t.columns:
        delivered = t.delivered_at.notnull() | t.read | t.interacted | t.clicked
        if "delivered_implied" in t.columns:
            delivered = delivered | t.delivered_implied.fill_null(False)
        t = t.mutate(delivered=delivered)
    if "delivered_on_read" not in t.columns:
        t = t.mutate(delivered_on_read=(t.delivered_at == t.read_at).fill_null(False))
    if "time_to_delivery_s" not in t.columns:
        backend = backend_name(t)
        milliseconds = epoch_milliseconds(t.delivered_at, backend=backend) - epoch_milliseconds(
            t.sent_at, backend=backend
        )
        t = t.mutate(time_to_delivery_s=milliseconds.cast(dt.float64) / 1000.0)
    return t


# ------------------------------------------------------------------ grouping


def _as_column_list(value: str | Sequence[str] | None, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        columns = [value]
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        columns = list(value)
    else:
        raise ParameterError(f"{name} must be a column name or a list of column names, got {value!r}")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ParameterError(f"{name} names {', '.join(duplicated)} more than once")
    return columns


def _with_group_columns(
    table: ibis.Table, by: str | Sequence[str] | None, tz: str | None
) -> tuple[ibis.Table, list[str]]:
    """``table`` with the derived group columns of ``by`` added, and the key names."""
    keys = _as_column_list(by, "by")
    groupable = [name for name, dtype in table.schema().items() if not dtype.is_nested()]
    valid = [*groupable, *(c for c in DERIVED_GROUP_COLUMNS if c not in groupable)]
    unknown = [c for c in keys if c not in valid]
    if unknown:
        hint = " (use 'tag' to group by each tag of 'tags')" if "tags" in unknown else ""
        raise ParameterError(
            f"cannot group by {', '.join(map(repr, unknown))}{hint}: not an item column. "
            f"Valid: {', '.join(sorted(valid))}"
        )
    zone = _zone(tz)
    backend = backend_name(table)
    derived: dict[str, ibis.Value] = {}
    if ("send_date" in keys and "send_date" not in table.columns) or (
        "send_hour" in keys and "send_hour" not in table.columns
    ):
        utc_ms = epoch_milliseconds(table.sent_at, backend=backend)
        local_ms = utc_ms + _utc_offset_ms(utc_ms, zone)
        if "send_date" in keys:
            derived["send_date"] = ibis.literal(_dt.date(1970, 1, 1)) + (local_ms // _MS_PER_DAY).as_interval("D")
        if "send_hour" in keys:
            derived["send_hour"] = ((local_ms // _MS_PER_HOUR) % 24).cast(dt.int8)
    if "tag" in keys and "tag" not in table.columns:
        if "tags" not in table.columns:
            raise ParameterError("cannot group by 'tag': the items table has no 'tags' column")
        # A tag listed twice on one item counts the item once; an item
        # without tags keeps one row, with a missing tag.
        tags = _array_distinct(table.tags)
        derived["tag"] = ibis.ifelse(
            tags.isnull() | (tags.length() == 0), ibis.literal([None], type=dt.Array(dt.string)), tags
        ).unnest()
    if derived:
        table = table.mutate(**derived)
    return table, keys


@functools.cache
def _array_distinct_function() -> Callable[..., ibis.Value]:
    def array_distinct(values: object) -> object:  # the body never runs: a builtin
        ...

    strings = dt.Array(dt.string)
    return ibis.udf.scalar.builtin(array_distinct, name="array_distinct", signature=((strings,), strings))


def _array_distinct(values: ibis.ArrayValue) -> ibis.ArrayValue:
    """Distinct elements (DuckDB and Spark both call it array_distinct; Ibis'
    own ``unique()`` emits a lambda syntax DuckDB 2 rejects)."""
    if values.type() != dt.Array(dt.string):
        values = values.cast(dt.Array(dt.string))
    return _array_distinct_function()(values)


def _zone(tz: str | None) -> ZoneInfo | None:
    if tz is None:
        return None
    if not isinstance(tz, str):
        raise ParameterError(f"tz must be an IANA time zone name such as 'Europe/Madrid', got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ParameterError(f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Madrid' or 'UTC'") from exc


def _utc_offset_ms(utc_ms: ibis.IntegerValue, zone: ZoneInfo | None) -> ibis.IntegerValue:
    """The zone's UTC offset, in milliseconds, at the moment ``utc_ms`` (epoch ms).

    Ibis has no portable time zone conversion, so the zone's offset history is
    tabulated here and turned into a balanced tree of comparisons (about
    log2(#transitions), i.e. 8 for a zone with daylight saving time, per row).
    """
    if zone is None:
        return ibis.literal(0, dt.int64)
    starts, offsets = _offset_steps(zone.key)

    def tree(lo: int, hi: int) -> ibis.IntegerValue:
        if lo == hi:
            return ibis.literal(offsets[lo] * 1000, dt.int64)
        mid = (lo + hi) // 2
        return ibis.ifelse(utc_ms < starts[mid] * 1000, tree(lo, mid), tree(mid + 1, hi))

    return tree(0, len(offsets) - 1)


@functools.lru_cache(maxsize=64)
def _offset_steps(key: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """UTC offset history of a zone: ``offsets[i + 1]`` applies from epoch second ``starts[i]``."""
    zone = ZoneInfo(key)

    def offset(second: int) -> int:
        delta = _dt.datetime.fromtimestamp(second, zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    day = 86_400
    begin = int(_dt.datetime(_ZONE_YEARS[0], 1, 1, tzinfo=_dt.UTC).timestamp())
    end = int(_dt.datetime(_ZONE_YEARS[1], 1, 1, tzinfo=_dt.UTC).timestamp())
    starts: list[int] = []
    offsets = [offset(begin)]
    for second in range(begin + day, end, day):
        current = offset(second)
        if current == offsets[-1]:
            continue
        lo, hi = second - day, second  # offset(lo) is the old one, offset(hi) the new
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if offset(mid) == offsets[-1]:
                lo = mid
            else:
                hi = mid
        starts.append(hi)
        offsets.append(current)
    return tuple(starts), tuple(offsets)


# ---------------------------------------------------------------- aggregation


def _to_frame(expr: ibis.Table, keys: list[str]) -> pd.DataFrame:
    """Execute, give integer columns with missing values a nullable dtype, sort by ``keys``."""
    frame = execute(expr)
    schema = expr.schema()
    for column in frame.columns:
        dtype = schema[column]
        # Missing values make an integer column float, or object when every value is missing (DuckDB): Int64 either way.
        if dtype.is_integer() and frame[column].dtype.kind in "fO":
            frame[column] = frame[column].astype(pd.Int64Dtype())
        elif column in keys and dtype.is_date():
            frame[column] = pd.to_datetime(frame[column])
    return _in_value_order(frame, keys) if keys else frame


def _in_value_order(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by ``keys``, missing values last; a column of numbers held as text ("10", "9") by number.

    Sorted by text first, so numbers that are equal ("1.0", "1e0") keep one order whatever the engine's.
    """
    by_text = frame.sort_values(keys, na_position="last", kind="stable", ignore_index=True)
    return by_text.sort_values(keys, key=_number_key, na_position="last", kind="stable", ignore_index=True)


def _number_key(values: pd.Series) -> pd.Series:
    if values.dtype.kind in "OU" or isinstance(values.dtype, pd.StringDtype):
        present = values.dropna()
        if len(present) and present.map(lambda v: isinstance(v, str)).all() and present.str.fullmatch(JSON_NUMBER).all():
            return pd.to_numeric(values)
    return values


def _as_list(value: object, size: int) -> list[float]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return [np.nan] * size
    values = [np.nan if v is None else float(v) for v in value]  # type: ignore[attr-defined]  # a list from the engine
    return values if len(values) == size else [np.nan] * size


# ---------------------------------------------------------------- comparisons


def _compare_group(
    versions: list[object], successes: np.ndarray, trials: np.ndarray, alpha: float
) -> list[list[object]]:
    """Rows (without the within key) for every pair of versions of one group."""
    order = value_order(versions)
    versions = [versions[i] for i in order]
    successes = successes[order]
    trials = trials[order]
    k = len(versions)
    if k < 2:
        return []
    table = np.column_stack([successes, trials - successes])
    group_ok = _expected_at_least(table, _MIN_EXPECTED)
    chi2 = chi2_p = np.nan
    dof: object = pd.NA
    if group_ok:
        result = stats.chi2_contingency(table, correction=False)
        chi2, chi2_p, dof = float(result.statistic), float(result.pvalue), int(result.dof)

    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    testable = [
        group_ok and _expected_at_least(table[[i, j]], _MIN_EXPECTED) for i, j in pairs
    ]
    a = np.array([i for i, _ in pairs])
    b = np.array([j for _, j in pairs])
    _, p_values = two_proportion_z_test(successes[a], trials[a], successes[b], trials[b])
    p_values = np.where(testable, p_values, np.nan)
    p_holm = holm(p_values)

    rows: list[list[object]] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(trials > 0, successes / trials, np.nan)
    for (i, j), ok, p, adjusted in zip(pairs, testable, p_values, p_holm, strict=True):
        if not ok:
            verdict = "insufficient data"
        elif adjusted <= alpha:
            verdict = "a higher" if rates[i] > rates[j] else "b higher"
        else:
            verdict = "no significant difference"
        rows.append(
            [
                versions[i], versions[j], int(trials[i]), int(trials[j]),
                int(successes[i]), int(successes[j]), rates[i], rates[j], rates[i] - rates[j],
                p, adjusted, verdict, chi2, dof, chi2_p,
            ]
        )
    return rows


def _expected_at_least(table: np.ndarray, minimum: float) -> bool:
    """Whether every expected count of the contingency table is at least ``minimum``."""
    total = table.sum()
    if total <= 0:
        return False
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    return bool((expected >= minimum).all())
