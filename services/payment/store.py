"""The payment worker's repository. Inserting a payment is the claim that makes a charge unique."""

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
        """Insert each order's payment unless it has one; returns the order ids that had one (an
        insert under a unique id is atomic, so two workers cannot both claim a charge)."""
        return insert_new(
            self._payments, [{"_id": payment.order_id, **_fields(payment)} for payment in payments]
        )

    def get(self, order_id: str) -> Payment | None:
        return self.get_many([order_id]).get(order_id)

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        return {document["_id"]: _payment(document) for document in find_by_ids(self._payments, order_ids)}

    def save(self, payment: Payment) -> None:
        self._payments.update_one({"_id": payment.order_id}, {"$set": _fields(payment)})

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
                    {"_id": payment.order_id, "status": {"$in": unsettled}},
                    {"$set": _fields(payment)},
                )
                for payment in payments
            ],
            ordered=False,
        )
        if result.matched_count == len(payments):
            return set()
        stored = self.get_many(payment.order_id for payment in payments)
        return {
            payment.order_id
            for payment in payments
            if (found := stored.get(payment.order_id)) is None or _fields(found) != _fields(payment)
        }

    def record_refund_attempts(self, payment: Payment) -> None:
        """Count refund calls that could not reach the provider, leaving the rest as stored."""
        self._payments.update_one(
            {"_id": payment.order_id},
            {"$set": {"refund_attempts": payment.refund_attempts, "detail": payment.detail}},
        )


def _payment(document: dict[str, Any]) -> Payment:
    fields = dict(document)
    return Payment(order_id=fields.pop("_id"), status=PaymentStatus(fields.pop("status")), **fields)


def _fields(payment: Payment) -> dict[str, Any]:
    fields = vars(payment).copy()
    del fields["order_id"]
    fields["status"] = payment.status.value
    return fields
