"""Tests of campaign_analytics.charts on small synthetic metric and items frames."""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from campaign_analytics import charts
from campaign_analytics.charts import (
    CHANNEL_COLORS,
    NO_DATA_TEXT,
    delivery_ecdf,
    delivery_histogram,
    funnel,
    percentile_bars,
    rate_bars,
    trend,
    version_color,
)
from campaign_analytics.errors import ParameterError

RATE_PARTS = {
    "delivery_rate": ("delivered", "sent"),
    "read_rate": ("read", "sent"),
    "interaction_rate": ("interacted", "sent"),
    "click_rate": ("clicked", "sent"),
    "read_rate_of_delivered": ("read", "delivered"),
    "click_rate_of_delivered": ("clicked", "delivered"),
}


def _wilson(successes: pd.Series, trials: pd.Series, z: float = 1.959964) -> tuple[pd.Series, pd.Series, pd.Series]:
    n = trials.astype(float).where(trials > 0)
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return p, centre - half, centre + half


def _engagement(groups: dict[str, list[object]], counts: dict[str, list[int]]) -> pd.DataFrame:
    frame = pd.DataFrame({**groups, **counts})
    for rate, (numerator, denominator) in RATE_PARTS.items():
        frame[rate], frame[f"{rate}_lo"], frame[f"{rate}_hi"] = _wilson(frame[numerator], frame[denominator])
    return frame


@pytest.fixture
def by_channel() -> pd.DataFrame:
    return _engagement(
        {"channel_type": ["push", "in_app"]},
        {
            "sent": [800, 1000],
            "delivered": [700, 950],
            "read": [0, 600],
            "interacted": [0, 120],
            "clicked": [90, 0],
        },
    )


@pytest.fixture
def by_version() -> pd.DataFrame:
    # Rows out of order on purpose: charts sort categories themselves.
    return _engagement(
        {"template_version": [3, 1, 2]},
        {
            "sent": [0, 1003, 980],
            "delivered": [0, 950, 900],
            "read": [0, 412, 480],
            "interacted": [0, 50, 60],
            "clicked": [0, 0, 0],
        },
    )


@pytest.fixture
def by_version_and_channel() -> pd.DataFrame:
    return _engagement(
        {"template_version": [1, 1, 2], "channel_type": ["in_app", "push", "push"]},
        {
            "sent": [500, 400, 300],
            "delivered": [480, 350, 290],
            "read": [200, 0, 0],
            "interacted": [30, 0, 0],
            "clicked": [0, 40, 33],
        },
    )


@pytest.fixture
def ttd() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "template_version": [2, 1, 1],
            "channel_type": ["push", "push", "in_app"],
            "ttd_n": [700, 650, 1_204],
            "ttd_mean": [5.0, 7.5, 2.0],
            "ttd_p50": [1.5, 2.0, 0.8],
            "ttd_p90": [9.0, 12.0, 3.5],
            "ttd_p99": [240.0, 600.0, 45.0],
        }
    )


@pytest.fixture
def items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "channel_type": pd.array(["push", "in_app", "in_app", "in_app", "in_app", "push", "push"], dtype="str"),
            "template_id": ["welcome"] * 7,
            "template_version": pd.array([1, 2, 2, 1, 2, 1, 2], dtype="Int32"),
            "label": ["promo"] * 7,
            "sent_at": pd.to_datetime([1_714_521_600_000] * 7, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
            "time_to_delivery_s": [30.0, 1.0, 2.0, 2.0, 4.0, math.nan, 0.5],
            "delivered_on_read": [False] * 7,
        }
    )


@pytest.fixture
def daily() -> pd.DataFrame:
    return _engagement(
        {
            "send_date": pd.to_datetime(["2024-05-02", "2024-05-01", "2024-05-01", "2024-05-03"]),
            "template_version": [2, 2, 1, 2],
        },
        {
            "sent": [500, 480, 300, 0],
            "delivered": [490, 470, 290, 0],
            "read": [210, 190, 100, 0],
            "interacted": [20, 15, 9, 0],
            "clicked": [0, 0, 0, 0],
        },
    )


def _names(fig: go.Figure) -> list[str]:
    return [trace.name for trace in fig.data]


def _annotation_texts(fig: go.Figure) -> list[str]:
    return [annotation.text for annotation in fig.layout.annotations]


# ---------------------------------------------------------------------------
# funnel


def test_funnel_stages_counts_and_hover(by_channel: pd.DataFrame) -> None:
    fig = funnel(by_channel)

    assert len(fig.data) == 2
    assert _names(fig) == ["In-app", "Push"]
    in_app, push = fig.data
    assert list(in_app.y) == ["Sent", "Delivered", "Read", "Interacted"]
    assert list(in_app.x) == [1000, 950, 600, 120]
    assert list(push.y) == ["Sent", "Delivered", "Clicked"]
    assert list(push.x) == [800, 700, 90]
    assert "Delivered: 950 (95.0% of sent)" in in_app.hovertext[1]
    assert "Clicked: 90 (11.2% of sent)" in push.hovertext[2]
    assert fig.layout.xaxis.title.text == "Items (count)"
    assert list(fig.layout.yaxis.categoryarray) == ["Sent", "Delivered", "Read", "Interacted", "Clicked"]
    assert fig.layout.funnelmode == "group"
    assert [trace.marker.color for trace in fig.data] == [CHANNEL_COLORS["in_app"], CHANNEL_COLORS["push"]]


def test_funnel_without_grouping_needs_one_row(by_channel: pd.DataFrame) -> None:
    fig = funnel(by_channel.iloc[[1]].drop(columns=["channel_type"]), by=None)
    assert _names(fig) == ["All items"]
    # Channel unknown: every stage is shown.
    assert list(fig.data[0].y) == ["Sent", "Delivered", "Read", "Interacted", "Clicked"]
    # A single-channel frame keeps that channel's stages.
    assert list(funnel(by_channel.iloc[[0]], by=None).data[0].y) == ["Sent", "Delivered", "Clicked"]

    with pytest.raises(ParameterError, match="one-row frame"):
        funnel(by_channel, by=None)


def test_funnel_refuses_to_sum_rows_of_a_finer_grouping(by_version_and_channel: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match=r"one row per channel_type.*channel_type='push'"):
        funnel(by_version_and_channel)


# ---------------------------------------------------------------------------
# time to delivery distributions


def test_delivery_ecdf_steps_and_axes(items: pd.DataFrame) -> None:
    fig = delivery_ecdf(items)

    assert _names(fig) == ["In-app", "Push"]
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.xaxis.title.text == "Time to delivery (seconds, log scale)"
    assert fig.layout.yaxis.title.text == "Delivered within time (% of delivered items)"
    assert fig.layout.yaxis.tickformat == ".0%"
    in_app, push = fig.data
    # in_app times 1, 2, 2, 4: the step starts at 0 and each corner is the share at or below it.
    np.testing.assert_allclose(in_app.x, [1.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(in_app.y, [0.0, 0.25, 0.75, 1.0])
    assert in_app.line.shape == "hv"
    # push: the NaN (undelivered) item is not part of the distribution.
    np.testing.assert_allclose(push.y, [0.0, 0.5, 1.0])
    assert "of 2 delivered items" in push.hovertemplate


def test_delivery_ecdf_log_axis_keeps_zero_times_in_the_shares(items: pd.DataFrame) -> None:
    items.loc[0, "time_to_delivery_s"] = 0.0  # a push item delivered in the same millisecond
    fig = delivery_ecdf(items)
    push = fig.data[1]
    np.testing.assert_allclose(push.x, [0.5, 0.5])
    np.testing.assert_allclose(push.y, [0.5, 1.0])
    assert "1 Push items delivered in 0 seconds or less" in fig.layout.title.subtitle.text

    linear = delivery_ecdf(items, log_x=False)
    assert linear.layout.xaxis.title.text == "Time to delivery (seconds)"
    np.testing.assert_allclose(linear.data[1].x, [0.0, 0.0, 0.5])


def test_delivery_ecdf_thins_very_large_groups() -> None:
    times = np.arange(1, 50_001, dtype=float)
    fig = delivery_ecdf(pd.DataFrame({"channel_type": ["push"] * len(times), "time_to_delivery_s": times}))
    trace = fig.data[0]
    assert len(trace.x) <= charts._ECDF_MAX_POINTS + 1
    assert trace.x[-1] == 50_000 and trace.y[-1] == 1.0
    np.testing.assert_allclose(trace.y[1:], np.asarray(trace.x[1:]) / 50_000)


def test_delivery_histogram_log_bins_overlaid(items: pd.DataFrame) -> None:
    fig = delivery_histogram(items, bins_per_decade=4)

    assert _names(fig) == ["In-app", "Push"]
    assert fig.layout.barmode == "overlay"
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.xaxis.title.text == "Time to delivery (seconds, log scale)"
    assert fig.layout.yaxis.title.text == "Delivered items (% of group)"
    assert all(trace.opacity < 1 for trace in fig.data)
    for trace in fig.data:
        lower = np.asarray(trace.x) - np.asarray(trace.width) / 2
        upper = np.asarray(trace.x) + np.asarray(trace.width) / 2
        # A quarter decade per bin, and every edge is a power of 10 ** 0.25 (shared by all groups).
        np.testing.assert_allclose(upper / lower, 10**0.25)
        np.testing.assert_allclose(np.log10(lower) * 4, np.round(np.log10(lower) * 4), atol=1e-9)
    in_app = fig.data[0]
    assert math.isclose(float(np.sum(in_app.y)), 1.0)
    assert "2 items (50.0% of 4 delivered)" in " ".join(in_app.hovertext)

    counts = delivery_histogram(items, normalize=False)
    assert counts.layout.yaxis.title.text == "Delivered items (count)"
    assert sum(counts.data[0].y) == 4


def test_delivery_histogram_rejects_bad_bins(items: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match="bins_per_decade"):
        delivery_histogram(items, bins_per_decade=0)


# ---------------------------------------------------------------------------
# rates


def test_rate_bars_error_bars_hover_and_axes(by_version: pd.DataFrame) -> None:
    fig = rate_bars(by_version, "read_rate")

    assert len(fig.data) == 1
    bars = fig.data[0]
    assert bars.name == "Read rate"
    assert list(bars.x) == ["v1", "v2", "v3"]
    assert list(fig.layout.xaxis.categoryarray) == ["v1", "v2", "v3"]
    assert fig.layout.xaxis.title.text == "Template version"
    assert fig.layout.yaxis.title.text == "Read rate (% of sent)"
    assert fig.layout.yaxis.tickformat == ".0%"
    assert fig.layout.title.text == "Read rate by template version"

    ordered = by_version.sort_values("template_version")
    np.testing.assert_allclose(bars.y, ordered["read_rate"], equal_nan=True)
    assert bars.error_y.symmetric is False
    np.testing.assert_allclose(bars.error_y.arrayminus, ordered["read_rate"] - ordered["read_rate_lo"], equal_nan=True)
    np.testing.assert_allclose(bars.error_y.array, ordered["read_rate_hi"] - ordered["read_rate"], equal_nan=True)

    assert "read 412 of 1,003 sent" in bars.hovertext[0]
    assert "Read rate: 41.1% (95% CI" in bars.hovertext[0]
    assert "read 480 of 980 sent" in bars.hovertext[1]
    assert "n/a (no items sent)" in bars.hovertext[2]
    assert list(bars.marker.color) == [version_color(1), version_color(2), version_color(3)]


def test_rate_bars_of_delivered_counts_delivered(by_version: pd.DataFrame) -> None:
    fig = rate_bars(by_version, "read_rate_of_delivered")
    assert fig.layout.yaxis.title.text == "Read rate (% of delivered)"
    assert "read 412 of 950 delivered" in fig.data[0].hovertext[0]


def test_rate_bars_with_colour_groups(by_version_and_channel: pd.DataFrame) -> None:
    fig = rate_bars(by_version_and_channel, "click_rate", x="template_version", color="channel_type")

    assert _names(fig) == ["In-app", "Push"]
    assert fig.layout.barmode == "group"
    assert fig.layout.legend.title.text == "Channel"
    in_app, push = fig.data
    assert list(in_app.x) == ["v1"]
    assert list(push.x) == ["v1", "v2"]
    assert in_app.marker.color == CHANNEL_COLORS["in_app"]
    assert push.marker.color == CHANNEL_COLORS["push"]
    assert "clicked 33 of 300 sent" in push.hovertext[1]
    assert "v2 · Push" in push.hovertext[1]


def test_rate_bars_rejects_unknown_rate(by_version: pd.DataFrame) -> None:
    with pytest.raises(ParameterError, match="rate must be one of"):
        rate_bars(by_version, "open_rate")


# ---------------------------------------------------------------------------
# time-to-delivery percentiles


def test_percentile_bars_grouped_by_percentile(ttd: pd.DataFrame) -> None:
    fig = percentile_bars(ttd[ttd["channel_type"] == "push"])

    assert _names(fig) == ["p50", "p90", "p99"]
    assert fig.layout.barmode == "group"
    assert fig.layout.yaxis.title.text == "Time to delivery (seconds)"
    assert fig.layout.xaxis.title.text == "Template version"
    p99 = fig.data[2]
    assert list(p99.x) == ["v1", "v2"]
    np.testing.assert_allclose(p99.y, [600.0, 240.0])
    assert "p99: 600 s (10.0 min)" in p99.hovertext[0]
    assert "from 650 delivered items" in p99.hovertext[0]
    assert "from 700 delivered items" in p99.hovertext[1]

    assert percentile_bars(ttd[ttd["channel_type"] == "push"], log_y=True).layout.yaxis.type == "log"


def test_percentile_bars_with_colour_use_a_two_level_axis(ttd: pd.DataFrame) -> None:
    fig = percentile_bars(ttd, color="channel_type")

    assert _names(fig) == ["In-app", "Push"]
    assert fig.layout.xaxis.type == "multicategory"
    in_app, push = fig.data
    assert [list(level) for level in push.x] == [
        ["v1", "v1", "v1", "v2", "v2", "v2"],
        ["p50", "p90", "p99", "p50", "p90", "p99"],
    ]
    np.testing.assert_allclose(push.y, [2.0, 12.0, 600.0, 1.5, 9.0, 240.0])
    # In-app has no version 2 row: its slots are empty, not shifted.
    np.testing.assert_allclose(in_app.y, [0.8, 3.5, 45.0, np.nan, np.nan, np.nan])
    assert "from 1,204 delivered items" in in_app.hovertext[0]


# ---------------------------------------------------------------------------
# trend


def test_trend_rate_with_interval_band(daily: pd.DataFrame) -> None:
    fig = trend(daily, "read_rate", color="template_version")

    assert _names(fig) == ["v1 (95% interval)", "v1", "v2 (95% interval)", "v2"]
    assert fig.layout.yaxis.title.text == "Read rate (% of sent)"
    assert fig.layout.xaxis.title.text == "Send date (UTC)"
    assert fig.layout.yaxis.tickformat == ".0%"
    band, line = fig.data[2], fig.data[3]
    assert band.fill == "toself" and band.showlegend is False and band.legendgroup == line.legendgroup
    v2 = daily[daily["template_version"] == 2].sort_values("send_date")
    np.testing.assert_allclose(line.y, v2["read_rate"], equal_nan=True)
    # The band skips the day with nothing sent (no interval) and closes back along the lower bound.
    valid = v2[v2["sent"] > 0]
    np.testing.assert_allclose(band.y, np.concatenate([valid["read_rate_hi"], valid["read_rate_lo"][::-1]]))
    assert [pd.Timestamp(value) for value in line.x] == list(v2["send_date"])
    assert "read 190 of 480 sent" in line.hovertext[0]
    assert "2024-05-01 · v2" in line.hovertext[0]


def test_trend_of_percentiles_without_band(daily: pd.DataFrame) -> None:
    frame = pd.DataFrame(
        {
            "send_date": pd.to_datetime(["2024-05-01", "2024-05-02"]),
            "ttd_n": [950, 1_020],
            "ttd_p90": [8.5, 7.25],
        }
    )
    fig = trend(frame, "ttd_p90")

    assert len(fig.data) == 1
    assert fig.data[0].name == "Time to delivery, 90th percentile (p90)"
    assert fig.layout.yaxis.title.text == "Time to delivery, 90th percentile (p90) (seconds)"
    assert "from 1,020 delivered items" in fig.data[0].hovertext[1]


def test_trend_of_percentiles_on_a_log_axis_counts_the_points_it_cannot_place() -> None:
    frame = pd.DataFrame(
        {
            "send_date": pd.to_datetime(["2024-05-01", "2024-05-02"] * 2),
            "channel_type": ["in_app", "in_app", "push", "push"],
            "ttd_n": [950, 1_020, 40, 38],
            "ttd_p90": [3_300.0, 4_400.0, 0.0, 8.0],
        }
    )
    flat = trend(frame, "ttd_p90", color="channel_type")
    assert flat.layout.yaxis.type in (None, "linear")
    fig = trend(frame, "ttd_p90", color="channel_type", log_y=True)
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.title.text == "Time to delivery, 90th percentile (p90) (seconds, log scale)"
    assert fig.layout.title.subtitle.text.startswith("Not placeable on the log axis: 1 point at 0 seconds")
    assert not trend(frame[frame["ttd_p90"] > 0], "ttd_p90", color="channel_type", log_y=True).layout.title.subtitle.text
    for not_a_time in ("read_rate", "ttd_n"):
        with pytest.raises(ParameterError, match="log_y"):
            trend(frame.assign(read_rate=0.5), not_a_time, log_y=True)


def test_percentile_bars_on_a_log_axis_count_the_bars_they_cannot_place(ttd: pd.DataFrame) -> None:
    zero = ttd.assign(ttd_p50=ttd["ttd_p50"].where(ttd["channel_type"] != "push", 0.0))
    assert percentile_bars(zero, color="channel_type", log_y=True).layout.title.subtitle.text.startswith(
        "Not placeable on the log axis: 2 bars at 0 seconds"
    )
    assert not percentile_bars(zero, color="channel_type").layout.title.subtitle.text


def test_numbers_held_as_text_sort_as_numbers_and_user_keys_keep_their_names() -> None:
    frame = _engagement(
        {"variables__trialDays": ["10", "2", "1", None]},
        {"sent": [100, 100, 100, 100], "delivered": [90, 90, 90, 90], "read": [9, 8, 7, 6],
         "interacted": [1, 1, 1, 1], "clicked": [0, 0, 0, 0]},
    )
    fig = rate_bars(frame, "read_rate", x="variables__trialDays")
    assert list(fig.data[0].x) == ["1", "2", "10", "(none)"]
    assert fig.layout.xaxis.title.text == "variables__trialDays"
    # Text that is not all numbers keeps the plain order.
    mixed = frame.assign(variables__trialDays=["10", "b", "a", None])
    assert list(rate_bars(mixed, "read_rate", x="variables__trialDays").data[0].x) == ["10", "a", "b", "(none)"]
    # A space of any kind around a number makes it text: sorted as text, never a crash.
    spaced = frame.assign(variables__trialDays=["9\x1c", "10", "7\xa0", None])
    assert list(rate_bars(spaced, "read_rate", x="variables__trialDays").data[0].x) == ["10", "7\xa0", "9\x1c", "(none)"]


# ---------------------------------------------------------------------------
# conventions shared by every chart


def test_version_colours_are_the_same_in_every_chart(
    by_version: pd.DataFrame, daily: pd.DataFrame, ttd: pd.DataFrame, items: pd.DataFrame
) -> None:
    bars = rate_bars(by_version, "read_rate")
    lines = trend(daily, "read_rate", color="template_version")
    percentiles = percentile_bars(ttd, x="channel_type", color="template_version")
    ecdf = delivery_ecdf(items, by="template_version")

    colour_of_v2 = {
        "rate_bars": bars.data[0].marker.color[1],
        "trend": next(trace.line.color for trace in lines.data if trace.name == "v2"),
        "percentile_bars": next(trace.marker.color for trace in percentiles.data if trace.name == "v2"),
        "delivery_ecdf": next(trace.line.color for trace in ecdf.data if trace.name == "v2"),
    }
    assert set(colour_of_v2.values()) == {version_color(2)}
    assert version_color(2) != version_color(1)
    assert version_color(2.0) == version_color("2") == version_color(12)


def test_channel_colours_are_the_same_in_every_chart(by_channel: pd.DataFrame, items: pd.DataFrame) -> None:
    funnel_colours = {trace.name: trace.marker.color for trace in funnel(by_channel).data}
    ecdf_colours = {trace.name: trace.line.color for trace in delivery_ecdf(items).data}
    histogram_colours = {trace.name: trace.marker.color for trace in delivery_histogram(items).data}
    expected = {"In-app": CHANNEL_COLORS["in_app"], "Push": CHANNEL_COLORS["push"]}
    assert funnel_colours == ecdf_colours == histogram_colours == expected


EMPTY_CASES: dict[str, Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame], go.Figure]] = {
    "funnel": lambda engagement, ttd, items: funnel(engagement),
    "rate_bars": lambda engagement, ttd, items: rate_bars(engagement, "click_rate"),
    "percentile_bars": lambda engagement, ttd, items: percentile_bars(ttd),
    "trend": lambda engagement, ttd, items: trend(engagement, "read_rate", x="template_version"),
    "delivery_ecdf": lambda engagement, ttd, items: delivery_ecdf(items),
    "delivery_histogram": lambda engagement, ttd, items: delivery_histogram(items),
}


@pytest.mark.parametrize("chart", sorted(EMPTY_CASES))
def test_empty_frames_give_a_no_data_figure(
    chart: str, by_version_and_channel: pd.DataFrame, ttd: pd.DataFrame, items: pd.DataFrame
) -> None:
    build = EMPTY_CASES[chart]
    fig = build(by_version_and_channel.iloc[:0], ttd.iloc[:0], items.iloc[:0])
    assert len(fig.data) == 0
    assert _annotation_texts(fig) == [NO_DATA_TEXT]
    assert fig.layout.title.text

    no_columns = build(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    assert _annotation_texts(no_columns) == [NO_DATA_TEXT]


@pytest.mark.parametrize("build", [delivery_ecdf, delivery_histogram])
def test_items_without_any_delivery_give_a_no_data_figure(
    build: Callable[[pd.DataFrame], go.Figure], items: pd.DataFrame
) -> None:
    items["time_to_delivery_s"] = math.nan
    assert _annotation_texts(build(items)) == [NO_DATA_TEXT]


MISSING_CASES: list[tuple[str, Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame], object], list[str], str]] = [
    ("funnel", lambda e, t, i: funnel(e.drop(columns=["clicked"])), ["'clicked'"], "campaign_analytics.metrics"),
    (
        "rate_bars",
        lambda e, t, i: rate_bars(e.drop(columns=["read_rate_lo", "read"]), "read_rate"),
        ["'read_rate_lo'", "'read'"],
        "Wilson",
    ),
    ("rate_bars_group", lambda e, t, i: rate_bars(e, x="label"), ["'label'"], "grouped by it"),
    ("percentile_bars", lambda e, t, i: percentile_bars(t.drop(columns=["ttd_p99"])), ["'ttd_p99'"], "ttd_n"),
    ("trend", lambda e, t, i: trend(e, "click_rate", x="send_date"), ["'send_date'"], "grouped by it"),
    (
        "delivery_ecdf",
        lambda e, t, i: delivery_ecdf(i.drop(columns=["time_to_delivery_s"])),
        ["'time_to_delivery_s'"],
        "campaign_analytics.items",
    ),
    ("delivery_histogram", lambda e, t, i: delivery_histogram(i, by="tag"), ["'tag'"], "grouped by it"),
]


@pytest.mark.parametrize(("case", "build", "named", "producer"), MISSING_CASES, ids=[c[0] for c in MISSING_CASES])
def test_missing_columns_are_named_with_their_producer(
    case: str,
    build: Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame], object],
    named: list[str],
    producer: str,
    by_version_and_channel: pd.DataFrame,
    ttd: pd.DataFrame,
    items: pd.DataFrame,
) -> None:
    with pytest.raises(ParameterError) as raised:
        build(by_version_and_channel, ttd, items)
    message = str(raised.value)
    for column in named:
        assert column in message
    assert producer in message


DETERMINISM_CASES: dict[str, Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame], go.Figure]] = {
    "funnel": lambda e, t, i, d: funnel(e, by="template_version"),
    "rate_bars": lambda e, t, i, d: rate_bars(e, "click_rate", color="channel_type"),
    "percentile_bars": lambda e, t, i, d: percentile_bars(t, color="channel_type"),
    "trend": lambda e, t, i, d: trend(d, "read_rate", color="template_version"),
    "delivery_ecdf": lambda e, t, i, d: delivery_ecdf(i),
    "delivery_histogram": lambda e, t, i, d: delivery_histogram(i, by="template_version"),
}


@pytest.mark.parametrize("chart", sorted(DETERMINISM_CASES))
def test_figures_are_deterministic_and_independent_of_row_order(
    chart: str,
    by_version_and_channel: pd.DataFrame,
    ttd: pd.DataFrame,
    items: pd.DataFrame,
    daily: pd.DataFrame,
) -> None:
    build = DETERMINISM_CASES[chart]
    frames = (by_version_and_channel.iloc[[0, 2]], ttd, items, daily)
    first = build(*frames).to_json()
    second = build(*frames).to_json()
    reversed_rows = build(*(frame.iloc[::-1].reset_index(drop=True) for frame in frames)).to_json()
    assert first == second == reversed_rows
    assert '"template":' in first and "uid" not in first


def test_use_notebook_renderer_sets_the_mimetype_renderer() -> None:
    before = pio.renderers.default
    try:
        charts.use_notebook_renderer()
        assert pio.renderers.default == "plotly_mimetype"
    finally:
        pio.renderers.default = before


def test_public_api_and_docstring_examples() -> None:
    for name in charts.__all__:
        assert hasattr(charts, name), name
    for name in ("funnel", "delivery_ecdf", "delivery_histogram", "rate_bars", "percentile_bars", "trend"):
        assert name in charts.__all__
        assert "Examples" in getattr(charts, name).__doc__
    before = pio.renderers.default
    try:
        result = doctest.testmod(charts, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    finally:
        pio.renderers.default = before
    assert result.attempted > 0
    assert result.failed == 0
