"""engagement, time_to_delivery, compare_versions and campaigns on hand-built data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from deltalake import write_deltalake
from scipy import stats

from campaign_analytics._stats import holm, two_proportion_z_test, wilson_interval
from campaign_analytics.errors import ParameterError, TableError
from campaign_analytics.items import items
from campaign_analytics.metrics import (
    RATES,
    campaigns,
    compare_versions,
    engagement,
    time_to_delivery,
)

T0 = 1_780_003_600  # 2026-05-28T21:26:40Z

_EVENT_TIME_COLUMNS = (
    "sent_at", "delivered_at", "read_at", "interacted_at", "engaged_at", "clicked_at", "failed_at",
    "created_at", "completed_at", "scheduled_at", "updated_at", "event_time",
)


def ts(*seconds: float | None) -> pd.Series:
    """Epoch seconds (None = missing) as datetime64[ms, UTC]."""
    values = pd.to_datetime(pd.Series(list(seconds), dtype="Float64"), unit="s", utc=True)
    return values.astype("datetime64[ms, UTC]")


def items_frame(n: int, **columns: Any) -> pd.DataFrame:
    """An items frame of ``n`` items; timestamp columns are given in epoch seconds."""
    frame = pd.DataFrame({"item_id": [f"feed-{i}" for i in range(n)], "channel_type": "in_app"})
    for column in ("sent_at", "delivered_at", "read_at", "interacted_at", "clicked_at"):
        frame[column] = ts(*columns.pop(column, [T0 if column == "sent_at" else None] * n))
    for column, values in columns.items():
        frame[column] = values
    return frame


def flags(n: int, true: int) -> list[int | None]:
    """Timestamps for ``true`` of ``n`` items (the first ones), missing for the rest."""
    return [T0 + 1] * true + [None] * (n - true)


def event(item: str | None, entity: str, stage: str, at: int | None, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": f"{entity}:{item}:{stage}:{at}:{sorted(fields.items())}",
        "entity": entity, "stage": stage, "item_id": item, "event_time": at,
        "campaign_id": "cmp-1", "template_id": "tpl-1", "template_version": 1, "status": stage,
    }
    own = {"sent": "sent_at", "delivered": "delivered_at", "read": "read_at", "clicked": "clicked_at",
           "interacted": "interacted_at", "created": "created_at", "completed": "completed_at"}.get(stage)
    if own:
        row[own] = at
    row.update(fields)
    return row


def events_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in _EVENT_TIME_COLUMNS:
        values = frame[column] if column in frame.columns else [None] * len(frame)
        frame[column] = ts(*[None if pd.isna(v) else float(v) for v in values])
    frame["template_version"] = frame["template_version"].astype("Int32")
    if "tags" not in frame.columns:
        frame["tags"] = [["offer"]] * len(frame)
    return frame


# ----------------------------------------------------------------- engagement


def test_engagement_counts_rates_and_wilson_intervals() -> None:
    n = 10
    frame = items_frame(n, delivered_at=flags(n, 8), read_at=flags(n, 4), interacted_at=flags(n, 1))
    result = engagement(frame)
    assert len(result) == 1
    row = result.iloc[0]
    assert (row.sent, row.delivered, row.read, row.interacted, row.clicked) == (10, 8, 4, 1, 0)
    assert row.delivery_rate == 0.8
    assert row.read_rate == 0.4
    assert row.interaction_rate == 0.1
    assert row.click_rate == 0.0
    assert row.read_rate_of_delivered == 0.5
    assert row.click_rate_of_delivered == 0.0
    for rate, (numerator, denominator) in RATES.items():
        lo, hi = wilson_interval(row[numerator], row[denominator])
        assert row[f"{rate}_lo"] == pytest.approx(float(lo))
        assert row[f"{rate}_hi"] == pytest.approx(float(hi))
    assert list(result.columns[:5]) == ["sent", "delivered", "read", "interacted", "clicked"]
    for column in ("sent", "delivered", "read", "interacted", "clicked"):
        assert result[column].dtype == "int64"


def test_engagement_by_a_column_sorted_with_missing_keys_last() -> None:
    frame = items_frame(4, label=["b", "a", None, "a"], read_at=[None, None, T0, T0])
    result = engagement(frame, by="label")
    assert result.label.tolist()[:2] == ["a", "b"] and pd.isna(result.label.iloc[2])
    assert result.sent.tolist() == [2, 1, 1]
    assert result.read.tolist() == [1, 0, 1]


def test_delivery_implied_by_a_later_stage_counts_as_delivered() -> None:
    frame = items_frame(3, delivered_at=[T0 + 1, None, None], clicked_at=[None, T0 + 9, None])
    row = engagement(frame).iloc[0]
    assert (row.delivered, row.clicked) == (2, 1)
    assert row.click_rate_of_delivered == 0.5


def test_engagement_by_user_columns_through_items() -> None:
    rows = [
        event("feed-1", "feed_item", "sent", T0, variables__plan="gold", metadata__experiment__arm="A"),
        event("feed-1", "feed_item", "read", T0 + 5, sent_at=T0, delivered_at=T0 + 2, variables__plan="gold"),
        event("feed-2", "feed_item", "sent", T0, variables__plan="free", metadata__experiment__arm="B"),
        event("feed-3", "feed_item", "sent", T0, variables__plan="gold", metadata__experiment__arm="B"),
    ]
    result = engagement(events_frame(rows), by=["variables__plan", "metadata__experiment__arm"])
    assert result[["variables__plan", "metadata__experiment__arm", "sent", "read"]].values.tolist() == [
        ["free", "B", 1, 0],
        ["gold", "A", 1, 1],
        ["gold", "B", 1, 0],
    ]


def test_engagement_by_tag_explodes_tags_once_per_item() -> None:
    frame = items_frame(
        5,
        tags=[["a", "b"], ["a", "a"], [], None, ["b"]],
        read_at=[T0, None, T0, None, None],
    )
    result = engagement(frame, by="tag")
    assert result.tag.tolist()[:2] == ["a", "b"] and pd.isna(result.tag.iloc[2])
    assert result.sent.tolist() == [2, 2, 2]  # untagged items form the missing-tag group
    assert result.read.tolist() == [1, 1, 1]


def test_send_date_and_hour_in_utc_and_in_a_time_zone_across_dst() -> None:
    # 2026-03-28T23:30Z is 00:30 on the 29th in Madrid (UTC+1); 2026-03-29T22:30Z is
    # 00:30 on the 30th (UTC+2, summer time began at 01:00Z on the 29th).
    before, after = 1_774_740_600, 1_774_823_400
    frame = items_frame(2, sent_at=[before, after])
    utc = engagement(frame, by=["send_date", "send_hour"])
    assert utc.send_date.dt.strftime("%Y-%m-%d").tolist() == ["2026-03-28", "2026-03-29"]
    assert utc.send_hour.tolist() == [23, 22]
    madrid = engagement(frame, by=["send_date", "send_hour"], tz="Europe/Madrid")
    assert madrid.send_date.dt.strftime("%Y-%m-%d").tolist() == ["2026-03-29", "2026-03-30"]
    assert madrid.send_hour.tolist() == [0, 0]


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"])
def test_send_hour_matches_pandas_time_zone_conversion(tz: str) -> None:
    rng = np.random.default_rng(3)
    seconds = rng.integers(1_262_304_000, 2_051_222_400, 400)  # 2010 to 2035
    frame = items_frame(len(seconds), sent_at=seconds.tolist(), position=np.arange(len(seconds)))
    result = engagement(frame, by=["position", "send_date", "send_hour"], tz=tz)
    local = ts(*seconds.tolist()).dt.tz_convert(tz)
    assert result.send_hour.tolist() == local.dt.hour.tolist()
    assert result.send_date.dt.date.tolist() == local.dt.date.tolist()


def test_items_without_sent_at_form_a_missing_send_date_group() -> None:
    result = engagement(items_frame(2, sent_at=[T0, None]), by="send_date")
    assert result.sent.tolist() == [1, 1]
    assert pd.isna(result.send_date.iloc[1])


def test_unknown_group_columns_are_reported_with_the_valid_ones() -> None:
    frame = items_frame(1, label=["a"], tags=[["x"]])
    with pytest.raises(ParameterError, match=r"cannot group by 'lable'.*Valid: .*label.*send_date.*tag"):
        engagement(frame, by="lable")
    with pytest.raises(ParameterError, match="use 'tag'"):
        engagement(frame, by="tags")
    with pytest.raises(ParameterError, match="more than once"):
        engagement(frame, by=["label", "label"])
    with pytest.raises(ParameterError, match="unknown time zone"):
        engagement(frame, by="send_date", tz="Mars/Olympus")
    with pytest.raises(ParameterError, match="column name"):
        engagement(frame, by=3)  # type: ignore[arg-type]


def test_engagement_accepts_events_items_and_paths_alike(tmp_path: Path) -> None:
    rows = [
        event("feed-1", "feed_item", "sent", T0, label="a"),
        event("feed-1", "feed_item", "read", T0 + 5, sent_at=T0, delivered_at=T0 + 2, label="a"),
        event("push-1", "push_notification", "sent", T0, label="b"),
        event("push-1", "push_notification", "clicked", T0 + 7, sent_at=T0, label="b"),
    ]
    frame = events_frame(rows)
    frame["event_date"] = frame["event_time"].dt.date
    table = tmp_path / "events"
    write_deltalake(table, frame, partition_by=["event_date"])
    expected = engagement(frame, by="label")
    for source in (items(frame), items(frame).to_pandas(), table, str(table)):
        pd.testing.assert_frame_equal(engagement(source, by="label"), expected)
    assert expected.sent.tolist() == [1, 1] and expected.delivered.tolist() == [1, 1]


def test_neither_items_nor_events_is_reported() -> None:
    with pytest.raises(TableError, match="neither an items table nor an events table"):
        engagement(pd.DataFrame({"x": [1]}))
    with pytest.raises(ParameterError, match="items must be"):
        engagement(42)  # type: ignore[arg-type]


# ----------------------------------------------------------- time to delivery


def test_time_to_delivery_percentiles_match_numpy() -> None:
    rng = np.random.default_rng(11)
    n = 3_000
    latency = np.round(rng.lognormal(1.0, 1.5, n), 3)
    delivered = rng.random(n) < 0.9
    labels = rng.choice(["a", "b", "c"], n)
    frame = items_frame(
        n,
        sent_at=[T0] * n,
        delivered_at=[T0 + x if d else None for x, d in zip(latency, delivered)],
        label=labels,
    )
    # The exact per-item latencies, after the timestamps' millisecond rounding.
    seconds = (frame.delivered_at - frame.sent_at).dt.total_seconds().to_numpy()
    result = time_to_delivery(frame, by="label").set_index("label")
    for label in ("a", "b", "c"):
        values = seconds[delivered & (labels == label)]
        row = result.loc[label]
        assert row.ttd_n == values.size
        assert row.ttd_mean == pytest.approx(values.mean(), abs=1e-6)
        for column, q in (("ttd_p50", 50), ("ttd_p90", 90), ("ttd_p99", 99)):
            assert row[column] == pytest.approx(np.percentile(values, q), abs=1e-6)
    assert result.ttd_n.dtype == "int64"


def test_time_to_delivery_excludes_delivered_on_read_on_request() -> None:
    frame = items_frame(3, delivered_at=[T0 + 2, T0 + 4, T0 + 60], read_at=[None, None, T0 + 60])
    assert time_to_delivery(frame).ttd_n.tolist() == [3]
    result = time_to_delivery(frame, exclude_delivered_on_read=True)
    assert result.ttd_n.tolist() == [2]
    assert result.ttd_mean.tolist() == [3.0]
    assert result.ttd_p50.tolist() == [3.0]


def test_groups_without_a_measured_delivery_are_kept_with_nan() -> None:
    frame = items_frame(3, delivered_at=[T0 + 2, None, None], clicked_at=[None, T0 + 9, None],
                        label=["a", "b", "b"])
    result = time_to_delivery(frame, by="label")
    assert result.label.tolist() == ["a", "b"]
    assert result.ttd_n.tolist() == [1, 0]
    assert np.isnan(result.ttd_mean.iloc[1]) and np.isnan(result.ttd_p99.iloc[1])


def test_approximate_percentiles_are_labelled() -> None:
    frame = items_frame(4, delivered_at=[T0 + 1, T0 + 2, T0 + 3, T0 + 4])
    result = time_to_delivery(frame, approximate=True)
    assert {"ttd_p50_approx", "ttd_p90_approx", "ttd_p99_approx"} <= set(result.columns)
    assert "ttd_p50" not in result.columns


# ---------------------------------------------------------- compare_versions


def _versions_frame(groups: list[tuple[str, int, int, int]]) -> pd.DataFrame:
    """Items for (template_id, version, sent, read) groups; every item delivered."""
    rows = [(template, version, i < read) for template, version, sent, read in groups for i in range(sent)]
    n = len(rows)
    return items_frame(
        n,
        template_id=[r[0] for r in rows],
        template_version=[r[1] for r in rows],
        delivered_at=[T0 + 1] * n,
        read_at=[T0 + 2 if r[2] else None for r in rows],
    )


def test_two_versions_that_differ() -> None:
    result = compare_versions(_versions_frame([("t", 1, 100, 30), ("t", 2, 100, 60)]))
    assert len(result) == 1
    row = result.iloc[0]
    assert (row.template_id, row.version_a, row.version_b) == ("t", 1, 2)
    assert (row.n_a, row.n_b, row.successes_a, row.successes_b) == (100, 100, 30, 60)
    assert (row.rate_a, row.rate_b) == (0.3, 0.6)
    assert row.difference == pytest.approx(-0.3)
    _, p = two_proportion_z_test(30, 100, 60, 100)
    assert row.p_value == pytest.approx(float(p))
    assert row.p_holm == pytest.approx(float(p))
    # Without continuity correction the omnibus test is the z-test.
    assert row.chi2_p_value == pytest.approx(float(p))
    assert row.chi2_dof == 1
    assert row.verdict == "b higher"


def test_small_groups_are_insufficient_data_never_a_verdict() -> None:
    result = compare_versions(_versions_frame([("t", 1, 10, 2), ("t", 2, 8, 1)]))
    row = result.iloc[0]
    assert row.verdict == "insufficient data"
    assert np.isnan(row.p_value) and np.isnan(row.p_holm) and np.isnan(row.chi2_p_value)


def test_three_versions_chi_square_and_holm() -> None:
    groups = [("t", 1, 200, 50), ("t", 2, 200, 80), ("t", 3, 200, 52), ("u", 1, 20, 1), ("u", 2, 20, 2)]
    result = compare_versions(_versions_frame(groups))
    t = result[result.template_id == "t"]
    assert list(zip(t.version_a, t.version_b)) == [(1, 2), (1, 3), (2, 3)]
    chi2 = stats.chi2_contingency([[50, 150], [80, 120], [52, 148]], correction=False)
    assert t.chi2.tolist() == pytest.approx([chi2.statistic] * 3)
    assert t.chi2_p_value.tolist() == pytest.approx([chi2.pvalue] * 3)
    assert t.chi2_dof.tolist() == [2, 2, 2]
    _, p = two_proportion_z_test([50, 50, 80], [200, 200, 200], [80, 52, 52], [200, 200, 200])
    assert t.p_value.tolist() == pytest.approx(p.tolist())
    assert t.p_holm.tolist() == pytest.approx(holm(p).tolist())
    assert t.verdict.tolist() == ["b higher", "no significant difference", "a higher"]
    u = result[result.template_id == "u"]
    assert u.verdict.tolist() == ["insufficient data"]


def test_holm_can_turn_a_nominal_difference_into_no_verdict() -> None:
    # Pair (1, 2) has p = 0.029 alone, 0.087 after Holm over three pairs.
    groups = [("t", 1, 200, 50), ("t", 2, 200, 70), ("t", 3, 200, 52)]
    result = compare_versions(_versions_frame(groups))
    first = result.iloc[0]
    assert first.p_value < 0.05 < first.p_holm
    assert first.verdict == "no significant difference"


def test_rates_of_delivered_use_delivered_items_as_trials() -> None:
    n = 200
    frame = items_frame(
        n,
        template_id="t",
        template_version=[1] * 100 + [2] * 100,
        delivered_at=[T0 + 1 if i % 100 < 80 else None for i in range(n)],
        read_at=[T0 + 2 if i % 100 < 40 else None for i in range(n)],
    )
    row = compare_versions(frame, metric="read_rate_of_delivered").iloc[0]
    assert (row.n_a, row.n_b, row.rate_a) == (80, 80, 0.5)
    assert row.verdict == "no significant difference"


def test_compare_versions_rejects_bad_arguments() -> None:
    frame = _versions_frame([("t", 1, 10, 2), ("t", 2, 10, 3)])
    with pytest.raises(ParameterError, match="metric must be one of"):
        compare_versions(frame, metric="open_rate")
    with pytest.raises(ParameterError, match="also in within"):
        compare_versions(frame, by="template_id")
    with pytest.raises(ParameterError, match="alpha"):
        compare_versions(frame, alpha=1.5)
    with pytest.raises(ParameterError, match="cannot group by 'version'"):
        compare_versions(frame, by="version")


def test_groups_of_a_user_column_holding_numbers_come_in_number_order() -> None:
    days = ["10", "2", "1", None, "0.5"]
    frame = items_frame(len(days), variables__trialDays=pd.array(days, dtype="string"))
    result = engagement(frame, by="variables__trialDays")
    assert result["variables__trialDays"].tolist()[:4] == ["0.5", "1", "2", "10"]
    assert pd.isna(result["variables__trialDays"].iloc[4])
    words = engagement(items_frame(3, variables__plan=pd.array(["b", "10", "a"], dtype="string")), by="variables__plan")
    assert words["variables__plan"].tolist() == ["10", "a", "b"]
    # Not a JSON number once a space of any kind is around it: text, sorted as text, no error.
    spaced = ["7\xa0", "10", "9\x1c", "8"]
    assert engagement(items_frame(4, variables__n=pd.array(spaced, dtype="string")), by="variables__n")[
        "variables__n"].tolist() == sorted(spaced)
    # Equal numbers spelled two ways come in one order, whatever order the rows arrive in.
    for tie in (["1e0", "1.0", "0.5"], ["1.0", "0.5", "1e0"]):
        result = engagement(items_frame(3, variables__n=pd.array(tie, dtype="string")), by="variables__n")
        assert result["variables__n"].tolist() == ["0.5", "1.0", "1e0"]


def test_versions_held_as_text_are_compared_in_number_order() -> None:
    frame = _versions_frame([("t", 10, 100, 30), ("t", 2, 100, 60), ("t", 9, 100, 40)])
    frame["variables__v"] = frame["template_version"].astype(str).astype("string")
    result = compare_versions(frame, by="variables__v")
    assert list(zip(result.version_a, result.version_b)) == [("2", "9"), ("2", "10"), ("9", "10")]


# ------------------------------------------------------------------ campaigns


def test_an_integer_column_with_no_value_at_all_is_still_int64() -> None:
    # Campaigns still running have no counts yet, and the items no version: every value missing.
    rows = [
        event(None, "notification", "created", T0, template_version=None, status="dispatching",
              total_targets=None, sent_count=None, failed_count=None),
        event("feed-1", "feed_item", "sent", T0 + 1, template_version=None),
    ]
    frame = events_frame(rows)
    counts = ["total_targets", "sent_count", "failed_count"]
    frame[counts] = frame[counts].astype("Int64")
    assert all(str(campaigns(frame)[c].dtype) == "Int64" for c in [*counts, "template_version"])
    assert str(engagement(items(frame), by="template_version")["template_version"].dtype) == "Int64"


def test_campaigns_dedupes_repeated_events_and_counts_notifications() -> None:
    rows = [
        # cmp-1 completed, reported twice: the later report wins.
        event(None, "campaign", "completed", T0 + 100, name="Spring", status="completed", sent_at=T0,
              scheduled_at=T0 - 60, total_targets=10, sent_count=9, failed_count=1, updated_at=T0 + 100),
        event(None, "campaign", "completed", T0 + 120, name="Spring", status="completed", sent_at=T0,
              scheduled_at=T0 - 60, total_targets=10, sent_count=10, failed_count=0, updated_at=T0 + 120),
        event(None, "notification", "created", T0, notification_id="ntf-1"),
        event(None, "notification", "created", T0, notification_id="ntf-1"),
        event(None, "notification", "created", T0 + 1, notification_id="ntf-2"),
        # cmp-2 failed: no completedAt, it ends at updatedAt; no sentAt, so from scheduledAt.
        event(None, "campaign", "failed", T0 + 500, campaign_id="cmp-2", name="Autumn", status="failed",
              scheduled_at=T0 + 200, updated_at=T0 + 500, template_version=2),
        # cmp-3 is still dispatching: known from its notification only.
        event(None, "notification", "created", T0 + 9, campaign_id="cmp-3", notification_id="ntf-3",
              template_id="tpl-9", template_version=4, status="dispatching"),
    ]
    frame = events_frame(rows)
    counts = ["total_targets", "sent_count", "failed_count"]
    frame[counts] = frame[counts].astype("Int64")  # as read_events gives them
    result = campaigns(frame)
    assert result.campaign_id.tolist() == ["cmp-1", "cmp-2", "cmp-3"]
    one, two, three = (result.iloc[i] for i in range(3))
    assert (one["name"], one.status, one.sent_count, one.failed_count) == ("Spring", "completed", 10, 0)
    assert one.completed_at == pd.Timestamp(T0 + 120, unit="s", tz="UTC")
    assert one.time_to_complete_s == 120.0
    assert one.notifications == 2
    assert (two.status, two.template_version, two.notifications) == ("failed", 2, 0)
    assert pd.isna(two.completed_at)
    assert two.time_to_complete_s == 300.0
    assert pd.isna(three.status)
    assert (three.template_id, three.template_version, three.notifications) == ("tpl-9", 4, 1)
    # counts stay whole numbers where a campaign has none yet (nullable, not float)
    assert all(str(result[c].dtype) == "Int64" for c in counts)
    assert pd.isna(three.total_targets) and one.total_targets == 10
    assert list(result.columns) == [
        "campaign_id", "name", "status", "template_id", "template_version", "total_targets", "sent_count",
        "failed_count", "scheduled_at", "sent_at", "completed_at", "updated_at", "time_to_complete_s",
        "notifications",
    ]
