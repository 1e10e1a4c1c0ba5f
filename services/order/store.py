"""The order worker's repository: one document per order, in its own database."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.order.domain import Customer, HistoryEntry, Line, Order, OrderStatus, SagaStep


class OrderRepository:
    def __init__(self, db: Database) -> None:
        self._orders = db["orders"]

    def ensure_indexes(self) -> None:
        self._orders.create_index([("status", ASCENDING), ("created_at", ASCENDING)])

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
        """Write a transition, guarded by the version it was read at; False if someone else moved first."""
        document = _to_document(order)
        result = self._orders.update_one(
            {"_id": order.order_id, "version": order.version},
            {"$set": {**{k: v for k, v in document.items() if k != "_id"}, "version": order.version + 1}},
        )
        if result.matched_count:
            order.version += 1
        return bool(result.matched_count)

    def count_by_status(self) -> dict[str, int]:
        pipeline = [{"$group": {"_id": "$status", "count": {"$sum": 1}}}]
        return {row["_id"]: row["count"] for row in self._orders.aggregate(pipeline)}


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
        version=document.get("version", 0),
    )
