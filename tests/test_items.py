"""items(): one row per item from hand-built events, with exact expected answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pandas as pd
import pytest
from deltalake import write_deltalake

from campaign_analytics.backends import events_table
from campaign_analytics.errors import BackendError, ParameterError, TableError
from campaign_analytics.items import items

T0 = 1_780_003_600  # 2026-05-28T21:26:40Z

_TIME_COLUMNS = (
    "sent_at", "delivered_at", "read_at", "interacted_at", "engaged_at", "clicked_at", "failed_at",
    "created_at", "completed_at", "scheduled_at", "updated_at", "event_time",
)
_OWN_TIMESTAMP = {
    "sent": "sent_at", "delivered": "delivered_at", "read": "read_at",
    "interacted": "interacted_at", "clicked": "clicked_at",
}


def ts(*seconds: int | None) -> pd.Series:
    """Epoch seconds (None = missing) as the events table's timestamp dtype."""
    values = pd.to_datetime(pd.Series(list(seconds), dtype="Float64"), unit="s", utc=True)
    return values.astype("datetime64[ms, UTC]")


def event(item: str, stage: str, at: int | None, **fields: Any) -> dict[str, Any]:
    """One item event; ``at`` is the stage's own timestamp (epoch seconds), others via ``fields``."""
    entity = "feed_item" if item.startswith("feed") else "push_notification"
    row: dict[str, Any] = {
        "event_id": f"{item}:{stage}:{at}",
        "trigger": f"after_{entity}_{stage}",
        "entity": entity,
        "stage": stage,
        "item_id": item,
        "channel_type": "in_app" if entity == "feed_item" else "push",
        "campaign_id": "cmp-1",
        "notification_id": "ntf-1",
        "template_id": "tpl-1",
        "template_version": 1,
        "receiver": "uid-1",
        "channel_id": "chn-1",
        "label": "spring",
        "category": "promotions",
        "status": stage,
        "tags": ["offer"],
        "variables__discount": "15",
        "metadata__source": "crm",
        "event_time": at,
        _OWN_TIMESTAMP[stage]: at,
    }
    row.update(fields)
    return row


def events_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A pandas events table: every column items() reads, typed like the contract."""
    frame = pd.DataFrame(rows)
    for column in _TIME_COLUMNS:
        values = frame[column] if column in frame.columns else [None] * len(frame)
        frame[column] = ts(*[None if pd.isna(v) else int(v) for v in values])
    frame["template_version"] = frame["template_version"].astype("Int32")
    frame["event_date"] = frame["event_time"].dt.date
    return frame


def item_row(rows: list[dict[str, Any]], item_id: str | None = None) -> pd.Series:
    result = items(events_frame(rows)).to_pandas()
    if item_id is None:
        assert len(result) == 1
        return result.iloc[0]
    return result.set_index("item_id").loc[item_id]


def at(seconds: int) -> pd.Timestamp:
    return pd.Timestamp(seconds, unit="s", tz="UTC")


def test_stage_timestamps_are_the_earliest_non_null_over_all_events() -> None:
    row = item_row(
        [
            event("feed-1", "sent", T0),
            event("feed-1", "delivered", T0 + 10, sent_at=T0 + 1),
            event("feed-1", "read", T0 + 60, sent_at=T0, delivered_at=T0 + 8),
        ]
    )
    assert row.sent_at == at(T0)
    assert row.delivered_at == at(T0 + 8)
    assert row.read_at == at(T0 + 60)
    assert row.time_to_delivery_s == 8.0
    assert row.time_to_read_s == 60.0
    assert bool(row.delivered) and bool(row.read) and not bool(row.interacted)
    assert not bool(row.delivered_implied) and not bool(row.delivered_on_read)


def test_lost_delivered_event_counts_with_the_delivered_at_carried_by_the_read() -> None:
    row = item_row(
        [
            event("feed-1", "sent", T0),
            event("feed-1", "read", T0 + 90, sent_at=T0, delivered_at=T0 + 11),
        ]
    )
    assert bool(row.delivered)
    assert row.delivered_at == at(T0 + 11)
    assert not bool(row.delivered_implied)
    assert row.time_to_delivery_s == 11.0


def test_delivery_implied_by_a_push_click_without_any_delivered_at() -> None:
    row = item_row(
        [
            event("push-1", "sent", T0),
            event("push-1", "clicked", T0 + 30, sent_at=T0),
        ]
    )
    assert row.channel_type == "push"
    assert bool(row.delivered) and bool(row.delivered_implied) and bool(row.clicked)
    assert pd.isna(row.delivered_at)
    assert np.isnan(row.time_to_delivery_s)
    assert row.clicked_at == at(T0 + 30)
    assert row.time_to_click_s == 30.0


def test_delivered_on_read_and_latest_status_on_a_timestamp_tie() -> None:
    # Marked read through the REST API: delivered and read fire with equal times.
    row = item_row(
        [
            event("feed-1", "sent", T0),
            event("feed-1", "delivered", T0 + 40, sent_at=T0, read_at=T0 + 40, status="read"),
            event("feed-1", "read", T0 + 40, sent_at=T0, delivered_at=T0 + 40),
        ]
    )
    assert bool(row.delivered_on_read)
    assert row.time_to_delivery_s == 40.0
    assert row.status == "read"


def test_interaction_reported_through_engaged_at() -> None:
    row = item_row(
        [
            event("feed-1", "sent", T0),
            event("feed-1", "read", T0 + 20, sent_at=T0, delivered_at=T0 + 5),
            event("feed-1", "interacted", None, event_time=T0 + 80, sent_at=T0, delivered_at=T0 + 5,
                  read_at=T0 + 20, engaged_at=T0 + 80, status="read", event_id="i1"),
            event("feed-1", "interacted", T0 + 95, sent_at=T0, delivered_at=T0 + 5, read_at=T0 + 20,
                  status="sent", event_id="i2"),
        ]
    )
    assert bool(row.interacted)
    assert row.interacted_at == at(T0 + 80)
    assert row.time_to_interact_s == 80.0
    assert row.interaction_count == 2
    # The latest event is the second interaction, whose status stays "sent".
    assert row.status == "sent"


def test_engaged_at_counts_only_on_interacted_events_and_after_interacted_at() -> None:
    """The documented delivered example carries an engagedAt: that is no interaction. An
    interacted event with both fields is timed by interactedAt, as its event_time is."""
    delivered_only = item_row(
        [
            event("feed-1", "sent", T0),
            event("feed-1", "delivered", T0 + 20, sent_at=T0, engaged_at=T0 + 10),
        ]
    )
    assert not bool(delivered_only.interacted) and pd.isna(delivered_only.interacted_at)
    assert delivered_only.interaction_count == 0
    both = item_row(
        [
            event("feed-1", "sent", T0),
            event("feed-1", "interacted", T0 + 9, sent_at=T0, delivered_at=T0 + 1, read_at=T0 + 2,
                  engaged_at=T0 + 5, status="read"),
        ]
    )
    assert both.interacted_at == at(T0 + 9) and both.time_to_interact_s == 9.0


def test_duplicated_events_change_nothing() -> None:
    rows = [
        event("feed-1", "sent", T0),
        event("feed-1", "delivered", T0 + 3, sent_at=T0),
        event("feed-1", "read", T0 + 9, sent_at=T0, delivered_at=T0 + 3),
    ]
    once = items(events_frame(rows)).to_pandas()
    twice = items(events_frame(rows + rows[::-1])).to_pandas()
    pd.testing.assert_frame_equal(once, twice)


def test_out_of_order_events_give_the_same_item() -> None:
    rows = [
        event("feed-1", "sent", T0, label=None),
        event("feed-1", "delivered", T0 + 3, sent_at=T0, label="early"),
        event("feed-1", "read", T0 + 9, sent_at=T0, delivered_at=T0 + 3, label="late"),
        event("push-1", "sent", T0 + 1),
        event("push-1", "delivered", T0 + 2, sent_at=T0 + 1),
    ]
    expected = items(events_frame(rows)).to_pandas().sort_values("item_id", ignore_index=True)
    rng = np.random.default_rng(7)
    for _ in range(3):
        shuffled = [rows[i] for i in rng.permutation(len(rows))]
        got = items(events_frame(shuffled)).to_pandas().sort_values("item_id", ignore_index=True)
        pd.testing.assert_frame_equal(got, expected)
    feed = expected.set_index("item_id").loc["feed-1"]
    assert feed.label == "early"  # the earliest event that has a label
    assert feed.status == "read"


def test_dimensions_come_from_the_earliest_event_that_has_them() -> None:
    row = item_row(
        [
            event("feed-1", "sent", T0, tags=[], template_version=None, variables__discount=None),
            event("feed-1", "delivered", T0 + 5, sent_at=T0, tags=["b", "a"], template_version=2,
                  variables__discount="20"),
            event("feed-1", "read", T0 + 6, sent_at=T0, delivered_at=T0 + 5, tags=["c"], template_version=3,
                  variables__discount="30", metadata__source="api"),
        ]
    )
    assert list(row.tags) == ["b", "a"]
    assert row.template_version == 2
    assert row.variables__discount == "20"
    assert row.metadata__source == "crm"


def test_events_at_the_same_moment_are_ordered_by_stage() -> None:
    rows = [
        event("feed-1", "read", T0 + 50, sent_at=T0, delivered_at=T0 + 50, label="from-read", status="read"),
        event("feed-1", "delivered", T0 + 50, sent_at=T0, label="from-delivered", status="delivered"),
        event("feed-1", "sent", T0, label=None),
    ]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        row = item_row([rows[i] for i in order])
        assert row.label == "from-delivered"  # the earlier stage is the earlier event
        assert row.status == "read"  # the later stage is the later event


def test_item_without_any_sent_at_still_appears_and_counts_as_sent() -> None:
    row = item_row([event("feed-1", "delivered", T0 + 5)])
    assert pd.isna(row.sent_at)
    assert bool(row.delivered)
    assert np.isnan(row.time_to_delivery_s)


def test_only_feed_items_and_push_notifications_become_items() -> None:
    campaign = {**event("feed-x", "sent", T0), "entity": "campaign", "stage": "completed", "item_id": None}
    notification = {**event("feed-y", "sent", T0), "entity": "notification", "stage": "created", "item_id": None}
    result = items(events_frame([event("feed-1", "sent", T0), campaign, notification])).to_pandas()
    assert result.item_id.tolist() == ["feed-1"]


def test_channel_type_falls_back_to_the_entity() -> None:
    result = items(
        events_frame([event("feed-1", "sent", T0, channel_type=None), event("push-1", "sent", T0, channel_type=None)])
    ).to_pandas()
    assert dict(zip(result.item_id, result.channel_type)) == {"feed-1": "in_app", "push-1": "push"}


def test_items_columns_and_types() -> None:
    result = items(events_frame([event("feed-1", "sent", T0)]))
    schema = result.schema()
    assert result.columns[:3] == ("channel_type", "item_id", "entity")
    for column in ("variables__discount", "metadata__source", "tags", "status", "interaction_count"):
        assert column in result.columns
    for column in ("delivered", "read", "interacted", "clicked", "delivered_implied", "delivered_on_read"):
        assert schema[column].is_boolean()
    for column in ("time_to_delivery_s", "time_to_read_s", "time_to_interact_s", "time_to_click_s"):
        assert schema[column].is_float64()
    assert schema["sent_at"].is_timestamp()


def test_sub_second_timestamps_keep_their_milliseconds() -> None:
    frame = events_frame([event("feed-1", "sent", T0), event("feed-1", "delivered", T0 + 1, sent_at=T0)])
    frame.loc[1, "delivered_at"] = frame.loc[1, "delivered_at"] + pd.Timedelta(milliseconds=250)
    assert items(frame).to_pandas().time_to_delivery_s[0] == 1.25


def test_events_from_a_delta_table_match_the_dataframe(tmp_path: Path) -> None:
    rows = [
        event("feed-1", "sent", T0),
        event("feed-1", "read", T0 + 90, sent_at=T0, delivered_at=T0 + 11),
        event("push-1", "sent", T0 + 86_400),
        event("push-1", "clicked", T0 + 86_500, sent_at=T0 + 86_400),
    ]
    frame = events_frame(rows)
    table = tmp_path / "events"
    write_deltalake(table, frame.iloc[:2], partition_by=["event_date"])
    # A later load brings a new user column: older files do not have it.
    write_deltalake(
        table, frame.iloc[2:].assign(variables__plan="gold"), partition_by=["event_date"],
        mode="append", schema_mode="merge",
    )
    expected = items(frame.assign(variables__plan=[None, None, "gold", "gold"])).to_pandas()
    for scan in ("parquet", "arrow"):
        got = items(events_table(table, scan=scan)).to_pandas()
        got = got[expected.columns].sort_values("item_id", ignore_index=True)
        pd.testing.assert_frame_equal(
            got, expected.sort_values("item_id", ignore_index=True), check_dtype=False
        )
    assert events_table(table).schema()["event_date"].is_date()


@pytest.mark.parametrize(
    ("configuration", "why"),
    [({"delta.columnMapping.mode": "name"}, "column mapping"), ({"delta.enableDeletionVectors": "true"}, "deletion")],
)
def test_a_delta_table_duckdb_cannot_read_right_is_refused_not_read_as_nulls(
    tmp_path: Path, configuration: dict[str, str], why: str
) -> None:
    frame = events_frame([event("feed-1", "sent", T0), event("feed-1", "delivered", T0 + 5, sent_at=T0)])
    table = tmp_path / "events"
    write_deltalake(table, frame, partition_by=["event_date"], configuration=configuration)
    for scan in ("auto", "arrow", "parquet"):
        with pytest.raises(BackendError, match=why if scan != "parquet" or why != "deletion" else "data files alone"):
            events_table(table, scan=scan)  # type: ignore[arg-type]


def test_items_accepts_an_ibis_events_table() -> None:
    frame = events_frame([event("feed-1", "sent", T0)])
    assert items(ibis.memtable(frame)).to_pandas().item_id.tolist() == ["feed-1"]


def test_naive_timestamps_are_taken_as_utc() -> None:
    frame = events_frame([event("feed-1", "sent", T0), event("feed-1", "delivered", T0 + 2, sent_at=T0)])
    for column in _TIME_COLUMNS:
        frame[column] = frame[column].dt.tz_localize(None)
    row = items(frame).to_pandas().iloc[0]
    assert row.sent_at == at(T0)
    assert row.time_to_delivery_s == 2.0


def test_missing_required_columns_are_reported() -> None:
    frame = events_frame([event("feed-1", "sent", T0)]).drop(columns=["stage"])
    with pytest.raises(TableError, match="lacks the column.*stage"):
        items(frame)


def test_non_datetime_timestamp_column_is_reported() -> None:
    frame = events_frame([event("feed-1", "sent", T0)])
    frame["sent_at"] = "yesterday"
    with pytest.raises(TableError, match="sent_at.*pandas.to_datetime"):
        items(frame)


def test_paths_that_are_not_events_tables_are_reported(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="does not exist"):
        events_table(tmp_path / "nowhere")
    with pytest.raises(TableError, match="not a Delta table"):
        events_table(tmp_path)
    other = tmp_path / "other"
    write_deltalake(other, pd.DataFrame({"x": [1]}))
    with pytest.raises(TableError, match="not an events table"):
        events_table(other)


def test_unsupported_sources_and_options_are_reported() -> None:
    with pytest.raises(ParameterError, match="path to the events Delta table"):
        events_table(42)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="scan must be"):
        events_table(events_frame([event("feed-1", "sent", T0)]), scan="fast")  # type: ignore[arg-type]
