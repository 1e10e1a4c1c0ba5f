"""Order use cases: take in submissions and move each order's saga on as replies arrive."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from services.order.domain import Order, OrderStatus, SagaStep, TransitionNotAllowed
from services.order.intake import InvalidSubmission, parse_submission
from services.order.store import OrderRepository
from shared import metrics
from shared.contracts import saga
from shared.contracts.base import OrderMessage, utcnow
from shared.contracts.events import Event
from shared.errors import PermanentError, TransientError
from shared.logs import message_context
from shared.messaging.exchanges import Delivery
from shared.messaging.ports import CommandSender, EventSink

log = logging.getLogger(__name__)

R = TypeVar("R", bound=OrderMessage)


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
        step_timeout: timedelta = timedelta(seconds=30),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.orders = orders
        self.commands = commands
        self.events = events
        self.currency = currency
        self.max_message_bytes = max_message_bytes
        self.step_timeout = step_timeout
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
            self._start(Order.accept(submission, self.currency, self.clock(), self.step_timeout))

    def _start(self, order: Order) -> None:
        if self.orders.add(order):
            log.info("order %s is %s", order.order_id, order.status)
            status = "accepted" if order.status is OrderStatus.PENDING else order.status.value
            metrics.ORDERS.labels(status, order.reason or "").inc()
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
        order = self._load(reply.order_id)
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
            self._late(reply, order, e)
            return
        self._save(order, type(reply).__name__)

    def _late(self, reply: OrderMessage, order: Order, why: TransitionNotAllowed) -> None:
        """A reply that does not fit the step: a duplicate, or one that came after a timeout."""
        late_capture = isinstance(reply, saga.PaymentCaptured)
        compensations = order.compensations_for_late_capture() if late_capture else []
        if compensations:
            log.warning("order %s: payment captured after the saga gave up; refunding", order.order_id)
        else:
            log.info("ignoring %s: %s", type(reply).__name__, why)
        for message in compensations:
            self.commands.send(message)

    # Deadlines --------------------------------------------------------------------------------

    def expire_overdue(self) -> int:
        """Time out every pending order past its deadline; returns how many were moved on."""
        expired = 0
        overdue_orders = self.orders.overdue(self.clock())
        metrics.SAGAS_OVERDUE.set(len(overdue_orders))
        metrics.SAGAS_PENDING.set(self.orders.count_pending())
        for overdue in overdue_orders:
            with message_context(message_id=None, order_id=overdue.order_id):
                order = self._load(overdue.order_id)
                if order is None or not order.is_overdue(self.clock()):
                    continue
                order.time_out(self.clock())
                try:
                    self._save(order, "timeout")
                except ConcurrentUpdate:
                    continue  # a reply or another worker moved it first
                expired += 1
        return expired

    def resume_pending(self) -> int:
        """After a restart: say again what every pending order is waiting on (receivers dedupe)."""
        pending = self.orders.pending()
        for order in pending:
            self._dispatch(order)
        return len(pending)

    # Internals --------------------------------------------------------------------------------

    def _load(self, order_id: str) -> Order | None:
        order = self.orders.get(order_id)
        if order is None:
            return None
        unfinished = self.orders.unfinished_transition(order)
        if unfinished is not None:
            # Its winner died between claiming the transition and writing it: finish for it.
            log.warning("order %s: finishing an interrupted transition", order_id)
            self.orders.finish_transition(unfinished)
            _observe_transition(unfinished)
            self._dispatch(unfinished)
            return unfinished
        return order

    def _save(self, order: Order, cause: str) -> None:
        if not self.orders.save(order):
            raise ConcurrentUpdate(f"order {order.order_id} changed while handling {cause}")
        log.info("order %s is %s (%s)", order.order_id, order.status, order.step)
        _observe_transition(order)
        self._dispatch(order)

    def _dispatch(self, order: Order) -> None:
        for message in order.outbox():
            if isinstance(message, Event):
                self.events.publish(message)
            else:
                self.commands.send(message)


def _observe_transition(order: Order) -> None:
    """Business metrics of the transition just saved: the step left, compensations, outcomes."""
    before, now = order.history[-2], order.history[-1]
    metrics.STEP_SECONDS.labels(before.step.value).observe((now.at - before.at).total_seconds())
    if now.step is SagaStep.RELEASING_STOCK and before.step is not SagaStep.RELEASING_STOCK:
        metrics.COMPENSATIONS.labels(order.reason or "").inc()
    if order.status in (OrderStatus.CONFIRMED, OrderStatus.CANCELLED):
        metrics.ORDERS.labels(order.status.value, order.reason or "").inc()
        metrics.SAGA_SECONDS_HISTOGRAM.labels(order.status.value).observe(
            (now.at - order.created_at).total_seconds()
        )
