"""Notification use cases: one notification per event, recorded always, emailed when SMTP is set."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import ValidationError

from services.notification.domain import Notification, for_low_stock, for_order
from services.notification.store import NotificationRepository
from shared.contracts.base import utcnow
from shared.contracts.events import LowStock, OrderStatusChanged
from shared.errors import InvalidMessage
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
    ) -> None:
        self.notifications = notifications
        self.mailer = mailer
        self.operators = operators
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock

    def on_event(self, delivery: Delivery) -> None:
        notification = self._notification_for(delivery)
        if notification is not None:
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
        now = self.clock()
        if not self.notifications.claim(notification, channel, now + self.lease):
            existing = self.notifications.get(notification.notification_id) or {}
            if existing.get("status") == "sent" or existing.get("lease_until", now) > now:
                log.info("notification %s was sent or is being sent already", notification.notification_id)
                return
            # The worker that claimed it died before sending: take over.
            self.notifications.renew(notification.notification_id, now + self.lease)
        if self.mailer is not None:
            try:
                self.mailer.send(notification)
            except Exception as e:
                # Let the next attempt take over at once, then retry with backoff.
                self.notifications.mark(notification.notification_id, "retrying", self.clock(), str(e))
                raise
        self.notifications.mark(notification.notification_id, "sent", self.clock())
        log.info("notified %s: %s", notification.recipient, notification.subject)
