"""Entry points of the order worker: saga replies (dramatiq) and the public intake (kombu)."""

from __future__ import annotations

from services.order.handlers import OrderHandlers
from shared.contracts import saga
from shared.messaging.exchanges import ORDER_INTAKE, QueueConsumer, consumer_for
from shared.messaging.saga_bus import SagaBus
from shared.settings import Settings


def register_actors(bus: SagaBus, handlers: OrderHandlers) -> None:
    bus.handle(saga.StockReserved, handlers.stock_reserved)
    bus.handle(saga.StockReservationFailed, handlers.stock_reservation_failed)
    bus.handle(saga.StockReleased, handlers.stock_released)
    bus.handle(saga.PaymentCaptured, handlers.payment_captured)
    bus.handle(saga.PaymentDeclined, handlers.payment_declined)
    bus.handle(saga.PaymentFailed, handlers.payment_failed)
    # Refunds are not part of this saga's path yet; acknowledge them so none pile up.
    bus.handle(saga.PaymentRefunded, lambda reply: None)


def intake_consumer(settings: Settings, handlers: OrderHandlers) -> QueueConsumer:
    return consumer_for(settings, ORDER_INTAKE, handlers.submit_order)
