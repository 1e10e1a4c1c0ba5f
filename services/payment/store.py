"""The payment worker's repository. Inserting a payment is the claim that makes a charge unique.

A payment is stored under its idempotency key: an order's own charge under the order id, a
change's under the change's key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from services.payment.domain import UNSETTLED, Payment, PaymentStatus
from services.payment.ledger import LedgerEntry, as_document
from shared.documents import SCHEMA_FIELD, DocumentSchema
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


class PaymentLedger:
    """The ledger's entries (services/payment/ledger.py), one per gateway effect, insert-only."""

    def __init__(self, db: Database) -> None:
        self._entries = db["ledger"]

    def ensure_indexes(self) -> None:
        # Reports select by day; the hot path only inserts, a batch's entries at once.
        self._entries.create_index("day")

    def record(self, entries: Iterable[LedgerEntry]) -> None:
        """Insert each entry unless it is there already, in one round trip."""
        insert_new(self._entries, [as_document(entry) for entry in entries])

    def sums_by_day(self, first_day: str | None, last_day: str | None, currency: str) -> list[dict[str, Any]]:
        """Amount and count of the entries in `currency` per day, method and kind, from `first_day`
        to `last_day` (YYYY-MM-DD, both included; None: no bound), sorted by day and method."""
        days: dict[str, str] = {}
        if first_day is not None:
            days["$gte"] = first_day
        if last_day is not None:
            days["$lte"] = last_day
        match = {"currency": currency, **({"day": days} if days else {})}
        # One read, summed here: amounts and counts from the same entries (two aggregates, one per
        # accumulator as FerretDB v1 allows, could see an entry inserted between them).
        sums: dict[tuple[str, str, str], list[int]] = {}
        for entry in self._entries.find(match, {"day": 1, "method": 1, "kind": 1, "amount": 1}):
            total = sums.setdefault((entry["day"], entry["method"], entry["kind"]), [0, 0])
            total[0] += entry["amount"]
            total[1] += 1
        return [
            {"day": day, "method": method, "kind": kind, "amount": amount, "count": count}
            for (day, method, kind), (amount, count) in sorted(sums.items())
        ]


def _payment_v1(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1, payments stored before documents carried a version. The release before versions
    stored each under its order id, without it as a field, and refunded only whole charges."""
    return {"order_id": document["_id"], "refunds": {}, **document}


# Version 2: every payment names its order. Its fields never change once written, and each of the
# payment's own writes sets the same values, so a migration's write needs no guard beyond `schema`.
PAYMENTS = DocumentSchema("payment", "payments", 2, {1: _payment_v1})
_PAYMENT_FIELDS = frozenset(field.name for field in dataclasses.fields(Payment))


def _payment(document: dict[str, Any]) -> Payment:
    document = PAYMENTS.current(document)
    key, order_id = document["_id"], document["order_id"]
    fields = {name: value for name, value in document.items() if name in _PAYMENT_FIELDS}
    fields.update(order_id=order_id, key=key if key != order_id else None)
    return Payment(**{**fields, "status": PaymentStatus(document["status"])})


def _fields(payment: Payment) -> dict[str, Any]:
    fields = vars(payment).copy()
    del fields["key"]
    fields["status"] = payment.status.value
    fields[SCHEMA_FIELD] = PAYMENTS.version
    return fields
