"""The payment worker's repository. Inserting a payment is the claim that makes a charge unique."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.payment.domain import Payment, PaymentStatus


class PaymentRepository:
    def __init__(self, db: Database) -> None:
        self._payments = db["payments"]

    def claim(self, payment: Payment) -> bool:
        """Insert the order's payment; False if it has one already (an insert under a unique id is atomic)."""
        try:
            self._payments.insert_one({"_id": payment.order_id, **_fields(payment)})
        except DuplicateKeyError:
            return False
        return True

    def get(self, order_id: str) -> Payment | None:
        document = self._payments.find_one({"_id": order_id})
        if document is None:
            return None
        document = dict(document)
        return Payment(order_id=document.pop("_id"), status=PaymentStatus(document.pop("status")), **document)

    def save(self, payment: Payment) -> None:
        self._payments.update_one({"_id": payment.order_id}, {"$set": _fields(payment)})

    def settle(self, payment: Payment) -> bool:
        """Write the outcome of a charge if the payment is still being charged; False if a
        concurrent duplicate settled it first (it then says the same, or was refunded since)."""
        result = self._payments.update_one(
            {"_id": payment.order_id, "status": PaymentStatus.CHARGING.value}, {"$set": _fields(payment)}
        )
        return bool(result.modified_count)


def _fields(payment: Payment) -> dict[str, Any]:
    fields = vars(payment).copy()
    del fields["order_id"]
    fields["status"] = payment.status.value
    return fields
