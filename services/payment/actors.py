"""Entry points of the payment worker."""

from __future__ import annotations

from services.payment.handlers import PaymentHandlers
from shared.contracts import saga
from shared.messaging.saga_bus import SagaBus


def register_actors(bus: SagaBus, handlers: PaymentHandlers) -> None:
    bus.handle(saga.ChargePayment, handlers.charge_payment)
    bus.handle(saga.RefundPayment, handlers.refund_payment)
    bus.handle(saga.RefundAmount, handlers.refund_amount)
