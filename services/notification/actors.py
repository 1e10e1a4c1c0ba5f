"""Entry point of the notification worker: the public events it is bound to (kombu)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.notification.handlers import NotifiableEvent, NotificationHandlers
from shared.contracts.events import decode_event
from shared.messaging import topology
from shared.messaging.exchanges import InboundMessage, QueueConsumer
from shared.messaging.transport import Transport


def events_consumer(transport: Transport, handlers: NotificationHandlers) -> Callable[[], QueueConsumer[Any]]:
    def decode(inbound: InboundMessage) -> NotifiableEvent:
        return decode_event(inbound.body)

    return transport.consumer(topology.NOTIFICATION_EVENTS, decode, handlers.on_events)
