"""Entry point of the reporting worker: the order events it is bound to (kombu)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.reporting.domain import ReportableEvent
from services.reporting.handlers import ReportingHandlers
from shared.contracts.events import OrderChanged, OrderRefunded, OrderStatusChanged, decode_event
from shared.errors import InvalidMessage
from shared.messaging import topology
from shared.messaging.exchanges import InboundMessage, QueueConsumer
from shared.messaging.transport import Transport


def events_consumer(transport: Transport, handlers: ReportingHandlers) -> Callable[[], QueueConsumer[Any]]:
    def decode(inbound: InboundMessage) -> ReportableEvent:
        event = decode_event(inbound.body)
        if not isinstance(event, OrderStatusChanged | OrderChanged | OrderRefunded):
            raise InvalidMessage(f"not an order event: {event.type}")
        return event

    return transport.consumer(topology.REPORTING_EVENTS, decode, handlers.on_events)
