"""Payload → row: the ten triggers, typed core columns, timestamps, user columns, raw JSON,
every reject reason, and property tests that flattening never raises and never loses a leaf."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import campaign_analytics as ca
from campaign_analytics.flatten import FlattenLimits

from conftest import DROP, T0, make_event, reordered, write_payload

_counter = itertools.count()


def load_records(tmp_path: Path, records: list[Any], *, limits: FlattenLimits | None = None, **options: Any) -> pd.DataFrame:
    """ca.load of one NDJSON file holding the records."""
    path = write_payload(tmp_path / f"in-{next(_counter)}.ndjson", records, **options)
    return ca.load(str(path), limits=limits)


def stored_rows(tmp_path: Path, records: list[Any], *, limits: FlattenLimits | None = None) -> tuple[list[dict], pa.Schema, ca.LoadSummary]:
    """Ingest the records into a fresh table; the rows as stored (exact text of user columns)."""
    n = next(_counter)
    path = write_payload(tmp_path / f"in-{n}.ndjson", records)
    table = tmp_path / f"table-{n}"
    summary = ca.ingest(str(path), str(table), limits=limits)
    arrow = ca.events_dataset(str(table)).to_table()
    return sorted(arrow.to_pylist(), key=lambda r: r["source_line"]), arrow.schema, summary


def utc(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(round(seconds * 1000), unit="ms", tz="UTC")


def summary_of(frame: pd.DataFrame) -> dict:
    return frame.attrs["load_summary"]


def quarantine_of(frame: pd.DataFrame) -> list[dict]:
    return frame.attrs["quarantine"].to_dict("records")


# trigger -> (entity, stage, item id field or None, own timestamp field)
EXPECTED_TRIGGERS = {
    "after_campaign_completed": ("campaign", "completed", None, "completedAt"),
    "after_campaign_failed": ("campaign", "failed", None, "completedAt"),
    "after_notification_created": ("notification", "created", None, "createdAt"),
    "after_feed_item_sent": ("feed_item", "sent", "id", "sentAt"),
    "after_feed_item_delivered": ("feed_item", "delivered", "id", "deliveredAt"),
    "after_feed_item_read": ("feed_item", "read", "id", "readAt"),
    "after_feed_item_interacted": ("feed_item", "interacted", "id", "interactedAt"),
    "after_push_notification_sent": ("push_notification", "sent", "pushNotificationId", "sentAt"),
    "after_push_notification_delivered": ("push_notification", "delivered", "pushNotificationId", "deliveredAt"),
    "after_push_notification_clicked": ("push_notification", "clicked", "pushNotificationId", "clickedAt"),
}


def test_the_ten_triggers_are_known():
    assert set(ca.TRIGGERS) == set(EXPECTED_TRIGGERS)


@pytest.mark.parametrize("trigger", sorted(EXPECTED_TRIGGERS))
def test_each_trigger_entity_stage_item_id_and_event_time(tmp_path, trigger):
    entity, stage, id_field, time_field = EXPECTED_TRIGGERS[trigger]
    own = T0 + 7 * 3600 + 17  # distinct from every other timestamp of the event
    overrides: dict[str, Any] = {time_field: own}
    if id_field:
        overrides[id_field] = "item-ä1"
        # the other id field must not be taken for this entity
        overrides["pushNotificationId" if id_field == "id" else "id"] = "wrong"
    event = make_event(trigger, region="in", webhook="wh-9", **overrides)
    frame = load_records(tmp_path, [event])
    assert summary_of(frame)["written"] == 1, quarantine_of(frame)
    row = frame.iloc[0]
    assert (row["trigger"], row["entity"], row["stage"]) == (trigger, entity, stage)
    assert (row["app_id"], row["region"], row["webhook_id"]) == ("app-1", "in", "wh-9")
    if id_field:
        assert row["item_id"] == "item-ä1"
    assert row["event_time"] == utc(own)
    assert row["event_date"] == utc(own).date()
    column = {"completedAt": "completed_at", "createdAt": "created_at", "sentAt": "sent_at",
              "deliveredAt": "delivered_at", "readAt": "read_at", "interactedAt": "interacted_at",
              "clickedAt": "clicked_at"}[time_field]
    assert row[column] == utc(own)
    assert row["template_version"] == 1
    assert isinstance(row["event_id"], str) and len(row["event_id"]) >= 16


def test_core_column_types_in_the_table(tmp_path):
    events = [
        make_event("after_feed_item_read", tags=["offer", "vip"], templateVersion="3"),
        make_event("after_campaign_completed", totalTargets=10, sentCount=9, failedCount=1),
    ]
    _, schema, _ = stored_rows(tmp_path, events)
    expected = {
        "event_id": pa.string(), "trigger": pa.string(), "entity": pa.string(), "stage": pa.string(),
        "app_id": pa.string(), "region": pa.string(), "webhook_id": pa.string(), "campaign_id": pa.string(),
        "notification_id": pa.string(), "item_id": pa.string(), "template_id": pa.string(),
        "template_version": pa.int32(), "receiver": pa.string(), "channel_type": pa.string(),
        "channel_id": pa.string(), "status": pa.string(), "label": pa.string(), "category": pa.string(),
        "tags": pa.list_(pa.string()), "topic": pa.string(), "error_message": pa.string(), "name": pa.string(),
        "total_targets": pa.int64(), "sent_count": pa.int64(), "failed_count": pa.int64(),
        "variables_json": pa.string(), "metadata_json": pa.string(), "content_json": pa.string(),
        "source_file": pa.string(), "source_line": pa.int64(), "load_id": pa.string(),
    }
    for name, kind in expected.items():
        field = schema.field(name)
        if pa.types.is_list(kind):
            assert pa.types.is_list(field.type) or pa.types.is_large_list(field.type), name
            assert pa.types.is_string(field.type.value_type) or pa.types.is_large_string(field.type.value_type)
        else:
            assert field.type == kind, (name, field.type)
    for name in ("sent_at", "delivered_at", "read_at", "interacted_at", "engaged_at", "clicked_at", "failed_at",
                 "created_at", "completed_at", "scheduled_at", "updated_at", "event_time", "ingested_at"):
        field = schema.field(name)
        assert pa.types.is_timestamp(field.type) and field.type.tz in ("UTC", "+00:00"), (name, field.type)
    # the partition column reads back as a date
    frame = ca.read_events(_last_table(tmp_path))
    assert all(isinstance(v, dt.date) for v in frame["event_date"])


def _last_table(tmp_path: Path) -> str:
    return str(sorted(tmp_path.glob("table-*"), key=lambda p: int(p.name.split("-")[1]))[-1])


def test_cumulative_stage_timestamps_and_counts(tmp_path):
    events = [
        make_event("after_feed_item_read", id="f1"),
        make_event("after_campaign_completed", totalTargets=1200, sentCount=1180, failedCount=20,
                   scheduledAt=T0 - 7200, sentAt=T0 - 3600),
        make_event("after_notification_created", channels=["in_app", "push"], sendMode="campaign",
                   totalTargets=5, sentCount=0, failedCount=0),
    ]
    frame = load_records(tmp_path, events).set_index("trigger")
    read = frame.loc["after_feed_item_read"]
    assert (read["sent_at"], read["delivered_at"], read["read_at"]) == (utc(T0), utc(T0 + 60), utc(T0 + 120))
    assert pd.isna(read["interacted_at"]) and pd.isna(read["clicked_at"])
    campaign = frame.loc["after_campaign_completed"]
    assert (int(campaign["total_targets"]), int(campaign["sent_count"]), int(campaign["failed_count"])) == (1200, 1180, 20)
    assert campaign["scheduled_at"] == utc(T0 - 7200) and campaign["name"] == "Spring"
    notification = frame.loc["after_notification_created"]
    assert list(notification["channels"]) == ["in_app", "push"]
    assert notification["notification_id"] == "ntf-1"


def test_interacted_uses_interacted_at_else_engaged_at(tmp_path):
    both = make_event("after_feed_item_interacted", id="both", interactedAt=T0 + 500, engagedAt=T0 + 400)
    engaged = make_event("after_feed_item_interacted", id="engaged", interactedAt=DROP, engagedAt=T0 + 900,
                         topic="cta_click", status="read")
    null_interacted = make_event("after_feed_item_interacted", id="null", interactedAt=None, engagedAt=T0 + 901)
    frame = load_records(tmp_path, [both, engaged, null_interacted]).set_index("item_id")
    assert frame.loc["both", "event_time"] == utc(T0 + 500)
    assert frame.loc["engaged", "event_time"] == utc(T0 + 900)
    assert pd.isna(frame.loc["engaged", "interacted_at"])
    assert frame.loc["engaged", "engaged_at"] == utc(T0 + 900)
    assert frame.loc["engaged", "topic"] == "cta_click"
    assert frame.loc["engaged", "status"] == "read"
    assert frame.loc["null", "event_time"] == utc(T0 + 901)


def test_campaign_failed_uses_completed_at_else_updated_at(tmp_path):
    completed = make_event("after_campaign_failed", campaignId="c1", completedAt=T0 + 10, updatedAt=T0 + 20)
    updated = make_event("after_campaign_failed", campaignId="c2", completedAt=DROP, updatedAt=T0 + 30)
    null_completed = make_event("after_campaign_failed", campaignId="c3", completedAt=None, updatedAt=T0 + 40)
    frame = load_records(tmp_path, [completed, updated, null_completed]).set_index("campaign_id")
    assert frame.loc["c1", "event_time"] == utc(T0 + 10)
    assert frame.loc["c2", "event_time"] == utc(T0 + 30)
    assert frame.loc["c3", "event_time"] == utc(T0 + 40)
    assert (frame["stage"] == "failed").all()


def test_campaign_completed_does_not_fall_back_to_updated_at(tmp_path):
    event = make_event("after_campaign_completed", completedAt=DROP, updatedAt=T0)
    frame = load_records(tmp_path, [event])
    assert len(frame) == 0
    (row,) = quarantine_of(frame)
    assert row["kind"] == "rejected" and "stage timestamp" in row["reason"]


TIMESTAMP_FORMS = [
    (T0, T0 * 1000),                                   # epoch seconds
    (T0 * 1000 + 123, T0 * 1000 + 123),                # epoch milliseconds
    (100_000_000_000, 100_000_000_000),                # 1e11 exactly is milliseconds (1973)
    (99_999_999, 99_999_999_000),                      # below 1e11: seconds (1973)
    (T0 + 0.25, T0 * 1000 + 250),                      # fractional seconds
    ("2026-05-28T21:26:40Z", T0 * 1000),
    ("2026-05-28T23:26:40+02:00", T0 * 1000),
    ("2026-05-28T21:26:40.123Z", T0 * 1000 + 123),
    ("2026-05-28 21:26:40+00:00", T0 * 1000),
    (7_258_118_399, 7_258_118_399_000),               # 2199-12-31T23:59:59Z, last second accepted
]


def test_timestamp_forms(tmp_path):
    events = [make_event("after_feed_item_sent", id=f"t{n}", sentAt=value) for n, (value, _) in enumerate(TIMESTAMP_FORMS)]
    frame = load_records(tmp_path, events)
    assert quarantine_of(frame) == []
    rows = frame.set_index("item_id")
    for n, (value, expected_ms) in enumerate(TIMESTAMP_FORMS):
        expected = pd.Timestamp(expected_ms, unit="ms", tz="UTC")
        row = rows.loc[f"t{n}"]
        assert (row["sent_at"], row["event_time"], row["event_date"]) == (expected, expected, expected.date()), value


BAD_TIMESTAMPS = [
    "yesterday", "", "2026-13-45T00:00:00Z", True, {"seconds": T0}, [T0],
    -1, -T0, 99_999_999_999,                          # seconds, but year 5138
    7_258_118_400, 7_258_118_400_000, 10**16,         # 2200-01-01 and later
    "2200-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
]


def test_unparseable_or_out_of_range_stage_timestamp_is_rejected(tmp_path):
    events = [make_event("after_feed_item_sent", id=f"t{n}", sentAt=value) for n, value in enumerate(BAD_TIMESTAMPS)]
    frame = load_records(tmp_path, events)
    assert len(frame) == 0, frame["sent_at"].tolist()
    rows = {r["source_line"]: r for r in quarantine_of(frame)}
    assert sorted(rows) == list(range(1, len(BAD_TIMESTAMPS) + 1))
    for n, value in enumerate(BAD_TIMESTAMPS):
        row = rows[n + 1]
        assert row["kind"] == "rejected", value
        assert "timestamp" in row["reason"] and "sentAt" in row["reason"], (value, row["reason"])


def test_bad_timestamp_of_an_earlier_stage_rejects_the_event(tmp_path):
    frame = load_records(tmp_path, [make_event("after_feed_item_read", deliveredAt="soon")])
    (row,) = quarantine_of(frame)
    assert row["reason"].startswith("unparseable timestamp") and "deliveredAt" in row["reason"]


def test_explicit_nulls_and_absent_fields_are_both_missing(tmp_path):
    explicit = make_event("after_feed_item_sent", id="explicit", deliveredAt=None, readAt=None, interactedAt=None,
                          label=None, tags=None, variables=None, metadata=None, templateVersion=None,
                          campaignId=None)
    absent = make_event("after_feed_item_sent", id="absent", campaignId=DROP, templateVersion=DROP)
    frame = load_records(tmp_path, [explicit, absent]).set_index("item_id")
    assert summary_of(frame.reset_index())["rejected"] == 0
    for item in ("explicit", "absent"):
        row = frame.loc[item]
        for column in ("delivered_at", "read_at", "interacted_at", "label", "campaign_id", "template_version",
                       "variables_json", "metadata_json", "content_json"):
            assert pd.isna(row[column]), (item, column, row[column])
        assert row["tags"] is None or (not isinstance(row["tags"], list) and pd.isna(row["tags"]))
        assert row["sent_at"] == utc(T0)


def test_explicit_null_stage_timestamp_is_rejected(tmp_path):
    frame = load_records(tmp_path, [make_event("after_feed_item_delivered", deliveredAt=None)])
    (row,) = quarantine_of(frame)
    assert "no stage timestamp" in row["reason"] and "deliveredAt" in row["reason"]


@pytest.mark.parametrize("value, expected", [(3, 3), ("2", 2), (" 7", 7), (2_147_483_647, 2_147_483_647)])
def test_template_version_is_int32_numeric_strings_accepted(tmp_path, value, expected):
    rows, schema, _ = stored_rows(tmp_path, [make_event(templateVersion=value)])
    assert schema.field("template_version").type == pa.int32()
    assert rows[0]["template_version"] == expected


BAD_VERSIONS = ["abc", "v2", 2.5, "2.5", "", True, 2**40, [2], {"v": 2}]


def test_non_integer_template_version_is_rejected(tmp_path):
    frame = load_records(tmp_path, [make_event(id=f"v{n}", templateVersion=v) for n, v in enumerate(BAD_VERSIONS)])
    assert len(frame) == 0, frame["template_version"].tolist()
    rows = {r["source_line"]: r for r in quarantine_of(frame)}
    assert sorted(rows) == list(range(1, len(BAD_VERSIONS) + 1))
    for n, value in enumerate(BAD_VERSIONS):
        assert rows[n + 1]["kind"] == "rejected" and "templateVersion" in rows[n + 1]["reason"], value


def test_core_fields_of_another_json_type_are_kept_as_text_or_numbers(tmp_path):
    event = make_event("after_notification_created", receiver=42, label=7, priority=1,
                       totalTargets="1200", sentCount=3.0, failedCount=0)
    frame = load_records(tmp_path, [event])
    assert quarantine_of(frame) == []
    row = frame.iloc[0]
    assert (row["receiver"], row["label"], row["priority"]) == ("42", "7", "1")
    assert (int(row["total_targets"]), int(row["sent_count"]), int(row["failed_count"])) == (1200, 3, 0)


def test_category_is_template_category_or_category(tmp_path):
    events = [
        make_event("after_feed_item_sent", id="f1", templateCategory="promotions", categoryId="cat-9"),
        make_event("after_push_notification_sent", pushNotificationId="p1", category="transactional"),
        make_event("after_feed_item_sent", id="f2", templateCategory="first", category="second"),
        make_event("after_feed_item_sent", id="f3"),
    ]
    frame = load_records(tmp_path, events).set_index("item_id")
    assert frame.loc["f1", "category"] == "promotions"
    assert frame.loc["p1", "category"] == "transactional"
    assert frame.loc["f2", "category"] == "first"
    assert pd.isna(frame.loc["f3", "category"])


def test_tags_are_a_list_of_strings(tmp_path):
    events = [
        make_event(id="two", tags=["offer", "vip"]),
        make_event(id="empty", tags=[]),
        make_event(id="unicode", tags=["café", "🎉"]),
        make_event(id="none"),
    ]
    rows, schema, _ = stored_rows(tmp_path, events)
    assert pa.types.is_list(schema.field("tags").type)
    by_id = {r["item_id"]: r["tags"] for r in rows}
    assert by_id == {"two": ["offer", "vip"], "empty": [], "unicode": ["café", "🎉"], "none": None}
    frame = ca.read_events(_last_table(tmp_path)).set_index("item_id")
    assert list(frame.loc["two", "tags"]) == ["offer", "vip"]


def test_envelope_columns_and_app_id_fallback(tmp_path):
    events = [
        make_event(id="env", app_id="app-env", region="us", webhook="wh-7", appId="app-data"),
        make_event(id="data-only", app_id=None, appId="app-data"),
    ]
    frame = load_records(tmp_path, events).set_index("item_id")
    assert (frame.loc["env", "app_id"], frame.loc["env", "region"], frame.loc["env", "webhook_id"]) == ("app-env", "us", "wh-7")
    assert frame.loc["data-only", "app_id"] == "app-data"


# -- user columns -------------------------------------------------------------------------------

DOC_EVENT = {
    "trigger": "after_feed_item_read",
    "appId": "a1b2c3", "region": "eu", "webhook": "wh-1",
    "data": {"id": "feed-91ac", "appId": "a1b2c3", "notificationId": "ntf-77", "campaignId": "cmp-12",
             "receiver": "uid-42", "templateId": "tpl-promo", "templateVersion": 3,
             "channelType": "in_app", "channelId": "chn-1", "templateCategory": "promotions",
             "categoryId": "cat-9", "label": "summer-sale", "tags": ["offer", "vip"],
             "alternativeText": "A new offer", "dataType": "ui_template",
             "variables": {"firstName": "Ana", "discount": 15, "cart": {"items": 2}},
             "metadata": {"source": "crm", "experiment": {"id": 7, "arm": "B"}},
             "status": "read", "sentAt": 1780003600, "deliveredAt": 1780003611,
             "readAt": 1780004500, "realtimeFanout": ["websocket"]},
}


def test_documented_read_event(tmp_path):
    rows, _, summary = stored_rows(tmp_path, [DOC_EVENT])
    assert summary.written == 1 and summary.balanced
    (row,) = rows
    assert row["item_id"] == "feed-91ac" and row["stage"] == "read" and row["entity"] == "feed_item"
    assert row["template_version"] == 3 and row["category"] == "promotions" and row["tags"] == ["offer", "vip"]
    assert row["variables__firstName"] == "Ana"
    assert row["variables__discount"] == "15"
    assert row["variables__cart__items"] == "2"
    assert row["metadata__source"] == "crm"
    assert row["metadata__experiment__id"] == "7"
    assert row["metadata__experiment__arm"] == "B"
    assert json.loads(row["variables_json"]) == DOC_EVENT["data"]["variables"]
    assert json.loads(row["metadata_json"]) == DOC_EVENT["data"]["metadata"]
    assert row["content_json"] is None
    assert row["extra_json"] is None
    assert row["event_time"] == dt.datetime(2026, 5, 28, 21, 41, 40, tzinfo=dt.timezone.utc)


def test_user_leaves_are_stored_as_json_text(tmp_path):
    variables = {
        "int": 15, "neg": -3, "float": 12.5, "true": True, "false": False, "none": None,
        "list": ["a", 1, None, {"k": [1.5]}], "empty_list": [], "text": "10%", "zero_padded": "0012",
        "nested": {"deeper": {"deepest": "x"}},
    }
    rows, schema, _ = stored_rows(tmp_path, [make_event(variables=variables, metadata={"m": 1})])
    (row,) = rows
    for name in schema.names:
        if name.startswith(("variables__", "metadata__")):
            assert schema.field(name).type == pa.string(), name
    assert row["variables__int"] == "15"
    assert row["variables__neg"] == "-3"
    assert json.loads(row["variables__float"]) == 12.5
    assert row["variables__true"] == "true" and row["variables__false"] == "false"
    assert row.get("variables__none") is None
    assert json.loads(row["variables__list"]) == variables["list"]
    assert json.loads(row["variables__empty_list"]) == []
    assert row["variables__text"] == "10%" and row["variables__zero_padded"] == "0012"
    assert row["variables__nested__deeper__deepest"] == "x"
    assert "variables__nested" not in row and "variables__nested__deeper" not in row
    assert row["metadata__m"] == "1"


def test_number_in_one_event_and_string_in_another_keeps_both(tmp_path):
    events = [make_event(id="a", variables={"discount": 15}), make_event(id="b", variables={"discount": "10%"}),
              make_event(id="c", variables={"discount": 7.5})]
    rows, _, summary = stored_rows(tmp_path, events)
    assert (summary.written, summary.rejected) == (3, 0)
    assert {r["item_id"]: r["variables__discount"] for r in rows} == {"a": "15", "b": "10%", "c": "7.5"}
    # the other order, in another table: the same values
    rows, _, _ = stored_rows(tmp_path, events[::-1])
    assert {r["item_id"]: r["variables__discount"] for r in rows} == {"a": "15", "b": "10%", "c": "7.5"}


def test_object_in_one_event_and_scalar_in_another(tmp_path):
    events = [
        make_event(id="obj", variables={"offer": {"code": "X1", "percent": 20}}),
        make_event(id="scalar", variables={"offer": "none"}),
        make_event(id="list", variables={"offer": [1, 2]}),
    ]
    rows, _, summary = stored_rows(tmp_path, events)
    assert (summary.written, summary.rejected) == (3, 0)
    by_id = {r["item_id"]: r for r in rows}
    assert by_id["obj"]["variables__offer__code"] == "X1"
    assert by_id["obj"]["variables__offer__percent"] == "20"
    assert by_id["obj"]["variables__offer"] is None  # an object is not a leaf
    assert by_id["scalar"]["variables__offer"] == "none"
    assert by_id["scalar"]["variables__offer__code"] is None
    assert json.loads(by_id["list"]["variables__offer"]) == [1, 2]
    frame = load_records(tmp_path, events)
    assert set(frame["item_id"]) == {"obj", "scalar", "list"}


def test_unsafe_key_characters_become_underscores(tmp_path):
    variables = {"item-count": 3, "a b.c/d": "x", "cart": {"sku#1": "s"}, "ok_Key9": "k", "": "empty"}
    rows, _, _ = stored_rows(tmp_path, [make_event(variables=variables, metadata={"x:y": "m", "tilde~": "t"})])
    (row,) = rows
    assert row["variables__item_count"] == "3"
    assert row["variables__a_b_c_d"] == "x"
    assert row["variables__cart__sku_1"] == "s"
    assert row["variables__ok_Key9"] == "k"
    assert row["metadata__x_y"] == "m"
    assert row["metadata__tilde_"] == "t"
    assert row["variables___"] == "empty"
    for name in row:
        assert re.fullmatch(r"[0-9A-Za-z_]+", name), name


def test_unicode_keys_and_values(tmp_path):
    variables = {"firstName": "Zoë 🎉 名前", "名前": "José", "emoji🎉": "ok", "quote\"key": "q\"v\\n"}
    event = make_event(id="üñí-çødé", receiver="uid-José", label="été", variables=variables,
                       metadata={"ключ": {"значение": "данные"}})
    rows, _, summary = stored_rows(tmp_path, [event])
    assert summary.rejected == 0
    (row,) = rows
    assert row["item_id"] == "üñí-çødé" and row["receiver"] == "uid-José" and row["label"] == "été"
    assert row["variables__firstName"] == "Zoë 🎉 名前"
    assert json.loads(row["variables_json"]) == variables
    assert json.loads(row["metadata_json"]) == event["data"]["metadata"]
    user_values = {v for k, v in row.items() if k.startswith("variables__")}
    assert {"José", "ok", "q\"v\\n"} <= user_values
    assert "данные" in {v for k, v in row.items() if k.startswith("metadata__")}


@pytest.mark.parametrize(
    "keys",
    [("a-b", "a.b"), ("Name", "name"), ("名前", "年齢"), ("a__b", ("a", "b"))],
    ids=["punctuation", "case", "unicode", "separator"],
)
def test_distinct_keys_of_one_event_never_lose_a_value(tmp_path, keys):
    """Two different keys whose column names would coincide must not lose a leaf from the columns."""
    variables: dict[str, Any] = {}
    for n, key in enumerate(keys):
        if isinstance(key, tuple):
            variables.setdefault(key[0], {})[key[1]] = f"value-{n}"
        else:
            variables[key] = f"value-{n}"
    rows, _, _ = stored_rows(tmp_path, [make_event(variables=variables)])
    (row,) = rows
    found = sorted(v for k, v in row.items() if k.startswith("variables__") and v is not None)
    assert found == [f"value-{n}" for n in range(len(keys))]


def test_raw_json_columns_keep_the_original_objects(tmp_path):
    content = {"title": "Hi Zoë", "body": {"blocks": [{"type": "text", "text": "15% off"}]}}
    variables = {"b": 1, "a": {"z": [1, 2.5, None], "y": "é"}}
    metadata = {"source": "crm", "n": None}
    event = make_event("after_feed_item_sent", variables=variables, metadata=metadata, content=content)
    frame = load_records(tmp_path, [event], fmt="lines")
    row = frame.iloc[0]
    assert json.loads(row["variables_json"]) == variables
    assert list(json.loads(row["variables_json"])) == ["b", "a"]  # key order kept
    assert json.loads(row["metadata_json"]) == metadata
    assert json.loads(row["content_json"]) == content


def test_unknown_data_keys_are_kept_in_extra_json(tmp_path):
    extra = {"newField": 1, "futureThing": {"x": [1, "a"]}, "flag": None}
    frame = load_records(tmp_path, [make_event(id="x", **extra), make_event(id="plain")]).set_index("item_id")
    assert json.loads(frame.loc["x", "extra_json"]) == extra
    assert pd.isna(frame.loc["plain", "extra_json"])


def test_max_depth_keeps_deep_objects_in_raw_json_only(tmp_path):
    variables = {"a": {"b": {"c": 1}}, "x": {"y": 2}, "top": 3}
    limits = FlattenLimits(max_depth=2)
    rows, _, summary = stored_rows(tmp_path, [make_event(variables=variables)], limits=limits)
    (row,) = rows
    assert row["variables__x__y"] == "2" and row["variables__top"] == "3"
    assert not any(k.startswith("variables__a__b") for k in row)
    assert summary.too_deep >= 1
    assert json.loads(row["variables_json"]) == variables
    frame = load_records(tmp_path, [make_event(variables=variables)], limits=limits)
    assert summary_of(frame)["too_deep"] >= 1
    assert "variables__x__y" in frame and not any(c.startswith("variables__a__b") for c in frame)


def test_max_user_columns_caps_columns_and_lists_the_rest(tmp_path):
    variables = {"a": 1, "b": 2, "c": 3}
    limits = FlattenLimits(max_user_columns=2)
    rows, _, summary = stored_rows(tmp_path, [make_event(variables=variables, metadata={"m": "x"})], limits=limits)
    (row,) = rows
    user = sorted(k for k in row if k.startswith(("variables__", "metadata__")))
    assert len(user) == 2
    assert sorted(summary.capped_keys) == sorted({"variables__a", "variables__b", "variables__c", "metadata__m"} - set(user))
    assert json.loads(row["variables_json"]) == variables and json.loads(row["metadata_json"]) == {"m": "x"}
    assert summary.written == 1 and summary.balanced
    frame = load_records(tmp_path, [make_event(variables=variables)], limits=limits)
    assert summary_of(frame)["capped_keys"] == ["variables__c"]


# -- rejects and skips --------------------------------------------------------------------------

_GOOD = json.dumps(make_event(id="good-1"))
_SAMPLE = json.dumps(make_event(id="bad"))

REJECTS = [
    ("truncated", _SAMPLE[: len(_SAMPLE) * 3 // 5], "invalid JSON"),
    ("number", "1780000000", "not a JSON object"),
    ("string", '"hello"', "not a JSON object"),
    ("null", "null", "not a JSON object"),
    ("array", json.dumps([{"trigger": "after_feed_item_read", "appId": "a"}, 3]), "not a JSON object"),
    ("no_data", json.dumps({"trigger": "after_push_notification_sent", "appId": "a"}), "no data object"),
    ("data_null", json.dumps({"trigger": "after_feed_item_sent", "data": None}), "no data object"),
    ("data_string", json.dumps({"trigger": "after_feed_item_sent", "data": "x"}), "no data object"),
    ("data_list", json.dumps({"trigger": "after_feed_item_sent", "data": [{"id": 1}]}), "no data object"),
    ("no_trigger", json.dumps({"data": make_event()["data"]}), "trigger"),
    ("trigger_number", json.dumps({"trigger": 7, "data": make_event()["data"]}), "trigger"),
    ("bad_timestamp", _SAMPLE.replace(f'"sentAt": {T0}', '"sentAt": "yesterday"'), "unparseable timestamp"),
    ("out_of_range", _SAMPLE.replace(f'"sentAt": {T0}', '"sentAt": 99999999999999999'), "timestamp"),
    ("version", json.dumps(make_event(templateVersion="v3")), "templateVersion"),
    ("no_stage_time", json.dumps(make_event("after_feed_item_read", readAt=DROP)), "no stage timestamp"),
]


@pytest.mark.parametrize("name, text, reason", REJECTS, ids=[r[0] for r in REJECTS])
def test_every_reject_reason(tmp_path, name, text, reason):
    paths = [
        write_payload(tmp_path / f"{ending}.ndjson", [json.dumps(make_event(id=f"{ending}-1")), text,
                                                      json.dumps(make_event(id=f"{ending}-3"))], crlf=ending == "crlf")
        for ending in ("lf", "crlf")
    ]
    frame = ca.load([str(p) for p in paths])
    summary = summary_of(frame)
    assert (summary["records"], summary["written"], summary["rejected"], summary["skipped"]) == (6, 4, 2, 0)
    rows = quarantine_of(frame)
    assert sorted((r["source_file"], r["source_line"]) for r in rows) == sorted((str(p), 2) for p in paths)
    for row in rows:
        assert row["kind"] == "rejected"
        assert reason in row["reason"], row["reason"]
        assert row["raw"] == text, row["source_file"]  # the record's own text, without its line end
    assert sorted(frame["source_line"]) == [1, 1, 3, 3]


@pytest.mark.parametrize("trigger", ["after_message", "after_reaction_added", "before_message"])
def test_other_triggers_are_skipped_not_rejected(tmp_path, trigger, table):
    other = json.dumps({"trigger": trigger, "appId": "app-1", "data": {"message": {"id": "1", "text": "hi"}}})
    path = write_payload(tmp_path / "in.ndjson", [_GOOD, other])
    summary = ca.ingest(str(path), table)
    assert (summary.records, summary.written, summary.rejected, summary.skipped) == (2, 1, 0, 1)
    skipped = ca.read_skipped(table)
    assert skipped["trigger"].tolist() == [trigger]
    assert skipped["raw"].tolist() == [other]
    assert skipped["source_line"].tolist() == [2]
    assert skipped["source_file"].tolist() == [str(path)]
    assert skipped["load_id"].tolist() == [summary.load_id]
    assert len(ca.read_rejected(table)) == 0
    assert trigger not in set(ca.read_events(table)["trigger"])


def test_rejected_rows_in_the_table(tmp_path, table):
    bad = [_SAMPLE[:40], "[1, 2]", json.dumps(make_event(sentAt="never"))]
    path = write_payload(tmp_path / "in.ndjson", [_GOOD, *bad])
    summary = ca.ingest(str(path), table)
    assert (summary.written, summary.rejected) == (1, 3) and summary.balanced
    rejected = ca.read_rejected(table)
    assert set(rejected.columns) >= {"kind", "reason", "raw", "source_file", "source_line", "load_id", "ingested_at"}
    assert rejected["raw"].tolist() == bad
    assert rejected["source_line"].tolist() == [2, 3, 4]
    assert set(rejected["load_id"]) == {summary.load_id}
    assert set(rejected["source_file"]) == {str(path)}
    assert sum(summary.reject_reasons.values()) == 3


def test_invalid_utf8_is_rejected_with_the_bytes_escaped(tmp_path):
    raw = b'{"trigger": "after_feed_item_sent", "data": {"id": "\xff\xfe"}}'
    path = write_payload(tmp_path / "in.ndjson", [raw, _GOOD])
    frame = ca.load(str(path))
    (row,) = quarantine_of(frame)
    assert row["source_line"] == 1 and "\\xff" in row["raw"]


# -- property tests -----------------------------------------------------------------------------

_keys = st.text(max_size=6)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)
_user_objects = st.dictionaries(_keys, _json_values, max_size=6)
_UNSAFE = re.compile(r"[^0-9A-Za-z_]")
_MAX_DEPTH = FlattenLimits().max_depth


def _leaves(obj: dict, path: tuple[str, ...] = ()):
    for key, value in obj.items():
        here = (*path, key)
        if isinstance(value, dict) and value:
            yield from _leaves(value, here)
        else:
            yield here, value


def _column(prefix: str, path: tuple[str, ...]) -> str:
    return "__".join([prefix, *(_UNSAFE.sub("_", key) or "_" for key in path)])


def _texts(obj: Any) -> Any:
    """The same structure with every leaf replaced by non-numeric text (forces text columns)."""
    if isinstance(obj, dict):
        return {k: _texts(v) for k, v in obj.items()} if obj else {}
    return "~text~"


def _matches(cell: Any, leaf: Any) -> bool:
    """A stored text cell against the leaf it came from."""
    try:
        return _compare(cell, leaf)
    except ValueError:  # not JSON text at all
        return False


def _compare(cell: Any, leaf: Any) -> bool:
    if leaf is None:
        return cell is None or (not isinstance(cell, str) and pd.isna(cell))
    if not isinstance(cell, str):
        return False
    if isinstance(leaf, bool):
        return cell == ("true" if leaf else "false")
    if isinstance(leaf, int):
        return cell == str(leaf)
    if isinstance(leaf, float):
        parsed = json.loads(cell)
        return isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and (
            parsed == leaf and math.copysign(1, parsed) == math.copysign(1, leaf)
        )
    if isinstance(leaf, str):
        return cell == leaf
    return json.loads(cell) == leaf


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(objects=st.lists(st.tuples(_user_objects, _user_objects), min_size=1, max_size=3))
@example(objects=[({"a": {"b": 1}, "a__b": 2}, {}), ({"a": "scalar"}, {"a": {"b": None}})])
@example(objects=[({"k": "\u0000nul", "big": 2**63 - 1, "f": 1e300, "t": -0.0, "s": "15"}, {"/": {"~": "x"}})])
def test_property_load_never_raises_and_never_loses_a_leaf(objects):
    events = []
    for n, (variables, metadata) in enumerate(objects):
        events.append(make_event("after_feed_item_read", id=f"subject-{n}", variables=variables, metadata=metadata))
        # the same shape with text leaves, so every user column reads back as text
        events.append(make_event("after_feed_item_read", id=f"companion-{n}", variables=_texts(variables),
                                 metadata=_texts(metadata)))
    with tempfile.TemporaryDirectory() as folder:
        path = write_payload(Path(folder) / "in.ndjson", events)
        frame = ca.load(str(path))
    summary = summary_of(frame)
    assert summary["records"] == len(events)
    assert summary["records"] == summary["written"] + summary["duplicates"] + summary["rejected"] + summary["skipped"]
    assert (summary["written"], summary["rejected"]) == (len(events), 0), quarantine_of(frame)
    rows = frame.set_index("item_id")
    for n, (variables, metadata) in enumerate(objects):
        row = rows.loc[f"subject-{n}"]
        for prefix, obj in (("variables", variables), ("metadata", metadata)):
            assert json.loads(row[f"{prefix}_json"]) == obj
            leaves = [(p, v) for p, v in _leaves(obj) if len(p) <= _MAX_DEPTH]
            user = [c for c in frame.columns if c.startswith(prefix + "__")]
            assert _every_leaf_has_its_own_column(prefix, leaves, user, row), (prefix, leaves, {c: row[c] for c in user})



def _event_ids(records: list[dict], **limits: Any) -> list[str]:
    """Event ids of records flattened as one batch, in record order."""
    from campaign_analytics.flatten import connect, flatten_batch, lines_table
    from campaign_analytics.sources import Chunk

    lines, _ = lines_table([Chunk.of("batch.ndjson", 1, [json.dumps(r).encode() for r in records])])
    events = flatten_batch(connect(), lines, limits=FlattenLimits(**limits)).events
    assert events.num_rows == len(records)
    return events.sort_by("source_line").column("event_id").to_pylist()


_CLASHING_SHAPES = [
    {"a": [{"x": 1, "y": 2}], "b": {"0": 1}},  # a list of objects here ...
    {"a": [1, 2], "b": [5, 6]},  # ... a list of numbers, and a list where the other has the key "0"
    {"a": {"k": {}}, "c": [{"z": [{"q": 1}]}]},
    {"a": "text", "c": []},
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(objects=st.lists(st.tuples(_user_objects, _user_objects), min_size=2, max_size=5))
@example(objects=[(shape, shape) for shape in _CLASHING_SHAPES])
@example(objects=[({f"key{i}": i for i in range(300)}, {}), ({"key1": 1}, {"m": {"n": 1}})])
def test_property_an_event_id_never_depends_on_the_rest_of_its_batch(objects):
    records = [
        make_event("after_feed_item_read", id=f"f{n}", variables=variables, metadata=metadata,
                   content={"actions": [variables, metadata]})
        for n, (variables, metadata) in enumerate(objects)
    ]
    together = _event_ids(records)
    assert together == [_event_ids([record])[0] for record in records]
    assert together[::-1] == _event_ids(records[::-1])
    assert _event_ids(records, max_depth=2) == [_event_ids([record], max_depth=2)[0] for record in records]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches=st.lists(st.lists(st.tuples(_user_objects, _user_objects), min_size=1, max_size=3), min_size=2,
                        max_size=4))
@example(batches=[[(shape, shape)] for shape in _CLASHING_SHAPES] + [[({"a": 1}, {})], [({"a": 2}, {})]])
def test_property_queries_kept_from_earlier_batches_give_what_fresh_ones_give(batches):
    """A connection's queries are made once and run again for later batches: never with an earlier batch's data."""
    from campaign_analytics import flatten
    from campaign_analytics.sources import Chunk

    kept, fresh = flatten.connect(), flatten.connect()
    relations: dict[str, Any] = {}
    names_kept, names_fresh = flatten.UserColumns(), flatten.UserColumns()
    for b, objects in enumerate(batches):
        records = [
            json.dumps(make_event("after_feed_item_read", id=f"f{b}-{n}", variables=variables, metadata=metadata,
                                  content={"actions": [variables]})).encode()
            for n, (variables, metadata) in enumerate(objects)
        ]
        lines, _ = flatten.lines_table([Chunk.of(f"batch{b}.ndjson", 1, [*records, b"[%d]" % b])])
        again = flatten.flatten_batch(kept, lines, user_columns=names_kept, relations=relations)
        alone = flatten.flatten_batch(fresh, lines, user_columns=names_fresh)
        assert again.events.equals(alone.events)
        assert again.quarantine.equals(alone.quarantine)
    assert relations


_REORDERED_ANYWHERE = {
    "objects in a list in a list": {"variables": {"d": [[{"x": 1, "y": 2}]]}},
    "an object in a list of scalars": {"variables": {"d": [1, {"x": 1, "y": 2}]}},
    "an object in an object in a list": {"variables": {"d": [{"o": {"x": 1, "y": 2}, "p": 1}]}},
    "a list of objects as the whole object": {"content": [{"x": 1, "y": 2}, {"z": {"b": 1, "a": 2}}]},
    "an unknown field of data": {"futureField": {"x": 1, "y": {"b": [{"q": 1, "r": 2}], "a": 2}}},
    "an object past max_depth": {"metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"x": 1, "y": 2}}}}}}}}}},
}


@pytest.mark.parametrize("data", _REORDERED_ANYWHERE.values(), ids=_REORDERED_ANYWHERE.keys())
def test_key_order_anywhere_in_data_does_not_change_the_event_id(data):
    event = make_event("after_feed_item_read", id="f1", **data)
    retry = reordered(event)
    assert json.dumps(retry) != json.dumps(event)
    ids = _event_ids([event, retry])
    assert ids[0] == ids[1] == _event_ids([retry])[0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(objects=st.lists(st.tuples(_user_objects, _json_values), min_size=1, max_size=3))
def test_property_key_order_never_changes_an_event_id(objects):
    records = [
        make_event("after_feed_item_read", id=f"f{n}", variables=variables, content={"actions": value}, extra=value)
        for n, (variables, value) in enumerate(objects)
    ]
    retries = [reordered(record) for record in records]
    assert _event_ids(records) == _event_ids(retries) == _event_ids(records + retries)[len(records):]
    assert _event_ids(records, max_depth=2) == _event_ids(retries, max_depth=2)


def test_lists_nested_hundreds_deep_load(tmp_path):
    def nested(inner: dict) -> list:
        value: list = [inner]
        for _ in range(600):
            value = [value]
        return value

    deep = nested({"y": 2, "x": 1})
    rows, _, summary = stored_rows(tmp_path, [make_event(id="f1", variables={"d": deep})])
    assert (summary.written, summary.rejected) == (1, 0)
    assert json.loads(rows[0]["variables__d"]) == deep
    ids = _event_ids([make_event(id="f1", variables={"d": deep}), make_event(id="f1", variables={"d": nested({"x": 1, "y": 2})})])
    assert ids[0] == ids[1]


def test_an_empty_object_is_a_value(tmp_path):
    """{} is kept: stored as "{}", and adding one is a real change of the event."""
    ids = _event_ids([make_event(id="f1", variables={"b": 1}), make_event(id="f1", variables={"b": 1, "a": {}})])
    assert ids[0] != ids[1]
    rows, _, _ = stored_rows(tmp_path, [make_event(id="f1", variables={"a": {}}), make_event(id="f2", variables={"a": {"x": 1}})])
    assert [(row["variables__a"], row["variables__a__x"]) for row in rows] == [("{}", None), (None, "1")]


def test_a_list_element_never_fills_a_column_of_another_event(tmp_path):
    """Where one event has the key "0" and another a list at the same place, the list stays in its own column."""
    events = [make_event(id="a", variables={"l": {"0": "z"}}), make_event(id="b", variables={"l": ["q"]})]
    many_paths = make_event(id="c", variables={f"k{n}": n for n in range(300)})  # each row then read at its own paths
    for batch in (events, events[::-1], [*events, many_paths]):
        rows, _, _ = stored_rows(tmp_path, batch)
        by_id = {row["item_id"]: (row["variables__l"], row["variables__l__0"]) for row in rows}
        assert {k: by_id[k] for k in "ab"} == {"a": (None, "z"), "b": ('["q"]', None)}


def test_colliding_keys_are_named_in_the_order_they_arrive_whatever_the_batching(tmp_path):
    events = [make_event(id="a", variables={"name": "x", "first_name": 1}),
              make_event(id="b", variables={"Name": "y", "first-name": 2})]
    expected = {"variables__name": "x", "variables__Name_2": "y", "variables__first_name": "1",
                "variables__first_name_2": "2"}
    path = write_payload(tmp_path / "one.ndjson", events)
    ca.ingest(str(path), str(tmp_path / "together"))
    for n, event in enumerate(events):
        ca.ingest(str(write_payload(tmp_path / f"part{n}.ndjson", [event])), str(tmp_path / "apart"))
    for table in ("together", "apart"):
        frame = ca.read_events(str(tmp_path / table)).set_index("item_id")
        got = {c: frame[c].dropna().astype(str).tolist() for c in expected}
        assert got == {c: [v] for c, v in expected.items()}, (table, got)


def test_more_paths_in_a_batch_than_are_read_at_once_still_give_each_event_its_own_id():
    """Objects keyed by ids: every record brings new paths; a record's id stays what it is alone."""
    records = [make_event(id=f"f{n}", variables={f"user-{n}-{k}": {"seen": k} for k in range(40)}) for n in range(10)]
    retry = make_event(id="f3", variables=dict(reversed(list(records[3]["data"]["variables"].items()))))
    ids = _event_ids([*records, retry])
    assert ids[10] == ids[3] == _event_ids([records[3]])[0]
    assert len(set(ids)) == 10

def _every_leaf_has_its_own_column(prefix: str, leaves: list, columns: list[str], row: pd.Series) -> bool:
    """Each leaf matched to a distinct column named after its path (plus a _N suffix where names
    collide) whose cell in this row is the leaf's text: a bipartite matching, by augmenting paths."""
    options = []
    for path, value in leaves:
        base = re.escape(_column(prefix, path).lower())
        options.append([c for c in columns if re.fullmatch(base + r"(_[0-9]+)?", c.lower()) and _matches(row[c], value)])
    owner: dict[str, int] = {}

    def assign(leaf: int, seen: set[str]) -> bool:
        for column in options[leaf]:
            if column in seen:
                continue
            seen.add(column)
            if column not in owner or assign(owner[column], seen):
                owner[column] = leaf
                return True
        return False

    return all(assign(leaf, set()) for leaf in range(len(leaves)))


_garbage_lines = st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" ")), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=_garbage_lines, content=st.binary(max_size=200), name=st.sampled_from(["x.json", "x.ndjson"]))
@example(lines=[b"\x00oversize\x00junk"], content=b"", name="x.json")
@example(lines=[b"\x00oversize\x0012", b'{"trigger": null}', b"\xef\xbb\xbf{}", b"\r", b"\x0b"],
         content=b"\x00oversize\x00", name="x.json")
@example(lines=[b"[]"], content=b"[1, {}, [], null]", name="x.json")
def test_property_garbage_never_raises_and_is_rejected(lines, content, name):
    """Garbage lines among good ones, and a file of garbage bytes: nothing raises, all is counted."""
    good = json.dumps(make_event(id="good")).encode()
    with tempfile.TemporaryDirectory() as folder:
        lines_file = write_payload(Path(folder) / "lines.ndjson", [good, *lines])
        garbage_file = Path(folder) / name
        garbage_file.write_bytes(content)
        sources = [str(lines_file)]
        if content[:2] != b"\x1f\x8b":  # gzip magic on a corrupt stream is a SourceError (tested elsewhere)
            sources.append(str(garbage_file))
        frame = ca.load(sources)
    summary = summary_of(frame)
    assert summary["records"] == summary["written"] + summary["duplicates"] + summary["rejected"] + summary["skipped"]
    assert summary["written"] == 1
    quarantine = frame.attrs["quarantine"]
    from_lines = quarantine[quarantine["source_file"] == str(lines_file)]
    # blank = nothing but JSON whitespace (space, tab, CR, LF)
    assert len(from_lines) == sum(1 for line in lines if line.strip(b" \t\r\n"))
    assert all(2 <= line <= len(lines) + 1 for line in from_lines["source_line"])
    assert set(from_lines["kind"]) <= {"rejected", "skipped"}


def test_a_batch_that_fails_leaves_the_connection_as_it_was(monkeypatch):
    """A batch's working data is registered on the connection only while it runs; a failed batch leaves none behind
    and never touches a table of the same name."""
    import duckdb

    import campaign_analytics.flatten as flatten
    from campaign_analytics.sources import Chunk

    con = flatten.connect()
    con.execute("CREATE TABLE _staged_batch AS SELECT 1 AS mine")
    con.execute("CREATE TABLE lines AS SELECT 2 AS mine")
    record = make_event("after_feed_item_read", id="f1", variables={"a": 1})
    lines, _ = flatten.lines_table([Chunk.of("batch.ndjson", 1, [json.dumps(record).encode()])])
    working = flatten._objects_sql
    # A failure part way, while the staged batch is registered.
    monkeypatch.setattr(flatten, "_objects_sql", lambda source: working(source) if source != "content_json" else "SELECT 1/")
    with pytest.raises(duckdb.ParserException):
        flatten.flatten_batch(con, lines)
    assert con.execute("SELECT * FROM _staged_batch, lines").fetchall() == [(1, 2)]
    monkeypatch.undo()
    assert flatten.flatten_batch(con, lines).events.column("variables__a").to_pylist() == ["1"]
    assert con.execute("SELECT * FROM _staged_batch, lines").fetchall() == [(1, 2)]
