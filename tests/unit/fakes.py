"""In-memory stand-ins for repositories and transports, for handler unit tests."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from services.order.domain import Order
from services.payment.domain import Payment
from services.payment.gateways import ChargeResult, GatewayUnavailable
from shared.contracts.base import Message
from shared.contracts.events import Event


class FakeOrders:
    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}

    def add(self, order: Order) -> bool:
        if order.order_id in self.orders:
            return False
        self.orders[order.order_id] = copy.deepcopy(order)
        return True

    def get(self, order_id: str) -> Order | None:
        return copy.deepcopy(self.orders.get(order_id))

    def save(self, order: Order) -> bool:
        if self.orders[order.order_id].version != order.version:
            return False
        order.version += 1
        self.orders[order.order_id] = copy.deepcopy(order)
        return True

    def unfinished_transition(self, order: Order) -> Order | None:
        return None

    def pending(self, limit: int = 500) -> list[Order]:
        return [copy.deepcopy(o) for o in self.orders.values() if o.status == "pending"]

    def count_pending(self) -> int:
        return len(self.pending())

    def overdue(self, now: datetime, limit: int = 500) -> list[Order]:
        return [o for o in self.pending() if o.is_overdue(now)]


class FakePayments:
    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}

    def claim(self, payment: Payment) -> bool:
        if payment.order_id in self.payments:
            return False
        self.payments[payment.order_id] = copy.deepcopy(payment)
        return True

    def get(self, order_id: str) -> Payment | None:
        return copy.deepcopy(self.payments.get(order_id))

    def save(self, payment: Payment) -> None:
        self.payments[payment.order_id] = copy.deepcopy(payment)

    def settle(self, payment: Payment) -> bool:
        if self.payments[payment.order_id].status != "charging":
            return False
        self.save(payment)
        return True


class Outbox:
    """Records what handlers send and publish."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.published: list[Event] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def publish(self, event: Event) -> None:
        self.published.append(event)

    def kinds(self) -> list[str]:
        return [type(m).__name__ for m in self.sent] + [e.type for e in self.published]


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
