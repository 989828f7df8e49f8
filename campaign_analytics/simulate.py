"""Realistic synthetic CometChat campaign webhook streams with known answers.

:func:`simulate` builds a small world (templates with versions, campaigns,
notifications fanning out into in-app feed items and push notifications),
plays it forward in time, and writes the webhook bodies the campaigns service
would have POSTed, with every quirk of ``cometchat-campaign-webhooks.md``:
retries, lost stage events, out-of-order arrival, delivered-on-read, numeric
string versions, type-drifting variables, malformed records and foreign
triggers. It returns a :class:`SimulationTruth` that holds what the files make
observable, so a loader and the metrics built on it can be checked exactly.

Everything is drawn from one ``numpy.random.Generator``: the same arguments give
the same files, byte for byte.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import orjson
import pandas as pd

from campaign_analytics.errors import ParameterError
from campaign_analytics.triggers import EVENT_TIME_RANGE, TRIGGERS

__all__ = ["simulate", "SimulationTruth"]

_DAY: Final[int] = 86_400
# Files are cut into windows of this many seconds of arrival time.
_FILE_WINDOW: Final[int] = 6 * 3600
_UTF8_BOM: Final[bytes] = b"\xef\xbb\xbf"
# Formats of the time-window files, cycled over the non-empty windows.
_WINDOW_FORMATS: Final[tuple[str, ...]] = ("ndjson", "jsonl", "ndjson.gz", "json")

_FEED: Final[int] = 0
_PUSH: Final[int] = 1
_CHANNEL_TYPES: Final[tuple[str, str]] = ("in_app", "push")

# Stage codes of item events, in flow order.
_SENT, _DELIVERED, _READ, _INTERACTED, _CLICKED = 0, 1, 2, 3, 4
_STAGE_CODES: Final[dict[str, int]] = {
    "sent": _SENT, "delivered": _DELIVERED, "read": _READ, "interacted": _INTERACTED, "clicked": _CLICKED
}
# (channel, stage code) -> trigger name, from the trigger table.
_ITEM_TRIGGERS: Final[dict[tuple[int, int], str]] = {
    (_FEED if t.entity == "feed_item" else _PUSH, _STAGE_CODES[t.stage]): t.name
    for t in TRIGGERS.values()
    if t.entity in ("feed_item", "push_notification")
}
_FEED_TIME_FIELDS: Final[tuple[str, ...]] = ("sentAt", "deliveredAt", "readAt", "interactedAt")
_PUSH_TIME_FIELDS: Final[tuple[str, ...]] = ("sentAt", "deliveredAt", "clickedAt")

# Malformed records, cycled: (kind, the reason recorded in the truth).
_BAD_KINDS: Final[tuple[tuple[str, str], ...]] = (
    ("truncated", "invalid_json"),
    ("number", "not_an_object"),
    ("array", "not_an_object"),
    ("no_data", "missing_data"),
    ("bad_timestamp", "bad_timestamp"),
)
_OTHER_TRIGGERS: Final[tuple[str, ...]] = ("after_message", "after_message", "after_reaction_added")


class _Template(NamedTuple):
    """A message template of the campaigns service and its audience response."""

    template_id: str
    category: str
    category_id: str
    labels: tuple[str, ...]
    tags: tuple[str, ...]
    read_p: tuple[float, ...]  # per version: P(read | delivered), feed
    click_p: tuple[float, ...]  # per version: P(clicked | delivered), push
    interact_p: float  # P(interacted | read), feed
    title: str


# Response differs by version so that version comparisons have something to find.
_TEMPLATES: Final[tuple[_Template, ...]] = (
    _Template("tpl-welcome", "onboarding", "cat-onb", ("onboarding", "new-signup"),
              ("new-user", "mobile", "web"), (0.52, 0.66), (0.09, 0.15), 0.30, "Welcome aboard"),
    _Template("tpl-promo", "promotions", "cat-promo", ("summer-sale", "black-friday"),
              ("offer", "vip", "mobile", "retention"), (0.24, 0.31, 0.42), (0.05, 0.07, 0.12), 0.45,
              "A new offer"),
    _Template("tpl-reminder", "transactional", "cat-trx", ("payment-due",),
              ("billing", "web"), (0.61, 0.55), (0.14, 0.11), 0.25, "Payment reminder"),
    _Template("tpl-digest", "newsletter", "cat-news", ("weekly-digest",),
              ("newsletter",), (0.33,), (0.04,), 0.20, "Your weekly digest"),
    _Template("tpl-winback", "promotions", "cat-promo", ("reactivation",),
              ("retention", "offer", "vip"), (0.18, 0.27), (0.03, 0.06), 0.35, "We miss you"),
)
_FIRST_NAMES: Final[tuple[str, ...]] = (
    "Ana", "José", "Mia", "Noah", "Zoë", "Liam", "Aiko", "Omar", "Sofia", "Lukas", "Priya", "Chen",
)
_TOPICS: Final[tuple[str, ...]] = ("cta_click", "dismiss", "reaction", "reply")
_PUSH_CHANNELS: Final[tuple[str, str]] = ("chn-fcm-1", "chn-apns-1")

# A unique event: (trigger, data, its own time, item index or -1, position in the item's flow).
_Event = tuple[str, dict[str, Any], int, int, int]


@dataclass(frozen=True, eq=False)
class SimulationTruth:
    """What a simulated webhook stream makes observable, and how it was written.

    Attributes
    ----------
    out_dir : Path
        The directory the payload files were written to.
    items : pandas.DataFrame
        One row per (channel_type, item_id): campaign_id, notification_id, item_id,
        template_id, template_version (int), label, category, receiver, tags (list),
        channel_type, metadata__experiment__arm, the true earliest stage timestamps
        sent_at, delivered_at, read_at, interacted_at, clicked_at
        (``datetime64[ms, UTC]``, NaT when not reached), delivered_on_read,
        delivered_implied, interactions (number of interaction events), and
        time_to_delivery_s, time_to_read_s, time_to_click_s (float seconds).
    campaigns : pandas.DataFrame
        One row per campaign: campaign_id, name, status, template_id,
        template_version, total_targets, sent_count, failed_count, scheduled_at,
        sent_at, completed_at, updated_at.
    notifications : pandas.DataFrame
        One row per notification: notification_id, campaign_id, template_id,
        template_version, label, category, channels, total_targets, created_at.
    records : int
        Records written in total (lines, array elements and single bodies).
    unique_events : int
        Distinct campaign-service events (what the events table should hold).
    duplicates : int
        Extra copies of those events (webhook retries).
    rejected : int
        Malformed records; ``rejected_records`` lists each with its reason.
    skipped : int
        Records of other CometChat triggers; ``skipped_records`` lists them.
    rejected_records, skipped_records : pandas.DataFrame
        source_file (relative to ``out_dir``), source_line (line of a line-based
        file, element position in a JSON array file, 1 for a single body), reason
        (rejected) or trigger (skipped), raw (the record's text).
    files : tuple[str, ...]
        Every file written, relative to ``out_dir``, sorted.
    quirks : dict[str, int]
        How often each quirk occurs, e.g. ``delivered_on_read``, ``lost_events``,
        ``cross_file_duplicates``, ``reordered_duplicates``,
        ``numeric_string_versions``, ``engaged_at_interactions``,
        ``delivered_with_engaged_at``.

    Notes
    -----
    ``records == unique_events + duplicates + rejected + skipped``.
    An interaction's moment is ``interactedAt``, or ``engagedAt`` where the event
    has no ``interactedAt``; ``interacted_at`` is the earliest. ``delivered_implied``
    is True where no event carries ``deliveredAt`` but a later stage was reached
    (push clicks whose delivery the SDK never reported). Items of notifications sent
    through the API have no campaign_id (missing). Grouping by ``"tag"`` leaves
    untagged items out; missing group keys form a group of their own.
    """

    out_dir: Path
    items: pd.DataFrame
    campaigns: pd.DataFrame
    notifications: pd.DataFrame
    records: int
    unique_events: int
    duplicates: int
    rejected: int
    skipped: int
    rejected_records: pd.DataFrame
    skipped_records: pd.DataFrame
    files: tuple[str, ...]
    quirks: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_reasons(self) -> list[str]:
        """The reason of every rejected record, in file order."""
        return self.rejected_records["reason"].tolist()

    def _grouped_items(self, by: list[str]) -> pd.DataFrame:
        frame = self.items
        unknown = [c for c in by if c != "tag" and c not in frame.columns]
        if unknown:
            raise ParameterError(
                f"cannot group by {unknown}: not an item column; use 'tag' or one of {list(frame.columns)}"
            )
        if "tag" in by:
            # One row per tag; an item without tags forms the group whose tag is missing,
            # so no item drops out of the counts.
            frame = frame.explode("tags").rename(columns={"tags": "tag"})
        return frame

    def engagement(self, by: list[str]) -> pd.DataFrame:
        """Expected engagement counts and rates per group, computed from the truth.

        Parameters
        ----------
        by : list of str
            Item columns to group by; ``"tag"`` explodes ``tags``. ``[]`` gives one
            overall row.

        Returns
        -------
        pandas.DataFrame
            The ``by`` columns, then sent, delivered, read, interacted, clicked
            (int64), delivery_rate, read_rate, interaction_rate, click_rate (over
            sent), read_rate_of_delivered and click_rate_of_delivered.

        Examples
        --------
        >>> import tempfile
        >>> truth = simulate(tempfile.mkdtemp(), items=300, seed=1)
        >>> frame = truth.engagement(["channel_type"])
        >>> int(frame["sent"].sum())
        300
        """
        frame = self._grouped_items(by)
        flags = pd.DataFrame(
            {
                "sent": frame["sent_at"].notna().to_numpy(),
                "delivered": (frame["delivered_at"].notna() | frame["delivered_implied"]).to_numpy(),
                "read": frame["read_at"].notna().to_numpy(),
                "interacted": frame["interacted_at"].notna().to_numpy(),
                "clicked": frame["clicked_at"].notna().to_numpy(),
            }
        ).astype("int64")
        if by:
            for column in by:
                flags[column] = frame[column].reset_index(drop=True)
            counts = flags.groupby(by, dropna=False, sort=True).sum().reset_index()
        else:
            counts = flags.sum().to_frame().T.astype("int64")
        sent = counts["sent"].to_numpy(dtype="float64")
        delivered = counts["delivered"].to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            counts["delivery_rate"] = delivered / sent
            counts["read_rate"] = counts["read"].to_numpy(dtype="float64") / sent
            counts["interaction_rate"] = counts["interacted"].to_numpy(dtype="float64") / sent
            counts["click_rate"] = counts["clicked"].to_numpy(dtype="float64") / sent
            counts["read_rate_of_delivered"] = np.where(
                delivered > 0, counts["read"].to_numpy(dtype="float64") / delivered, np.nan
            )
            counts["click_rate_of_delivered"] = np.where(
                delivered > 0, counts["clicked"].to_numpy(dtype="float64") / delivered, np.nan
            )
        return counts

    def time_to_delivery(self, by: list[str], exclude_delivered_on_read: bool = False) -> pd.DataFrame:
        """Expected time-to-delivery statistics per group, computed from the truth.

        Parameters
        ----------
        by : list of str
            Item columns to group by; ``"tag"`` explodes ``tags``; ``[]`` for one row.
        exclude_delivered_on_read : bool, default False
            Leave out items whose delivered_at equals read_at (their time to
            delivery is a time to read).

        Returns
        -------
        pandas.DataFrame
            The ``by`` columns, ttd_n (int64) and ttd_mean, ttd_p50, ttd_p90,
            ttd_p99 in seconds (numpy's default linear interpolation; NaN where
            a group has no measured delivery).

        Examples
        --------
        >>> import tempfile
        >>> truth = simulate(tempfile.mkdtemp(), items=300, seed=1)
        >>> frame = truth.time_to_delivery(["channel_type"])
        >>> bool((frame["ttd_p50"] <= frame["ttd_p90"]).all())
        True
        """
        frame = self._grouped_items(by)
        measured = frame["time_to_delivery_s"].notna()
        if exclude_delivered_on_read:
            measured &= ~frame["delivered_on_read"]
        seconds = frame["time_to_delivery_s"].to_numpy(dtype="float64")
        mask = measured.to_numpy(dtype=bool)

        def stats(positions: np.ndarray) -> list[float]:
            values = seconds[positions[mask[positions]]]
            if values.size == 0:
                return [0, math.nan, math.nan, math.nan, math.nan]
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            return [values.size, float(values.mean()), float(p50), float(p90), float(p99)]

        columns = ["ttd_n", "ttd_mean", "ttd_p50", "ttd_p90", "ttd_p99"]
        if not by:
            result = pd.DataFrame([stats(np.arange(len(frame)))], columns=columns)
        else:
            keyed = frame[by].reset_index(drop=True)
            groups = keyed.groupby(by, dropna=False, sort=True).indices
            rows = []
            for key, positions in groups.items():
                key_values = key if isinstance(key, tuple) else (key,)
                rows.append([*key_values, *stats(np.asarray(positions))])
            result = pd.DataFrame(rows, columns=[*by, *columns])
            for column in by:
                result[column] = result[column].astype(frame[column].dtype)
            result = result.sort_values(by, na_position="last", kind="stable").reset_index(drop=True)
        result["ttd_n"] = result["ttd_n"].astype("int64")
        return result


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ParameterError(f"{name}={value!r} is not a probability; pass a number between 0 and 1")


# Windows whose times a load accepts: campaigns are created up to three days before the window,
# and a day is left after it.
_FIRST_START: Final[int] = int(EVENT_TIME_RANGE[0].timestamp()) + 3 * _DAY  # 1970-01-04T00:00Z
_LAST_END: Final[int] = int(EVENT_TIME_RANGE[1].timestamp()) - _DAY  # 2199-12-31T00:00Z


def _parse_start(start: str | date | datetime) -> int:
    if isinstance(start, datetime):
        moment = start
    elif isinstance(start, date):
        moment = datetime(start.year, start.month, start.day)
    else:
        try:
            moment = datetime.fromisoformat(str(start))
        except ValueError as error:
            raise ParameterError(
                f"start={start!r} is not an ISO date; pass e.g. '2026-11-02' (UTC midnight)"
            ) from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _hex_ids(rng: np.random.Generator, n: int, width: int) -> list[str]:
    """``n`` distinct random lowercase hex strings of ``width`` digits."""
    while True:
        values = rng.integers(0, 16**width, size=n, dtype=np.int64)
        if np.unique(values).size == n:
            return [format(v, f"0{width}x") for v in values.tolist()]


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return rng.lognormal(math.log(median), sigma, n)


def _seconds(latency: np.ndarray) -> np.ndarray:
    """Latencies as whole seconds, at least one."""
    return np.maximum(1, np.rint(latency)).astype(np.int64)


def _variables(template_id: str, draws: list[float], name: str) -> dict[str, Any]:
    """The template variables resolved for one receiver (types drift on purpose)."""
    u0, u1, u2, u3 = draws
    if template_id == "tpl-welcome":
        return {"firstName": name, "plan": "pro" if u0 < 0.3 else "free", "trialDays": 14 if u1 < 0.7 else 30}
    if template_id == "tpl-promo":
        # discount is a number in some events and text in others.
        discount: int | str = (15, 20, "10%", "25%")[int(u0 * 4)]
        return {
            "firstName": name,
            "discount": discount,
            "cart": {"items": 1 + int(u1 * 5), "value": round(10 + u2 * 190, 2)},
            "skus": [f"sku-{100 + int(u3 * 50)}", f"sku-{200 + int(u1 * 50)}"][: 1 + int(u2 * 2)],
        }
    if template_id == "tpl-reminder":
        amount = round(5 + u1 * 95, 2)
        return {
            "firstName": name,
            "dueDate": f"2026-11-{10 + int(u0 * 18):02d}",
            "amount": amount if u2 < 0.6 else f"{amount:.2f}",
            "autopay": u3 < 0.4,
        }
    if template_id == "tpl-digest":
        topics = ["sports", "tech", "travel", "food"]
        return {
            "count": int(u0 * 12),
            "topics": topics[: 1 + int(u1 * 3)],
            "user": {
                "tier": ("gold", "silver", "bronze")[int(u2 * 3)],
                "prefs": {"lang": "en" if u3 < 0.7 else "de"},
            },
        }
    return {
        "firstName": name,
        "daysInactive": 30 + int(u0 * 60),
        "offer": {"code": "WB10" if u1 < 0.5 else "WB20", "percent": 10 if u1 < 0.5 else 20},
    }


def _content(template: _Template, version: int, variables: dict[str, Any]) -> dict[str, Any]:
    """The rendered feed card (on the feed sent event only)."""
    who = variables.get("firstName", "there")
    return {
        "title": f"{template.title}, {who}" if version > 1 else template.title,
        "body": f"{template.category} update for you",
        "imageUrl": f"https://cdn.example.com/{template.template_id}/v{version}.png",
        "actions": [{"type": "url", "label": "Open", "url": f"https://example.com/{template.template_id}"}],
    }


def simulate(
    out_dir: str | Path,
    *,
    items: int = 2000,
    seed: int = 0,
    start: str | date = "2026-11-02",
    days: int = 7,
    bad_records: int = 0,
    other_triggers: int = 0,
    duplicate_rate: float = 0.03,
    cross_file_duplicate_share: float = 0.15,
    reorder_keys_share: float = 0.3,
    loss_rate: float = 0.03,
    out_of_order_rate: float = 0.03,
    mark_read_rate: float = 0.1,
    engaged_at_share: float = 0.3,
    delivered_engaged_share: float = 0.2,
    numeric_string_version_rate: float = 0.05,
    explicit_null_rate: float = 0.5,
    push_unreported_rate: float = 0.07,
    single_post_share: float = 0.02,
    app_id: str = "app-7f3a9c",
    region: str = "eu",
) -> SimulationTruth:
    """Write a realistic CometChat campaign webhook stream and return its truth.

    Parameters
    ----------
    out_dir : str or Path
        Directory to write into; created if missing, must be empty otherwise.
    items : int, default 2000
        Feed items plus push notifications to simulate (exactly this many).
    seed : int, default 0
        Seed of the random generator; equal arguments give identical files.
    start : str or datetime.date, default "2026-11-02"
        First day of the observation window (ISO date; UTC unless it says otherwise).
    days : int, default 7
        Length of the window; a stage that would happen after it is not reached.
    bad_records : int, default 0
        Malformed records to mix in (truncated JSON, a JSON number, a JSON
        array, an object without ``data``, an unparseable timestamp), cycled.
    other_triggers : int, default 0
        Records of other CometChat triggers (``after_message``, ...) to mix in.
    duplicate_rate : float, default 0.03
        Share of events delivered more than once (webhook retries).
    cross_file_duplicate_share : float, default 0.15
        Share of retried copies that are replayed hours later, in another file.
    reorder_keys_share : float, default 0.3
        Share of retried copies whose ``data`` keys come in another order.
    loss_rate : float, default 0.03
        Chance that a stage's own event is lost when a later event of the same
        item still carries its timestamp.
    out_of_order_rate : float, default 0.03
        Share of events held back for minutes before arriving.
    mark_read_rate : float, default 0.1
        Share of read feed items marked read through the REST API (a delivered
        event with ``status: "read"`` and ``deliveredAt == readAt``).
    engaged_at_share : float, default 0.3
        Share of interacted feed items reporting ``engagedAt`` + ``topic``.
    delivered_engaged_share : float, default 0.2
        Share of feed delivered events that also carry an ``engagedAt``
        earlier than their ``deliveredAt``, as CometChat's documented example
        does. It is not an interaction, and the truth does not count it as one.
    numeric_string_version_rate : float, default 0.05
        Share of events whose ``templateVersion`` is a numeric string.
    explicit_null_rate : float, default 0.5
        Share of item events writing unreached stage timestamps as ``null``
        (the others leave them out).
    push_unreported_rate : float, default 0.07
        Share of delivered push notifications whose SDK never reports delivery.
    single_post_share : float, default 0.02
        Share of records written as single POST bodies under ``posts/``.
    app_id, region : str
        Envelope values.

    Returns
    -------
    SimulationTruth
        Items, campaigns, notifications, record counts and quirk counts.

    Raises
    ------
    ParameterError
        On a non-positive ``items`` or ``days``, a negative ``seed``, a rate
        outside [0, 1], a bad ``start``, a window past the years a load accepts
        (1970-2199), or a non-empty ``out_dir``.

    Notes
    -----
    Files, relative to ``out_dir``: ``<day>/webhooks-<day>T<HH>.<ext>`` for each
    non-empty six-hour window of arrival time, the format cycling through
    ``ndjson``, ``jsonl``, ``ndjson.gz`` and ``json`` (a JSON array), some with a
    UTF-8 BOM and some with CRLF line endings; and
    ``posts/<day>/<HHMMSS>-<seq>.json``, one body per file, some pretty-printed.

    Examples
    --------
    >>> import tempfile
    >>> truth = simulate(tempfile.mkdtemp(), items=300, seed=7, bad_records=5, other_triggers=3)
    >>> len(truth.items)
    300
    >>> truth.records == truth.unique_events + truth.duplicates + truth.rejected + truth.skipped
    True
    """
    if isinstance(items, bool) or not isinstance(items, (int, np.integer)) or items < 1:
        raise ParameterError(f"items={items!r}; pass a whole number of items, 1 or more")
    if isinstance(days, bool) or not isinstance(days, (int, np.integer)) or days < 1:
        raise ParameterError(f"days={days!r}; pass a whole number of days, 1 or more")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed={seed!r}; pass a whole number, 0 or more")
    for name, count in (("bad_records", bad_records), ("other_triggers", other_triggers)):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ParameterError(f"{name}={count!r}; pass a whole number, 0 or more")
    for name, rate in (
        ("duplicate_rate", duplicate_rate),
        ("cross_file_duplicate_share", cross_file_duplicate_share),
        ("reorder_keys_share", reorder_keys_share),
        ("loss_rate", loss_rate),
        ("out_of_order_rate", out_of_order_rate),
        ("mark_read_rate", mark_read_rate),
        ("engaged_at_share", engaged_at_share),
        ("delivered_engaged_share", delivered_engaged_share),
        ("numeric_string_version_rate", numeric_string_version_rate),
        ("explicit_null_rate", explicit_null_rate),
        ("push_unreported_rate", push_unreported_rate),
        ("single_post_share", single_post_share),
    ):
        _check_rate(name, float(rate))
    window_start = _parse_start(start)
    if not _FIRST_START <= window_start or window_start + int(days) * _DAY > _LAST_END:
        raise ParameterError(
            f"start={start!r} with days={days!r} leaves 1970-01-04 to 2199-12-31 (UTC), the times a load accepts; "
            "pass a start and a number of days inside that range"
        )
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise ParameterError(f"out_dir {str(out)!r} is a file; pass a directory path")
        if any(out.iterdir()):
            raise ParameterError(
                f"out_dir {str(out)!r} is not empty; pass a new or empty directory so no old payloads mix in"
            )
    rng = np.random.default_rng(seed)
    world = _World(rng, int(items), window_start, int(days), app_id, region)
    world.build_notifications()
    world.build_items(mark_read_rate, engaged_at_share, push_unreported_rate)
    world.build_events(loss_rate, explicit_null_rate, numeric_string_version_rate, delivered_engaged_share)
    world.build_records(
        duplicate_rate, cross_file_duplicate_share, reorder_keys_share, out_of_order_rate, int(other_triggers)
    )
    return world.write(out, int(bad_records), single_post_share)


class _File(NamedTuple):
    """A payload file and how it is encoded."""

    path: str
    bom: bool
    crlf: bool
    pretty: bool


class _Placement(NamedTuple):
    """Every record (events, foreign triggers, then malformed ones) and where it goes."""

    bodies: list[bytes]
    arrival: list[int]
    files: list[_File]
    reasons: list[str | None]


class _World:
    """The simulated world, built in steps by :func:`simulate`."""

    def __init__(
        self, rng: np.random.Generator, n_items: int, start: int, days: int, app_id: str, region: str
    ) -> None:
        self.rng = rng
        self.n = n_items
        self.start = start
        self.end = start + days * _DAY  # exclusive
        self.app_id = app_id
        self.region = region
        self.webhook = "wh-campaigns-1"
        self.quirks: dict[str, int] = {}

    # -- notifications and campaigns ---------------------------------------------------------
    def build_notifications(self) -> None:
        rng, n = self.rng, self.n
        n_notif = int(min(n, max(4, round(n / 160))))
        pairs = [(t, v) for t, tpl in enumerate(_TEMPLATES) for v in range(1, len(tpl.read_p) + 1)]
        order = rng.permutation(len(pairs))
        # About one notification in ten is sent straight through the API (no campaign).
        n_api = max(1, n_notif // 10) if n_notif >= 4 else 0
        n_campaigns = n_notif - n_api
        n_failed = 0 if n_campaigns < 2 else (1 if n_campaigns < 10 else 2)
        failed = set(rng.choice(n_campaigns, size=n_failed, replace=False).tolist())
        weights = rng.dirichlet(np.full(n_notif, 2.0))
        counts = rng.multinomial(n - n_notif, weights) + 1
        channel_sets = (("in_app",), ("push",), ("in_app", "push"))
        channel_pick = rng.choice(3, size=n_notif, p=[0.35, 0.2, 0.45])
        span = int((self.end - self.start) * 0.8)
        scheduled = self.start + (rng.integers(0, span, size=n_notif) // 60) * 60
        campaign_ids = _hex_ids(rng, n_campaigns, 8)
        notification_ids = _hex_ids(rng, n_notif, 10)
        self.notifications: list[dict[str, Any]] = []
        for i in range(n_notif):
            t, v = pairs[order[i % len(pairs)]]
            tpl = _TEMPLATES[t]
            is_campaign = i < n_campaigns
            n_tags = int(rng.integers(0, min(3, len(tpl.tags)) + 1))
            tag_idx = sorted(rng.choice(len(tpl.tags), size=n_tags, replace=False).tolist())
            experiment = is_campaign and bool(rng.random() < 0.5)
            self.notifications.append(
                {
                    "notification_id": f"ntf-{notification_ids[i]}",
                    "campaign_id": f"cmp-{campaign_ids[i]}" if is_campaign else None,
                    "campaign_failed": is_campaign and i in failed,
                    "template": tpl,
                    "version": v,
                    "label": tpl.labels[int(rng.integers(0, len(tpl.labels)))],
                    "tags": [tpl.tags[j] for j in tag_idx],
                    "channels": channel_sets[channel_pick[i]],
                    "count": int(counts[i]),
                    "scheduled_at": int(scheduled[i]),
                    "created_at": int(scheduled[i] + rng.integers(0, 31)),
                    "campaign_created_at": int(scheduled[i] - rng.integers(3600, 72 * 3600)),
                    "source": ("crm", "journey")[int(rng.integers(0, 2))] if is_campaign else "api",
                    "experiment_id": int(rng.integers(1, 20)) if experiment else None,
                    "priority": "high" if rng.random() < 0.2 else "normal",
                    "request_id": None if is_campaign else f"req-{_hex_ids(rng, 1, 12)[0]}",
                }
            )

    # -- items and their true timelines --------------------------------------------------------
    def build_items(
        self, mark_read_rate: float, engaged_at_share: float, push_unreported_rate: float
    ) -> None:
        rng, n = self.rng, self.n
        notif_idx: list[int] = []
        channel: list[int] = []
        receiver_slot: list[int] = []  # position of the receiver within its notification
        receivers_per_notif: list[int] = []
        for i, notification in enumerate(self.notifications):
            chans = [_FEED if c == "in_app" else _PUSH for c in notification["channels"]]
            r = math.ceil(notification["count"] / len(chans))
            receivers_per_notif.append(r)
            # The last receiver may miss its second channel so the count is exact.
            pairs = [(slot, ch) for slot in range(r) for ch in chans][: notification["count"]]
            notif_idx.extend([i] * len(pairs))
            receiver_slot.extend(p[0] for p in pairs)
            channel.extend(p[1] for p in pairs)
        self.notif_idx = np.asarray(notif_idx, dtype=np.int64)
        self.channel = np.asarray(channel, dtype=np.int64)
        slot = np.asarray(receiver_slot, dtype=np.int64)
        pool = max(max(receivers_per_notif), int(n * 0.6), 10)
        receivers = np.empty(n, dtype=np.int64)
        fanout = np.empty(n, dtype=np.int64)
        for i, r in enumerate(receivers_per_notif):
            rows = self.notif_idx == i
            chosen = rng.choice(pool, size=r, replace=False)
            receivers[rows] = chosen[slot[rows]]
            # Dispatch of a big audience takes a while; the push goes out just after the feed item.
            spread = min(1800, max(5, r // 4))
            offsets = rng.integers(0, spread + 1, size=r)
            fanout[rows] = offsets[slot[rows]]
        self.receiver = [f"uid-{v:05d}" for v in receivers.tolist()]
        created = np.asarray([nt["created_at"] for nt in self.notifications], dtype=np.int64)
        is_feed = self.channel == _FEED
        is_push = ~is_feed
        self.sent = created[self.notif_idx] + fanout + np.where(is_push, rng.integers(0, 3, size=n), 0)
        tpl_idx = np.asarray([_TEMPLATES.index(nt["template"]) for nt in self.notifications])[self.notif_idx]
        version = np.asarray([nt["version"] for nt in self.notifications])[self.notif_idx]
        read_p = np.asarray([_TEMPLATES[t].read_p[v - 1] for t, v in zip(tpl_idx, version)])
        click_p = np.asarray([_TEMPLATES[t].click_p[v - 1] for t, v in zip(tpl_idx, version)])
        interact_p = np.asarray([_TEMPLATES[t].interact_p for t in tpl_idx])
        # Arm B of an experiment reads and clicks a little more, so arm comparisons find something.
        self.arms = np.where(rng.random(n) < 0.5, "A", "B")
        experiments = np.asarray([nt["experiment_id"] is not None for nt in self.notifications])
        in_experiment = experiments[self.notif_idx]
        lift = np.where(in_experiment & (self.arms == "B"), 1.2, 1.0)
        read_p = np.minimum(read_p * lift, 1.0)
        click_p = np.minimum(click_p * lift, 1.0)
        never = np.full(n, -1, dtype=np.int64)

        # In-app feed: delivered when the app is open (a slow tail for users who are away).
        away = rng.random(n) < 0.15
        feed_latency = np.where(away, _lognormal(rng, 3600, 1.0, n), _lognormal(rng, 20, 1.1, n))
        # Push: delivered by the OS within seconds, a few devices much later.
        asleep = rng.random(n) < 0.05
        push_latency = np.where(asleep, _lognormal(rng, 600, 1.0, n), _lognormal(rng, 2, 0.8, n))
        delivered_real = np.where(is_feed, rng.random(n) < 0.94, rng.random(n) < 0.90)
        delivered_real_at = np.where(
            delivered_real, self.sent + _seconds(np.where(is_feed, feed_latency, push_latency)), never
        )
        delivered_real_at = np.where(delivered_real_at >= self.end, never, delivered_real_at)
        delivered_real = delivered_real_at >= 0

        # Feed read; some are marked read through the REST API, which fires delivered with it.
        read = is_feed & delivered_real & (rng.random(n) < read_p)
        rest_read = read & (rng.random(n) < mark_read_rate)
        read_at = np.where(read, delivered_real_at + _seconds(_lognormal(rng, 2400, 1.5, n)), never)
        read_at = np.where(rest_read, self.sent + _seconds(_lognormal(rng, 7200, 1.3, n)), read_at)
        read_at = np.where(read_at >= self.end, never, read_at)
        rest_read &= read_at >= 0
        delivered_at = np.where(rest_read, read_at, delivered_real_at)

        # Feed interactions: mostly after reading; a few straight from the card (status stays "sent").
        read_ok = read_at >= 0
        interacts = np.where(
            read_ok, rng.random(n) < interact_p, is_feed & (delivered_at >= 0) & (rng.random(n) < 0.02)
        )
        n_interactions = np.where(interacts, np.minimum(rng.geometric(0.7, n), 4), 0)
        base = np.where(read_ok, read_at, delivered_at)
        first_gap = _seconds(_lognormal(rng, 30, 1.2, n))
        self.interactions: list[list[int]] = [[] for _ in range(n)]
        for i in np.flatnonzero(interacts).tolist():
            k = int(n_interactions[i])
            gaps = [int(first_gap[i])] + _seconds(_lognormal(rng, 300, 1.0, k - 1)).tolist()
            moments = (int(base[i]) + np.cumsum(gaps)).tolist()
            self.interactions[i] = [m for m in moments if m < self.end]
        interacted_at = np.asarray([m[0] if m else -1 for m in self.interactions], dtype=np.int64)
        self.engaged_mode = rng.random(n) < engaged_at_share

        # Push clicks; the SDK sometimes never reports the delivery (clicked then implies it).
        clicked_at = np.where(
            is_push & delivered_real & (rng.random(n) < click_p),
            delivered_real_at + _seconds(_lognormal(rng, 300, 1.5, n)),
            never,
        )
        clicked_at = np.where(clicked_at >= self.end, never, clicked_at)
        unreported = is_push & delivered_real & (rng.random(n) < push_unreported_rate)
        delivered_at = np.where(unreported, never, delivered_at)
        # A push attempt without credentials still fires sent, with an error message.
        self.push_error = is_push & ~delivered_real & (rng.random(n) < 0.5)

        self.delivered_at = delivered_at
        self.read_at = read_at
        self.interacted_at = interacted_at
        self.clicked_at = clicked_at
        self.delivered_on_read = rest_read & (delivered_at >= 0)
        later_stage = (read_at >= 0) | (interacted_at >= 0) | (clicked_at >= 0)
        self.delivered_implied = (delivered_at < 0) & later_stage
        self.quirks["delivered_on_read"] = int(self.delivered_on_read.sum())
        self.quirks["delivered_implied"] = int(self.delivered_implied.sum())
        self.quirks["push_delivery_unreported"] = int((unreported & (clicked_at < 0)).sum())
        self.quirks["engaged_at_interactions"] = int(
            sum(len(m) for m, e in zip(self.interactions, self.engaged_mode.tolist()) if e)
        )
        self.quirks["repeat_interactions"] = int(sum(len(m) > 1 for m in self.interactions))
        self.quirks["push_errors"] = int(self.push_error.sum())
        feed_ids = iter(_hex_ids(rng, int(is_feed.sum()), 12))
        push_ids = iter(_hex_ids(rng, int(is_push.sum()), 12))
        self.item_id = [
            f"feed-{next(feed_ids)}" if c == _FEED else f"pn-{next(push_ids)}" for c in self.channel.tolist()
        ]
        self.variable_draws = rng.random((n, 4))
        self.first_name = rng.integers(0, len(_FIRST_NAMES), size=n)

    # -- events --------------------------------------------------------------------------------
    def _item_head(self, i: int) -> dict[str, Any]:
        nt = self.notifications[self.notif_idx[i]]
        tpl: _Template = nt["template"]
        feed = self.channel[i] == _FEED
        head: dict[str, Any] = {}
        if feed:
            head["id"] = self.item_id[i]
        else:
            head["pushNotificationId"] = self.item_id[i]
        head.update(
            appId=self.app_id,
            notificationId=nt["notification_id"],
            campaignId=nt["campaign_id"],
            receiver=self.receiver[i],
            templateId=tpl.template_id,
            templateVersion=nt["version"],
            channelType=_CHANNEL_TYPES[self.channel[i]],
            channelId="chn-inapp-1" if feed else _PUSH_CHANNELS[int(self.variable_draws[i, 3] * 2)],
        )
        if feed:
            head.update(templateCategory=tpl.category, categoryId=tpl.category_id)
        else:
            head["category"] = tpl.category
        head.update(label=nt["label"], tags=nt["tags"], alternativeText=tpl.title, dataType="ui_template")
        head["variables"] = _variables(
            tpl.template_id, self.variable_draws[i].tolist(), _FIRST_NAMES[self.first_name[i]]
        )
        metadata: dict[str, Any] = {"source": nt["source"]}
        if nt["experiment_id"] is not None:
            metadata["experiment"] = {"id": nt["experiment_id"], "arm": str(self.arms[i])}
        if nt["request_id"] is not None:
            metadata["requestId"] = nt["request_id"]
        head["metadata"] = metadata
        return head

    def build_events(
        self, loss_rate: float, explicit_null_rate: float, string_version_rate: float, delivered_engaged_share: float
    ) -> None:
        """Every unique event: (trigger, data, event time, item index, stage order)."""
        rng, n = self.rng, self.n
        events: list[_Event] = []
        lost = 0
        explicit_nulls = 0
        # Per item and event slot j (at most 7 events): loss draw j, version draw 8 + j, null draw 16 + j.
        draws = rng.random((n, 24))
        topics = rng.integers(0, len(_TOPICS), size=(n, 4))
        # From a generator of their own, so the items, their events and the truth of a seed stay as they were
        # without them (with delivered_engaged_share=0 the whole stream does).
        engaged_draws = rng.spawn(1)[0].random((n, 2))
        delivered_engaged = 0
        for i in range(n):
            head = self._item_head(i)
            feed = self.channel[i] == _FEED
            sent, dlv = int(self.sent[i]), int(self.delivered_at[i])
            rd, clk = int(self.read_at[i]), int(self.clicked_at[i])
            moments = self.interactions[i]
            time_fields = _FEED_TIME_FIELDS if feed else _PUSH_TIME_FIELDS
            # (stage, own time, status, timestamps carried, interaction index)
            plan: list[tuple[int, int, str, dict[str, int], int]] = []
            plan.append((_SENT, sent, "sent", {"sentAt": sent}, -1))
            if feed:
                if dlv >= 0:
                    if self.delivered_on_read[i]:
                        carried_on_read = {"sentAt": sent, "deliveredAt": dlv, "readAt": rd}
                        plan.append((_DELIVERED, dlv, "read", carried_on_read, -1))
                    else:
                        plan.append((_DELIVERED, dlv, "delivered", {"sentAt": sent, "deliveredAt": dlv}, -1))
                carried = {"sentAt": sent}
                if dlv >= 0:
                    carried["deliveredAt"] = dlv
                if rd >= 0:
                    carried["readAt"] = rd
                    plan.append((_READ, rd, "read", dict(carried), -1))
                for k, moment in enumerate(moments):
                    plan.append((_INTERACTED, moment, "read" if rd >= 0 else "sent", dict(carried), k))
            else:
                if dlv >= 0:
                    plan.append((_DELIVERED, dlv, "delivered", {"sentAt": sent, "deliveredAt": dlv}, -1))
                if clk >= 0:
                    carried = {"sentAt": sent}
                    if dlv >= 0:
                        carried["deliveredAt"] = dlv
                    carried["clickedAt"] = clk
                    plan.append((_CLICKED, clk, "clicked", carried, -1))
            stages = [p[0] for p in plan]
            # Lose a stage's own event only where a later event carries its timestamp.
            keep = [True] * len(plan)
            for j, stage in enumerate(stages):
                later_carries = (
                    (stage == _SENT and len(plan) > 1)
                    or (stage == _DELIVERED and bool({_READ, _INTERACTED, _CLICKED} & set(stages[j + 1 :])))
                    or (stage == _READ and _INTERACTED in stages[j + 1 :])
                )
                if later_carries and draws[i, j] < loss_rate:
                    keep[j] = False
                    lost += 1
            for j, (stage, moment, status, carried, k) in enumerate(plan):
                if not keep[j]:
                    continue
                data = dict(head)
                if draws[i, 8 + j] < string_version_rate:
                    data["templateVersion"] = str(data["templateVersion"])
                data["status"] = status
                explicit = draws[i, 16 + j] < explicit_null_rate
                for name in time_fields:
                    if name in carried:
                        data[name] = carried[name]
                    elif stage == _INTERACTED and name == "interactedAt" and not self.engaged_mode[i]:
                        data[name] = moment
                    elif explicit:
                        data[name] = None
                        explicit_nulls += 1
                if stage == _INTERACTED and self.engaged_mode[i]:
                    data["engagedAt"] = moment
                    data["topic"] = _TOPICS[topics[i, k % 4]]
                if feed and status == "delivered" and dlv > sent and engaged_draws[i, 0] < delivered_engaged_share:
                    data["engagedAt"] = sent + int(engaged_draws[i, 1] * (dlv - sent))  # before deliveredAt
                    delivered_engaged += 1
                if feed:
                    data["realtimeFanout"] = ["websocket"]
                    if stage == _SENT:
                        data["content"] = _content(
                            self.notifications[self.notif_idx[i]]["template"],
                            int(head["templateVersion"]),
                            head["variables"],
                        )
                else:
                    data["tag"] = head["templateId"]
                    if self.push_error[i]:
                        data["errorMessage"] = "No push credentials configured for this app"
                    elif explicit:
                        data["errorMessage"] = None
                events.append((_ITEM_TRIGGERS[(int(self.channel[i]), stage)], data, moment, i, j))
        self.quirks["lost_events"] = lost
        self.quirks["explicit_nulls"] = explicit_nulls
        self.quirks["delivered_with_engaged_at"] = delivered_engaged
        events.extend(self._notification_and_campaign_events(string_version_rate))
        self.events = events
        self.quirks["numeric_string_versions"] = sum(
            isinstance(e[1].get("templateVersion"), str) for e in events
        )

    def _notification_and_campaign_events(self, string_version_rate: float) -> list[_Event]:
        rng = self.rng
        events: list[_Event] = []
        campaign_rows: list[dict[str, Any]] = []
        notification_rows: list[dict[str, Any]] = []
        first_failure = True
        for i, nt in enumerate(self.notifications):
            rows = np.flatnonzero(self.notif_idx == i)
            receivers = len({self.receiver[r] for r in rows.tolist()})
            tpl: _Template = nt["template"]
            version: int | str = nt["version"]
            if rng.random() < string_version_rate:
                version = str(version)
            created = nt["created_at"]
            notification_rows.append(
                {
                    "notification_id": nt["notification_id"],
                    "campaign_id": nt["campaign_id"],
                    "template_id": tpl.template_id,
                    "template_version": nt["version"],
                    "label": nt["label"],
                    "category": tpl.category,
                    "channels": list(nt["channels"]),
                    "total_targets": receivers,
                    "created_at": created,
                }
            )
            data = {
                "notificationId": nt["notification_id"],
                "appId": self.app_id,
                "templateId": tpl.template_id,
                "templateVersion": version,
                "category": tpl.category,
                "label": nt["label"],
                "tags": nt["tags"],
                "sendMode": "campaign" if nt["campaign_id"] else "api",
                "campaignId": nt["campaign_id"],
                "priority": nt["priority"],
                "channels": list(nt["channels"]),
                "dataType": "ui_template",
                "status": "dispatching",
                "totalTargets": receivers,
                "sentCount": 0,
                "failedCount": 0,
                "createdAt": created,
            }
            events.append(("after_notification_created", data, created, -1, 0))
            if nt["campaign_id"] is None:
                continue
            last_sent = int(self.sent[rows].max())
            completed = last_sent + int(rng.integers(5, 91))
            if nt["campaign_failed"]:
                failed_count = max(1, int(receivers * rng.uniform(0.3, 0.6)))
                status, trigger = "failed", "after_campaign_failed"
                # One failed campaign reports only updatedAt, the other both.
                completed_at: int | None = None if first_failure else completed
                first_failure = False
            else:
                failed_count = int(rng.binomial(receivers, 0.01))
                status, trigger, completed_at = "completed", "after_campaign_completed", completed
            version = nt["version"] if rng.random() >= string_version_rate else str(nt["version"])
            name = f"{nt['label'].replace('-', ' ').title()} #{i + 1}"
            data = {
                "campaignId": nt["campaign_id"],
                "appId": self.app_id,
                "name": name,
                "status": status,
                "templateId": tpl.template_id,
                "templateVersion": version,
                "totalTargets": receivers + failed_count,
                "sentCount": receivers,
                "failedCount": failed_count,
                "tag": nt["tags"][0] if nt["tags"] else None,
                "scheduledAt": nt["scheduled_at"],
                "sentAt": created,
                "completedAt": completed_at,
                "createdAt": nt["campaign_created_at"],
                "updatedAt": completed,
            }
            events.append((trigger, data, completed, -1, 0))
            campaign_rows.append(
                {
                    "campaign_id": nt["campaign_id"],
                    "name": name,
                    "status": status,
                    "template_id": tpl.template_id,
                    "template_version": nt["version"],
                    "total_targets": receivers + failed_count,
                    "sent_count": receivers,
                    "failed_count": failed_count,
                    "scheduled_at": nt["scheduled_at"],
                    "sent_at": created,
                    "completed_at": completed_at,
                    "updated_at": completed,
                }
            )
        self.campaign_rows = campaign_rows
        self.notification_rows = notification_rows
        return events

    # -- records: copies, delays, foreign triggers ----------------------------------------------
    def build_records(
        self,
        duplicate_rate: float,
        cross_file_share: float,
        reorder_share: float,
        out_of_order_rate: float,
        other_triggers: int,
    ) -> None:
        rng = self.rng
        m = len(self.events)
        times = np.asarray([e[2] for e in self.events], dtype=np.int64)
        delay = rng.integers(0, 3, size=m)
        held = rng.random(m) < out_of_order_rate
        delay = np.where(held, delay + np.minimum(_seconds(_lognormal(rng, 300, 1.2, m)), 6 * 3600), delay)
        arrival = times + delay
        bodies: list[bytes] = []
        record_event: list[int] = []  # index of the unique event, -1 for foreign triggers
        record_arrival: list[int] = []
        record_copy: list[int] = []  # 0 original, 1.. retries
        record_late: list[bool] = []  # a replayed retry forced into another file
        envelope_base = {"appId": self.app_id, "region": self.region, "webhook": self.webhook}
        copies = np.where(rng.random(m) < duplicate_rate, np.where(rng.random(m) < 0.8, 1, 2), 0)
        draws = rng.random((m, 4))
        reordered = 0
        for e, (trigger, data, _moment, _item, _order) in enumerate(self.events):
            body = orjson.dumps({"trigger": trigger, **envelope_base, "data": data})
            bodies.append(body)
            record_event.append(e)
            record_arrival.append(int(arrival[e]))
            record_copy.append(0)
            record_late.append(False)
            retry_at = int(arrival[e])
            for c in range(1, int(copies[e]) + 1):
                # Retries come after 10 s, then 30 s more; some are replayed hours later.
                retry_at += 10 if c == 1 else 30
                late = bool(draws[e, 0] < cross_file_share) and c == 1
                at = retry_at + (int(_FILE_WINDOW + draws[e, 1] * 4 * _FILE_WINDOW) if late else 0)
                if draws[e, 1 + c] < reorder_share:
                    keys = list(data)
                    shuffled = {keys[k]: data[keys[k]] for k in rng.permutation(len(keys)).tolist()}
                    bodies.append(orjson.dumps({"trigger": trigger, **envelope_base, "data": shuffled}))
                    reordered += 1
                else:
                    bodies.append(body)
                record_event.append(e)
                record_arrival.append(at)
                record_copy.append(c)
                record_late.append(late)
        self.quirks["reordered_duplicates"] = reordered
        self.quirks["held_back_events"] = int(held.sum())
        # Items whose events (first copies) arrive in another order than they happened.
        order_keys: dict[int, list[tuple[int, int]]] = {}
        for e, (_t, _d, _moment, item, order) in enumerate(self.events):
            if item >= 0:
                order_keys.setdefault(item, []).append((order, int(arrival[e])))
        self.quirks["out_of_order_items"] = sum(
            any(a[1] > b[1] for a, b in zip(seq, seq[1:])) for seq in order_keys.values()
        )
        for s in range(other_triggers):
            trigger = _OTHER_TRIGGERS[s % len(_OTHER_TRIGGERS)]
            at = int(rng.integers(self.start, self.end))
            sender, receiver = rng.integers(0, 5000, size=2).tolist()
            message_id = str(int(rng.integers(10**6, 10**7)))
            foreign: dict[str, Any]
            if trigger == "after_message":
                foreign = {
                    "message": {
                        "id": message_id,
                        "conversationId": f"uid-{sender:05d}_user_uid-{receiver:05d}",
                        "sender": f"uid-{sender:05d}",
                        "receiver": f"uid-{receiver:05d}",
                        "receiverType": "user",
                        "type": "text",
                        "category": "message",
                        "data": {"text": "see you soon"},
                        "sentAt": at,
                    }
                }
            else:
                foreign = {
                    "reaction": {
                        "messageId": message_id, "reaction": "👍", "uid": f"uid-{sender:05d}", "reactedAt": at
                    }
                }
            bodies.append(orjson.dumps({"trigger": trigger, **envelope_base, "data": foreign}))
            record_event.append(-1)
            record_arrival.append(at)
            record_copy.append(0)
            record_late.append(False)
        self.bodies = bodies
        self.record_event = np.asarray(record_event, dtype=np.int64)
        self.record_arrival = np.minimum(np.asarray(record_arrival, dtype=np.int64), self.end - 1)
        self.record_copy = np.asarray(record_copy, dtype=np.int64)
        self.record_late = np.asarray(record_late, dtype=bool)

    def _bad_record(self, kind: str, k: int) -> bytes:
        sample = orjson.dumps(
            {
                "trigger": "after_feed_item_sent",
                "appId": self.app_id,
                "region": self.region,
                "webhook": self.webhook,
                "data": {
                    "id": f"feed-bad{k:08x}", "appId": self.app_id, "status": "sent", "sentAt": self.start + k
                },
            }
        ).decode()
        if kind == "truncated":
            return sample[: len(sample) * 3 // 5].encode()
        if kind == "number":
            return str(1_780_000_000 + k).encode()
        if kind == "array":
            return orjson.dumps([{"trigger": "after_feed_item_read", "appId": self.app_id}, k])
        if kind == "no_data":
            return orjson.dumps(
                {"trigger": "after_push_notification_sent", "appId": self.app_id, "region": self.region,
                 "webhook": self.webhook}
            )
        return sample.replace(f'"sentAt":{self.start + k}', '"sentAt":"yesterday"').encode()

    # -- files ----------------------------------------------------------------------------------
    def write(self, out: Path, bad_records: int, single_post_share: float) -> SimulationTruth:
        """Place every record in a file, write the files, and return the truth."""
        placement = self._place_records(bad_records, single_post_share)
        lines = self._write_files(out, placement)
        return self._truth(out, placement, lines, bad_records)

    def _place_records(self, bad_records: int, single_post_share: float) -> _Placement:
        rng = self.rng
        r = len(self.bodies)
        window = (self.record_arrival - self.start) // _FILE_WINDOW
        post = rng.random(r) < single_post_share
        if not post.any() and r >= 3:
            post[rng.choice(r, size=3, replace=False)] = True
        # A replayed retry stays in the window files, where it lands hours after its original.
        post &= ~self.record_late
        windows_used = sorted(set(window[~post].tolist())) or [0]
        file_of_window: dict[int, _File] = {}
        for k, w in enumerate(windows_used):
            moment = datetime.fromtimestamp(self.start + w * _FILE_WINDOW, tz=UTC)
            day = moment.strftime("%Y-%m-%d")
            fmt = _WINDOW_FORMATS[k % len(_WINDOW_FORMATS)]
            path = f"{day}/webhooks-{day}T{moment.strftime('%H')}.{fmt}"
            file_of_window[w] = _File(path, bom=k % 5 == 1, crlf=k % 3 == 2, pretty=False)
        files: list[_File] = []
        post_count = 0
        for rec in range(r):
            if post[rec]:
                moment = datetime.fromtimestamp(int(self.record_arrival[rec]), tz=UTC)
                path = f"posts/{moment:%Y-%m-%d}/{moment:%H%M%S}-{post_count:06d}.json"
                files.append(
                    _File(path, bom=post_count % 7 == 2, crlf=post_count % 4 == 3, pretty=post_count % 2 == 1)
                )
                post_count += 1
            else:
                files.append(file_of_window[int(window[rec])])
        arrival = self.record_arrival.tolist()
        bodies = list(self.bodies)
        reasons: list[str | None] = [None] * r
        # Malformed records go into line-based files, where one bad line spoils nothing else.
        line_windows = [w for w in windows_used if not file_of_window[w].path.endswith(".json")]
        for k in range(bad_records):
            kind, reason = _BAD_KINDS[k % len(_BAD_KINDS)]
            w = line_windows[int(rng.integers(0, len(line_windows)))]
            bodies.append(self._bad_record(kind, k))
            arrival.append(int(self.start + w * _FILE_WINDOW + rng.integers(0, _FILE_WINDOW)))
            files.append(file_of_window[w])
            reasons.append(reason)
        self.quirks["single_post_files"] = post_count
        return _Placement(bodies, arrival, files, reasons)

    def _write_files(self, out: Path, placement: _Placement) -> list[int]:
        """Write every file; return each record's line (or element position) in its file."""
        bodies = placement.bodies
        by_path: dict[str, list[int]] = {}
        for rec, file in enumerate(placement.files):
            by_path.setdefault(file.path, []).append(rec)
        record_line = [0] * len(bodies)
        bom_files = crlf_files = 0
        for path in sorted(by_path):
            recs = sorted(by_path[path], key=lambda x: (placement.arrival[x], x))
            for line, rec in enumerate(recs, start=1):
                record_line[rec] = line
            file = placement.files[recs[0]]
            newline = b"\r\n" if file.crlf else b"\n"
            if path.startswith("posts/"):
                payload = bodies[recs[0]]
                if file.pretty:
                    payload = orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2)
                    # orjson escapes newlines inside strings, so every raw newline is layout.
                    payload = payload.replace(b"\n", newline)
                payload += newline
            elif path.endswith(".json"):
                payload = b"[" + (b"," + newline).join(bodies[x] for x in recs) + b"]" + newline
            else:
                payload = newline.join(bodies[x] for x in recs) + newline
            if file.bom:
                payload = _UTF8_BOM + payload
            if path.endswith(".gz"):
                payload = gzip.compress(payload, compresslevel=6, mtime=0)
            target = out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload)
            bom_files += file.bom
            crlf_files += file.crlf
        self.quirks["bom_files"] = bom_files
        self.quirks["crlf_files"] = crlf_files
        self.files_written = tuple(sorted(by_path))
        return record_line

    def _truth(
        self, out: Path, placement: _Placement, record_line: list[int], bad_records: int
    ) -> SimulationTruth:
        r = len(self.bodies)
        paths = [file.path for file in placement.files]
        first_path: dict[int, str] = {}
        for rec in np.flatnonzero((self.record_event >= 0) & (self.record_copy == 0)).tolist():
            first_path[int(self.record_event[rec])] = paths[rec]
        self.quirks["cross_file_duplicates"] = sum(
            paths[rec] != first_path[int(self.record_event[rec])]
            for rec in np.flatnonzero(self.record_copy > 0).tolist()
        )
        skipped = pd.DataFrame(
            [
                (paths[rec], record_line[rec], orjson.loads(body)["trigger"], body.decode())
                for rec in np.flatnonzero(self.record_event < 0).tolist()
                for body in (self.bodies[rec],)
            ],
            columns=["source_file", "source_line", "trigger", "raw"],
        )
        rejected = pd.DataFrame(
            [
                (paths[rec], record_line[rec], placement.reasons[rec], placement.bodies[rec].decode())
                for rec in range(r, len(placement.bodies))
            ],
            columns=["source_file", "source_line", "reason", "raw"],
        )
        in_file_order = ["source_file", "source_line"]
        n_events = len(self.events)
        return SimulationTruth(
            out_dir=out,
            items=self._items_frame(),
            campaigns=_frame_with_times(
                self.campaign_rows,
                ["campaign_id", "name", "status", "template_id", "template_version", "total_targets",
                 "sent_count", "failed_count", "scheduled_at", "sent_at", "completed_at", "updated_at"],
                ["scheduled_at", "sent_at", "completed_at", "updated_at"],
            ),
            notifications=_frame_with_times(
                self.notification_rows,
                ["notification_id", "campaign_id", "template_id", "template_version", "label", "category",
                 "channels", "total_targets", "created_at"],
                ["created_at"],
            ),
            records=len(placement.bodies),
            unique_events=n_events,
            duplicates=int((self.record_event >= 0).sum()) - n_events,
            rejected=bad_records,
            skipped=len(skipped),
            rejected_records=rejected.sort_values(in_file_order, kind="stable").reset_index(drop=True),
            skipped_records=skipped.sort_values(in_file_order, kind="stable").reset_index(drop=True),
            files=self.files_written,
            quirks=dict(self.quirks),
        )

    def _items_frame(self) -> pd.DataFrame:
        nts = self.notifications
        idx = self.notif_idx.tolist()
        has_experiment = [nts[i]["experiment_id"] is not None for i in idx]
        frame = pd.DataFrame(
            {
                "campaign_id": pd.Series([nts[i]["campaign_id"] for i in idx], dtype="str"),
                "notification_id": pd.Series([nts[i]["notification_id"] for i in idx], dtype="str"),
                "item_id": pd.Series(self.item_id, dtype="str"),
                "template_id": pd.Series([nts[i]["template"].template_id for i in idx], dtype="str"),
                "template_version": np.asarray([nts[i]["version"] for i in idx], dtype=np.int64),
                "label": pd.Series([nts[i]["label"] for i in idx], dtype="str"),
                "category": pd.Series([nts[i]["template"].category for i in idx], dtype="str"),
                "receiver": pd.Series(self.receiver, dtype="str"),
                "tags": pd.Series([list(nts[i]["tags"]) for i in idx], dtype=object),
                "channel_type": pd.Series([_CHANNEL_TYPES[c] for c in self.channel.tolist()], dtype="str"),
                "metadata__experiment__arm": pd.Series(
                    [a if h else None for a, h in zip(self.arms.tolist(), has_experiment)], dtype="str"
                ),
            }
        )
        for name, values in (
            ("sent_at", self.sent),
            ("delivered_at", self.delivered_at),
            ("read_at", self.read_at),
            ("interacted_at", self.interacted_at),
            ("clicked_at", self.clicked_at),
        ):
            frame[name] = _timestamps(values)
        frame["delivered_on_read"] = self.delivered_on_read.astype(bool)
        frame["delivered_implied"] = self.delivered_implied.astype(bool)
        frame["interactions"] = np.asarray([len(m) for m in self.interactions], dtype=np.int64)
        for name, stage in (
            ("time_to_delivery_s", self.delivered_at),
            ("time_to_read_s", self.read_at),
            ("time_to_click_s", self.clicked_at),
        ):
            frame[name] = np.where(stage >= 0, (stage - self.sent).astype(np.float64), np.nan)
        return frame


def _timestamps(epoch_seconds: np.ndarray | list[int | None]) -> pd.Series:
    """Epoch seconds (negative or None = not reached) as ``datetime64[ms, UTC]``."""
    values = np.asarray([-1 if v is None else int(v) for v in list(epoch_seconds)], dtype=np.int64)
    moments = values.astype("datetime64[s]").astype("datetime64[ms]")
    moments[values < 0] = np.datetime64("NaT")
    return pd.Series(moments, dtype="datetime64[ms]").dt.tz_localize("UTC")


def _frame_with_times(
    rows: list[dict[str, Any]], columns: list[str], time_columns: list[str]
) -> pd.DataFrame:
    """A frame of ``rows`` whose ``time_columns`` (epoch seconds or None) become timestamps."""
    frame = pd.DataFrame(
        {c: [row[c] for row in rows] for c in columns if c not in time_columns}
    ).reindex(columns=[c for c in columns if c not in time_columns])
    for column in time_columns:
        frame[column] = _timestamps([row[column] for row in rows])
    return frame[columns]
