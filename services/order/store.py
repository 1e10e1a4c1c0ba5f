"""The order worker's repository: one document per order, in its own database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.order.domain import Customer, HistoryEntry, Line, Order, OrderStatus, SagaStep


class OrderRepository:
    """Orders, and the claims that make each transition of an order happen once.

    Moving an order from version n to n+1 first inserts the claim `<order id>:<n+1>` holding the
    new state. Inserts under a unique id are atomic on MongoDB and on FerretDB alike, so of two
    handlers racing to move the same order (a reply and a timeout, say) exactly one wins, even on a
    store whose conditional updates are not atomic. The winner then writes the order document; if
    it dies in between, the next reader finds the claim ahead of the document and rolls it forward.
    """

    def __init__(self, db: Database) -> None:
        self._orders = db["orders"]
        self._transitions = db["order_transitions"]

    def ensure_indexes(self) -> None:
        self._orders.create_index([("status", ASCENDING), ("deadline", ASCENDING)])

    def add(self, order: Order) -> bool:
        """Insert a new order; False if one with that id exists (the id is the idempotency key)."""
        try:
            self._orders.insert_one(_to_document(order))
        except DuplicateKeyError:
            return False
        return True

    def get(self, order_id: str) -> Order | None:
        document = self._orders.find_one({"_id": order_id})
        return None if document is None else _from_document(document)

    def save(self, order: Order) -> bool:
        """Write a transition of the order read at `order.version`; False if another one won it."""
        state = _to_document(order)
        state["version"] = order.version + 1
        try:
            self._transitions.insert_one(
                {"_id": f"{order.order_id}:{order.version + 1}", "order_id": order.order_id, "state": state}
            )
        except DuplicateKeyError:
            return False
        self._write(state, order.version)
        order.version += 1
        return True

    def unfinished_transition(self, order: Order) -> Order | None:
        """The state a claimed transition moves this order to, if its writer died before writing it."""
        claim = self._transitions.find_one({"_id": f"{order.order_id}:{order.version + 1}"})
        return None if claim is None else _from_document(claim["state"])

    def finish_transition(self, order: Order) -> None:
        """Write the state of a claimed transition (idempotent: the same state whoever writes it)."""
        self._write(_to_document(order), order.version - 1)

    def pending(self, limit: int = 0) -> list[Order]:
        """Pending orders (all of them unless limited), the most overdue first."""
        cursor = self._orders.find({"status": "pending"}).sort("deadline", ASCENDING).limit(limit)
        return [_from_document(document) for document in cursor]

    def count_pending(self) -> int:
        return self._orders.count_documents({"status": "pending"})

    def overdue(self, now: datetime, limit: int = 500) -> list[Order]:
        cursor = (
            self._orders.find({"status": "pending", "deadline": {"$lte": now}})
            .sort("deadline", ASCENDING)
            .limit(limit)
        )
        return [_from_document(document) for document in cursor]

    def _write(self, state: dict[str, Any], previous_version: int) -> None:
        fields = {key: value for key, value in state.items() if key != "_id"}
        self._orders.update_one({"_id": state["_id"], "version": previous_version}, {"$set": fields})


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
            }
            for entry in order.history
        ],
        "last_cause": order.last_cause,
        "step_timeout_seconds": order.step_timeout.total_seconds(),
        "deadline": order.deadline,
        "refund_required": order.refund_required,
        "version": order.version,
    }


def _from_document(document: dict[str, Any]) -> Order:
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
            )
            for entry in document.get("history", [])
        ],
        last_cause=document.get("last_cause", ""),
        step_timeout=timedelta(seconds=document.get("step_timeout_seconds", 30)),
        deadline=document.get("deadline"),
        refund_required=document.get("refund_required", False),
        version=document.get("version", 0),
    )
