"""In-memory stand-ins for repositories and transports, for handler unit tests."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from services.order.domain import Order
from services.payment.domain import UNSETTLED, Payment
from services.payment.gateways import Capture, ChargeResult, GatewayUnavailable, RefundResult
from services.payment.ledger import EntryKind, LedgerEntry
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

    def under_way(self) -> list[Order]:
        return [copy.deepcopy(o) for o in self.orders.values() if o.deadline is not None]

    def shipped_before(self, cutoff: datetime) -> list[Order]:
        return [
            copy.deepcopy(o)
            for o in self.orders.values()
            if o.status == "shipped" and (shipped := o.shipped_at()) is not None and shipped <= cutoff
        ]


class FakePayments:
    def __init__(self) -> None:
        self.payments: dict[str, Payment] = {}

    def claim(self, payments: Iterable[Payment]) -> set[str]:
        taken = set()
        for payment in payments:
            if payment.idempotency_key in self.payments:
                taken.add(payment.idempotency_key)
            else:
                self.payments[payment.idempotency_key] = copy.deepcopy(payment)
        return taken

    def get(self, order_id: str) -> Payment | None:
        return copy.deepcopy(self.payments.get(order_id))

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        return {i: copy.deepcopy(self.payments[i]) for i in order_ids if i in self.payments}

    def save(self, payment: Payment) -> None:
        self.payments[payment.idempotency_key] = copy.deepcopy(payment)

    def settle(self, payments: list[Payment]) -> set[str]:
        beaten = set()
        for payment in payments:
            if self.payments[payment.idempotency_key].status in UNSETTLED:
                self.save(payment)
            elif self.payments[payment.idempotency_key] != payment:
                beaten.add(payment.idempotency_key)
        return beaten

    def record_refund_attempts(self, payment: Payment) -> None:
        stored = self.payments[payment.idempotency_key]
        stored.refund_attempts, stored.detail = payment.refund_attempts, payment.detail


class FakeLedger:
    """The payment ledger in memory, with the store's contract: an entry recorded again is kept once."""

    def __init__(self) -> None:
        self.entries: dict[str, LedgerEntry] = {}
        self.writes = 0  # round trips to the store

    def record(self, entries: Iterable[LedgerEntry]) -> None:
        entries = list(entries)
        if entries:
            self.writes += 1
        for entry in entries:
            self.entries.setdefault(entry.entry_id, entry)

    def amounts(self, kind: EntryKind) -> dict[str, int]:
        """Reference (charge id, refund id, voided key) -> amount, of the entries of one kind."""
        return {entry.reference: entry.amount for entry in self.entries.values() if entry.kind is kind}


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
    """A provider in memory, with its own ledger: one capture per idempotency key, voids, refunds.

    Faults on demand: the first `failures` charge calls fail before reaching it, the first
    `lost_replies` charge calls capture and then fail, `unreachable` fails lookups and voids, and
    the first `refund_failures` refund calls fail. `fault`, if given, decides each call instead:
    it gets the operation's name and returns None, "unavailable" or "lost_reply".
    """

    def __init__(
        self,
        failures: int = 0,
        approve: bool = True,
        lost_replies: int = 0,
        unreachable: bool = False,
        refund_failures: int = 0,
        fault: Callable[[str], str | None] | None = None,
    ) -> None:
        self.failures = failures
        self.approve = approve
        self.lost_replies = lost_replies
        self.unreachable = unreachable
        self.refund_failures = refund_failures
        self.fault = fault
        self.calls = 0
        self.keys: dict[str, str] = {}  # idempotency key -> "charge" or "void", whichever came first
        self.charges: dict[str, int] = {}  # idempotency key -> amount captured
        self.refunds: dict[str, int] = {}  # refund idempotency key -> amount refunded
        self._refunded_charges: dict[str, int] = {}  # charge id -> amount refunded

    def held(self, key: str) -> int:
        """What the provider holds for a key: captured, less refunded."""
        return self.charges.get(key, 0) - self._refunded_charges.get(f"ch_{key}", 0)

    def charge(self, *, idempotency_key: str, amount: int, currency: str, token: str) -> ChargeResult:
        self.calls += 1
        fault = self._fault("charge", before=self.calls <= self.failures)
        if fault == "unavailable":
            raise GatewayUnavailable("simulated outage")
        if not self.approve or token == "tok_declined":
            return ChargeResult(approved=False, decline_reason="insufficient funds")
        if self.keys.setdefault(idempotency_key, "charge") != "charge":
            return ChargeResult(approved=False, decline_reason="voided", voided=True)
        self.charges.setdefault(idempotency_key, amount)
        if fault == "lost_reply" or self.calls <= self.failures + self.lost_replies:
            raise GatewayUnavailable("simulated timeout after the capture")
        return ChargeResult(
            approved=True,
            charge_id=f"ch_{idempotency_key}",
            instrument="card ****4242",
            amount=self.charges[idempotency_key],
        )

    def lookup(self, *, idempotency_key: str) -> Capture | None:
        if self._fault("lookup", before=self.unreachable) == "unavailable":
            raise GatewayUnavailable("simulated outage")
        return self._capture(idempotency_key)

    def void(self, *, idempotency_key: str) -> Capture | None:
        fault = self._fault("void", before=self.unreachable)
        if fault == "unavailable":
            raise GatewayUnavailable("simulated outage")
        self.keys.setdefault(idempotency_key, "void")
        if fault == "lost_reply":
            raise GatewayUnavailable("simulated timeout after the void")
        return self._capture(idempotency_key)

    def refund(self, *, idempotency_key: str, charge_id: str, amount: int, currency: str) -> RefundResult:
        fault = self._fault("refund", before=self.refund_failures > 0)
        if self.refund_failures > 0:
            self.refund_failures -= 1
        if fault == "unavailable":
            raise GatewayUnavailable("simulated refund outage")
        if idempotency_key not in self.refunds:
            self.refunds[idempotency_key] = amount
            self._refunded_charges[charge_id] = self._refunded_charges.get(charge_id, 0) + amount
        if fault == "lost_reply":
            raise GatewayUnavailable("simulated timeout after the refund")
        return RefundResult(refund_id=f"re_{idempotency_key}", amount=self.refunds[idempotency_key])

    def _capture(self, key: str) -> Capture | None:
        if self.keys.get(key) != "charge":
            return None
        return Capture(charge_id=f"ch_{key}", amount=self.charges[key], currency="CNY")

    def _fault(self, operation: str, before: bool) -> str | None:
        if self.fault is not None:
            return self.fault(operation)
        return "unavailable" if before else None


class FakeSalesFacts:
    """The reporting read model in memory, with the store's contract: a fact or a version of an
    order's sale is inserted once under its id, and a second insert of it is a no-op. `before_claim`
    runs before the next claim (another process moving first); with `die_after_claim`, the next
    claim is inserted and then the call fails (its process died before writing the facts)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.lines: dict[str, dict[str, Any]] = {}
        self.sales: dict[str, dict[str, Any]] = {}
        self.changes: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.before_claim: Callable[[], None] | None = None
        self.die_after_claim = False

    @staticmethod
    def _insert(collection: dict[str, dict[str, Any]], documents: list[dict[str, Any]]) -> set[str]:
        taken = {document["_id"] for document in documents if document["_id"] in collection}
        for document in documents:
            collection.setdefault(document["_id"], copy.deepcopy(document))
        return taken

    def record_outcomes(self, outcomes: list[dict[str, Any]]) -> None:
        self._insert(self.outcomes, outcomes)

    def record_lines(self, lines: list[dict[str, Any]]) -> None:
        self._insert(self.lines, lines)

    def record_changes(self, changes: list[dict[str, Any]]) -> None:
        self._insert(self.changes, changes)

    def record_refunds(self, refunds: list[dict[str, Any]]) -> None:
        self._insert(self.refunds, refunds)

    def claim_sales(self, sales: list[dict[str, Any]]) -> set[str]:
        if self.before_claim is not None:
            before, self.before_claim = self.before_claim, None
            before()
        taken = self._insert(self.sales, sales)
        if self.die_after_claim:
            self.die_after_claim = False
            raise ConnectionError("simulated crash after the claim")
        return taken

    def sales_of(self, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for sale in self.sales.values():
            if sale["order_id"] in order_ids and sale["version"] > latest.get(sale["order_id"], {}).get(
                "version", -1
            ):
                latest[sale["order_id"]] = copy.deepcopy(sale)
        return latest

    def outcomes_by_status_and_reason(self) -> list[dict[str, Any]]:
        counts: dict[tuple[str, str | None], int] = {}
        for outcome in self.outcomes.values():
            key = (outcome["status"], outcome["reason"])
            counts[key] = counts.get(key, 0) + 1
        return [{"_id": {"status": s, "reason": r}, "orders": n} for (s, r), n in counts.items()]

    def sales_by(self, key: str) -> list[dict[str, Any]]:
        sums: dict[str, list[int]] = {}
        for line in self.lines.values():
            row = sums.setdefault(line[key], [0, 0])
            row[0] += line["units"]
            row[1] += line["revenue"]
        return [{"_id": group, "units": u, "revenue": r} for group, (u, r) in sorted(sums.items())]

    def units_of(self, kind: str) -> int:
        return sum(line["units"] for line in self.lines.values() if line.get("kind") == kind)

    def orders_changed(self) -> list[dict[str, Any]]:
        orders: dict[str, set[str]] = {}
        for change in self.changes.values():
            orders.setdefault(change["kind"], set()).add(change["order_id"])
        return [{"_id": kind, "orders": len(ids)} for kind, ids in orders.items()]

    def refund_totals(self) -> tuple[int, int]:
        return len(self.refunds), sum(refund["amount"] for refund in self.refunds.values())
