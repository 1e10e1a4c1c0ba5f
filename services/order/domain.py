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

After confirmation the order ships and completes, and requests change it (services/order/changes.py):
a cancel, an amendment, a return, an exchange run one at a time, each as a small saga of its own;
requests that arrive while the order's saga or a change is under way wait their turn (`queued`).
Every request is recorded with what became of it (`requests`), so a redelivery changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from services.order.changes import (
    Change,
    ChangeKind,
    ChangeRefused,
    ChangeStep,
    Line,
    RequestRecord,
    planned,
    priced,
    refund_parts,
)
from shared.contracts import saga
from shared.contracts.base import Message, derive_id
from shared.contracts.events import (
    Event,
    EventCustomer,
    EventLine,
    OrderChanged,
    OrderRefunded,
    OrderRequestRejected,
    OrderStatusChanged,
)
from shared.contracts.intake import OrderSubmission, units_per_sku
from shared.contracts.requests import CaseSettled, OrderRequest
from shared.money import to_decimal_string


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class SagaStep(StrEnum):
    RESERVING_STOCK = "reserving_stock"
    CHARGING_PAYMENT = "charging_payment"
    RELEASING_STOCK = "releasing_stock"
    DONE = "done"
    # Only in the history: the payment worker refunded what was captured (the entry's amount).
    REFUNDED = "refunded"
    # Only in the history: a change (its kind is the entry's reason) was made, moving the entry's
    # amount (charged if positive, refunded if negative).
    CHANGED = "changed"


class CancelReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    UNKNOWN_SKU = "unknown_sku"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_FAILED = "payment_failed"
    TIMEOUT = "timeout"


REJECTED_INVALID = "invalid"

# Requests waiting for the order's saga or change to finish; more are refused as `busy`.
MAX_QUEUED = 10

# Steps whose commands still need the payment token: it is forgotten as soon as the order leaves them.
TOKEN_STEPS = (SagaStep.RESERVING_STOCK, SagaStep.CHARGING_PAYMENT)


# The cause of an order's first state: any resubmission of the order id is the same cause.
def intake_cause(order_id: str) -> str:
    return derive_id(order_id, "intake")


class TransitionNotAllowed(Exception):
    """The message does not fit the order's current step: a duplicate or a stale reply."""


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
    # After confirmation: the change under way, the requests waiting for it, and what became of
    # every request taken.
    change: Change | None = None
    queued: list[OrderRequest] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    # Money of changes: what each change's charge captured (by its key), and what changes
    # refunded of each charge (by the charge's key: the order's id, or a change's).
    further_charges: dict[str, int] = field(default_factory=dict)
    refunded_of: dict[str, int] = field(default_factory=dict)
    carrier: str | None = None
    tracking: str | None = None
    version: int = 0
    # Not stored: which inventory partition owns a SKU (the handlers know the deployment's).
    partition_of: Callable[[str], int] = field(default=lambda sku: 0, repr=False, compare=False)

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
            partition_of=partition_of,
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
            change=self.change.copy() if self.change else None,
            queued=list(self.queued),
            requests=list(self.requests),
            further_charges=dict(self.further_charges),
            refunded_of=dict(self.refunded_of),
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
        if reply.hold is not None:
            self._change_reserved(reply, now)
            return
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
        if reply.hold is not None:
            change = self._expect_change(ChangeStep.RESERVING, f"stock/{reply.partition}", hold=reply.hold)
            change.refused = [*change.refused, reply.partition]
            self._undo_change(
                reply.reason, f"not enough stock of {', '.join(reply.skus)}", now, reply.message_id
            )
            return
        self._expect_reply(SagaStep.RESERVING_STOCK, reply.partition)
        self.refused = [*self.refused, reply.partition]
        may_hold = [partition for partition in self.partitions if partition not in self.refused]
        if may_hold:
            # All or none: what other partitions reserved (or may still reserve) is given back first.
            self.step, self.reason, self.awaiting = SagaStep.RELEASING_STOCK, reply.reason, may_hold
            self._record(now, reply.message_id)
        else:
            self._finish(OrderStatus.CANCELLED, reply.reason, now, reply.message_id)

    def payment_captured(self, reply: saga.PaymentCaptured, now: datetime) -> None:
        if reply.key is not None:
            change = self._expect_change(ChangeStep.CHARGING, "payment", key=reply.key)
            self.further_charges = {**self.further_charges, reply.key: reply.amount}
            change.payment_token = None
            self._settle_change(now, reply.message_id)
            return
        self._expect(SagaStep.CHARGING_PAYMENT)
        self.captured, self.charge_id = reply.amount, reply.charge_id
        self._finish(OrderStatus.CONFIRMED, None, now, reply.message_id)

    def payment_declined(self, reply: saga.PaymentDeclined, now: datetime) -> None:
        if reply.key is not None:
            change = self._expect_change(ChangeStep.CHARGING, "payment", key=reply.key)
            change.charge_asked = False  # declined: nothing was captured, nothing to undo
            self._undo_change(CancelReason.PAYMENT_DECLINED, reply.detail, now, reply.message_id)
            return
        self._compensate(CancelReason.PAYMENT_DECLINED, now, reply.message_id)

    def payment_failed(self, reply: saga.PaymentFailed, now: datetime) -> None:
        # A failure may hide a capture the gateway made: the refund voids or refunds by key.
        if reply.key is not None:
            self._expect_change(ChangeStep.CHARGING, "payment", key=reply.key)
            self._undo_change(CancelReason.PAYMENT_FAILED, reply.detail, now, reply.message_id)
            return
        self._compensate(CancelReason.PAYMENT_FAILED, now, reply.message_id, refund=True)

    def payment_refunded(self, reply: saga.PaymentRefunded, now: datetime) -> None:
        """The payment worker undid the payment: refunded what was captured, or voided it. Or,
        for a change, refunded part of the order's money, or undid the change's own charge."""
        if reply.key is not None or reply.refund_key is not None:
            self._change_refunded(reply, now)
            return
        if not self.refund_required or self.refunded is not None:
            raise TransitionNotAllowed(f"order {self.order_id} waits for no refund")
        self.refunded = reply.amount
        if reply.amount:
            self.history.append(
                HistoryEntry(now, self.status, SagaStep.REFUNDED, reply.message_id, self.reason, reply.amount)
            )
        self._outstanding_since(now, reply.message_id)

    def stock_released(self, reply: saga.StockReleased, now: datetime) -> None:
        if reply.hold is not None:
            self._expect_change(ChangeStep.UNDOING, f"stock/{reply.partition}", hold=reply.hold)
            self._change_heard(f"stock/{reply.partition}", now, reply.message_id)
            return
        self._expect_reply(SagaStep.RELEASING_STOCK, reply.partition)
        assert self.reason is not None, "a saga releases stock only with a reason to cancel"
        self.awaiting = [partition for partition in self.awaiting if partition != reply.partition]
        if self.awaiting:
            self._record(now, reply.message_id)
        else:
            self._finish(OrderStatus.CANCELLED, self.reason, now, reply.message_id)

    def stock_returned(self, reply: saga.StockReturned, now: datetime) -> None:
        change = self._expect_change(ChangeStep.SETTLING, f"stock/{reply.partition}")
        if reply.returned != self._return(change, reply.partition).message_id:
            raise TransitionNotAllowed(f"order {self.order_id}: {reply.returned} is not this change's")
        self._change_heard(f"stock/{reply.partition}", now, reply.message_id)

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
        """The follow-ups of a finished order are still outstanding: ask for them again. A change
        that heard nothing while it could still be refused is refused (`timeout`)."""
        if self.status is OrderStatus.PENDING or not self.has_dues:
            raise TransitionNotAllowed(f"order {self.order_id} has nothing to follow up")
        if self.change is not None and self.change.step in (ChangeStep.RESERVING, ChangeStep.CHARGING):
            self._undo_change(
                CancelReason.TIMEOUT, "no answer in time", now, self._id(f"timeout/{self.version}")
            )
            return
        self.follow_ups += 1
        self.last_cause = self._id(f"follow-up/{self.follow_ups}")
        self.deadline = now + self.timer_delay()

    @property
    def refund_due(self) -> bool:
        return self.refund_required and self.refunded is None

    @property
    def has_dues(self) -> bool:
        """A finished order still owes a compensation, or a change is under way (a pending order's
        release is a step of its own)."""
        return self.refund_due or self.change is not None

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

    def outbox(self, causes: Collection[str] | None = None) -> list[Message | Event]:
        """The commands and events the current state implies (and the events of the requests that
        `causes`, by default the last transition's, settled); re-sending them is harmless."""
        messages: list[Message | Event] = []
        if self.status is OrderStatus.PENDING:
            if self.step is SagaStep.RESERVING_STOCK:
                messages.append(self.accepted_event())
            messages.extend(self.awaited())
            if self.step is SagaStep.RELEASING_STOCK:
                messages.extend(self.compensations_for_late_capture())
            messages.extend(self.settled_requests(causes))
            messages.append(self.deadline_timer())
        else:
            # What the last transitions said first: the statuses they went through, in turn.
            messages.extend(self.news(causes))
            messages.append(self._event(f"order.{self.status.value}"))
            if self.refunded:
                messages.append(self.refunded_event())
            if self.status is OrderStatus.CONFIRMED:
                messages.extend(self._commit(partition) for partition in self.partitions)
            if self.has_dues:
                messages.append(self.deadline_timer())
        return _said_in_order(messages)

    def news(self, causes: Collection[str] | None = None) -> list[Message | Event]:
        """What a finished order's transitions caused by `causes` (by default the last one's)
        say: the events of the statuses they entered and of the requests they settled, and the
        commands of the step a change entered."""
        causes = causes or (self.last_cause,)
        messages: list[Message | Event] = []
        for entry in self.history:
            if (
                entry.cause in causes
                and entry.status is not OrderStatus.PENDING
                and entry.step is SagaStep.DONE
            ):
                # A status entered (a saga's end, a request done; several, when requests that
                # waited for the saga were carried out as it ended).
                messages.append(self._event(f"order.{entry.status.value}", status=entry.status))
                if entry.status is OrderStatus.CONFIRMED:
                    messages.extend(self._commit(partition) for partition in self.partitions)
        messages.extend(self.settled_requests(causes))
        messages.extend(self.compensations_for_late_capture())
        if self.change is not None and self.change.entered_by in causes:
            # Entering a step says its commands; a part of it done says nothing more (the
            # change's timer asks again for what is still missing).
            messages.extend(self._change_commands())
        return _said_in_order(messages)

    def followed_up(self) -> list[Message | Event]:
        """What a follow-up says: what is still due, and what it settled (a change it refused)."""
        return _said_in_order([*self.news(), *self.due_commands()])

    def said_again(self, message_id: str) -> list[Message | Event]:
        """What the handling of `message_id` said of the requests it settled, or of the request
        it is: for a duplicate, whatever the order has moved on to since."""
        return _said_in_order(
            [
                message
                for record in self.requests
                if message_id in (record.cause, record.request_id)
                for message in self._said_of(record)
            ]
        )

    @property
    def change_may_fail(self) -> bool:
        """A change is under way and may still be refused (it holds stock or charges)."""
        return self.change is not None and self.change.step in (ChangeStep.RESERVING, ChangeStep.CHARGING)

    def settled_requests(self, causes: Collection[str] | None = None) -> list[Message | Event]:
        """The events of the requests that transitions caused by `causes` (by default the last
        one's) settled."""
        causes = causes or (self.last_cause,)
        return [
            message for record in self.requests if record.cause in causes for message in self._said_of(record)
        ]

    def due_commands(self) -> list[Message]:
        """The commands of a finished order's outstanding compensations (a refund), and of the
        step its change is in."""
        return [*self.compensations_for_late_capture(), *self._change_commands()]

    def commands_for_held_stock(self, partition: int, hold: str | None = None) -> list[Message]:
        """Inventory still holds units for the order (or its change `hold`) in `partition`: what
        should become of them. Sold if the order is confirmed (or the change went through),
        given back if it was cancelled or is giving them back (or the change was refused);
        nothing while the saga or the change is still deciding (their timers see to it)."""
        if hold is not None:
            return self._commands_for_change_hold(partition, hold)
        if any(entry.status is OrderStatus.CONFIRMED for entry in self.history):
            # Sold when it was confirmed, whatever happened since (a cancel takes sold units back).
            return [self._commit(partition)]
        if self.status is not OrderStatus.PENDING or self.step is SagaStep.RELEASING_STOCK:
            return [self._release(partition)]
        return []

    # Requests about the placed order --------------------------------------------------------

    def take_request(self, request: OrderRequest, now: datetime) -> None:
        """A request about the order: carried out, refused, or kept until the order's saga or
        change is done. A request taken before changes nothing (TransitionNotAllowed)."""
        if self.knows(request.message_id):
            raise TransitionNotAllowed(f"order {self.order_id} took request {request.message_id} before")
        if self._must_wait(request):
            if len(self.queued) >= MAX_QUEUED:
                detail = f"{len(self.queued)} requests are waiting already: try again later"
                self._refuse(request, "busy", detail, now, request.message_id)
                self.last_cause = request.message_id
                return
            self.queued = [*self.queued, request]
            self.last_cause = request.message_id
            return
        self._carry_out(request, now, request.message_id)

    def knows(self, request_id: str) -> bool:
        return (
            any(record.request_id == request_id for record in self.requests)
            or any(request.message_id == request_id for request in self.queued)
            or (self.change is not None and self.change.request_id == request_id)
        )

    def record_of(self, request_id: str) -> RequestRecord | None:
        return next((record for record in self.requests if record.request_id == request_id), None)

    def complete(self, now: datetime, cause: str) -> None:
        """A shipped order is completed (asked, or long enough after shipping)."""
        if self.status is not OrderStatus.SHIPPED or self.change is not None:
            raise TransitionNotAllowed(f"order {self.order_id} is {self.status}, not shipped")
        self.status = OrderStatus.COMPLETED
        self._record(now, cause)

    def shipped_at(self) -> datetime | None:
        return next((entry.at for entry in self.history if entry.status is OrderStatus.SHIPPED), None)

    @property
    def paid(self) -> int:
        """What the customer has paid for the order, net of every refund."""
        charged = (self.captured or 0) + sum(self.further_charges.values())
        return charged - sum(self.refunded_of.values()) - (self.refunded or 0)

    def _must_wait(self, request: OrderRequest) -> bool:
        if self.change is not None:
            return True
        if self.status is not OrderStatus.PENDING:
            return False
        # A pending order is cancelled where its saga stands; its payment details may change
        # until the charge is asked for; anything else waits for the saga to finish.
        return not (request.kind == "cancel" or (self._changes_payment_only(request)))

    def _changes_payment_only(self, request: OrderRequest) -> bool:
        return (
            request.kind == "amend"
            and request.payment is not None
            and self.step is SagaStep.RESERVING_STOCK
            and units_per_sku((item.sku, item.quantity) for item in request.items)
            == {line.sku: line.quantity for line in self.lines}
        )

    def _carry_out(self, request: OrderRequest, now: datetime, cause: str) -> None:
        """Do what the request asks, as far as the order's state allows."""
        status = self.status
        if request.kind == "cancel" and status is OrderStatus.PENDING:
            self._stop(request, now, cause)
        elif request.kind == "amend" and status is OrderStatus.PENDING:
            assert request.payment is not None
            self.payment_method, self.payment_token = request.payment.method.value, request.payment.token
            self._done(request, now, cause, detail="the payment details were changed before any charge")
        elif request.kind == "ship" and status is OrderStatus.CONFIRMED:
            self.status, self.carrier, self.tracking = OrderStatus.SHIPPED, request.carrier, request.tracking
            self._done(request, now, cause)
            self._record(now, cause)
        elif request.kind == "complete" and status is OrderStatus.SHIPPED:
            self._done(request, now, cause)
            self.complete(now, cause)
        elif (request.kind in ("cancel", "amend") and status is OrderStatus.CONFIRMED) or (
            request.kind in ("return", "exchange") and status in (OrderStatus.SHIPPED, OrderStatus.COMPLETED)
        ):
            self._start_change(request, now, cause)
        else:
            self._refuse(request, *self._why_not(request), now, cause)

    def _why_not(self, request: OrderRequest) -> tuple[str, str]:
        """Why the order's status does not allow the request: a reason word and a sentence."""
        status = self.status
        if request.kind in ("return", "exchange") and status is OrderStatus.CONFIRMED:
            return (
                "not_shipped",
                f"order {self.order_id} has not shipped: nothing to {request.kind}; cancel or amend it",
            )
        if request.kind == "complete" and status is OrderStatus.CONFIRMED:
            return "not_shipped", f"order {self.order_id} has not shipped yet"
        if request.kind in ("cancel", "amend") and status in (OrderStatus.SHIPPED, OrderStatus.COMPLETED):
            return status.value, (
                f"order {self.order_id} has {'shipped' if status is OrderStatus.SHIPPED else 'completed'}: "
                f"it can no longer be {_PAST[request.kind]}; "
                "open a return or an exchange instead"
            )
        return status.value, f"order {self.order_id} is {status.value}: it cannot be {_PAST[request.kind]}"

    def _stop(self, request: OrderRequest, now: datetime, cause: str) -> None:
        """A pending order is cancelled where its saga stands: what it holds is given back and
        whatever may have been charged is refunded (or its key voided)."""
        if self.step is SagaStep.RELEASING_STOCK:
            self._done(request, now, cause, detail=f"the order was being cancelled already ({self.reason})")
            return
        if self.step is SagaStep.RESERVING_STOCK:
            self.awaiting = [partition for partition in self.partitions if partition not in self.refused]
        else:
            self.awaiting = self.partitions
            self.refund_required = True
        self.step, self.reason = SagaStep.RELEASING_STOCK, request.reason or "customer_request"
        self._done(request, now, cause, detail="the order is being cancelled")
        self._record(now, cause)

    def _done(self, request: OrderRequest, now: datetime, cause: str, detail: str | None = None) -> None:
        self.requests = [
            *self.requests,
            RequestRecord(
                request.message_id, request.kind, "done", now, cause, detail=detail, case_id=request.case_id
            ),
        ]
        self.last_cause = cause

    def _refuse(self, request: OrderRequest, reason: str, detail: str, now: datetime, cause: str) -> None:
        self.requests = [
            *self.requests,
            RequestRecord(
                request.message_id,
                request.kind,
                "rejected",
                now,
                cause,
                reason,
                detail,
                case_id=request.case_id,
            ),
        ]
        self._outstanding_since(now, cause)

    def _next_request(self, now: datetime, cause: str) -> None:
        """The order is free again: carry out the requests that waited, in turn, until one starts
        a change (or the saga: a pending order only waits)."""
        while self.queued and self.change is None and self.status is not OrderStatus.PENDING:
            request, self.queued = self.queued[0], self.queued[1:]
            self._carry_out(request, now, cause)

    # Changes ------------------------------------------------------------------------------------

    def _start_change(self, request: OrderRequest, now: datetime, cause: str) -> None:
        kind = ChangeKind(request.kind)
        wanted = request.replacement if kind is ChangeKind.EXCHANGE else request.items
        try:
            lines, added, removed = planned(
                kind,
                self.lines,
                [(item.sku, item.quantity) for item in wanted],
                [(item.sku, item.quantity) for item in request.returned],
                self.partition_of,
            )
        except ChangeRefused as refused:
            self._refuse(request, refused.reason, refused.detail, now, cause)
            return
        self.change = Change(
            number=sum(1 for record in self.requests if record.number is not None) + 1,
            request_id=request.message_id,
            kind=kind,
            lines=lines,
            added=added,
            removed=removed,
            step=ChangeStep.RESERVING,
            entered_by=cause,
            started_at=now,
            payment_method=request.payment.method.value if request.payment else None,
            payment_token=request.payment.token if request.payment else None,
            reason=(request.reason or "customer_request") if kind is ChangeKind.CANCEL else None,
            case_id=request.case_id,
        )
        if added:
            self.change.awaiting = [f"stock/{partition}" for partition in self.change.added_partitions()]
            self._change_moved(now, cause)
        else:
            self._priced(now, cause)

    def _change_reserved(self, reply: saga.StockReserved, now: datetime) -> None:
        change = self._expect_change(ChangeStep.RESERVING, f"stock/{reply.partition}", hold=reply.hold)
        priced(change, {line.sku: line.unit_price for line in reply.lines})
        change.awaiting = [waiting for waiting in change.awaiting if waiting != f"stock/{reply.partition}"]
        if change.awaiting:
            self._change_moved(now, reply.message_id)
        else:
            self._priced(now, reply.message_id)

    def _priced(self, now: datetime, cause: str) -> None:
        """Every line of the change has its price: charge a higher total, or settle."""
        change = self.change
        assert change is not None
        change.amount = change.total - (self.total or 0)
        if change.amount > 0:
            change.step, change.awaiting, change.charge_asked = ChangeStep.CHARGING, ["payment"], True
            change.entered_by = cause
            self._change_moved(now, cause)
        else:
            self._settle_change(now, cause)

    def _settle_change(self, now: datetime, cause: str) -> None:
        """Sell the added units, take the removed ones back, refund a lower total."""
        change = self.change
        assert change is not None and change.amount is not None
        change.step, change.entered_by = ChangeStep.SETTLING, cause
        change.awaiting = [f"stock/{partition}" for partition in change.removed_partitions()]
        if change.amount < 0:
            charges = [(self.order_id, self.captured or 0), *self.further_charges.items()]
            left = [(key, amount - self.refunded_of.get(key, 0)) for key, amount in charges]
            change.refund = refund_parts(left, -change.amount)
            change.awaiting.append("payment")
        self._change_heard(None, now, cause)

    def _undo_change(self, reason: str, detail: str, now: datetime, cause: str) -> None:
        """The change is refused: give back what it holds, undo its charge, and then say so."""
        change = self.change
        assert change is not None
        change.step, change.reason, change.detail = ChangeStep.UNDOING, reason, detail
        change.entered_by = cause
        change.awaiting = [
            f"stock/{partition}" for partition in change.added_partitions() if partition not in change.refused
        ]
        if change.charge_asked:
            change.awaiting.append("payment")
        self._change_heard(None, now, cause)

    def _change_refunded(self, reply: saga.PaymentRefunded, now: datetime) -> None:
        change = self.change
        if change is None or "payment" not in change.awaiting:
            raise TransitionNotAllowed(f"order {self.order_id} waits for no refund")
        if change.step is ChangeStep.SETTLING and reply.refund_key == self._refund_key(change):
            for key, amount in change.refund:
                self.refunded_of = {**self.refunded_of, key: self.refunded_of.get(key, 0) + amount}
        elif not (change.step is ChangeStep.UNDOING and reply.key == self._key(change)):
            refund = reply.refund_key or reply.key
            raise TransitionNotAllowed(f"order {self.order_id}: refund {refund} is not this change's")
        self._change_heard("payment", now, reply.message_id)

    def _change_heard(self, waiting: str | None, now: datetime, cause: str) -> None:
        """A settling or undoing change heard that one of its parts is done: done when all are."""
        change = self.change
        assert change is not None
        change.awaiting = [each for each in change.awaiting if each != waiting]
        if change.awaiting:
            self._change_moved(now, cause)
        elif change.step is ChangeStep.SETTLING:
            self._change_done(now, cause)
        else:
            self._change_refused(now, cause)

    def _change_done(self, now: datetime, cause: str) -> None:
        change = self.change
        assert change is not None and change.amount is not None
        previous = self.total
        if change.kind is not ChangeKind.CANCEL:
            # A cancelled order keeps the lines and total it had: what was cancelled.
            self.lines, self.total = change.lines, change.total
        record = RequestRecord(
            change.request_id,
            change.kind.value,
            "done",
            now,
            cause,
            number=change.number,
            previous_total=previous,
            total=self.total,
            amount=change.amount,
            added=tuple(change.added),
            removed=tuple(change.removed),
            case_id=change.case_id,
        )
        self.requests, self.change = [*self.requests, record], None
        if change.kind is ChangeKind.CANCEL:
            self.status, self.reason = OrderStatus.CANCELLED, change.reason
            self._record(now, cause)
        else:
            self.history.append(
                HistoryEntry(now, self.status, SagaStep.CHANGED, cause, change.kind.value, change.amount)
            )
            self._outstanding_since(now, cause)
        self._next_request(now, cause)

    def _change_refused(self, now: datetime, cause: str) -> None:
        change = self.change
        assert change is not None and change.reason is not None
        record = RequestRecord(
            change.request_id,
            change.kind.value,
            "rejected",
            now,
            cause,
            change.reason,
            change.detail,
            number=change.number,
            case_id=change.case_id,
        )
        self.requests, self.change = [*self.requests, record], None
        self._outstanding_since(now, cause)
        self._next_request(now, cause)

    def _change_moved(self, now: datetime, cause: str) -> None:
        """The change moved on a step: its timer starts afresh."""
        self.follow_ups = 0
        self._outstanding_since(now, cause)

    def _expect_change(
        self, step: ChangeStep, waiting: str, hold: str | None = None, key: str | None = None
    ) -> Change:
        change = self.change
        if change is None or change.step is not step or waiting not in change.awaiting:
            raise TransitionNotAllowed(f"order {self.order_id} has no change waiting for {waiting} at {step}")
        if (hold is not None and hold != self._hold(change)) or (
            key is not None and key != self._key(change)
        ):
            raise TransitionNotAllowed(f"order {self.order_id}: {hold or key} is not its change's")
        return change

    def _change_commands(self) -> list[Message]:
        """The commands of the step the change is in."""
        change = self.change
        if change is None:
            return []
        hold = self._hold(change)
        if change.step is ChangeStep.RESERVING:
            return [
                saga.ReserveStock(
                    message_id=self._id(f"change/{change.number}/reserve-stock/{partition}"),
                    order_id=self.order_id,
                    partition=partition,
                    lines=[
                        saga.StockLine(sku=line.sku, quantity=line.quantity)
                        for line in change.added
                        if line.partition == partition
                    ],
                    hold=hold,
                )
                for partition in change.added_partitions()
                if f"stock/{partition}" in change.awaiting
            ]
        if change.step is ChangeStep.CHARGING:
            assert change.amount is not None
            return [
                saga.ChargePayment(
                    message_id=self._id(f"change/{change.number}/charge"),
                    order_id=self.order_id,
                    amount=change.amount,
                    currency=self.currency,
                    # Without the new details' token (lost on a crash), the card on file, as paid.
                    method=(change.payment_method if change.payment_token else None)
                    or self.payment_method
                    or "",
                    token=change.payment_token,
                    on_file=None if change.payment_token else self.charge_id,
                    key=self._key(change),
                )
            ]
        commands: list[Message] = []
        if change.step is ChangeStep.SETTLING:
            commands += self._commits_of(change.number, change.added)
            commands += [
                self._return(change, partition)
                for partition in change.removed_partitions()
                if f"stock/{partition}" in change.awaiting
            ]
            if "payment" in change.awaiting:
                commands.append(
                    saga.RefundAmount(
                        message_id=self._id(f"change/{change.number}/refund"),
                        order_id=self.order_id,
                        refund_key=self._refund_key(change),
                        parts=[saga.RefundPart(key=key, amount=amount) for key, amount in change.refund],
                    )
                )
            return commands
        commands += [
            self._release_change(change, partition)
            for partition in change.added_partitions()
            if f"stock/{partition}" in change.awaiting
        ]
        if "payment" in change.awaiting:
            commands.append(
                saga.RefundPayment(
                    message_id=self._id(f"change/{change.number}/undo-charge"),
                    order_id=self.order_id,
                    key=self._key(change),
                )
            )
        return commands

    def _commands_for_change_hold(self, partition: int, hold: str) -> list[Message]:
        change = self.change
        if change is not None and self._hold(change) == hold:
            if change.step is ChangeStep.SETTLING:
                return [
                    command
                    for command in self._change_commands()
                    if isinstance(command, saga.CommitStock) and command.partition == partition
                ]
            if change.step is ChangeStep.UNDOING:
                return [self._release_change(change, partition)]
            return []
        record = next(
            (record for record in self.requests if record.number and self._hold_of(record.number) == hold),
            None,
        )
        if record is None or record.number is None or record.outcome != "done":
            return [
                saga.ReleaseStock(
                    message_id=self._id(f"{hold}/release-held/{partition}"),
                    order_id=self.order_id,
                    partition=partition,
                    hold=hold,
                )
            ]
        return [
            command
            for command in self._commits_of(record.number, record.added)
            if command.partition == partition
        ]

    def _commits_of(self, number: int, added: list[Line] | tuple[Line, ...]) -> list[saga.CommitStock]:
        """The units a change added are sold: one commit per partition holding them."""
        return [
            saga.CommitStock(
                message_id=self._id(f"change/{number}/commit-stock/{partition}"),
                order_id=self.order_id,
                partition=partition,
                skus=[line.sku for line in added if line.partition == partition],
                hold=self._hold_of(number),
            )
            for partition in sorted({line.partition for line in added})
        ]

    def _return(self, change: Change, partition: int) -> saga.ReturnStock:
        return saga.ReturnStock(
            message_id=self._id(f"change/{change.number}/return-stock/{partition}"),
            order_id=self.order_id,
            partition=partition,
            lines=[
                saga.StockLine(sku=line.sku, quantity=line.quantity)
                for line in change.removed
                if line.partition == partition
            ],
        )

    def _release_change(self, change: Change, partition: int) -> saga.ReleaseStock:
        return saga.ReleaseStock(
            message_id=self._id(f"change/{change.number}/release-stock/{partition}"),
            order_id=self.order_id,
            partition=partition,
            skus=[line.sku for line in change.added if line.partition == partition],
            hold=self._hold(change),
        )

    def _hold(self, change: Change) -> str:
        return self._hold_of(change.number)

    def _hold_of(self, number: int) -> str:
        """The hold id of a change's units, and the idempotency key of its charge."""
        return f"{self.order_id}/change/{number}"

    def _key(self, change: Change) -> str:
        return self._hold_of(change.number)

    def _refund_key(self, change: Change) -> str:
        return f"{self._hold_of(change.number)}/refund"

    def _said_of(self, record: RequestRecord) -> list[Message | Event]:
        """The events (and the support desk's answer) of a request settled."""
        said: list[Message | Event] = []
        customer = event_customer(self.customer)
        entered = _ENTERED.get(record.kind) if record.outcome == "done" else None
        if entered is not None and any(entry.status is entered for entry in self.history):
            said.append(self._event(f"order.{entered.value}", status=entered))
        if record.outcome == "rejected":
            said.append(
                OrderRequestRejected(
                    event_id=self._id(f"order.{record.kind}_rejected/{record.request_id}"),
                    type=f"order.{record.kind}_rejected",  # type: ignore[arg-type]
                    occurred_at=record.at,
                    order_id=self.order_id,
                    request_id=record.request_id,
                    status=self.status.value,
                    reason=record.reason or "",
                    detail=record.detail or "",
                    case_id=record.case_id,
                    customer=customer,
                )
            )
        elif record.kind in (ChangeKind.AMEND, ChangeKind.RETURN, ChangeKind.EXCHANGE):
            said.append(
                OrderChanged(
                    event_id=self._id(f"order.{_PAST[record.kind]}/{record.request_id}"),
                    type=f"order.{_PAST[record.kind]}",  # type: ignore[arg-type]
                    occurred_at=record.at,
                    order_id=self.order_id,
                    status=self.status.value,
                    request_id=record.request_id,
                    case_id=record.case_id,
                    items=self._event_lines(self.lines),
                    total=_money(record.total, self.currency),
                    previous_total=_money(record.previous_total, self.currency),
                    amount=_signed(record.amount, self.currency),
                    currency=self.currency,
                    returned=self._event_lines(record.removed if record.kind != ChangeKind.AMEND else ()),
                    replacement=self._event_lines(record.added if record.kind == ChangeKind.EXCHANGE else ()),
                    payment_method=self.payment_method,
                    customer=customer,
                )
            )
        if record.outcome == "done" and record.number is not None:
            said.extend(self._commits_of(record.number, record.added))
        if record.outcome == "done" and record.amount < 0:
            said.append(
                OrderRefunded(
                    event_id=self._id(f"order.refunded/{record.request_id}"),
                    occurred_at=record.at,
                    order_id=self.order_id,
                    status=self.status.value,
                    reason=self.reason if record.kind == ChangeKind.CANCEL else None,
                    amount=to_decimal_string(-record.amount, self.currency),
                    currency=self.currency,
                    payment_method=self.payment_method,
                    customer=customer,
                    cause=record.kind,
                    request_id=record.request_id,
                )
            )
        if record.case_id is not None:
            said.append(
                CaseSettled(
                    message_id=self._id(f"case-settled/{record.request_id}"),
                    order_id=self.order_id,
                    case_id=record.case_id,
                    outcome="done" if record.outcome == "done" else "refused",
                    reason=record.reason if record.outcome == "rejected" else None,
                    detail=record.detail if record.outcome == "rejected" else None,
                    amount=_signed(record.amount, self.currency),
                )
            )
        return said

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

    def _finish(self, status: OrderStatus, reason: str | None, now: datetime, cause: str) -> None:
        self.status = status
        self.step = SagaStep.DONE
        self.reason = reason
        self.awaiting = []
        self._record(now, cause)
        self._next_request(now, cause)

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
            carrier=self.carrier if status is OrderStatus.SHIPPED else None,
            tracking=self.tracking if status is OrderStatus.SHIPPED else None,
        )

    def _event_lines(self, lines: list[Line] | tuple[Line, ...]) -> list[EventLine]:
        return [
            EventLine(
                sku=line.sku,
                quantity=line.quantity,
                unit_price=_money(line.unit_price, self.currency),
                line_total=_money(line.line_total, self.currency),
            )
            for line in lines
        ]


# The status a request done took the order to (a pending order's cancel: once its saga ends).
_ENTERED = {
    "cancel": OrderStatus.CANCELLED,
    "ship": OrderStatus.SHIPPED,
    "complete": OrderStatus.COMPLETED,
}

# A request's kind, as the order's event says it was done: order.amended, order.returned, ...
_PAST = {
    "cancel": "cancelled",
    "amend": "amended",
    "ship": "shipped",
    "complete": "completed",
    "return": "returned",
    "exchange": "exchanged",
}


def _said_in_order(messages: list[Message | Event]) -> list[Message | Event]:
    """Each message once, events first: once a command is out, its reply can move the order on
    before a redelivery would say this state again, so an event sent after it could be lost."""
    unique: dict[str, Message | Event] = {}
    for message in messages:
        unique.setdefault(message.event_id if isinstance(message, Event) else message.message_id, message)
    return sorted(unique.values(), key=lambda message: not isinstance(message, Event))


def _signed(minor: int, currency: str) -> str:
    return ("-" if minor < 0 else "") + to_decimal_string(abs(minor), currency)


def _money(minor: int | None, currency: str) -> str | None:
    return None if minor is None else to_decimal_string(minor, currency)
