"""Entry points of the order worker: saga replies and its own timers (dramatiq), the intake (kombu)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.order.customer_handlers import CustomerHandlers
from services.order.handlers import OrderHandlers
from services.order.intake import Submission, decode_request, decode_submission
from services.order.support_handlers import SupportHandlers
from shared.contracts import customers, requests, saga, support
from shared.messaging import topology
from shared.messaging.exchanges import InboundMessage, QueueConsumer
from shared.messaging.saga_bus import SagaBus
from shared.messaging.transport import Transport


def register_actors(bus: SagaBus, handlers: OrderHandlers) -> None:
    bus.handle(saga.StockReserved, handlers.stock_reserved)
    bus.handle(saga.StockReservationFailed, handlers.stock_reservation_failed)
    bus.handle(saga.StockReleased, handlers.stock_released)
    bus.handle(saga.StockStillHeld, handlers.stock_still_held)
    bus.handle(saga.PaymentCaptured, handlers.payment_captured)
    bus.handle(saga.PaymentDeclined, handlers.payment_declined)
    bus.handle(saga.PaymentFailed, handlers.payment_failed)
    bus.handle(saga.PaymentRefunded, handlers.payment_refunded)
    bus.handle(saga.StepDeadline, handlers.step_deadlines)
    bus.handle(saga.StockReturned, handlers.stock_returned)
    # Returns and exchanges approved by the support desk.
    bus.handle(requests.OrderRequest, handlers.take_requests)


def register_customer_actors(bus: SagaBus, customer_desk: CustomerHandlers) -> None:
    bus.handle(customers.UpdateCustomer, customer_desk.update_customers)
    bus.handle(customers.ForgetCustomer, customer_desk.forget_customers)


def register_support_actors(bus: SagaBus, support_desk: SupportHandlers) -> None:
    bus.handle(support.OpenCase, support_desk.open_cases)
    bus.handle(support.ReplyCase, support_desk.reply_cases)
    bus.handle(support.CloseCase, support_desk.close_cases)
    bus.handle(support.ApproveCase, support_desk.approve_cases)
    bus.handle(requests.CaseSettled, support_desk.cases_settled)


def intake_consumer(transport: Transport, handlers: OrderHandlers) -> Callable[[], QueueConsumer[Any]]:
    max_bytes = transport.settings.max_message_bytes

    def decode(inbound: InboundMessage) -> Submission:
        return decode_submission(inbound.body, inbound.content_type, max_bytes)

    return transport.consumer(topology.ORDER_INTAKE, decode, handlers.submit_orders, handlers.admits)


def requests_consumer(transport: Transport, handlers: OrderHandlers) -> Callable[[], QueueConsumer[Any]]:
    max_bytes = transport.settings.max_message_bytes

    def decode(inbound: InboundMessage) -> requests.OrderRequest:
        return decode_request(
            inbound.body, inbound.routing_key, inbound.content_type, inbound.message_id, max_bytes
        )

    return transport.consumer(topology.ORDER_REQUESTS, decode, handlers.take_requests)
