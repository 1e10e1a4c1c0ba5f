"""In-memory stand-ins for repositories and transports, for handler unit tests."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from services.order.domain import Order
from services.payment.domain import Payment
from services.payment.gateways import ChargeResult, GatewayUnavailable
from shared.contracts.base import Message
from shared.contracts.events import Event
from shared.contracts.saga import StepDeadline
from shared.messaging.ports import Backlog, Batch


class FakeOrders:
    """Orders in memory, with the store's contract: a transition is written only from the version
    it was read at, so of two writers racing for one order, one loses."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}

    def add(self, orders: list[Order]) -> set[str]:
        existed = {order.order_id for order in orders if order.order_id in self.orders}
        for order in orders:
            self.orders.setdefault(order.order_id, copy.deepcopy(order))
        return existed

    def get(self, order_id: str) -> Order | None:
        return copy.deepcopy(self.orders.get(order_id))

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        return {
            order_id: copy.deepcopy(self.orders[order_id])
            for order_id in order_ids
            if order_id in self.orders
        }

    refresh = get_many

    def save(self, orders: list[Order]) -> list[Order]:
        lost = [order for order in orders if self.orders[order.order_id].version != order.version]
        for order in orders:
            if all(order is not loser for loser in lost):
                order.version += 1
                self.orders[order.order_id] = copy.deepcopy(order)
        return lost

    def pending(self, limit: int = 0) -> list[Order]:
        return [copy.deepcopy(o) for o in self.orders.values() if o.status == "pending"]

    def count_pending(self) -> int:
        return len(self.pending())

    def overdue(self, before: datetime, limit: int = 500) -> list[Order]:
        return [o for o in self.pending() if o.is_overdue(before)]


class FakePayments:
    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}

    def claim(self, payments: Iterable[Payment]) -> set[str]:
        taken = set()
        for payment in payments:
            if payment.order_id in self.payments:
                taken.add(payment.order_id)
            else:
                self.payments[payment.order_id] = copy.deepcopy(payment)
        return taken

    def get(self, order_id: str) -> Payment | None:
        return copy.deepcopy(self.payments.get(order_id))

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        return {i: copy.deepcopy(self.payments[i]) for i in order_ids if i in self.payments}

    def save(self, payment: Payment) -> None:
        self.payments[payment.order_id] = copy.deepcopy(payment)

    def settle(self, payments: list[Payment]) -> bool:
        settled = True
        for payment in payments:
            if self.payments[payment.order_id].status != "charging":
                settled = False
            else:
                self.save(payment)
        return settled


class Recorder:
    """Records what handlers send and publish, as the outbox would take it."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.delays: list[timedelta | None] = []
        self.published: list[Event] = []

    def send(self, message: Message, delay: timedelta | None = None) -> None:
        self.sent.append(message)
        self.delays.append(delay)

    def publish(self, event: Event) -> None:
        self.published.append(event)

    def kinds(self, timers: bool = False) -> list[str]:
        """What was said, by kind: commands and replies, then events; the step timers if asked."""
        sent = [m for m in self.sent if timers or not isinstance(m, StepDeadline)]
        return [type(m).__name__ for m in sent] + [e.type for e in self.published]

    @property
    def timers(self) -> list[StepDeadline]:
        return [m for m in self.sent if isinstance(m, StepDeadline)]

    def clear(self) -> None:
        self.sent.clear()
        self.delays.clear()
        self.published.clear()


class FakeQueues:
    """Queue backlogs as a test sets them: by default someone consumes every queue and none waits."""

    def __init__(self) -> None:
        self.backlogs: dict[str, Backlog] = {}

    def backlog(self, queue: str) -> Backlog:
        return self.backlogs.get(queue, Backlog(ready=0, consumers=1))


def batch(*messages: Any) -> Batch[Any]:
    return Batch(list(messages))


class FakeGateway:
    """A provider that fails `failures` times, then answers; counts charges per idempotency key."""

    def __init__(self, failures: int = 0, approve: bool = True) -> None:
        self.failures = failures
        self.approve = approve
        self.calls = 0
        self.charges: dict[str, Any] = {}
        self.refunds: dict[str, Any] = {}

    def charge(self, *, idempotency_key: str, amount: int, currency: str, token: str) -> ChargeResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise GatewayUnavailable("simulated outage")
        if not self.approve:
            return ChargeResult(approved=False, decline_reason="insufficient funds")
        self.charges.setdefault(idempotency_key, amount)
        return ChargeResult(approved=True, charge_id=f"ch_{idempotency_key}", instrument="card ****4242")

    def refund(self, *, idempotency_key: str, charge_id: str, amount: int, currency: str) -> str:
        self.refunds.setdefault(idempotency_key, amount)
        return f"re_{idempotency_key}"
