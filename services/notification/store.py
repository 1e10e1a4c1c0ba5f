"""The notification worker's record of every notification, keyed by the event it answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.notification.domain import Notification
from shared.store import insert_new


class NotificationRepository:
    def __init__(self, db: Database) -> None:
        self._notifications = db["notifications"]
        self._attempts = db["notification_attempts"]

    def ensure_indexes(self) -> None:
        self._notifications.create_index("order_id")

    def claim(
        self, notifications: list[Notification], channel: str, status: str, lease_until: datetime
    ) -> set[str]:
        """Record notifications (one write for all); returns the ids recorded already."""
        return insert_new(
            self._notifications,
            [
                {
                    "_id": notification.notification_id,
                    "kind": notification.kind,
                    "order_id": notification.order_id,
                    "recipient": notification.recipient,
                    "subject": notification.subject,
                    "body": notification.body,
                    "channel": channel,
                    "status": status,
                    "lease_until": lease_until,
                    "attempts": 1,
                }
                for notification in notifications
            ],
        )

    def get(self, notification_id: str) -> dict[str, Any] | None:
        return self._notifications.find_one({"_id": notification_id})

    def take_over(self, notification_id: str, attempts_seen: int, lease_until: datetime) -> bool:
        """Claim the next attempt at a notification; False if another worker claimed it first.
        The claim is an insert under a unique id, so two workers taking over cannot both win."""
        attempt = attempts_seen + 1
        try:
            self._attempts.insert_one({"_id": f"{notification_id}:{attempt}"})
        except DuplicateKeyError:
            return False
        self._notifications.update_one(
            {"_id": notification_id},
            {"$set": {"status": "sending", "lease_until": lease_until, "attempts": attempt}},
        )
        return True

    def mark(self, notification_ids: list[str], status: str, at: datetime, error: str | None = None) -> None:
        if notification_ids:
            self._notifications.update_many(
                {"_id": {"$in": notification_ids}},
                {"$set": {"status": status, "updated_at": at, "error": error, "lease_until": at}},
            )

    def find(self, **query: Any) -> list[dict[str, Any]]:
        return list(self._notifications.find(query))
