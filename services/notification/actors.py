"""Entry point of the notification worker: the public events it is bound to (kombu)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.notification.handlers import NotifiableEvent, NotificationHandlers
from shared.contracts.events import LowStock, OrderRefunded, OrderStatusChanged, decode_event
from shared.errors import InvalidMessage
from shared.messaging import topology
from shared.messaging.exchanges import InboundMessage, QueueConsumer
from shared.messaging.transport import Transport


def events_consumer(transport: Transport, handlers: NotificationHandlers) -> Callable[[], QueueConsumer[Any]]:
    def decode(inbound: InboundMessage) -> NotifiableEvent:
        event = decode_event(inbound.body)
        if not isinstance(event, OrderStatusChanged | OrderRefunded | LowStock):
            raise InvalidMessage(f"no notification for {event.type}")
        return event

    return transport.consumer(topology.NOTIFICATION_EVENTS, decode, handlers.on_events)
