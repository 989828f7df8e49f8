#!/usr/bin/env python
"""Seeded mutation fuzzer of the loader: hostile payloads in, invariants checked after every load.

Valid webhook events (from the test suite's ``make_event`` and from
:func:`campaign_analytics.simulate.simulate`) are mutated with one
``random.Random(seed)``: fields removed, wrong types, huge strings, control
characters, lone surrogate escapes and raw invalid UTF-8, nesting thousands of
levels deep, numbers out of range, timestamps in milliseconds or negative,
duplicated keys, wrong trigger types, BOMs in the middle of a file, truncation,
byte noise. They are written as NDJSON files (plain, gzip, CRLF, leading BOM),
one file per load, and ingested. After each load:

* nothing raised;
* ``records == written + duplicates + rejected + skipped`` and ``records`` is
  the number of non-blank lines written;
* every non-blank line is exactly one of: an event row, a quarantine row, or
  one of the load's duplicates (event and quarantine rows name the file and a
  line of it, at most one row per line);
* every rejected or skipped row has a non-empty reason and its raw text;
* records whose fate is certain (an untouched event must load, a truncated
  line must be rejected, an unknown trigger must be skipped, ...) got it;
* no event id appears twice in the table.

Usage::

    python scripts/fuzz.py --records 1000000 --seed 7 --table /tmp/fuzz

prints the counts and every invariant violation, and exits 1 if there was one.
The same engine runs in ``tests/test_fuzz.py`` with a fixed seed.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
if str(_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(_ROOT / "tests"))

import campaign_analytics as ca  # noqa: E402
from campaign_analytics.simulate import simulate  # noqa: E402
from campaign_analytics.sources import find_files, read_chunks  # noqa: E402
from campaign_analytics.triggers import STAGE_TIMESTAMP_FIELDS, TRIGGERS  # noqa: E402
from conftest import make_event  # noqa: E402

__all__ = [
    "FINAL_MUTATIONS",
    "Record",
    "LoadCheck",
    "Fuzzer",
    "base_events",
    "write_lines",
    "expected_lines",
    "check_outcome",
    "ingest_and_check",
    "check_table",
    "run",
    "main",
]

BOM: Final[bytes] = b"\xef\xbb\xbf"
_JSON_WHITESPACE: Final[bytes] = b" \t\r\n"
# Marker strings replaced at the text level (after json.dumps) by what dumps cannot write.
_MARK: Final[str] = "\u0001FUZZ\u0001"
_MARK_JSON: Final[bytes] = b'"\\u0001FUZZ\\u0001"'
_MARK_INNER: Final[bytes] = b"\\u0001FUZZ\\u0001"
_VARIABLE_KEYS: Final[tuple[str, ...]] = (
    "firstName", "discount", "plan", "cart", "amount", "count", "offer", "lang", "dueDate", "topics",
)
_HOSTILE_TEXT: Final[tuple[str, ...]] = (
    "\x00", "nul\x00inside", "\x1b[31mred\x1b[0m", "\u2028line\u2029sep", "\ufeffbom", "\u202eevil",
    "tab\there", "new\nline", "cr\rcr", "\x7fdel", "\x01\x02\x03\x1f", "emoji \U0001f600", "\\", '"quoted"',
    "é" * 3, "\uffff", "\U0010ffff",
)
_TRAVERSAL: Final[tuple[str, ...]] = (
    "../../etc/passwd", "/etc/passwd", "..\\..\\windows\\system32", "C:\\Windows", "./", "..", "/",
    "a/../../b", "%2e%2e%2f", "file:///etc/passwd", "\x00/etc/passwd", "event_date=2026-01-01", "_delta_log",
)
_WEIRD_KEYS: Final[tuple[str, ...]] = (
    "", " ", "a.b", "a/b", "~1", "~0", "__", "variables__x", "é", "\U0001f600", "k" * 300, "A", "a", "1", "$ref",
    "a b", "a-b", "\x00", "\u2028",
)
_BIG_NUMBERS: Final[tuple[str, ...]] = (
    "1e400", "-1e400", "1e-400", str(2**70), str(-(2**70)), str(2**64), "123456789012345678901234567890.123",
    "0.0000000000000000000000001", "-0", "1E+2", "9007199254740993", "-9223372036854775809",
)
_SURROGATES: Final[tuple[bytes, ...]] = (b"\\ud800", b"\\udfff", b"\\udbff\\udbff", b"x\\udc00y", b"\\ud83d")
_INVALID_UTF8: Final[tuple[bytes, ...]] = (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80")
_FOREIGN_TRIGGERS: Final[tuple[str, ...]] = (
    "after_message", "after_reaction_added", "", " ", "AFTER_FEED_ITEM_SENT", "after_feed_item_sent ",
    "after_feed_item_sent\x00", "x" * 5000, "../../etc/passwd", "after_feed_item_sent\u200b",
)
_ID_FIELDS: Final[tuple[str, ...]] = ("id", "pushNotificationId", "campaignId", "notificationId")


@dataclass(frozen=True, slots=True)
class Record:
    """One generated line and what must become of it.

    ``expect`` is ``"event"`` (written or a duplicate, never quarantined),
    ``"rejected"``, ``"skipped"``, or None when any accounted-for outcome is fine.
    """

    raw: bytes
    expect: str | None
    mutation: str


@dataclass(slots=True)
class LoadCheck:
    """The outcome of checking one load: its counts and every invariant violation found."""

    records: int = 0
    written: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    violations: list[str] = field(default_factory=list)

    def add(self, other: LoadCheck) -> None:
        """Accumulate another load's counts and violations into this one."""
        self.records += other.records
        self.written += other.written
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.skipped += other.skipped
        self.violations.extend(other.violations)


# -- the pool of valid events -------------------------------------------------------------------


def _random_token(rng: random.Random, prefix: str) -> str:
    """A short random identifier."""
    return f"{prefix}-{rng.getrandbits(48):012x}"


def _made_event(rng: random.Random, trigger: str) -> dict[str, Any]:
    """A valid event of one trigger from ``make_event``, with varied ids and user objects."""
    spec = TRIGGERS[trigger]
    data: dict[str, Any] = {spec.id_field: _random_token(rng, spec.entity)}
    if spec.entity in ("feed_item", "push_notification"):
        data["variables"] = {k: rng.choice([rng.randint(0, 99), f"v{rng.randint(0, 9)}", True, None, 1.5])
                             for k in rng.sample(_VARIABLE_KEYS, rng.randint(0, 4))}
        if rng.random() < 0.5:
            data["variables"]["cart"] = {"items": rng.randint(1, 5), "value": {"amount": rng.random() * 100}}
        data["metadata"] = {"source": rng.choice(["crm", "api"]), "experiment": {"id": rng.randint(1, 9), "arm": "AB"[rng.randint(0, 1)]}}
        data["tags"] = rng.sample(["offer", "vip", "new", "churn"], rng.randint(0, 3))
        data["templateVersion"] = rng.choice([1, 2, 3, "2"])
    return make_event(trigger, **data)


def base_events(rng: random.Random, sim_dir: Path | None = None, *, sim_items: int = 300) -> list[dict[str, Any]]:
    """Valid events to mutate: some of every trigger from ``make_event``, plus a simulated stream's.

    Parameters
    ----------
    rng
        The fuzzer's random generator.
    sim_dir
        An empty or missing directory for :func:`simulate`'s files; None leaves them out.
    sim_items
        Items of the simulated stream.
    """
    pool = [_made_event(rng, trigger) for trigger in TRIGGERS for _ in range(8)]
    if sim_dir is not None:
        simulate(sim_dir, items=sim_items, seed=rng.randrange(2**31), days=3)
        for file in find_files(str(sim_dir)):
            for chunk in read_chunks(file):
                pool.extend(orjson.loads(line) for line in chunk.lines.to_pylist() if line and line.strip())
    return pool


# -- mutations ----------------------------------------------------------------------------------


def _dumps(event: Any) -> bytes:
    """Compact JSON, escapes kept for what is not printable ASCII half of the time."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _data(event: dict[str, Any]) -> dict[str, Any]:
    """The event's data object (created if a mutation removed it)."""
    data = event.get("data")
    if not isinstance(data, dict):
        data = event["data"] = {}
    return data


def _user_object(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    """variables or metadata of the event, created when absent or not an object."""
    data = _data(event)
    name = rng.choice(["variables", "metadata"])
    if not isinstance(data.get(name), dict):
        data[name] = {}
    return data[name]


def _other_type(rng: random.Random, value: Any) -> Any:
    """A JSON value of another type than value."""
    choices: list[Any] = [7, -1.5, "text", [1, "a", None], {"nested": {"k": 1}}, True, None, "", [], {}]
    choices = [c for c in choices if type(c) is not type(value)]
    return copy.deepcopy(rng.choice(choices))


def _set_timestamps(event: dict[str, Any], change: Callable[[Any], Any]) -> None:
    """Apply change to every present numeric stage timestamp of the event."""
    data = _data(event)
    for name in STAGE_TIMESTAMP_FIELDS:
        if isinstance(data.get(name), (int, float)) and not isinstance(data.get(name), bool):
            data[name] = change(data[name])


# Neutral mutations: the event stays a valid event of the same trigger.


def _reorder(event: Any) -> Any:
    """The same JSON with every object's keys in reverse order."""
    if isinstance(event, dict):
        return {k: _reorder(event[k]) for k in reversed(list(event))}
    if isinstance(event, list):
        return [_reorder(v) for v in event]
    return event


def _neutral_huge_string(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    size = rng.choice([10_000, 50_000, 200_000])
    _user_object(rng, event)[rng.choice(_VARIABLE_KEYS)] = rng.choice("xyz\u00e9\U0001f600") * size
    return event


def _neutral_control_chars(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    data = _data(event)
    target = _user_object(rng, event)
    target[rng.choice(_HOSTILE_TEXT)] = rng.choice(_HOSTILE_TEXT)
    for key in ("receiver", "label", "channelId", "status"):
        if rng.random() < 0.3:
            data[key] = rng.choice(_HOSTILE_TEXT)
    return event


def _neutral_traversal(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    data = _data(event)
    for key in ("receiver", "label", "templateId", "channelId"):
        data[key] = rng.choice(_TRAVERSAL)
    event["appId"] = rng.choice(_TRAVERSAL)
    event["webhook"] = rng.choice(_TRAVERSAL)
    _user_object(rng, event)[rng.choice(_TRAVERSAL)] = rng.choice(_TRAVERSAL)
    data["tags"] = rng.sample(_TRAVERSAL, 3)
    return event


def _neutral_weird_keys(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    target = _user_object(rng, event)
    for key in rng.sample(_WEIRD_KEYS, rng.randint(1, 5)):
        target[key] = rng.choice([1, "x", {"": {"": 2}}, [1, {"a": 2}], None, False])
    return event


def _neutral_many_keys(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    target = _user_object(rng, event)
    for _ in range(rng.randint(20, 200)):
        target[f"k{rng.randint(0, 5000)}"] = rng.randint(0, 9)
    return event


def _neutral_ms_timestamps(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    _set_timestamps(event, lambda t: t * 1000 if abs(t) < 1e11 else t)
    return event


def _neutral_iso_timestamps(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt

    def iso(t: Any) -> str:
        return dt.datetime.fromtimestamp(t / 1000 if t >= 1e11 else t, dt.timezone.utc).isoformat()

    _set_timestamps(event, iso)
    return event


def _neutral_float_timestamps(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    _set_timestamps(event, lambda t: t + 0.25)
    return event


def _neutral_new_id(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    data = _data(event)
    for key in _ID_FIELDS:
        if isinstance(data.get(key), str):
            data[key] = _random_token(rng, key)
            break
    return event


def _neutral_reorder(rng: random.Random, event: dict[str, Any]) -> dict[str, Any]:
    return _reorder(event)


_NEUTRAL: Final[tuple[tuple[str, Callable[[random.Random, dict[str, Any]], dict[str, Any]], int], ...]] = (
    ("huge_string", _neutral_huge_string, 1),
    ("control_chars", _neutral_control_chars, 4),
    ("traversal_strings", _neutral_traversal, 2),
    ("weird_keys", _neutral_weird_keys, 3),
    ("many_keys", _neutral_many_keys, 1),
    ("ms_timestamps", _neutral_ms_timestamps, 2),
    ("iso_timestamps", _neutral_iso_timestamps, 1),
    ("float_timestamps", _neutral_float_timestamps, 1),
    ("new_id", _neutral_new_id, 6),
    ("reorder_keys", _neutral_reorder, 2),
)

# Final mutations: event -> the line's bytes, and what must become of it.


def _final_valid(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    return _dumps(event), "event"


def _final_drop_field(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    data = _data(event)
    if rng.random() < 0.3:
        key = rng.choice(sorted(event))
        del event[key]
        return _dumps(event), ("rejected" if key in ("trigger", "data") else None)
    if data:
        del data[rng.choice(sorted(data))]
    return _dumps(event), None


def _final_wrong_type(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    data = _data(event)
    if rng.random() < 0.3:
        key = rng.choice(sorted(event))
        event[key] = _other_type(rng, event[key])
        if key == "trigger":
            return _dumps(event), "rejected"
        if key == "data" and not isinstance(event[key], dict):
            return _dumps(event), "rejected"
        return _dumps(event), None
    if data:
        key = rng.choice(sorted(data))
        data[key] = _other_type(rng, data[key])
    return _dumps(event), None


def _with_marker(rng: random.Random, event: dict[str, Any], where: str) -> tuple[bytes, str]:
    """The event's JSON with the marker string in one place; where: user, text or timestamp."""
    data = _data(event)
    if where == "user":
        _user_object(rng, event)[rng.choice(_VARIABLE_KEYS)] = _MARK
        kind = "user"
    elif where == "text":
        key = rng.choice(["receiver", "label", "templateId", "status"])
        data[key] = "pre" + _MARK + "post"
        kind = "text"
    else:
        present = [k for k in STAGE_TIMESTAMP_FIELDS if k in data] or ["sentAt"]
        key = rng.choice(present + ["templateVersion", "totalTargets", "sentCount"])
        data[key] = _MARK
        kind = "typed"
    return _dumps(event), kind


def _final_surrogate(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    raw, _ = _with_marker(rng, event, rng.choice(["user", "text"]))
    return raw.replace(_MARK_INNER, rng.choice(_SURROGATES)), None


def _final_surrogate_key(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    _user_object(rng, event)[_MARK] = 1
    return _dumps(event).replace(_MARK_INNER, rng.choice(_SURROGATES)), None


def _final_invalid_utf8(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    raw, _ = _with_marker(rng, event, rng.choice(["user", "text"]))
    return raw.replace(_MARK_INNER, rng.choice(_INVALID_UTF8)), "rejected"


def _nested(rng: random.Random, depth: int) -> bytes:
    """JSON text nested depth levels deep (objects, lists or both)."""
    kind = rng.choice(["object", "list", "mixed"])
    if kind == "object":
        return b'{"k":' * depth + b"1" + b"}" * depth
    if kind == "list":
        return b"[" * depth + b"1" + b"]" * depth
    return b'[{"k":' * (depth // 2) + b'"leaf"' + b"}]" * (depth // 2)


def _final_deep(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    depth = rng.choice([20, 200, 1000, 3000, 6000])
    data = _data(event)
    where = rng.choice(["variables", "metadata", "content", "unknown", "envelope", "tags"])
    if where in ("variables", "metadata"):
        if not isinstance(data.get(where), dict):
            data[where] = {}
        data[where][rng.choice(_VARIABLE_KEYS)] = _MARK
        expect: str | None = "event"
    elif where == "envelope":
        event["extra"] = _MARK
        expect = None
    elif where == "unknown":
        data["futureField"] = _MARK
        expect = None
    else:
        data[where] = _MARK
        expect = None
    return _dumps(event).replace(_MARK_JSON, _nested(rng, depth)), expect


def _final_big_number(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    where = rng.choice(["user", "typed"])
    raw, kind = _with_marker(rng, event, where)
    return raw.replace(_MARK_JSON, rng.choice(_BIG_NUMBERS).encode()), ("event" if kind == "user" else None)


def _final_negative_timestamp(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    data = _data(event)
    present = [k for k in STAGE_TIMESTAMP_FIELDS if isinstance(data.get(k), (int, float)) and not isinstance(data.get(k), bool)]
    if not present:
        return _dumps(event), None
    data[rng.choice(present)] = -rng.randint(1, 10**12)
    return _dumps(event), "rejected"


def _final_duplicate_keys(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    raw = _dumps(event)
    data = event.get("data")
    if rng.random() < 0.5 or not isinstance(data, dict) or not data:
        key = rng.choice(sorted(event) or ["trigger"])
        extra = b'"' + key.encode() + b'":' + _dumps(_other_type(rng, event.get(key))) + b","
        return b"{" + extra + raw[1:], None
    key = rng.choice(sorted(data))
    extra = b'"' + json.dumps(key)[1:-1].encode() + b'":' + _dumps(_other_type(rng, data[key])) + b","
    return raw.replace(b'"data":{', b'"data":{' + extra, 1), None


def _final_wrong_trigger_type(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    event["trigger"] = copy.deepcopy(rng.choice([7, 1.5, ["after_feed_item_sent"], {"name": "after_feed_item_sent"}, True, False, None]))
    return _dumps(event), "rejected"


def _final_foreign_trigger(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    event["trigger"] = rng.choice(_FOREIGN_TRIGGERS)
    return _dumps(event), "skipped"


def _final_bom_prefix(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    return BOM * rng.randint(1, 2) + _dumps(event), None


def _final_truncate(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    raw = _dumps(event)
    return raw[: rng.randint(1, len(raw) - 1)], "rejected"


def _final_byte_noise(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    raw = bytearray(_dumps(event))
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(raw) + 1)
        byte = rng.choice([rng.randrange(256), ord("{"), ord("}"), ord('"'), ord("\\"), ord(","), 0])
        if byte == 10:
            byte = 13
        action = rng.randrange(3)
        if action == 0:
            raw.insert(at, byte)
        elif action == 1 and at < len(raw):
            raw[at] = byte
        elif at < len(raw) and len(raw) > 1:
            del raw[at]
    out = bytes(raw)
    return (out if out.strip(_JSON_WHITESPACE) else b"x"), None


def _final_garbage(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    out = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))).replace(b"\n", b"\r")
    return (out if out.strip(_JSON_WHITESPACE) else b"?"), None


def _final_not_object(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    choices = [b"1780000000", b'"after_feed_item_sent"', b"null", b"true", b"[]", b"[" + _dumps(event) + b"]", b"-0.5e3"]
    return rng.choice(choices), "rejected"


def _final_concatenated(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    raw = _dumps(event)
    return raw + rng.choice([b"", b" ", b"\t", b"\r"]) + raw, "rejected"


def _final_data_not_object(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    event["data"] = copy.deepcopy(rng.choice([None, "data", 7, [_data(event)], True]))
    return _dumps(event), "rejected"


def _final_deep_garbage(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, str | None]:
    depth = rng.choice([1000, 10_000, 100_000])
    return rng.choice([b"[" * depth, b'{"a":' * depth, b"[" * depth + b"]" * (depth - 1)]), "rejected"


_FINAL: Final[tuple[tuple[str, Callable[[random.Random, dict[str, Any]], tuple[bytes, str | None]], int], ...]] = (
    ("valid", _final_valid, 20),
    ("drop_field", _final_drop_field, 6),
    ("wrong_type", _final_wrong_type, 6),
    ("surrogate_escape", _final_surrogate, 3),
    ("surrogate_key", _final_surrogate_key, 1),
    ("invalid_utf8", _final_invalid_utf8, 3),
    ("deep_nesting", _final_deep, 2),
    ("big_number", _final_big_number, 4),
    ("negative_timestamp", _final_negative_timestamp, 3),
    ("duplicate_keys", _final_duplicate_keys, 3),
    ("wrong_trigger_type", _final_wrong_trigger_type, 2),
    ("foreign_trigger", _final_foreign_trigger, 2),
    ("bom_prefix", _final_bom_prefix, 2),
    ("truncate", _final_truncate, 3),
    ("byte_noise", _final_byte_noise, 4),
    ("garbage", _final_garbage, 1),
    ("not_object", _final_not_object, 1),
    ("concatenated", _final_concatenated, 1),
    ("data_not_object", _final_data_not_object, 1),
    ("deep_garbage", _final_deep_garbage, 1),
)
FINAL_MUTATIONS: Final[tuple[str, ...]] = tuple(name for name, _, _ in _FINAL)


class Fuzzer:
    """Mutated records from a pool of valid events, all drawn from one ``random.Random(seed)``.

    Parameters
    ----------
    seed
        The seed; the same seed and pool give the same records.
    pool
        Valid events to start from (see :func:`base_events`).
    """

    def __init__(self, seed: int, pool: list[dict[str, Any]]) -> None:
        self.rng = random.Random(seed)
        self.pool = pool
        self.used: Counter[str] = Counter()
        self._neutral_weights = [w for _, _, w in _NEUTRAL]
        self._final_weights = [w for _, _, w in _FINAL]

    def record(self) -> Record:
        """One mutated record: zero to two neutral mutations, then a final one."""
        rng = self.rng
        event = copy.deepcopy(rng.choice(self.pool))
        names = []
        for _ in range(rng.choice([0, 1, 1, 2])):
            name, mutate, _ = rng.choices(_NEUTRAL, self._neutral_weights)[0]
            event = mutate(rng, event)
            names.append(name)
        name, final, _ = rng.choices(_FINAL, self._final_weights)[0]
        raw, expect = final(rng, event)
        names.append(name)
        label = "+".join(names)
        self.used[name] += 1
        return Record(raw=raw, expect=expect, mutation=label)

    def records(self, n: int) -> list[Record]:
        """n records."""
        return [self.record() for _ in range(n)]

    def file_options(self) -> dict[str, bool]:
        """How to write the next file: gzip, CRLF line ends, a leading BOM, blank lines among the records."""
        rng = self.rng
        return {"gz": rng.random() < 0.2, "crlf": rng.random() < 0.2, "bom": rng.random() < 0.2, "blanks": rng.random() < 0.3}


# -- files and checks ---------------------------------------------------------------------------


def write_lines(path: Path, records: list[Record], *, gz: bool = False, crlf: bool = False, bom: bool = False,
                blanks: bool = False, rng: random.Random | None = None) -> list[Record | None]:
    """Write records as an NDJSON file; returns what is on each line (None for a blank line).

    Blank lines (empty, spaces, a tab, a lone CR) are put between records when blanks is set.
    """
    rng = rng or random.Random(0)
    layout: list[Record | None] = []
    for record in records:
        if blanks and rng.random() < 0.05:
            layout.append(None)
        layout.append(record)
    newline = b"\r\n" if crlf else b"\n"
    blank_lines = [b"", b"  ", b"\t", b"\r"]
    body = newline.join(rng.choice(blank_lines) if r is None else r.raw for r in layout) + newline
    if bom:
        body = BOM + body
    if gz:
        body = gzip.compress(body, compresslevel=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return layout


def expected_lines(path: Path) -> dict[int, bytes]:
    """The non-blank lines of an NDJSON file as the loader numbers them (1-based), without line ends."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data.startswith(BOM):
        data = data[len(BOM):]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return {n: line for n, line in enumerate(lines, start=1) if line.strip(_JSON_WHITESPACE)}


def check_outcome(
    source_file: str,
    lines: dict[int, bytes],
    expects: dict[int, Record],
    summary: dict[str, Any],
    event_lines: list[tuple[str, int]],
    quarantine: list[dict[str, Any]],
) -> LoadCheck:
    """Check one file's load against the invariants; returns the counts and violations.

    Parameters
    ----------
    source_file
        The path as the loader records it.
    lines
        Non-blank lines by number (see :func:`expected_lines`).
    expects
        The generated record on each line.
    summary
        The load summary as a dict.
    event_lines
        (source_file, source_line) of every event row the load wrote.
    quarantine
        The load's rejected and skipped rows (kind, reason, raw, source_file, source_line).
    """
    out = LoadCheck(**{k: int(summary[k]) for k in ("records", "written", "duplicates", "rejected", "skipped")})
    bad = out.violations
    where = f"{source_file}"
    if out.records != out.written + out.duplicates + out.rejected + out.skipped:
        bad.append(f"{where}: counts do not add up: {summary}")
    if out.records != len(lines):
        bad.append(f"{where}: records={out.records} but the file has {len(lines)} non-blank lines")
    if len(event_lines) != out.written:
        bad.append(f"{where}: {len(event_lines)} event rows but written={out.written}")
    kinds = Counter(row["kind"] for row in quarantine)
    if kinds.get("rejected", 0) != out.rejected or kinds.get("skipped", 0) != out.skipped:
        bad.append(f"{where}: quarantine rows {dict(kinds)} but rejected={out.rejected}, skipped={out.skipped}")
    fate: dict[int, str] = {}
    for file, line in event_lines:
        if file != source_file or line not in lines:
            bad.append(f"{where}: event row points at {file}:{line}, not a record of this load")
        elif line in fate:
            bad.append(f"{where}:{line}: more than one row for this line")
        fate[line] = "event"
    for row in quarantine:
        file, line, reason = row["source_file"], row["source_line"], row["reason"]
        if file != source_file or line not in lines:
            bad.append(f"{where}: {row['kind']} row points at {file}:{line}, not a record of this load")
            continue
        if line in fate:
            bad.append(f"{where}:{line}: more than one row for this line")
        fate[line] = row["kind"]
        if not isinstance(reason, str) or not reason.strip():
            bad.append(f"{where}:{line}: {row['kind']} row without a reason")
        want = lines[line].rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")
        if row["raw"] != want:
            bad.append(f"{where}:{line}: raw text of the {row['kind']} row differs from the line "
                       f"({str(row['raw'])[:80]!r} vs {want[:80]!r})")
    unaccounted = len(lines) - len(fate)
    if unaccounted != out.duplicates:
        bad.append(f"{where}: {unaccounted} lines have no row but duplicates={out.duplicates}")
    for line, record in expects.items():
        if record.expect is None or line not in lines:
            continue
        got = fate.get(line, "duplicate")
        ok = got in ("event", "duplicate") if record.expect == "event" else got == record.expect
        if not ok:
            reason = next((r["reason"] for r in quarantine if r["source_line"] == line), "")
            bad.append(f"{where}:{line}: {record.mutation} should be {record.expect}, got {got} ({reason[:120]})"
                       f" raw={record.raw[:160]!r}")
    return out


def ingest_and_check(path: Path, table: str, layout: list[Record | None], *,
                     limits: ca.FlattenLimits | None = None) -> LoadCheck:
    """Ingest one file into table and check the load (its rows are read back by load id)."""
    import pyarrow.dataset as ds

    expects = {n: r for n, r in enumerate(layout, start=1) if r is not None}
    lines = expected_lines(path)
    try:
        summary = ca.ingest(str(path), table, limits=limits, force=True)
    except Exception:  # noqa: BLE001 - a crash is the finding
        return LoadCheck(violations=[f"{path}: ingest raised\n{traceback.format_exc()}"])
    try:
        events = ca.events_dataset(table).to_table(
            columns=["source_file", "source_line"], filter=ds.field("load_id") == summary.load_id
        )
        quarantine: list[dict[str, Any]] = []
        if summary.rejected or summary.skipped:
            for frame in (ca.read_rejected(table, summary.load_id), ca.read_skipped(table, summary.load_id)):
                quarantine.extend(frame[["kind", "reason", "raw", "source_file", "source_line"]].to_dict("records"))
    except Exception:  # noqa: BLE001 - a crash is the finding
        return LoadCheck(violations=[f"{path}: reading the load back raised\n{traceback.format_exc()}"])
    event_lines = list(zip(events.column("source_file").to_pylist(), events.column("source_line").to_pylist(), strict=True))
    return check_outcome(str(path), lines, expects, summary.to_dict(), event_lines, quarantine)


def check_table(table: str) -> list[str]:
    """Table-wide invariants: event ids unique, the ledger's counts balance and match the rows."""
    if not Path(table, "_delta_log").is_dir():
        return []  # no load into it committed; each failed load is already reported
    try:
        return _check_table(table)
    except Exception:  # noqa: BLE001 - a crash is the finding
        return [f"{table}: reading the table back raised\n{traceback.format_exc()}"]


def _check_table(table: str) -> list[str]:
    """check_table without the guard."""
    bad: list[str] = []
    events = ca.events_dataset(table).to_table(columns=["event_id", "load_id"])
    ids = events.column("event_id")
    if ids.null_count:
        bad.append(f"{table}: {ids.null_count} events without an event_id")
    if len(set(ids.to_pylist())) != events.num_rows:
        bad.append(f"{table}: duplicated event ids")
    per_load = Counter(events.column("load_id").to_pylist())
    for entry in ca.read_loads(table).to_dict("records"):
        if entry["records"] != entry["written"] + entry["duplicates"] + entry["rejected"] + entry["skipped"]:
            bad.append(f"{table}: ledger counts of {entry['load_id']} do not add up")
        if per_load.get(entry["load_id"], 0) != entry["written"]:
            bad.append(f"{table}: load {entry['load_id']} lists written={entry['written']} "
                       f"but the table holds {per_load.get(entry['load_id'], 0)} of its rows")
    return bad


def run(records: int, seed: int, root: Path, *, per_load: int = 500, loads_per_table: int = 8,
        limits: ca.FlattenLimits | None = None, log: Callable[[str], None] | None = None,
        keep_payloads: bool = True) -> tuple[LoadCheck, Counter[str]]:
    """Generate records, ingest them per_load at a time, check every load and every table.

    Tables are ``root/table-NNNN``, a new one every loads_per_table loads; payload
    files go to ``root/payloads`` (those of loads without a violation are deleted
    unless keep_payloads). Returns the summed counts with every violation, and how
    often each final mutation was used.
    """
    rng = random.Random(seed)
    pool = base_events(rng, root / "simulated")
    fuzzer = Fuzzer(seed, pool)
    total = LoadCheck()
    loads = (records + per_load - 1) // per_load
    table = ""
    started = time.monotonic()
    for load in range(loads):
        if load % loads_per_table == 0:
            if table:
                total.violations.extend(check_table(table))
            table = str(root / f"table-{load // loads_per_table:04d}")
        options = fuzzer.file_options()
        suffix = ".ndjson.gz" if options.pop("gz") else rng.choice([".ndjson", ".jsonl"])
        path = root / "payloads" / f"load-{load:05d}{suffix}"
        batch = fuzzer.records(min(per_load, records - load * per_load))
        layout = write_lines(path, batch, gz=suffix.endswith(".gz"), rng=rng, **options)
        check = ingest_and_check(path, table, layout, limits=limits)
        total.add(check)
        if not keep_payloads and not check.violations:
            path.unlink()
        if log is not None and (load + 1) % max(1, loads // 20) == 0:
            log(f"{load + 1}/{loads} loads, {total.records:,} records, {len(total.violations)} violations, "
                f"{time.monotonic() - started:.0f} s")
    if table:
        total.violations.extend(check_table(table))
    return total, fuzzer.used


def main(argv: list[str] | None = None) -> int:
    """The command line; exit 0 when every invariant held, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records to generate (default 100,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", default=None,
                        help="new or empty directory for the tables (table-NNNN) and payload files "
                             "(default: a temporary one, removed after)")
    parser.add_argument("--per-load", type=int, default=2000, help="records per file, one file per load")
    parser.add_argument("--loads-per-table", type=int, default=25, help="start a new table after this many loads")
    parser.add_argument("--max-user-columns", type=int, default=300)
    parser.add_argument("--show", type=int, default=50, help="violations to print in full")
    parser.add_argument("--keep-payloads", action="store_true",
                        help="keep every payload file (default: only those of loads with a violation)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.per_load < 1 or args.loads_per_table < 1:
        parser.error("--records, --per-load and --loads-per-table must be at least 1")
    temporary = args.table is None
    root = Path(tempfile.mkdtemp(prefix="campaign-fuzz-") if temporary else args.table)
    if root.exists() and any(root.iterdir()):
        parser.error(f"{root} is not empty; give a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        total, used = run(
            args.records, args.seed, root, per_load=args.per_load, loads_per_table=args.loads_per_table,
            limits=ca.FlattenLimits(max_user_columns=args.max_user_columns),
            log=lambda line: print(line, file=sys.stderr, flush=True), keep_payloads=args.keep_payloads,
        )
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    print(f"seed {args.seed}: {total.records:,} records in {time.monotonic() - started:.1f} s")
    print(f"  written {total.written:,}  duplicates {total.duplicates:,}  rejected {total.rejected:,}  "
          f"skipped {total.skipped:,}")
    print("  mutations: " + ", ".join(f"{name} {count:,}" for name, count in sorted(used.items())))
    if total.violations:
        print(f"{len(total.violations)} invariant violation(s):")
        for line in total.violations[: args.show]:
            print("  " + line.replace("\n", "\n    "))
        return 1
    print("every invariant held")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
