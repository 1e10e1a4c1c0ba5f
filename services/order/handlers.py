"""Order use cases: take in submissions and move each order's saga on as replies arrive."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

from services.order.domain import Order, TransitionNotAllowed
from services.order.intake import InvalidSubmission, parse_submission
from services.order.store import OrderRepository
from shared.contracts import saga
from shared.contracts.base import Message, OrderMessage, utcnow
from shared.contracts.events import Event
from shared.errors import PermanentError, TransientError
from shared.logs import message_context
from shared.messaging.exchanges import Delivery

log = logging.getLogger(__name__)

R = TypeVar("R", bound=OrderMessage)


class CommandSender(Protocol):
    def send(self, message: Message) -> None: ...


class EventSink(Protocol):
    def publish(self, event: Event) -> None: ...


class ConcurrentUpdate(TransientError):
    """Another thread moved the order between our read and our write; retry from a fresh read."""


class OrderHandlers:
    def __init__(
        self,
        orders: OrderRepository,
        commands: CommandSender,
        events: EventSink,
        *,
        currency: str,
        max_message_bytes: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.orders = orders
        self.commands = commands
        self.events = events
        self.currency = currency
        self.max_message_bytes = max_message_bytes
        self.clock = clock

    # Intake -----------------------------------------------------------------------------------

    def submit_order(self, delivery: Delivery) -> None:
        """Validate a submission and start its saga; resubmitting an order id starts nothing new."""
        try:
            submission = parse_submission(delivery.body, delivery.content_type, self.max_message_bytes)
        except InvalidSubmission as e:
            if e.order_id is not None:
                with message_context(message_id=None, order_id=e.order_id):
                    self._start(Order.reject(e.order_id, e.errors, self.currency, self.clock()))
            raise
        with message_context(message_id=None, order_id=submission.order_id):
            self._start(Order.accept(submission, self.currency, self.clock()))

    def _start(self, order: Order) -> None:
        if self.orders.add(order):
            log.info("order %s is %s", order.order_id, order.status)
            self._dispatch(order)
            return
        existing = self.orders.get(order.order_id)
        if existing is not None and existing.last_cause == order.last_cause:
            # Still in its first state: the first attempt may have died before sending, say it again.
            self._dispatch(existing)
        else:
            log.info("order %s was submitted before; ignoring the resubmission", order.order_id)

    # Saga replies -----------------------------------------------------------------------------

    def stock_reserved(self, reply: saga.StockReserved) -> None:
        self._advance(reply, Order.stock_reserved)

    def stock_reservation_failed(self, reply: saga.StockReservationFailed) -> None:
        self._advance(reply, Order.stock_reservation_failed)

    def payment_captured(self, reply: saga.PaymentCaptured) -> None:
        self._advance(reply, Order.payment_captured)

    def payment_declined(self, reply: saga.PaymentDeclined) -> None:
        self._advance(reply, Order.payment_declined)

    def payment_failed(self, reply: saga.PaymentFailed) -> None:
        self._advance(reply, Order.payment_failed)

    def stock_released(self, reply: saga.StockReleased) -> None:
        self._advance(reply, Order.stock_released)

    def _advance(self, reply: R, transition: Callable[[Order, R, datetime], None]) -> None:
        order = self.orders.get(reply.order_id)
        if order is None:
            raise PermanentError(f"{type(reply).__name__} for unknown order {reply.order_id}")
        if reply.message_id == order.last_cause:
            # A redelivery of the reply that caused the current state: the first attempt may have
            # stored it and died before sending what follows.
            self._dispatch(order)
            return
        try:
            transition(order, reply, self.clock())
        except TransitionNotAllowed as e:
            log.info("ignoring %s: %s", type(reply).__name__, e)
            return
        if not self.orders.save(order):
            raise ConcurrentUpdate(f"order {order.order_id} changed while handling {type(reply).__name__}")
        log.info("order %s is %s (%s)", order.order_id, order.status, order.step)
        self._dispatch(order)

    def _dispatch(self, order: Order) -> None:
        for message in order.outbox():
            if isinstance(message, Event):
                self.events.publish(message)
            else:
                self.commands.send(message)
