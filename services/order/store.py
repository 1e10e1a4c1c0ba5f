"""The order worker's repository: one document per order, in its own database."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from services.order.changes import Change, ChangeKind, ChangeStep, Line, RequestRecord
from services.order.domain import TOKEN_STEPS, Customer, HistoryEntry, Order, OrderStatus, SagaStep
from shared.contracts.requests import OrderRequest
from shared.documents import SCHEMA_FIELD, DocumentSchema
from shared.store import RecentCopies, claim_id, find_by_ids, insert_new, write_over

# How many claims one write of `erase_customer_from_claims` names.
CLAIMS_PER_WRITE = 1000


class OrderRepository:
    """Orders, and the claims that make each transition of an order happen once.

    Moving an order from version n to n+1 first inserts the claim `<order id>:<n+1>` holding the
    new state. Inserts under a unique id are atomic on MongoDB and on FerretDB alike, so of two
    handlers racing to move the same order (a reply and a timeout, say) exactly one wins, even on a
    store whose conditional updates are not atomic. The winner then writes the order document; if
    it dies in between, the next writer finds the claim taken, rolls the order forward to it
    (`refresh`), and tries again from there.

    Every method reads and writes many orders at once, by `_id`: a batch of replies costs a few
    round trips, whatever its size and whatever the size of the collection.
    """

    def __init__(self, db: Database, partition_of: Callable[[str], int] = lambda sku: 0) -> None:
        self._orders = db["orders"]
        self._transitions = db["order_transitions"]
        # The deployment's partitioning, which the orders it reads use for SKUs a change adds.
        self.partition_of = partition_of

    def ensure_indexes(self) -> None:
        # For the sweep's one query (`under_way`). Every index is upkeep on every write of an order.
        self._orders.create_index([("deadline", ASCENDING)])

    def add(self, orders: list[Order]) -> set[str]:
        """Insert new orders; returns the ids that existed already (an order id is its idempotency key)."""
        return insert_new(self._orders, [_to_document(order) for order in orders])

    def get(self, order_id: str) -> Order | None:
        return self.get_many([order_id]).get(order_id)

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        return {document["_id"]: self._order(document) for document in find_by_ids(self._orders, order_ids)}

    def save(self, orders: list[Order]) -> list[Order]:
        """Write a transition of each order (read at `order.version`); returns those another
        writer moved first, unchanged. The others are at their new version."""
        if not orders:
            return []
        states = [{**_to_document(order), "version": order.version + 1} for order in orders]
        # A claim is kept for good: it never holds a payment token (rolled forward, the order
        # takes the tokens from the document it rolls forward, which still holds them while needed).
        claims = [
            {
                "_id": claim_id(order.order_id, state["version"]),
                "order_id": order.order_id,
                "state": _without_tokens(state),
            }
            for order, state in zip(orders, states, strict=True)
        ]
        taken = insert_new(self._transitions, claims)
        lost = {claim["order_id"] for claim in claims if claim["_id"] in taken}
        won = [
            (order, state) for order, state in zip(orders, states, strict=True) if order.order_id not in lost
        ]
        write_over(self._orders, [(state, order.version) for order, state in won])
        for order, _ in won:
            order.version += 1
        return [order for order in orders if order.order_id in lost]

    def refresh(self, order_ids: Iterable[str]) -> dict[str, Order]:
        """The orders as they are, each rolled forward to the last transition claimed for it (whose
        writer may have died between claiming it and writing it)."""
        orders = self.get_many(order_ids)
        behind = dict(orders)
        while behind:
            claims = find_by_ids(
                self._transitions,
                (claim_id(order_id, order.version + 1) for order_id, order in behind.items()),
            )
            ahead = {claim["order_id"]: self._order(claim["state"]) for claim in claims}
            if not ahead:
                break
            for order_id, order in ahead.items():
                _restore_tokens(order, behind[order_id])
            write_over(self._orders, [(_to_document(order), order.version - 1) for order in ahead.values()])
            orders.update(ahead)
            behind = ahead
        return orders

    def under_way(self) -> list[Order]:
        """Orders whose timer runs: pending sagas, and finished orders still owed a compensation
        (each has a deadline). One scan, bounded by the sagas under way: for the sweep and
        operators, never per message."""
        return [self._order(document) for document in self._orders.find({"deadline": {"$ne": None}})]

    def shipped_before(self, cutoff: datetime, limit: int = 1000) -> list[Order]:
        """Orders shipped before `cutoff` and not completed since. A scan of the orders by status:
        for a periodic task, never per message."""
        shipped = self._orders.find({"status": OrderStatus.SHIPPED.value, "shipped_at": {"$lte": cutoff}})
        return [self._order(document) for document in shipped.limit(limit)]

    def erase_customer_from_claims(self, orders: Iterable[Order]) -> None:
        """Write each order's customer as it is now into every claim of the order up to its version:
        a claim holds a whole state, so what `customers forget` erased from the order goes from
        its claims too. The only rewrite a claim ever sees."""
        claims: dict[Customer, list[str]] = {}
        for order in orders:
            if order.customer is not None:
                claims.setdefault(order.customer, []).extend(
                    claim_id(order.order_id, version) for version in range(1, order.version + 1)
                )
        for customer, claim_ids in claims.items():
            for start in range(0, len(claim_ids), CLAIMS_PER_WRITE):
                self._transitions.update_many(
                    {"_id": {"$in": claim_ids[start : start + CLAIMS_PER_WRITE]}},
                    {"$set": {"state.customer": vars(customer)}},
                )

    def _order(self, document: dict[str, Any]) -> Order:
        order = _from_document(document)
        order.partition_of = self.partition_of
        return order


def _without_tokens(state: dict[str, Any]) -> dict[str, Any]:
    """An order's state without the payment tokens it holds: its own, its change's, its waiting
    requests'."""
    return {
        **state,
        "payment_token": None,
        "change": {**state["change"], "payment_token": None} if state["change"] else None,
        "queued": [{**request, "payment": None} for request in state["queued"]],
    }


def _restore_tokens(ahead: Order, behind: Order) -> None:
    """An order rolled forward to a claim takes back the tokens it still needs from its document."""
    if ahead.status is OrderStatus.PENDING and ahead.step in TOKEN_STEPS:
        # The token goes with the method it was given for: new payment details whose token was
        # only in the claim are lost with the writer that died, and the order pays as before.
        ahead.payment_method, ahead.payment_token = behind.payment_method, behind.payment_token
    if ahead.change and behind.change and ahead.change.number == behind.change.number:
        ahead.change.payment_token = behind.change.payment_token
    tokens = {request.message_id: request.payment for request in behind.queued}
    ahead.queued = [
        request.model_copy(update={"payment": tokens.get(request.message_id) or request.payment})
        for request in ahead.queued
    ]


def _to_document(order: Order) -> dict[str, Any]:
    return {
        "_id": order.order_id,
        "customer": vars(order.customer) if order.customer else None,
        "lines": [vars(line) for line in order.lines],
        "payment_method": order.payment_method,
        "payment_token": order.payment_token,
        "currency": order.currency,
        "created_at": order.created_at,
        "status": order.status.value,
        "step": order.step.value,
        "reason": order.reason,
        "errors": order.errors,
        "total": order.total,
        "history": [
            {
                "at": entry.at,
                "status": entry.status.value,
                "step": entry.step.value,
                "cause": entry.cause,
                "reason": entry.reason,
                **({"amount": entry.amount} if entry.amount is not None else {}),
            }
            for entry in order.history
        ],
        "last_cause": order.last_cause,
        "step_timeout_seconds": order.step_timeout.total_seconds(),
        "deadline": order.deadline,
        "refund_required": order.refund_required,
        "refunded": order.refunded,
        "captured": order.captured,
        "charge_id": order.charge_id,
        "due_since": order.due_since,
        "attempts": order.attempts,
        "follow_ups": order.follow_ups,
        "awaiting": order.awaiting,
        "refused": order.refused,
        "change": _change_document(order.change) if order.change else None,
        "queued": [request.model_dump(mode="json") for request in order.queued],
        "requests": [_record_document(record) for record in order.requests],
        # Keys hold dots and slashes, which field names may not: a list, not a map.
        "further_charges": _amounts(order.further_charges.items()),
        "refunded_of": _amounts(order.refunded_of.items()),
        "carrier": order.carrier,
        "tracking": order.tracking,
        "shipped_at": order.shipped_at(),
        "version": order.version,
        SCHEMA_FIELD: ORDERS.version,
    }


def _change_document(change: Change) -> dict[str, Any]:
    return {
        **vars(change),
        "kind": change.kind.value,
        "step": change.step.value,
        "lines": [vars(line) for line in change.lines],
        "added": [vars(line) for line in change.added],
        "removed": [vars(line) for line in change.removed],
        "refund": _amounts(change.refund),
    }


def _change(document: dict[str, Any]) -> Change:
    return Change(
        **{
            **document,
            "kind": ChangeKind(document["kind"]),
            "step": ChangeStep(document["step"]),
            "lines": [Line(**line) for line in document["lines"]],
            "added": [Line(**line) for line in document["added"]],
            "removed": [Line(**line) for line in document["removed"]],
            "refund": [(part["key"], part["amount"]) for part in document["refund"]],
        }
    )


def _amounts(amounts: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    """Amounts by key, as documents (FerretDB stores no arrays in arrays)."""
    return [{"key": key, "amount": amount} for key, amount in amounts]


def _record_document(record: RequestRecord) -> dict[str, Any]:
    return {
        **vars(record),
        "added": [vars(line) for line in record.added],
        "removed": [vars(line) for line in record.removed],
    }


def _record(document: dict[str, Any]) -> RequestRecord:
    return RequestRecord(
        **{
            **document,
            "added": tuple(Line(**line) for line in document["added"]),
            "removed": tuple(Line(**line) for line in document["removed"]),
        }
    )


def _from_document(document: dict[str, Any]) -> Order:
    document = ORDERS.current(document)
    return Order(
        order_id=document["_id"],
        customer=Customer(**document["customer"]) if document.get("customer") else None,
        lines=[Line(**line) for line in document["lines"]],
        payment_method=document.get("payment_method"),
        payment_token=document.get("payment_token"),
        currency=document["currency"],
        created_at=document["created_at"],
        status=OrderStatus(document["status"]),
        step=SagaStep(document["step"]),
        reason=document.get("reason"),
        errors=document.get("errors", []),
        total=document.get("total"),
        history=[
            HistoryEntry(
                at=entry["at"],
                status=OrderStatus(entry["status"]),
                step=SagaStep(entry["step"]),
                cause=entry["cause"],
                reason=entry.get("reason"),
                amount=entry.get("amount"),
            )
            for entry in document.get("history", [])
        ],
        last_cause=document.get("last_cause", ""),
        step_timeout=timedelta(seconds=document.get("step_timeout_seconds", 30)),
        deadline=document.get("deadline"),
        refund_required=document.get("refund_required", False),
        refunded=document.get("refunded"),
        captured=document.get("captured"),
        charge_id=document.get("charge_id"),
        due_since=document.get("due_since"),
        attempts=document.get("attempts", 1),
        follow_ups=document.get("follow_ups", 0),
        awaiting=document.get("awaiting", _awaiting_before_partitions(document)),
        refused=document.get("refused", []),
        change=_change(document["change"]) if document.get("change") else None,
        queued=[OrderRequest.model_validate(request, strict=False) for request in document.get("queued", [])],
        requests=[_record(record) for record in document.get("requests", [])],
        further_charges={part["key"]: part["amount"] for part in document.get("further_charges", [])},
        refunded_of={part["key"]: part["amount"] for part in document.get("refunded_of", [])},
        carrier=document.get("carrier"),
        tracking=document.get("tracking"),
        version=document.get("version", 0),
    )


def _awaiting_before_partitions(document: dict[str, Any]) -> list[int]:
    """Orders stored before stock was partitioned wait, while pending, on the one partition."""
    return [0] if document.get("status") == "pending" and document.get("step") != "charging_payment" else []


def _order_v1(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1, orders stored before documents carried a version. The release before versions
    stored no change, queued or settled requests, further charges, partial refunds or shipping;
    earlier ones neither partitions nor the payment protocol's fields. Each means what it says
    when absent: none, nothing owed, one partition."""
    return {
        "customer": None,
        "payment_method": None,
        "payment_token": None,
        "reason": None,
        "errors": [],
        "total": None,
        "history": [],
        "last_cause": "",
        "step_timeout_seconds": 30,
        "deadline": None,
        "refund_required": False,
        "refunded": None,
        "captured": None,
        "charge_id": None,
        "due_since": None,
        "attempts": 1,
        "follow_ups": 0,
        "awaiting": _awaiting_before_partitions(document),
        "refused": [],
        "change": None,
        "queued": [],
        "requests": [],
        "further_charges": [],
        "refunded_of": [],
        "carrier": None,
        "tracking": None,
        "shipped_at": None,  # an order could not ship before the release that records it
        "version": 0,
        **document,
    }


# Version 2: every field written, none left for the reader to assume. The saga's own version
# (`version`) guards a migration's write, as it guards the saga's.
ORDERS = DocumentSchema("order", "orders", 2, {1: _order_v1}, guard=("version",))


class RecentOrders:
    """The orders this process read or wrote last, kept in memory in front of the repository.

    A reply for an order this process moved on a moment ago costs no read. A stale copy (another
    process moved the order since) is safe: the transition made from it claims a version that is
    taken, `save` reports the order lost, and the handler reads it afresh (`refresh`).
    """

    def __init__(self, repository: OrderRepository, capacity: int = 10_000) -> None:
        self.repository = repository
        self._recent: RecentCopies[Order] = RecentCopies(lambda order: order.order_id, Order.copy, capacity)

    def ensure_indexes(self) -> None:
        self.repository.ensure_indexes()

    def add(self, orders: list[Order]) -> set[str]:
        existed = self.repository.add(orders)
        self._recent.keep(order for order in orders if order.order_id not in existed)
        return existed

    def get(self, order_id: str) -> Order | None:
        return self.get_many([order_id]).get(order_id)

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        return self._recent.get_many(order_ids, self.repository.get_many)

    def refresh(self, order_ids: Iterable[str]) -> dict[str, Order]:
        orders = self.repository.refresh(order_ids)
        self._recent.keep(orders.values())
        return orders

    def save(self, orders: list[Order]) -> list[Order]:
        lost = self.repository.save(orders)
        lost_ids = {order.order_id for order in lost}
        self._recent.forget(lost_ids)
        self._recent.keep(order for order in orders if order.order_id not in lost_ids)
        return lost

    def under_way(self) -> list[Order]:
        return self.repository.under_way()

    def erase_customer_from_claims(self, orders: Iterable[Order]) -> None:
        self.repository.erase_customer_from_claims(orders)

    def shipped_before(self, cutoff: datetime) -> list[Order]:
        return self.repository.shipped_before(cutoff)
