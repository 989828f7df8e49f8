"""The ten CometChat campaign webhook triggers (a table, no logic).

Each trigger names the entity an event is about, the stage it reports, the
field of ``data`` that identifies the entity, and the field(s) of ``data`` that
hold the stage's own timestamp, first match wins. ``EVENT_TIME_RANGE`` is the
span of times a loaded timestamp may have.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, NamedTuple

__all__ = ["Trigger", "TRIGGERS", "ENTITIES", "STAGE_TIMESTAMP_FIELDS", "EVENT_TIME_RANGE"]

# Timestamps outside [1970-01-01, 2200-01-01) UTC are taken as wrong data, not as dates.
EVENT_TIME_RANGE: Final[tuple[datetime, datetime]] = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


class Trigger(NamedTuple):
    """One webhook trigger of the campaigns service."""

    name: str
    entity: str
    stage: str
    id_field: str
    time_fields: tuple[str, ...]


TRIGGERS: Final[dict[str, Trigger]] = {
    t.name: t
    for t in (
        Trigger("after_campaign_completed", "campaign", "completed", "campaignId", ("completedAt",)),
        Trigger("after_campaign_failed", "campaign", "failed", "campaignId", ("completedAt", "updatedAt")),
        Trigger("after_notification_created", "notification", "created", "notificationId", ("createdAt",)),
        Trigger("after_feed_item_sent", "feed_item", "sent", "id", ("sentAt",)),
        Trigger("after_feed_item_delivered", "feed_item", "delivered", "id", ("deliveredAt",)),
        Trigger("after_feed_item_read", "feed_item", "read", "id", ("readAt",)),
        Trigger("after_feed_item_interacted", "feed_item", "interacted", "id", ("interactedAt", "engagedAt")),
        Trigger("after_push_notification_sent", "push_notification", "sent", "pushNotificationId", ("sentAt",)),
        Trigger("after_push_notification_delivered", "push_notification", "delivered", "pushNotificationId", ("deliveredAt",)),
        Trigger("after_push_notification_clicked", "push_notification", "clicked", "pushNotificationId", ("clickedAt",)),
    )
}

ENTITIES: Final[tuple[str, ...]] = ("campaign", "notification", "feed_item", "push_notification")

# data field (camelCase) -> events table column (snake_case), every known timestamp.
STAGE_TIMESTAMP_FIELDS: Final[dict[str, str]] = {
    "sentAt": "sent_at",
    "deliveredAt": "delivered_at",
    "readAt": "read_at",
    "interactedAt": "interacted_at",
    "engagedAt": "engaged_at",
    "clickedAt": "clicked_at",
    "failedAt": "failed_at",
    "createdAt": "created_at",
    "completedAt": "completed_at",
    "scheduledAt": "scheduled_at",
    "updatedAt": "updated_at",
}
