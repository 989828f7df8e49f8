"""Shared fixtures of the loader tests: a valid-event factory and a payload file writer."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from campaign_analytics.triggers import TRIGGERS

# 2026-05-28T21:26:40Z, an ordinary epoch-seconds stage timestamp.
T0 = 1_780_003_600
BOM = b"\xef\xbb\xbf"
DROP = object()  # pass as a data value to leave the key out of the default data

_FLOW = {
    "feed_item": ("sentAt", "deliveredAt", "readAt", "interactedAt"),
    "push_notification": ("sentAt", "deliveredAt", "clickedAt"),
}


def default_data(trigger: str) -> dict[str, Any]:
    """A minimal, valid ``data`` object for one of the ten triggers."""
    spec = TRIGGERS[trigger]
    if spec.entity == "feed_item":
        data: dict[str, Any] = {
            "id": "feed-1", "appId": "app-1", "notificationId": "ntf-1", "campaignId": "cmp-1",
            "receiver": "uid-1", "templateId": "tpl-1", "templateVersion": 1, "channelType": "in_app",
            "channelId": "chn-1", "status": spec.stage,
        }
    elif spec.entity == "push_notification":
        data = {
            "pushNotificationId": "push-1", "appId": "app-1", "notificationId": "ntf-1", "campaignId": "cmp-1",
            "receiver": "uid-1", "templateId": "tpl-1", "templateVersion": 1, "channelType": "push",
            "channelId": "chn-fcm", "status": spec.stage,
        }
    elif spec.entity == "notification":
        data = {"notificationId": "ntf-1", "appId": "app-1", "templateId": "tpl-1", "templateVersion": 1,
                "status": "dispatching", "createdAt": T0}
    else:
        data = {"campaignId": "cmp-1", "appId": "app-1", "name": "Spring", "status": spec.stage,
                "templateId": "tpl-1", "templateVersion": 1, "createdAt": T0 - 600, "updatedAt": T0}
    if spec.entity in _FLOW:
        # Cumulative stage timestamps, one minute apart, up to this stage.
        flow = _FLOW[spec.entity]
        own = spec.time_fields[0]
        for step, name in enumerate(flow[: flow.index(own) + 1]):
            data[name] = T0 + 60 * step
    else:
        data[spec.time_fields[0]] = T0
    return data


def make_event(
    trigger: str = "after_feed_item_sent",
    *,
    app_id: str | None = "app-1",
    region: str = "eu",
    webhook: str = "wh-1",
    **data: Any,
) -> dict[str, Any]:
    """A valid webhook envelope; keyword arguments override ``data`` keys (``DROP`` removes one)."""
    body = default_data(trigger) if trigger in TRIGGERS else {}
    for key, value in data.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    envelope: dict[str, Any] = {"trigger": trigger, "appId": app_id, "region": region, "webhook": webhook, "data": body}
    return envelope


def reordered(obj: Any) -> Any:
    """The same JSON with every object's keys in reverse order, at every level (inside lists too)."""
    if isinstance(obj, dict):
        return {k: reordered(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [reordered(v) for v in obj]
    return obj


def _as_bytes(record: Any, *, pretty: bool = False) -> bytes:
    if isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode("utf-8")
    return json.dumps(record, ensure_ascii=False, indent=2 if pretty else None).encode("utf-8")


def write_payload(
    path: str | Path,
    records: Iterable[Any],
    *,
    fmt: str | None = None,
    gz: bool | None = None,
    bom: bool = False,
    crlf: bool = False,
    pretty: bool = False,
    trailing_newline: bool = True,
) -> Path:
    """Write records (dicts are JSON-encoded, str/bytes written as they are) to a payload file.

    fmt: ``"lines"`` (NDJSON, the default for every name but ``*.json``), ``"array"``
    (the default for ``*.json``) or ``"single"`` (exactly one record, one POST body).
    gz: gzip the bytes (default: when the name ends in ``.gz``).
    """
    path = Path(path)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    fmt = fmt or ("array" if name.endswith(".json") else "lines")
    gz = path.name.endswith(".gz") if gz is None else gz
    newline = b"\r\n" if crlf else b"\n"
    items = [_as_bytes(r, pretty=pretty) for r in records]
    if fmt == "lines":
        payload = newline.join(items)
    elif fmt == "array":
        payload = b"[" + (b"," + newline).join(items) + b"]"
    elif fmt == "single":
        assert len(items) == 1, "a single POST body holds exactly one record"
        payload = items[0]
    else:
        raise ValueError(fmt)
    if crlf:
        payload = payload.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if trailing_newline:
        payload += newline
    if bom:
        payload = BOM + payload
    if gz:
        payload = gzip.compress(payload, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


@pytest.fixture
def write(tmp_path: Path):
    """``write("in/a.ndjson", records, **options)``: write_payload relative to tmp_path."""

    def _write(relative: str, records: Iterable[Any], **options: Any) -> Path:
        return write_payload(tmp_path / relative, records, **options)

    return _write


@pytest.fixture
def table(tmp_path: Path) -> str:
    """A fresh events table path (not created yet)."""
    return str(tmp_path / "events")
