"""Tests of the synthetic webhook stream: determinism, formats, quirks, and a truth
that can be recovered exactly from the files with nothing but the standard library."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from campaign_analytics import ingest, items, load
from campaign_analytics.errors import ParameterError
from campaign_analytics.simulate import SimulationTruth, simulate
from campaign_analytics.triggers import TRIGGERS

BOM = b"\xef\xbb\xbf"
START = "2026-11-02"
DAYS = 7
ITEM_TIME_FIELDS = ("sentAt", "deliveredAt", "readAt", "interactedAt", "engagedAt", "clickedAt", "failedAt")
ALL_TIME_FIELDS = ITEM_TIME_FIELDS + ("createdAt", "completedAt", "scheduledAt", "updatedAt")


@dataclass
class Record:
    """One record as a loader would see it."""

    file: str
    line: int
    text: str
    crlf: bool
    bom: bool


def read_records(root: Path) -> list[Record]:
    """Every record of every payload file under ``root``, in path order."""
    records: list[Record] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        if relative.endswith(".gz"):
            raw = gzip.decompress(raw)
        bom = raw.startswith(BOM)
        text = raw[len(BOM) :].decode("utf-8") if bom else raw.decode("utf-8")
        crlf = "\r\n" in text
        if relative.startswith("posts/"):
            records.append(Record(relative, 1, text.strip(), crlf, bom))
        elif relative.endswith(".json"):
            for position, element in enumerate(json.loads(text), start=1):
                records.append(Record(relative, position, json.dumps(element, ensure_ascii=False), crlf, bom))
        else:
            lines = [line for line in text.splitlines() if line.strip()]
            records.extend(Record(relative, n, line, crlf, bom) for n, line in enumerate(lines, start=1))
    return records


def classify(record: Record) -> tuple[str, Any]:
    """('event', parsed) | ('skipped', trigger) | ('rejected', reason)."""
    try:
        value = json.loads(record.text)
    except json.JSONDecodeError:
        return "rejected", "invalid_json"
    if not isinstance(value, dict):
        return "rejected", "not_an_object"
    if value.get("trigger") not in TRIGGERS:
        return "skipped", value.get("trigger")
    if not isinstance(value.get("data"), dict):
        return "rejected", "missing_data"
    for name in ALL_TIME_FIELDS:
        stamp = value["data"].get(name)
        if stamp is not None and not isinstance(stamp, int):
            return "rejected", "bad_timestamp"
    return "event", value


def event_key(envelope: dict[str, Any]) -> str:
    """Identity of an event: trigger, appId and data with key order and version type ignored."""
    data = dict(envelope["data"])
    if isinstance(data.get("templateVersion"), str):
        data["templateVersion"] = int(data["templateVersion"])
    return json.dumps([envelope["trigger"], envelope["appId"], data], sort_keys=True)


@dataclass
class Parsed:
    records: list[Record]
    events: dict[str, dict[str, Any]]  # unique events by key
    copies: Counter[str]
    skipped: list[Record]
    rejected: list[tuple[Record, str]]


def parse(root: Path) -> Parsed:
    records = read_records(root)
    events: dict[str, dict[str, Any]] = {}
    copies: Counter[str] = Counter()
    skipped: list[Record] = []
    rejected: list[tuple[Record, str]] = []
    for record in records:
        kind, value = classify(record)
        if kind == "event":
            key = event_key(value)
            events.setdefault(key, value)
            copies[key] += 1
        elif kind == "skipped":
            skipped.append(record)
        else:
            rejected.append((record, value))
    return Parsed(records, events, copies, skipped, rejected)


def recover_items(parsed: Parsed) -> pd.DataFrame:
    """The items contract, implemented naively: earliest non-null stage timestamps per item."""
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for envelope in parsed.events.values():
        trigger = TRIGGERS[envelope["trigger"]]
        if trigger.entity not in ("feed_item", "push_notification"):
            continue
        data = envelope["data"]
        key = (data["channelType"], data[trigger.id_field])
        item = items.setdefault(
            key,
            {
                "channel_type": key[0],
                "item_id": key[1],
                "template_version": int(data["templateVersion"]),
                "campaign_id": data["campaignId"],
                "sent_at": None,
                "delivered_at": None,
                "read_at": None,
                "interacted_at": None,
                "clicked_at": None,
            },
        )
        interacted = data.get("interactedAt")
        if interacted is None:
            interacted = data.get("engagedAt")
        for column, stamp in (
            ("sent_at", data.get("sentAt")),
            ("delivered_at", data.get("deliveredAt")),
            ("read_at", data.get("readAt")),
            ("interacted_at", interacted if trigger.stage == "interacted" else None),
            ("clicked_at", data.get("clickedAt")),
        ):
            if stamp is not None and (item[column] is None or stamp < item[column]):
                item[column] = stamp
    return pd.DataFrame(list(items.values()))


def epoch_seconds(series: pd.Series) -> list[int | None]:
    """Timestamps (or epoch numbers) as whole epoch seconds, None where missing."""
    return [
        None if pd.isna(v) else int(v.timestamp()) if isinstance(v, pd.Timestamp) else int(v) for v in series
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulationTruth, Parsed]:
    root = tmp_path_factory.mktemp("sim") / "payloads"
    truth = simulate(root, items=1500, seed=11, start=START, days=DAYS, bad_records=10, other_triggers=6)
    return truth, parse(root)


# -- determinism --------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = simulate(tmp_path / "a", items=400, seed=3, bad_records=5, other_triggers=2)
    second = simulate(tmp_path / "b", items=400, seed=3, bad_records=5, other_triggers=2)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert first.files == second.files
    pd.testing.assert_frame_equal(first.items, second.items)
    pd.testing.assert_frame_equal(first.campaigns, second.campaigns)
    assert first.quirks == second.quirks


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    simulate(tmp_path / "a", items=400, seed=3)
    simulate(tmp_path / "b", items=400, seed=4)
    assert snapshot(tmp_path / "a") != snapshot(tmp_path / "b")


# -- what was written ---------------------------------------------------------------------------


def test_every_format_and_encoding_is_present(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, parsed = world
    files = truth.files
    assert files == tuple(sorted({r.file for r in parsed.records}))
    windows = [f for f in files if not f.startswith("posts/")]
    assert any(f.endswith(".ndjson") for f in windows)
    assert any(f.endswith(".jsonl") for f in windows)
    assert any(f.endswith(".ndjson.gz") for f in windows)
    assert any(f.endswith(".json") for f in windows)
    assert any(f.startswith("posts/") and f.endswith(".json") for f in files)
    by_file = {r.file: r for r in parsed.records}
    assert any(r.bom for r in by_file.values())
    assert any(r.crlf for r in by_file.values())
    assert any(r.bom for f, r in by_file.items() if f.startswith("posts/"))
    assert truth.quirks["bom_files"] == sum(r.bom for r in by_file.values())
    assert truth.quirks["crlf_files"] == sum(r.crlf for r in by_file.values())


def test_counts_match_the_files(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, parsed = world
    assert truth.records == len(parsed.records)
    assert truth.unique_events == len(parsed.events)
    assert truth.duplicates == sum(parsed.copies.values()) - len(parsed.events)
    assert truth.skipped == len(parsed.skipped) == 6
    assert truth.rejected == len(parsed.rejected) == 10
    assert truth.records == truth.unique_events + truth.duplicates + truth.rejected + truth.skipped
    assert Counter(truth.rejected_reasons) == Counter(reason for _, reason in parsed.rejected)
    assert set(truth.rejected_reasons) == {"invalid_json", "not_an_object", "missing_data", "bad_timestamp"}
    located = {(r.file, r.line, reason) for r, reason in parsed.rejected}
    columns = ["source_file", "source_line", "reason"]
    assert located == set(truth.rejected_records[columns].itertuples(index=False, name=None))
    assert {(r.file, r.line) for r in parsed.skipped} == set(
        truth.skipped_records[["source_file", "source_line"]].itertuples(index=False, name=None)
    )


def test_every_trigger_and_envelope(world: tuple[SimulationTruth, Parsed]) -> None:
    _, parsed = world
    triggers = Counter(e["trigger"] for e in parsed.events.values())
    assert set(triggers) == set(TRIGGERS)
    for envelope in parsed.events.values():
        assert list(envelope) == ["trigger", "appId", "region", "webhook", "data"]
    skipped_triggers = {json.loads(r.text)["trigger"] for r in parsed.skipped}
    assert skipped_triggers <= {"after_message", "after_reaction_added"}


def test_timestamps_are_epoch_seconds_inside_the_window(world: tuple[SimulationTruth, Parsed]) -> None:
    _, parsed = world
    start = int(datetime.fromisoformat(START).replace(tzinfo=UTC).timestamp())
    for envelope in parsed.events.values():
        trigger = TRIGGERS[envelope["trigger"]]
        data = envelope["data"]
        own = next(data[f] for f in trigger.time_fields if data.get(f) is not None)
        assert start <= own < start + DAYS * 86_400
        for name in ITEM_TIME_FIELDS:
            assert data.get(name) is None or 1_000_000_000 <= data[name] < 10_000_000_000


def test_status_follows_the_observed_behaviour(world: tuple[SimulationTruth, Parsed]) -> None:
    _, parsed = world
    statuses: dict[str, set[str]] = {}
    for envelope in parsed.events.values():
        statuses.setdefault(envelope["trigger"], set()).add(envelope["data"].get("status"))
    assert statuses["after_feed_item_sent"] == {"sent"}
    assert statuses["after_feed_item_delivered"] == {"delivered", "read"}
    assert statuses["after_feed_item_read"] == {"read"}
    assert statuses["after_feed_item_interacted"] <= {"sent", "read"}
    assert statuses["after_push_notification_clicked"] == {"clicked"}
    assert statuses["after_campaign_failed"] == {"failed"}
    assert statuses["after_notification_created"] == {"dispatching"}


# -- quirks -------------------------------------------------------------------------------------


def test_quirks_are_present_and_counted(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, parsed = world
    events = list(parsed.events.values())
    on_read = [
        e
        for e in events
        if e["trigger"] == "after_feed_item_delivered" and e["data"]["status"] == "read"
    ]
    assert on_read and all(e["data"]["deliveredAt"] == e["data"]["readAt"] for e in on_read)
    assert truth.quirks["delivered_on_read"] == int(truth.items["delivered_on_read"].sum()) >= len(on_read)

    numeric_strings = [e for e in events if isinstance(e["data"].get("templateVersion"), str)]
    assert numeric_strings and truth.quirks["numeric_string_versions"] == len(numeric_strings)
    assert all(e["data"]["templateVersion"].isdigit() for e in numeric_strings)

    engaged = [e for e in events if e["trigger"] == "after_feed_item_interacted" and "engagedAt" in e["data"]]
    assert engaged and truth.quirks["engaged_at_interactions"] == len(engaged)
    assert all(e["data"]["topic"] and e["data"].get("interactedAt") is None for e in engaged)
    assert (truth.items["interactions"] > 1).any()

    assert truth.duplicates > 0
    assert truth.quirks["reordered_duplicates"] > 0 and truth.quirks["cross_file_duplicates"] > 0
    first_seen: dict[str, str] = {}
    cross = 0
    reordered = set()
    for record in parsed.records:
        kind, value = classify(record)
        if kind != "event":
            continue
        key = event_key(value)
        if key in first_seen and first_seen[key] != record.file:
            cross += 1
        first_seen.setdefault(key, record.file)
        if list(value["data"]) != list(parsed.events[key]["data"]):
            reordered.add(key)
    assert cross > 0 and reordered

    assert truth.quirks["out_of_order_items"] > 0
    assert truth.quirks["delivered_implied"] == int(truth.items["delivered_implied"].sum()) > 0


def test_lost_stage_events_are_carried_by_later_events(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, parsed = world
    own_events: set[tuple[str, str, str]] = set()
    carried: dict[tuple[str, str], set[str]] = {}
    for envelope in parsed.events.values():
        trigger = TRIGGERS[envelope["trigger"]]
        if trigger.entity not in ("feed_item", "push_notification"):
            continue
        data = envelope["data"]
        item = (data["channelType"], data[trigger.id_field])
        own_events.add((*item, trigger.stage))
        stages = carried.setdefault(item, set())
        for stage, name in (("sent", "sentAt"), ("delivered", "deliveredAt"), ("read", "readAt")):
            if data.get(name) is not None:
                stages.add(stage)
    lost = sum(
        (*item, stage) not in own_events for item, stages in carried.items() for stage in stages
    )
    assert lost == truth.quirks["lost_events"] > 0


def test_some_delivered_events_carry_an_earlier_engaged_at_that_is_no_interaction(
    world: tuple[SimulationTruth, Parsed], tmp_path: Path
) -> None:
    truth, parsed = world
    delivered = [e["data"] for e in parsed.events.values() if e["trigger"] == "after_feed_item_delivered"]
    engaged = [d for d in delivered if "engagedAt" in d]
    assert len(engaged) == truth.quirks["delivered_with_engaged_at"] > 0
    assert all(d["sentAt"] <= d["engagedAt"] < d["deliveredAt"] and d["status"] == "delivered" for d in engaged)
    # The loader and items() do not take it for an interaction: the truth's interactions stand.
    every = simulate(tmp_path / "raw", items=300, seed=5, delivered_engaged_share=1.0)
    assert every.quirks["delivered_with_engaged_at"] > 0
    ingest(tmp_path / "raw", tmp_path / "events", progress=False)
    got = items(tmp_path / "events").to_pandas().set_index("item_id").sort_index()
    want = every.items.set_index("item_id").sort_index()
    assert got["interaction_count"].tolist() == want["interactions"].tolist()
    assert got["interacted_at"].isna().tolist() == want["interacted_at"].isna().tolist()


def test_payload_shapes(world: tuple[SimulationTruth, Parsed]) -> None:
    _, parsed = world
    events = list(parsed.events.values())
    feed_sent = [e for e in events if e["trigger"] == "after_feed_item_sent"]
    assert all("content" in e["data"] for e in feed_sent)
    assert not any("content" in e["data"] for e in events if e["trigger"] != "after_feed_item_sent")
    discount_types = {
        type(e["data"]["variables"]["discount"])
        for e in events
        if "discount" in e["data"].get("variables", {})
    }
    assert discount_types == {int, str}
    assert any(isinstance(e["data"].get("variables", {}).get("cart"), dict) for e in events)
    assert any(isinstance(e["data"].get("variables", {}).get("skus"), list) for e in events)
    assert any(isinstance(e["data"].get("metadata", {}).get("experiment"), dict) for e in events)
    # Unreached stages: explicit null in some events, absent in others.
    sent = [e["data"] for e in events if e["trigger"] == "after_push_notification_sent"]
    assert any("deliveredAt" in d and d["deliveredAt"] is None for d in sent)
    assert any("deliveredAt" not in d for d in sent)
    # Notifications sent straight through the API have no campaign.
    item_events = [e for e in events if TRIGGERS[e["trigger"]].entity in ("feed_item", "push_notification")]
    assert any(e["data"]["campaignId"] is None for e in item_events)
    for e in events:
        if e["trigger"] in ("after_campaign_completed", "after_campaign_failed"):
            expected = {"totalTargets", "sentCount", "failedCount", "scheduledAt", "sentAt", "completedAt"}
            assert expected <= set(e["data"])


# -- the truth is what the files make observable ------------------------------------------------


def test_items_truth_is_recoverable_from_the_files(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, parsed = world
    recovered = recover_items(parsed).set_index(["channel_type", "item_id"]).sort_index()
    expected = truth.items.set_index(["channel_type", "item_id"]).sort_index()
    assert len(expected) == 1500 and expected.index.is_unique
    assert list(recovered.index) == list(expected.index)
    for column in ("sent_at", "delivered_at", "read_at", "interacted_at", "clicked_at"):
        assert epoch_seconds(recovered[column]) == epoch_seconds(expected[column]), column
    assert recovered["template_version"].tolist() == expected["template_version"].tolist()
    assert [None if pd.isna(v) else v for v in recovered["campaign_id"]] == [
        None if pd.isna(v) else v for v in expected["campaign_id"]
    ]
    later = recovered[["read_at", "interacted_at", "clicked_at"]].notna().any(axis=1)
    implied = recovered["delivered_at"].isna() & later
    assert implied.tolist() == expected["delivered_implied"].tolist()
    on_read = recovered["delivered_at"].notna() & (recovered["delivered_at"] == recovered["read_at"])
    assert on_read.tolist() == expected["delivered_on_read"].tolist()


def test_items_frame_types(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, _ = world
    items = truth.items
    for column in ("sent_at", "delivered_at", "read_at", "interacted_at", "clicked_at"):
        assert str(items[column].dtype) == "datetime64[ms, UTC]"
    assert items["sent_at"].notna().all()
    assert items["template_version"].dtype == np.int64
    assert items["tags"].map(lambda t: isinstance(t, list)).all()
    ttd = (items["delivered_at"] - items["sent_at"]).dt.total_seconds()
    pd.testing.assert_series_equal(ttd, items["time_to_delivery_s"], check_names=False)
    assert (items["time_to_delivery_s"].dropna() >= 0).all()
    assert set(truth.campaigns["status"]) == {"completed", "failed"}
    campaigns = truth.campaigns
    assert (campaigns["total_targets"] == campaigns["sent_count"] + campaigns["failed_count"]).all()


def test_campaigns_truth_matches_campaign_events(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, parsed = world
    from_files = {
        e["data"]["campaignId"]: e["data"]
        for e in parsed.events.values()
        if TRIGGERS[e["trigger"]].entity == "campaign"
    }
    assert set(from_files) == set(truth.campaigns["campaign_id"])
    for row in truth.campaigns.itertuples(index=False):
        data = from_files[row.campaign_id]
        observed = (data["status"], data["sentCount"], data["failedCount"])
        assert observed == (row.status, row.sent_count, row.failed_count)
        assert epoch_seconds(pd.Series([row.completed_at]))[0] == data["completedAt"]


# -- truth metrics --------------------------------------------------------------------------------


def test_engagement_is_consistent(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, _ = world
    overall = truth.engagement([])
    assert len(overall) == 1 and int(overall["sent"].iloc[0]) == 1500
    groupings = (["channel_type"], ["template_id", "template_version"], ["campaign_id"], ["tag"], ["label", "tag"])
    for by in groupings:
        frame = truth.engagement(by)
        assert list(frame.columns[: len(by)]) == by
        assert (frame["delivered"] <= frame["sent"]).all()
        assert (frame["read"] <= frame["delivered"]).all() and (frame["clicked"] <= frame["delivered"]).all()
        assert (frame["interacted"] <= frame["delivered"]).all()
        for rate in ("delivery_rate", "read_rate", "interaction_rate", "click_rate",
                     "read_rate_of_delivered", "click_rate_of_delivered"):
            values = frame[rate].dropna()
            assert ((values >= 0) & (values <= 1)).all(), rate
        if "tag" not in by:
            assert int(frame["sent"].sum()) == 1500
    # One row per tag, and untagged items once under the missing tag: nobody drops out.
    tagged = truth.items["tags"].map(lambda tags: max(len(tags), 1)).sum()
    assert int(truth.engagement(["tag"])["sent"].sum()) == tagged
    # The API notifications (no campaign) are a group of their own.
    assert truth.engagement(["campaign_id"])["campaign_id"].isna().sum() == 1


def test_versions_differ(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, _ = world
    feed = truth.engagement(["channel_type", "template_id", "template_version"])
    feed = feed[feed["channel_type"] == "in_app"]
    assert feed["read_rate_of_delivered"].max() - feed["read_rate_of_delivered"].min() > 0.1


def test_time_to_delivery(world: tuple[SimulationTruth, Parsed]) -> None:
    truth, _ = world
    frame = truth.time_to_delivery(["channel_type"]).set_index("channel_type")
    items = truth.items
    for channel in ("in_app", "push"):
        values = items.loc[items["channel_type"] == channel, "time_to_delivery_s"].dropna().to_numpy()
        assert frame.loc[channel, "ttd_n"] == values.size
        assert frame.loc[channel, "ttd_p90"] == pytest.approx(np.percentile(values, 90))
        assert frame.loc[channel, "ttd_mean"] == pytest.approx(values.mean())
    # Push arrives faster than the in-app feed.
    assert frame.loc["push", "ttd_p50"] < frame.loc["in_app", "ttd_p50"]
    assert (frame["ttd_p50"] <= frame["ttd_p90"]).all() and (frame["ttd_p90"] <= frame["ttd_p99"]).all()
    excluded = truth.time_to_delivery([], exclude_delivered_on_read=True)
    everything = truth.time_to_delivery([])
    left_out = int(everything["ttd_n"].iloc[0] - excluded["ttd_n"].iloc[0])
    assert left_out == int(items["delivered_on_read"].sum())
    by_tag = truth.time_to_delivery(["tag"])
    named = by_tag["tag"].dropna().tolist()
    assert named == sorted(named)
    assert by_tag["tag"].isna().sum() <= 1 and (by_tag["tag"].isna().sum() == 0 or pd.isna(by_tag["tag"].iloc[-1]))


def test_small_worlds_stay_consistent(tmp_path: Path) -> None:
    for n, days in ((1, 1), (7, 1), (60, 2)):
        root = tmp_path / f"w{n}"
        truth = simulate(root, items=n, seed=n, days=days, bad_records=2, other_triggers=1)
        parsed = parse(root)
        assert len(truth.items) == n
        assert truth.records == len(parsed.records)
        assert truth.unique_events == len(parsed.events)
        assert truth.records == truth.unique_events + truth.duplicates + truth.rejected + truth.skipped


# -- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": 0}, "items=0"),
        ({"days": 0}, "days=0"),
        ({"bad_records": -1}, "bad_records"),
        ({"duplicate_rate": 1.5}, "duplicate_rate"),
        ({"start": "next tuesday"}, "start="),
        ({"seed": -1}, "seed=-1"),
        ({"delivered_engaged_share": float("nan")}, "delivered_engaged_share"),
        # Times a load would reject as out of range (1970-2199): refused, never written as good events.
        ({"start": "1969-12-30"}, "1970-01-04 to 2199-12-31"),
        ({"start": "2199-12-30"}, "1970-01-04 to 2199-12-31"),
        ({"days": 100_000}, "1970-01-04 to 2199-12-31"),
    ],
)
def test_bad_parameters_raise(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        simulate(tmp_path / "out", **kwargs)


def test_the_first_and_last_windows_allowed_load_without_a_reject(tmp_path: Path) -> None:
    for start, days in (("1970-01-04", 2), ("2199-12-24", 7)):
        truth = simulate(tmp_path / start, items=300, seed=1, start=start, days=days)
        summary = load(tmp_path / start).attrs["load_summary"]
        assert (summary["rejected"], truth.rejected) == (0, 0), start


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "old.ndjson").write_text("{}\n")
    with pytest.raises(ParameterError, match="not empty"):
        simulate(tmp_path, items=10)
