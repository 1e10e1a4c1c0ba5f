"""Notification use cases: one notification per event, recorded always, emailed when SMTP is set."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import ValidationError

from services.notification.domain import Notification, for_low_stock, for_order
from services.notification.store import NotificationRepository
from shared import metrics
from shared.contracts.base import utcnow
from shared.contracts.events import LowStock, OrderStatusChanged
from shared.errors import InvalidMessage
from shared.logs import message_context
from shared.messaging.exchanges import Delivery

log = logging.getLogger(__name__)


class Mailer(Protocol):
    def send(self, notification: Notification) -> None: ...


class NotificationHandlers:
    def __init__(
        self,
        notifications: NotificationRepository,
        mailer: Mailer | None,
        *,
        operators: str,
        lease_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sleep = sleep
        self.notifications = notifications
        self.mailer = mailer
        self.operators = operators
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock

    def on_event(self, delivery: Delivery) -> None:
        notification = self._notification_for(delivery)
        if notification is not None:
            with message_context(message_id=notification.notification_id, order_id=notification.order_id):
                self._deliver(notification)

    def _notification_for(self, delivery: Delivery) -> Notification | None:
        try:
            event_type = json.loads(delivery.body).get("type")
            if event_type in ("order.confirmed", "order.cancelled"):
                return for_order(OrderStatusChanged.model_validate_json(delivery.body))
            if event_type == "stock.low":
                return for_low_stock(LowStock.model_validate_json(delivery.body), self.operators)
        except (ValueError, AttributeError, ValidationError) as e:
            raise InvalidMessage(f"not a valid event: {e}") from e
        return None

    def _deliver(self, notification: Notification) -> None:
        channel = "email" if self.mailer else "log"
        claimed = self.notifications.claim(notification, channel, self.clock() + self.lease)
        if not claimed and not self._take_over(notification.notification_id):
            log.info("notification %s was sent already", notification.notification_id)
            return
        if self.mailer is not None:
            try:
                self.mailer.send(notification)
            except Exception as e:
                # Let the next attempt take over at once, then retry with backoff.
                self.notifications.mark(notification.notification_id, "retrying", self.clock(), str(e))
                metrics.NOTIFICATIONS.labels(channel, notification.kind, "failed").inc()
                raise
        self.notifications.mark(notification.notification_id, "sent", self.clock())
        metrics.NOTIFICATIONS.labels(channel, notification.kind, "sent").inc()
        log.info("notified %s: %s", notification.recipient, notification.subject)

    def _take_over(self, notification_id: str) -> bool:
        """Another delivery claimed this notification: wait while its lease runs, then take over if
        it was not sent (its worker died, or its attempt failed). False if it was sent."""
        while True:
            existing = self.notifications.get(notification_id) or {}
            if existing.get("status") == "sent":
                return False
            now = self.clock()
            expired = existing.get("lease_until", now) <= now
            if expired and self.notifications.take_over(
                notification_id, existing.get("attempts", 1), now + self.lease
            ):
                return True
            self.sleep(0.2)
