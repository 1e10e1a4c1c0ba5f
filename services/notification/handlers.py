"""Notification use cases: one notification per event, recorded always, emailed when SMTP is set."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from services.notification.domain import (
    Notification,
    for_change,
    for_low_stock,
    for_order,
    for_refund,
    for_refused_request,
    for_support,
)
from services.notification.store import NotificationRepository
from shared import metrics
from shared.contracts.base import utcnow
from shared.contracts.events import (
    LowStock,
    OrderChanged,
    OrderRefunded,
    OrderRequestRejected,
    OrderStatusChanged,
    SupportEvent,
)
from shared.logs import message_context
from shared.messaging.ports import Batch

NotifiableEvent = (
    OrderStatusChanged | OrderRefunded | OrderChanged | OrderRequestRejected | LowStock | SupportEvent
)

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

    def on_events(self, batch: Batch[NotifiableEvent]) -> None:
        """One notification per event, however often the event arrives."""
        due: dict[str, Notification] = {}
        for event in batch:
            notification = _notification_of(event, self.operators)
            if notification is not None:
                due.setdefault(notification.notification_id, notification)
        if self.mailer is None:
            self._record(list(due.values()))
        else:
            self._email(self.mailer, list(due.values()))

    def _record(self, notifications: list[Notification]) -> None:
        """Without SMTP, recording a notification is all there is to sending it: one write."""
        recorded = self.notifications.claim(notifications, "log", "sent", self.clock())
        for notification in notifications:
            if notification.notification_id not in recorded:
                self._sent(notification, "log")

    def _email(self, mailer: Mailer, notifications: list[Notification]) -> None:
        claimed_before = self.notifications.claim(
            notifications, "email", "sending", self.clock() + self.lease
        )
        sent: list[str] = []
        try:
            for notification in notifications:
                with message_context(message_id=notification.notification_id, order_id=notification.order_id):
                    if notification.notification_id in claimed_before and not self._take_over(
                        notification.notification_id
                    ):
                        log.info("notification %s was sent already", notification.notification_id)
                        continue
                    try:
                        mailer.send(notification)
                    except Exception as e:
                        # Let the next attempt take over at once, then retry with backoff.
                        self.notifications.mark(
                            [notification.notification_id], "retrying", self.clock(), str(e)
                        )
                        metrics.NOTIFICATIONS.labels("email", notification.kind, "failed").inc()
                        raise
                    sent.append(notification.notification_id)
                    self._sent(notification, "email")
        finally:
            self.notifications.mark(sent, "sent", self.clock())

    def _sent(self, notification: Notification, channel: str) -> None:
        metrics.NOTIFICATIONS.labels(channel, notification.kind, "sent").inc()
        with message_context(message_id=notification.notification_id, order_id=notification.order_id):
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


def _notification_of(event: NotifiableEvent, operators: str) -> Notification | None:
    if isinstance(event, LowStock):
        return for_low_stock(event, operators)
    if isinstance(event, OrderRefunded):
        return for_refund(event)
    if isinstance(event, OrderChanged):
        return for_change(event)
    if isinstance(event, OrderRequestRejected):
        return for_refused_request(event)
    if isinstance(event, SupportEvent):
        return for_support(event)
    return for_order(event)
