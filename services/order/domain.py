"""The order saga as a pure state machine: reserve stock -> charge payment -> confirm.

Each transition returns nothing but changes the order; what the order must say to the world in its
current state (commands, events, the timer of its step) is derived from that state alone, with
deterministic ids, so re-sending it after a crash or a redelivery is always safe.

Stock is partitioned by SKU: an order's lines are reserved per partition, all or none. A step
waits for a reply from each partition it asked (`awaiting`); a partition that refuses to reserve
holds nothing, and every other one is released before the order is cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from shared.contracts import saga
from shared.contracts.base import Message, derive_id
from shared.contracts.events import Event, EventCustomer, EventLine, OrderStatusChanged
from shared.contracts.intake import OrderSubmission, units_per_sku
from shared.money import to_decimal_string


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class SagaStep(StrEnum):
    RESERVING_STOCK = "reserving_stock"
    CHARGING_PAYMENT = "charging_payment"
    RELEASING_STOCK = "releasing_stock"
    DONE = "done"


class CancelReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    UNKNOWN_SKU = "unknown_sku"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_FAILED = "payment_failed"
    TIMEOUT = "timeout"


REJECTED_INVALID = "invalid"


# The cause of an order's first state: any resubmission of the order id is the same cause.
def intake_cause(order_id: str) -> str:
    return derive_id(order_id, "intake")


class TransitionNotAllowed(Exception):
    """The message does not fit the order's current step: a duplicate or a stale reply."""


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: int | None = None
    line_total: int | None = None
    partition: int = 0  # the inventory partition that owns the SKU


@dataclass(frozen=True)
class Customer:
    customer_id: str
    name: str
    email: str


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    status: OrderStatus
    step: SagaStep
    cause: str
    reason: str | None = None


@dataclass
class Order:
    order_id: str
    customer: Customer | None
    lines: list[Line]
    payment_method: str | None
    currency: str
    created_at: datetime
    status: OrderStatus = OrderStatus.PENDING
    step: SagaStep = SagaStep.RESERVING_STOCK
    reason: str | None = None
    errors: list[str] = field(default_factory=list)
    total: int | None = None
    # The gateway token is kept only while a charge may still be sent, then forgotten.
    payment_token: str | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    # Id of the message that caused the current state: its redelivery re-sends what this state says.
    last_cause: str = ""
    # A pending step gets no reply after this: the saga compensates and cancels with `timeout`.
    step_timeout: timedelta = timedelta(seconds=30)
    deadline: datetime | None = None
    # A charge was asked for and the saga did not finish it: whatever was captured must be refunded.
    refund_required: bool = False
    # Inventory partitions the current step still waits for a reply from.
    awaiting: list[int] = field(default_factory=list)
    # Partitions that refused to reserve: they hold nothing for the order.
    refused: list[int] = field(default_factory=list)
    version: int = 0

    # Creation ---------------------------------------------------------------------------------

    @classmethod
    def accept(
        cls,
        submission: OrderSubmission,
        currency: str,
        now: datetime,
        step_timeout: timedelta | None = None,
        partition_of: Callable[[str], int] = lambda sku: 0,
    ) -> Order:
        """A valid submission becomes a pending order whose saga starts by reserving stock."""
        units = units_per_sku((item.sku, item.quantity) for item in submission.items)
        lines = [Line(sku, quantity, partition=partition_of(sku)) for sku, quantity in units.items()]
        order = cls(
            step_timeout=step_timeout or timedelta(seconds=30),
            order_id=submission.order_id,
            customer=Customer(**submission.customer.model_dump()),
            lines=lines,
            payment_method=submission.payment.method.value,
            payment_token=submission.payment.token,
            currency=currency,
            created_at=now,
        )
        order.awaiting = order.partitions
        order._record(now, intake_cause(order.order_id))
        return order

    @classmethod
    def reject(cls, order_id: str, errors: list[str], currency: str, now: datetime) -> Order:
        """An invalid submission whose order id could be read is recorded as rejected."""
        order = cls(
            order_id=order_id,
            customer=None,
            lines=[],
            payment_method=None,
            currency=currency,
            created_at=now,
            status=OrderStatus.REJECTED,
            step=SagaStep.DONE,
            reason=REJECTED_INVALID,
            errors=errors,
        )
        order._record(now, intake_cause(order_id))
        return order

    def copy(self) -> Order:
        """An independent copy: its lists are new, the values in them immutable."""
        return replace(
            self,
            lines=list(self.lines),
            errors=list(self.errors),
            history=list(self.history),
            awaiting=list(self.awaiting),
            refused=list(self.refused),
        )

    # Saga transitions -------------------------------------------------------------------------

    @property
    def partitions(self) -> list[int]:
        """The inventory partitions that own the order's SKUs."""
        return sorted({line.partition for line in self.lines})

    def stock_reserved(self, reply: saga.StockReserved, now: datetime) -> None:
        self._expect_reply(SagaStep.RESERVING_STOCK, reply.partition)
        priced = {line.sku: line for line in reply.lines}
        self.lines = [
            replace(line, unit_price=priced[line.sku].unit_price, line_total=priced[line.sku].line_total)
            if line.sku in priced
            else line
            for line in self.lines
        ]
        self.awaiting = [partition for partition in self.awaiting if partition != reply.partition]
        if not self.awaiting:
            self.total = sum(line.line_total or 0 for line in self.lines)
            self.step = SagaStep.CHARGING_PAYMENT
        self._record(now, reply.message_id)

    def stock_reservation_failed(self, reply: saga.StockReservationFailed, now: datetime) -> None:
        self._expect_reply(SagaStep.RESERVING_STOCK, reply.partition)
        self.refused = [*self.refused, reply.partition]
        may_hold = [partition for partition in self.partitions if partition not in self.refused]
        if may_hold:
            # All or none: what other partitions reserved (or may still reserve) is given back first.
            self.step, self.reason, self.awaiting = SagaStep.RELEASING_STOCK, reply.reason, may_hold
            self._record(now, reply.message_id)
        else:
            self._finish(OrderStatus.CANCELLED, CancelReason(reply.reason), now, reply.message_id)

    def payment_captured(self, reply: saga.PaymentCaptured, now: datetime) -> None:
        self._expect(SagaStep.CHARGING_PAYMENT)
        self._finish(OrderStatus.CONFIRMED, None, now, reply.message_id)

    def payment_declined(self, reply: saga.PaymentDeclined, now: datetime) -> None:
        self._compensate(CancelReason.PAYMENT_DECLINED, now, reply.message_id)

    def payment_failed(self, reply: saga.PaymentFailed, now: datetime) -> None:
        self._compensate(CancelReason.PAYMENT_FAILED, now, reply.message_id)

    def stock_released(self, reply: saga.StockReleased, now: datetime) -> None:
        self._expect_reply(SagaStep.RELEASING_STOCK, reply.partition)
        assert self.reason is not None, "a saga releases stock only with a reason to cancel"
        self.awaiting = [partition for partition in self.awaiting if partition != reply.partition]
        if self.awaiting:
            self._record(now, reply.message_id)
        else:
            self._finish(OrderStatus.CANCELLED, CancelReason(self.reason), now, reply.message_id)

    def is_overdue(self, now: datetime) -> bool:
        return self.status is OrderStatus.PENDING and self.deadline is not None and now >= self.deadline

    def time_out(self, now: datetime) -> None:
        """No reply came in time. Compensate what the step may have done; a release is asked again."""
        if self.status is not OrderStatus.PENDING:
            raise TransitionNotAllowed(f"order {self.order_id} is {self.status}, not pending")
        cause = self._id(f"timeout/{len(self.history)}")
        if self.step is SagaStep.RESERVING_STOCK:
            self.step, self.reason = SagaStep.RELEASING_STOCK, CancelReason.TIMEOUT
            self.awaiting = [partition for partition in self.partitions if partition not in self.refused]
        elif self.step is SagaStep.CHARGING_PAYMENT:
            self.step, self.reason = SagaStep.RELEASING_STOCK, CancelReason.TIMEOUT
            self.awaiting = self.partitions
            self.refund_required = True
            self.payment_token = None
        # In releasing_stock there is nothing to give up: the release must happen, so it is re-sent.
        self._record(now, cause)

    def compensations_for_late_capture(self) -> list[Message]:
        """A charge captured after the saga gave up on it is refunded."""
        return [self._refund()] if self.refund_required else []

    # What the current state says to the world ------------------------------------------------

    def awaited(self) -> list[Message]:
        """The commands whose replies the current step waits for."""
        if self.status is not OrderStatus.PENDING:
            return []
        if self.step is SagaStep.RESERVING_STOCK:
            return [
                saga.ReserveStock(
                    message_id=self._id(f"reserve-stock/{partition}"),
                    order_id=self.order_id,
                    partition=partition,
                    lines=[
                        saga.StockLine(sku=line.sku, quantity=line.quantity) for line in self._of(partition)
                    ],
                )
                for partition in self.awaiting
            ]
        if self.step is SagaStep.CHARGING_PAYMENT:
            assert self.total is not None and self.payment_method and self.payment_token
            return [
                saga.ChargePayment(
                    message_id=self._id("charge-payment"),
                    order_id=self.order_id,
                    amount=self.total,
                    currency=self.currency,
                    method=self.payment_method,
                    token=self.payment_token,
                )
            ]
        return [
            saga.ReleaseStock(
                message_id=self._id(f"release-stock/{partition}"),
                order_id=self.order_id,
                partition=partition,
                skus=[line.sku for line in self._of(partition)],
            )
            for partition in self.awaiting
        ]

    def deadline_timer(self) -> saga.StepDeadline:
        """The timer of the current step: it fires after the step timeout, and means nothing once
        the order has moved on (its version changed)."""
        return saga.StepDeadline(
            message_id=self._id(f"deadline/{self.version}"), order_id=self.order_id, version=self.version
        )

    def outbox(self) -> list[Message | Event]:
        """The commands and events the current state implies; re-sending them is harmless."""
        messages: list[Message | Event] = []
        if self.status is OrderStatus.PENDING:
            if self.step is SagaStep.RESERVING_STOCK:
                messages.append(self.accepted_event())
            messages.extend(self.awaited())
            if self.step is SagaStep.RELEASING_STOCK:
                messages.extend(self.compensations_for_late_capture())
            messages.append(self.deadline_timer())
        elif self.status is OrderStatus.CONFIRMED:
            messages.append(self._event("order.confirmed"))
            messages.extend(
                saga.CommitStock(
                    message_id=self._id(f"commit-stock/{partition}"),
                    order_id=self.order_id,
                    partition=partition,
                    skus=[line.sku for line in self._of(partition)],
                )
                for partition in self.partitions
            )
        elif self.status is OrderStatus.CANCELLED:
            messages.append(self._event("order.cancelled"))
            messages.extend(self.compensations_for_late_capture())
        elif self.status is OrderStatus.REJECTED:
            messages.append(self._event("order.rejected"))
        # Events first: once a command is out, its reply can move the order on before a redelivery
        # would say this state again, so an event sent after it could be lost for good.
        return sorted(messages, key=lambda message: not isinstance(message, Event))

    def accepted_event(self) -> OrderStatusChanged:
        """`order.accepted`: said again whenever the submission arrives again, in case it was lost."""
        return self._event("order.accepted", status=OrderStatus.PENDING)

    # Internals --------------------------------------------------------------------------------

    def _expect(self, step: SagaStep) -> None:
        if self.status is not OrderStatus.PENDING or self.step is not step:
            raise TransitionNotAllowed(f"order {self.order_id} is {self.status}/{self.step}, not at {step}")

    def _expect_reply(self, step: SagaStep, partition: int) -> None:
        self._expect(step)
        if partition not in self.awaiting:
            raise TransitionNotAllowed(f"order {self.order_id} is not waiting for partition {partition}")

    def _of(self, partition: int) -> list[Line]:
        return [line for line in self.lines if line.partition == partition]

    def _compensate(self, reason: CancelReason, now: datetime, cause: str) -> None:
        self._expect(SagaStep.CHARGING_PAYMENT)
        self.step = SagaStep.RELEASING_STOCK
        self.reason = reason
        self.awaiting = self.partitions
        self.payment_token = None
        self._record(now, cause)

    def _finish(self, status: OrderStatus, reason: CancelReason | None, now: datetime, cause: str) -> None:
        self.status = status
        self.step = SagaStep.DONE
        self.reason = reason
        self.awaiting = []
        self.payment_token = None
        self._record(now, cause)

    def _record(self, now: datetime, cause: str) -> None:
        self.history.append(HistoryEntry(now, self.status, self.step, cause, self.reason))
        self.last_cause = cause
        self.deadline = now + self.step_timeout if self.status is OrderStatus.PENDING else None

    def _refund(self) -> saga.RefundPayment:
        return saga.RefundPayment(message_id=self._id("refund-payment"), order_id=self.order_id)

    def _id(self, what: str) -> str:
        return derive_id(self.order_id, what)

    def _event(self, event_type: str, status: OrderStatus | None = None) -> OrderStatusChanged:
        status = status or self.status
        entered = next(entry.at for entry in self.history if entry.status is status)
        return OrderStatusChanged(
            event_id=self._id(event_type),
            type=event_type,  # type: ignore[arg-type]
            occurred_at=entered,
            order_id=self.order_id,
            status=status.value,
            reason=self.reason if status is self.status else None,
            errors=self.errors,
            customer=EventCustomer(**vars(self.customer)) if self.customer else None,
            items=[
                EventLine(
                    sku=line.sku,
                    quantity=line.quantity,
                    unit_price=_money(line.unit_price),
                    line_total=_money(line.line_total),
                )
                for line in self.lines
            ],
            total=_money(self.total),
            currency=self.currency,
            payment_method=self.payment_method,
        )


def _money(minor: int | None) -> str | None:
    return None if minor is None else to_decimal_string(minor)
