"""The payment worker's repository. Inserting a payment is the claim that makes a charge unique.

A payment is stored under its idempotency key: an order's own charge under the order id, a
change's under the change's key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from services.payment.domain import UNSETTLED, Payment, PaymentStatus
from shared.store import find_by_ids, insert_new


class PaymentRepository:
    def __init__(self, db: Database) -> None:
        self._payments = db["payments"]

    def claim(self, payments: Iterable[Payment]) -> set[str]:
        """Insert each payment unless its key has one; returns the keys that had one (an insert
        under a unique id is atomic, so two workers cannot both claim a charge)."""
        return insert_new(
            self._payments, [{"_id": payment.idempotency_key, **_fields(payment)} for payment in payments]
        )

    def get(self, key: str) -> Payment | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Payment]:
        return {document["_id"]: _payment(document) for document in find_by_ids(self._payments, keys)}

    def of_order(self, order_id: str) -> list[Payment]:
        """The order's charge and its changes' charges (a scan of the order's keys: for operators)."""
        own = self.get_many([order_id])
        further = self._payments.find({"order_id": order_id, "_id": {"$ne": order_id}}).sort("created_at", 1)
        return [*own.values(), *(_payment(document) for document in further)]

    def save(self, payment: Payment) -> None:
        self._payments.update_one({"_id": payment.idempotency_key}, {"$set": _fields(payment)})

    def settle(self, payments: list[Payment]) -> set[str]:
        """Write the outcome of charges whose stored payments are still unsettled; returns the
        order ids of those a concurrent duplicate or a refund settled first (what they stored
        stands: the provider answers every caller of one key alike)."""
        if not payments:
            return set()
        unsettled = [status.value for status in UNSETTLED]
        result = self._payments.bulk_write(
            [
                UpdateOne(
                    {"_id": payment.idempotency_key, "status": {"$in": unsettled}},
                    {"$set": _fields(payment)},
                )
                for payment in payments
            ],
            ordered=False,
        )
        if result.matched_count == len(payments):
            return set()
        stored = self.get_many(payment.idempotency_key for payment in payments)
        return {
            payment.idempotency_key
            for payment in payments
            if (found := stored.get(payment.idempotency_key)) is None or _fields(found) != _fields(payment)
        }

    def record_refund_attempts(self, payment: Payment) -> None:
        """Count refund calls that could not reach the provider, leaving the rest as stored."""
        self._payments.update_one(
            {"_id": payment.idempotency_key},
            {"$set": {"refund_attempts": payment.refund_attempts, "detail": payment.detail}},
        )


def _payment(document: dict[str, Any]) -> Payment:
    fields = dict(document)
    key = fields.pop("_id")
    # Stored by earlier versions: under the order id, without it as a field.
    order_id = fields.pop("order_id", key)
    fields["key"] = key if key != order_id else None
    return Payment(order_id=order_id, status=PaymentStatus(fields.pop("status")), **fields)


def _fields(payment: Payment) -> dict[str, Any]:
    fields = vars(payment).copy()
    del fields["key"]
    fields["status"] = payment.status.value
    return fields
