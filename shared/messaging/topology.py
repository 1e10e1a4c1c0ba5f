"""Names of every exchange and queue, in one place."""

from __future__ import annotations

# Public exchanges (kombu): upstream systems publish to the intake; anyone may subscribe to events.
INTAKE_EXCHANGE = "orderflow.intake"
INTAKE_ROUTING_KEY = "order.submit"
EVENTS_EXCHANGE = "orderflow.events"

# Queues on the public exchanges, one per consuming worker.
ORDER_INTAKE_QUEUE = "orderflow.order.intake"
NOTIFICATION_EVENTS_QUEUE = "orderflow.notification.events"
REPORTING_EVENTS_QUEUE = "orderflow.reporting.events"

# Saga queues (dramatiq). dramatiq adds `<queue>.DQ` for delayed retries and `<queue>.XQ` for dead letters.
INVENTORY_QUEUE = "orderflow.inventory.stock"
PAYMENT_QUEUE = "orderflow.payment.commands"
ORDER_SAGA_QUEUE = "orderflow.order.saga"

# Stock decisions must be serial: one consumer of this queue is active at a time, the rest stand by.
SINGLE_ACTIVE_CONSUMER_QUEUES = frozenset({INVENTORY_QUEUE})


def dead_letter_queue(queue: str) -> str:
    """Where a kombu-consumed queue's invalid or poison messages go, with the reason in a header."""
    return f"{queue}.dlq"
