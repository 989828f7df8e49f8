"""Events to items: one row per feed item / push notification.

A feed item or push notification reports its life in several webhook events
(sent, delivered, read, interacted, clicked). Every event carries the stage
timestamps reached so far, events can be lost, repeated or arrive out of
order, so the item's row is built from *all* its events in one grouped
aggregation, written once as an Ibis expression:

* each stage timestamp is the **earliest non-null** value seen on any of the
  item's events (a read event whose ``deliveredAt`` survived stands in for a
  lost delivered event);
* each dimension column comes from the item's **earliest event that has a
  value** for it (see :data:`EVENT_ORDER`);
* ``status`` comes from the item's **latest** event.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Final

import ibis
import ibis.expr.datatypes as dt
import pandas as pd

from campaign_analytics.backends import (
    EVENT_COLUMNS,
    backend_name,
    epoch_milliseconds,
    events_table,
)
from campaign_analytics.errors import TableError

__all__ = [
    "DIMENSION_COLUMNS",
    "EVENT_ORDER",
    "ITEM_ENTITIES",
    "STAGE_COLUMNS",
    "items",
    "user_columns",
]

ITEM_ENTITIES: Final[tuple[str, ...]] = ("feed_item", "push_notification")

DIMENSION_COLUMNS: Final[tuple[str, ...]] = (
    "campaign_id",
    "notification_id",
    "template_id",
    "template_version",
    "label",
    "category",
    "receiver",
    "channel_id",
    "tags",
)
"""Item columns taken from the item's earliest event that has a value
(besides ``channel_type`` and every ``variables__*`` / ``metadata__*`` column)."""

STAGE_COLUMNS: Final[tuple[str, ...]] = (
    "sent_at",
    "delivered_at",
    "read_at",
    "interacted_at",
    "clicked_at",
    "failed_at",
)

EVENT_ORDER: Final[dict[str, int]] = {
    "sent": 0,
    "delivered": 1,
    "read": 2,
    "interacted": 3,
    "clicked": 3,
}
"""Rank of each stage: how an item's events at the same millisecond are ordered.

An item's events are ordered by ``event_time``, then by this rank (unknown
stages last): a REST-API read fires delivered and read with equal
timestamps, and the read counts as the later one. This order defines the
item's "earliest event that has a value" (dimensions) and "latest event"
(status). An event without ``event_time`` is used only where no timed event
has the value. Events of the same stage at the same millisecond count as
simultaneous: retries carry the same values, so any of them gives the same
row (should they ever disagree, the engine picks one).
"""

_USER_PREFIXES: Final[tuple[str, ...]] = ("variables__", "metadata__")
_STAGE_BITS: Final[dict[str, int]] = {"delivered": 1, "read": 2, "interacted": 4, "clicked": 8}

# The event order packed into one int64, so that the engine can use its plain
# arg_min/arg_max aggregates instead of sorting each item's events:
#   milliseconds since 2020-01-01 (signed; fits until the year 2500) * 8 + rank
_ORIGIN_MS: Final[int] = 1_577_836_800_000  # 2020-01-01T00:00:00Z
_RANKS: Final[int] = 8
_UNKNOWN_RANK: Final[int] = 4
_NO_TIME_MS: Final[int] = 2**58

# Backends whose arg_min/arg_max skip rows where the value is null (Spark's
# min_by does not: there the key is nulled where the value is).
_SKIPS_NULL_VALUES: Final[frozenset[str]] = frozenset({"duckdb"})


def user_columns(columns: list[str] | tuple[str, ...]) -> list[str]:
    """The ``variables__*`` and ``metadata__*`` columns among ``columns``, in order.

    Parameters
    ----------
    columns
        Column names, e.g. ``events.columns``.

    Returns
    -------
    list[str]

    Examples
    --------
    >>> user_columns(["item_id", "variables__discount", "metadata_json", "metadata__source"])
    ['variables__discount', 'metadata__source']
    """
    return [c for c in columns if c.startswith(_USER_PREFIXES)]


def items(source: str | Path | pd.DataFrame | ibis.Table) -> ibis.Table:
    """One row per (channel_type, item_id): stage timestamps, latencies and flags.

    The result is a lazy Ibis expression: nothing runs until it is executed,
    and :func:`campaign_analytics.metrics.engagement` or
    :func:`~campaign_analytics.metrics.time_to_delivery` built on it make the
    engine compute only the columns they use. Call ``.to_pandas()`` for a
    per-item frame (e.g. for an ECDF of ``time_to_delivery_s``), or
    ``.cache()`` to compute it once for many metrics.

    Parameters
    ----------
    source
        Anything :func:`campaign_analytics.backends.events_table` accepts: the
        path of the events Delta table, a pandas DataFrame of events, or an
        Ibis table of events.

    Returns
    -------
    ibis.Table
        Columns, in order:

        * ``channel_type``, ``item_id`` (the key), ``entity``;
        * dimensions ``campaign_id, notification_id, template_id,
          template_version, label, category, receiver, channel_id, tags``,
          then every ``variables__*`` / ``metadata__*`` column of the events:
          each taken from the item's earliest event with a non-null value
          (``tags``: a non-empty list), in the order of :data:`EVENT_ORDER`.
          ``channel_type`` likewise, falling back to ``in_app`` / ``push``
          from the entity;
        * ``status``: of the item's latest event (same order), so an item last
          reported by an interacted event shows that event's status;
        * ``sent_at, delivered_at, read_at, interacted_at, clicked_at,
          failed_at``: the earliest non-null value over all the item's events;
          for ``interacted_at`` an event's moment is its ``interactedAt``,
          or the ``engagedAt`` of an interacted event that has none (other
          events' ``engagedAt``, such as the one the documented delivered
          example carries, is not an interaction);
        * ``delivered, read, interacted, clicked`` (bool): the stage was
          reached, i.e. its timestamp is known or an event of that stage
          arrived; ``delivered`` is also true when any later stage was
          reached;
        * ``delivered_implied``: delivered only because a later stage was
          reached, with no ``deliveredAt`` anywhere (``delivered_at`` null);
        * ``delivered_on_read``: ``delivered_at == read_at`` (delivery
          reported by the read, e.g. marked read through the REST API);
        * ``time_to_delivery_s, time_to_read_s, time_to_interact_s,
          time_to_click_s`` (float seconds from ``sent_at``, millisecond
          precision; null when either side is unknown; negative only where
          the source's own timestamps disagree);
        * ``interaction_count``: interacted events received (distinct, as
          the events table holds each event once).

        Every item that has an event was sent, even when its sent event was
        lost and no later event carries ``sentAt`` (``sent_at`` is then null):
        such items count as sent but have no latencies.

    Raises
    ------
    TableError
        ``source`` is not an events table.

    Examples
    --------
    >>> import pandas as pd
    >>> ts = lambda *s: pd.Series(pd.to_datetime(list(s), unit="s", utc=True), dtype="datetime64[ms, UTC]")
    >>> events = pd.DataFrame({
    ...     "event_id": ["e1", "e2"], "entity": ["feed_item"] * 2, "item_id": ["f1"] * 2,
    ...     "stage": ["sent", "read"], "event_time": ts(100, 160),
    ...     "sent_at": ts(100, 100), "delivered_at": ts(None, 130), "read_at": ts(None, 160)})
    >>> row = items(events).to_pandas().iloc[0]
    >>> bool(row.delivered), float(row.time_to_delivery_s), float(row.time_to_read_s)
    (True, 30.0, 60.0)
    """
    events = events_table(source)
    if "item_id" not in events.columns:
        raise TableError("the events table has no item_id column, so it holds no items: pass the events table")
    events = _with_contract_columns(events)
    events = events.filter(events.entity.isin(ITEM_ENTITIES))
    backend = backend_name(events)
    first, last = _event_order_keys(events, backend)
    events = events.mutate(_first=first, _last=last)
    e = events

    users = user_columns(e.columns)
    # One bit per stage whose event arrived, OR-ed over the item's events:
    # a single aggregate instead of one per stage.
    stage_bit = e.stage.cases(*_STAGE_BITS.items(), else_=0).cast(dt.int64)
    aggregated = e.group_by(["entity", "item_id"]).aggregate(
        channel_type=_earliest_with_value(e, "channel_type", backend),
        **{column: _earliest_with_value(e, column, backend) for column in (*DIMENSION_COLUMNS, *users)},
        status=_latest_with_value(e, "status", backend),
        sent_at=e.sent_at.min(),
        delivered_at=e.delivered_at.min(),
        read_at=e.read_at.min(),
        interacted_at=_interaction_moment(e).min(),
        clicked_at=e.clicked_at.min(),
        failed_at=e.failed_at.min(),
        _stages=_bit_or(stage_bit),
        # The events table holds each event once, so a plain count is a
        # distinct count (COUNT DISTINCT would cost a second aggregation).
        interaction_count=e.stage.count(where=e.stage == "interacted"),
    )
    a = aggregated

    def arrived(stage: str) -> ibis.BooleanValue:
        return (a._stages & _STAGE_BITS[stage]) != 0

    read = a.read_at.notnull() | arrived("read")
    interacted = a.interacted_at.notnull() | arrived("interacted")
    clicked = a.clicked_at.notnull() | arrived("clicked")
    later_stage = read | interacted | clicked
    result = a.mutate(
        channel_type=a.channel_type.fill_null(
            ibis.ifelse(a.entity == "feed_item", "in_app", "push")
        ),
        delivered=a.delivered_at.notnull() | arrived("delivered") | later_stage,
        read=read,
        interacted=interacted,
        clicked=clicked,
        delivered_implied=a.delivered_at.isnull() & later_stage,
        delivered_on_read=(a.delivered_at == a.read_at).fill_null(False),
        time_to_delivery_s=_seconds_between(a.sent_at, a.delivered_at, backend),
        time_to_read_s=_seconds_between(a.sent_at, a.read_at, backend),
        time_to_interact_s=_seconds_between(a.sent_at, a.interacted_at, backend),
        time_to_click_s=_seconds_between(a.sent_at, a.clicked_at, backend),
    )
    return result.select(
        "channel_type",
        "item_id",
        "entity",
        *DIMENSION_COLUMNS,
        *users,
        "status",
        *STAGE_COLUMNS,
        "delivered",
        "read",
        "interacted",
        "clicked",
        "delivered_implied",
        "delivered_on_read",
        "time_to_delivery_s",
        "time_to_read_s",
        "time_to_interact_s",
        "time_to_click_s",
        "interaction_count",
    )


def _with_contract_columns(events: ibis.Table) -> ibis.Table:
    """Add the contract columns a hand-built events table lacks, as typed nulls."""
    missing = {
        name: ibis.null(dtype) for name, dtype in EVENT_COLUMNS.items() if name not in events.columns
    }
    return events.mutate(**missing) if missing else events


def _event_order_keys(events: ibis.Table, backend: str) -> tuple[ibis.Value, ibis.Value]:
    """int64 keys ordering events as :data:`EVENT_ORDER` describes.

    Returns the key for "earliest" (untimed events last) and the key for
    "latest" (untimed events first).
    """
    rank = events.stage.cases(*EVENT_ORDER.items(), else_=_UNKNOWN_RANK).cast(dt.int64)
    ms = epoch_milliseconds(events.event_time, backend=backend) - _ORIGIN_MS
    first = ms.fill_null(_NO_TIME_MS) * _RANKS + rank
    last = ms.fill_null(-_NO_TIME_MS) * _RANKS + rank
    return first, last


def _interaction_moment(events: ibis.Table) -> ibis.TimestampValue:
    """When an event says the item was interacted with: interactedAt, else engagedAt on an interacted event."""
    engaged = ibis.cases((events.stage == "interacted", events.engaged_at), else_=ibis.null(events.engaged_at.type()))
    return ibis.coalesce(events.interacted_at, engaged)


def _earliest_with_value(events: ibis.Table, column: str, backend: str) -> ibis.Value:
    """Aggregate: ``column`` of the earliest event (``_first`` key) where it has a value."""
    return _min_by(events[column], _key_where_present(events, column, events._first, backend))


def _latest_with_value(events: ibis.Table, column: str, backend: str) -> ibis.Value:
    """Aggregate: ``column`` of the latest event (``_last`` key) where it has a value."""
    return _max_by(events[column], _key_where_present(events, column, events._last, backend))


def _key_where_present(events: ibis.Table, column: str, key: ibis.Value, backend: str) -> ibis.Value:
    value = events[column]
    if value.type().is_array():
        # An empty list is no value either.
        present = value.notnull() & (value.length() > 0)
    elif backend in _SKIPS_NULL_VALUES:
        return key
    else:
        present = value.notnull()
    return ibis.ifelse(present, key, ibis.null(dt.int64))


def _seconds_between(start: ibis.Value, end: ibis.Value, backend: str) -> ibis.Value:
    milliseconds = epoch_milliseconds(end, backend=backend) - epoch_milliseconds(start, backend=backend)
    return milliseconds.cast(dt.float64) / 1000.0


@functools.cache
def _bit_or_function() -> Callable[..., ibis.Value]:
    def bit_or(value: object) -> object:  # the body never runs: a builtin
        ...

    return ibis.udf.agg.builtin(bit_or, name="bit_or", signature=((dt.int64,), dt.int64))


def _bit_or(value: ibis.IntegerValue) -> ibis.IntegerValue:
    """Bitwise OR over the group (Ibis has no PySpark rule for its BitOr; both
    engines have ``bit_or``)."""
    return _bit_or_function()(value)


@functools.cache
def _by_aggregate(name: str, dtype: dt.DataType) -> Callable[..., ibis.Value]:
    def by(arg: object, key: object) -> object:  # the body never runs: a builtin
        ...

    by.__name__ = name
    return ibis.udf.agg.builtin(by, name=name, signature=((dtype, dt.int64), dtype))


def _min_by(value: ibis.Value, key: ibis.Value) -> ibis.Value:
    """``value`` at the smallest non-null ``key`` (DuckDB arg_min, Spark min_by).

    Ibis' own ``argmin`` compiles to an ordered ``first()`` on DuckDB, which
    sorts every group; the builtin aggregate is several times faster.
    """
    return _by_aggregate("min_by", value.type())(value, key)


def _max_by(value: ibis.Value, key: ibis.Value) -> ibis.Value:
    """``value`` at the largest non-null ``key``."""
    return _by_aggregate("max_by", value.type())(value, key)
