"""The payment worker's ledger: one entry per effect a gateway had, for the books.

A capture, a refund or a void is recorded under the provider's own reference to it (its charge
id, its refund id, the voided idempotency key), so recording it again (a redelivery, a retry that
got the same answer, two workers racing on one key) adds nothing: the entry is inserted under that
id or found there. Each entry keeps the UTC day it happened on, so the finance report can select
and group by day on any store.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from services.payment.domain import Payment


class EntryKind(StrEnum):
    CAPTURE = "capture"  # money taken: `reference` is the provider's charge id
    REFUND = "refund"  # money given back: `reference` is the provider's refund id
    VOID = "void"  # an idempotency key made void, nothing captured under it: `reference` is the key


@dataclass(frozen=True)
class LedgerEntry:
    kind: EntryKind
    method: str
    reference: str
    amount: int  # minor units: captured, refunded, or (a void) what had been asked
    currency: str
    at: datetime
    order_id: str
    key: str  # the payment's idempotency key: the order id, or a change's `<order>/change/<n>`
    charge_id: str | None = None  # of a refund: the capture it gave money back from

    @property
    def entry_id(self) -> str:
        # Providers' references are unique per provider (method), and per kind of effect.
        return f"{self.kind.value}:{self.method}:{self.reference}"

    @property
    def day(self) -> str:
        """The UTC day of the effect, YYYY-MM-DD."""
        at = self.at.replace(tzinfo=UTC) if self.at.tzinfo is None else self.at.astimezone(UTC)
        return at.date().isoformat()


def as_document(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "_id": entry.entry_id,
        "kind": entry.kind.value,
        "method": entry.method,
        "reference": entry.reference,
        "amount": entry.amount,
        "currency": entry.currency,
        "at": entry.at,
        "day": entry.day,
        "order_id": entry.order_id,
        "key": entry.key,
        "charge_id": entry.charge_id,
    }


def from_document(document: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        kind=EntryKind(document["kind"]),
        method=document["method"],
        reference=document["reference"],
        amount=int(document["amount"]),
        currency=document["currency"],
        at=document["at"],
        order_id=document["order_id"],
        key=document["key"],
        charge_id=document.get("charge_id"),
    )


def capture_entry(payment: Payment, at: datetime) -> LedgerEntry:
    """The capture a payment holds, as the provider made it."""
    assert payment.charge_id is not None, f"{payment.idempotency_key} was never captured"
    return _entry(payment, EntryKind.CAPTURE, payment.charge_id, payment.captured, at)


def refund_entry(payment: Payment, refund_id: str, amount: int, at: datetime) -> LedgerEntry:
    """A refund the provider made of the payment's capture."""
    entry = _entry(payment, EntryKind.REFUND, refund_id, amount, at)
    return replace(entry, charge_id=payment.charge_id)


def void_entry(payment: Payment, at: datetime) -> LedgerEntry:
    """The payment's idempotency key made void at the provider: nothing was captured, nor will be."""
    return _entry(payment, EntryKind.VOID, payment.idempotency_key, payment.amount, at)


def _entry(payment: Payment, kind: EntryKind, reference: str, amount: int, at: datetime) -> LedgerEntry:
    return LedgerEntry(
        kind=kind,
        method=payment.method,
        reference=reference,
        amount=amount,
        currency=payment.currency,
        at=at,
        order_id=payment.order_id,
        key=payment.idempotency_key,
    )
