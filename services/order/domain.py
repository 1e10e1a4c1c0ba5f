"""The order saga as a pure state machine: reserve stock -> charge payment -> confirm.

Each transition returns nothing but changes the order; what the order must say to the world in its
current state (commands, events, the timer of its step) is derived from that state alone, with
deterministic ids, so re-sending it after a crash or a redelivery is always safe.

Stock is partitioned by SKU: an order's lines are reserved per partition, all or none. A step
waits for a reply from each partition it asked (`awaiting`); a partition that refuses to reserve
holds nothing, and every other one is released before the order is cancelled.

A compensation is done when its effect is recorded, not when its command was sent: a refund is
due until the payment worker says what it refunded, a release until each partition gave the units
back (`cancelled` means the units are back). Until then the order asks again, with backoff, for as
long as it takes. A commit is followed up by inventory, which owns the hold: a reservation still
holding units long after it was made makes it ask the order (`StockStillHeld`), which answers
from its state (`commands_for_held_stock`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.contracts import saga
from shared.contracts.base import Message, derive_id
from shared.contracts.events import Event, EventCustomer, EventLine, OrderRefunded, OrderStatusChanged
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
    # Only in the history: the payment worker refunded what was captured (the entry's amount).
    REFUNDED = "refunded"


class CancelReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    UNKNOWN_SKU = "unknown_sku"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_FAILED = "payment_failed"
    TIMEOUT = "timeout"


REJECTED_INVALID = "invalid"

# Steps whose commands still need the payment token: it is forgotten as soon as the order leaves them.
TOKEN_STEPS = (SagaStep.RESERVING_STOCK, SagaStep.CHARGING_PAYMENT)


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
    # None once the customer was forgotten (`orderflow customers forget`): the id alone stays.
    name: str | None
    email: str | None
    phone: str | None = None
    address: str | None = None

    @property
    def forgotten(self) -> bool:
        return self.name is None and self.email is None

    def forget(self) -> Customer:
        """The same customer without its personal data."""
        return Customer(self.customer_id, None, None)


def event_customer(customer: Customer | None) -> EventCustomer | None:
    """The customer as events name it; none once forgotten (there is no one left to tell)."""
    return None if customer is None or customer.forgotten else EventCustomer(**vars(customer))


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    status: OrderStatus
    step: SagaStep
    cause: str
    reason: str | None = None
    amount: int | None = None  # of a refund


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
    # A charge was asked for and the saga did not finish it: whatever was captured under the
    # order's idempotency key must be refunded (or the key voided), and the outcome recorded.
    refund_required: bool = False
    # What the payment worker refunded once it is certain (0: nothing had been captured).
    refunded: int | None = None
    # What the gateway captured, and its charge id, as the payment worker reported them.
    captured: int | None = None
    charge_id: str | None = None
    # Since when a compensation (a release or a refund) has been outstanding.
    due_since: datetime | None = None
    # How often the current step's commands were sent (a step that times out in releasing_stock
    # sends them again), and how often the follow-ups of a finished order were asked again.
    attempts: int = 1
    follow_ups: int = 0
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

    def forget_customer(self) -> bool:
        """Erase the customer's personal data, keeping its id, the lines and the amounts; False if
        there is none to erase."""
        if self.customer is None or self.customer.forgotten:
            return False
        self.customer = self.customer.forget()
        return True

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
        self.captured, self.charge_id = reply.amount, reply.charge_id
        self._finish(OrderStatus.CONFIRMED, None, now, reply.message_id)

    def payment_declined(self, reply: saga.PaymentDeclined, now: datetime) -> None:
        self._compensate(CancelReason.PAYMENT_DECLINED, now, reply.message_id)

    def payment_failed(self, reply: saga.PaymentFailed, now: datetime) -> None:
        # A failure may hide a capture the gateway made: the refund voids or refunds by key.
        self._compensate(CancelReason.PAYMENT_FAILED, now, reply.message_id, refund=True)

    def payment_refunded(self, reply: saga.PaymentRefunded, now: datetime) -> None:
        """The payment worker undid the payment: refunded what was captured, or voided it."""
        if not self.refund_required or self.refunded is not None:
            raise TransitionNotAllowed(f"order {self.order_id} waits for no refund")
        self.refunded = reply.amount
        if reply.amount:
            self.history.append(
                HistoryEntry(now, self.status, SagaStep.REFUNDED, reply.message_id, self.reason, reply.amount)
            )
        self._outstanding_since(now, reply.message_id)

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
        if self.step is SagaStep.RELEASING_STOCK:
            # There is nothing to give up: the release must happen, so it is asked for again.
            self._record(now, cause, again=True)
            return
        if self.step is SagaStep.RESERVING_STOCK:
            self.awaiting = [partition for partition in self.partitions if partition not in self.refused]
        else:
            self.awaiting = self.partitions
            self.refund_required = True
        self.step, self.reason = SagaStep.RELEASING_STOCK, CancelReason.TIMEOUT
        self._record(now, cause)

    def follow_up(self, now: datetime) -> None:
        """The follow-ups of a finished order are still outstanding: ask for them again."""
        if self.status is OrderStatus.PENDING or not self.has_dues:
            raise TransitionNotAllowed(f"order {self.order_id} has nothing to follow up")
        self.follow_ups += 1
        self.last_cause = self._id(f"follow-up/{self.follow_ups}")
        self.deadline = now + self.timer_delay()

    @property
    def refund_due(self) -> bool:
        return self.refund_required and self.refunded is None

    @property
    def has_dues(self) -> bool:
        """A finished order still owes a compensation (a pending order's release is a step of its own)."""
        return self.refund_due

    def timer_delay(self) -> timedelta:
        """How long the timer of the current state waits: the step timeout while pending, then,
        for follow-ups, doubling with each one up to a bound."""
        if self.status is OrderStatus.PENDING:
            return self.step_timeout
        return (
            self.step_timeout * saga.FOLLOW_UP_BACKOFF[min(self.follow_ups, len(saga.FOLLOW_UP_BACKOFF) - 1)]
        )

    def compensations_for_late_capture(self) -> list[Message]:
        """Whatever was captured under the order's key after the saga gave up is refunded."""
        return [self._refund()] if self.refund_due else []

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
        return [self._release(partition) for partition in self.awaiting]

    def deadline_timer(self) -> saga.StepDeadline:
        """The timer of the current step, or of a finished order's follow-ups: it fires after
        `timer_delay`, and means nothing once the order has moved on (its version changed)."""
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
        else:
            messages.append(self._event(f"order.{self.status.value}"))
            if self.refunded:
                messages.append(self.refunded_event())
            if self.status is OrderStatus.CONFIRMED:
                messages.extend(self._commit(partition) for partition in self.partitions)
            messages.extend(self.due_commands())
            if self.has_dues:
                messages.append(self.deadline_timer())
        # Events first: once a command is out, its reply can move the order on before a redelivery
        # would say this state again, so an event sent after it could be lost for good.
        return sorted(messages, key=lambda message: not isinstance(message, Event))

    def due_commands(self) -> list[Message]:
        """The commands of a finished order's outstanding compensations: a refund."""
        return self.compensations_for_late_capture()

    def commands_for_held_stock(self, partition: int) -> list[Message]:
        """Inventory still holds units for the order in `partition`: what should become of them.
        Sold if the order is confirmed, given back if it was cancelled (or is giving them back);
        nothing while the saga is still deciding (its own deadline sees to it)."""
        if self.status is OrderStatus.CONFIRMED:
            return [self._commit(partition)]
        if self.status is not OrderStatus.PENDING or self.step is SagaStep.RELEASING_STOCK:
            return [self._release(partition)]
        return []

    def accepted_event(self) -> OrderStatusChanged:
        """`order.accepted`: said again whenever the submission arrives again, in case it was lost."""
        return self._event("order.accepted", status=OrderStatus.PENDING)

    def refunded_event(self) -> OrderRefunded:
        """`order.refunded`: the money captured for the order went back to the customer."""
        assert self.refunded, "only a refund of money is announced"
        entry = next(entry for entry in self.history if entry.step is SagaStep.REFUNDED)
        return OrderRefunded(
            event_id=self._id("order.refunded"),
            occurred_at=entry.at,
            order_id=self.order_id,
            status=self.status.value,
            reason=self.reason,
            amount=to_decimal_string(self.refunded, self.currency),
            currency=self.currency,
            payment_method=self.payment_method,
            customer=event_customer(self.customer),
        )

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

    def _compensate(self, reason: CancelReason, now: datetime, cause: str, refund: bool = False) -> None:
        self._expect(SagaStep.CHARGING_PAYMENT)
        self.step = SagaStep.RELEASING_STOCK
        self.reason = reason
        self.awaiting = self.partitions
        self.refund_required = self.refund_required or refund
        self._record(now, cause)

    def _finish(self, status: OrderStatus, reason: CancelReason | None, now: datetime, cause: str) -> None:
        self.status = status
        self.step = SagaStep.DONE
        self.reason = reason
        self.awaiting = []
        self._record(now, cause)

    def _record(self, now: datetime, cause: str, again: bool = False) -> None:
        if self.status is not OrderStatus.PENDING or self.step not in TOKEN_STEPS:
            self.payment_token = None
        self.attempts = self.attempts + 1 if again else 1
        self.history.append(HistoryEntry(now, self.status, self.step, cause, self.reason))
        self._outstanding_since(now, cause)

    def _outstanding_since(self, now: datetime, cause: str) -> None:
        """After a change: what is outstanding, since when, and when the order's timer fires."""
        self.last_cause = cause
        outstanding = self.has_dues or self.step is SagaStep.RELEASING_STOCK
        self.due_since = (self.due_since or now) if outstanding else None
        waiting = self.status is OrderStatus.PENDING or self.has_dues
        self.deadline = now + self.timer_delay() if waiting else None

    def _release(self, partition: int) -> saga.ReleaseStock:
        return saga.ReleaseStock(**self._of_partition("release-stock", partition))

    def _commit(self, partition: int) -> saga.CommitStock:
        return saga.CommitStock(**self._of_partition("commit-stock", partition))

    def _of_partition(self, command: str, partition: int) -> dict[str, Any]:
        """The fields of a command about the order's SKUs in one partition."""
        skus = [line.sku for line in self._of(partition)]
        return {
            "message_id": self._id(f"{command}/{partition}"),
            "order_id": self.order_id,
            "partition": partition,
            "skus": skus,
        }

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
            customer=event_customer(self.customer),
            items=[
                EventLine(
                    sku=line.sku,
                    quantity=line.quantity,
                    unit_price=_money(line.unit_price, self.currency),
                    line_total=_money(line.line_total, self.currency),
                )
                for line in self.lines
            ],
            total=_money(self.total, self.currency),
            currency=self.currency,
            payment_method=self.payment_method,
        )


def _money(minor: int | None, currency: str) -> str | None:
    return None if minor is None else to_decimal_string(minor, currency)
