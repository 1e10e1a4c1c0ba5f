"""Payment gateway adapters. A real provider sits behind each; here, a simulated one.

Providers take an idempotency key, so asking twice for the same charge charges once. Nothing but
what the provider returns (its charge id, a masked card) is ever stored: never a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.contracts.base import new_id, utcnow
from shared.errors import TransientError

DECLINED_TOKEN = "tok_declined"
GATEWAY_ERROR_TOKEN = "tok_gateway_error"


class GatewayUnavailable(TransientError):
    """The provider could not be reached or failed; the same request may succeed later."""


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    charge_id: str | None = None
    decline_reason: str | None = None
    instrument: str | None = None  # what the provider says about the card or wallet, masked


class PaymentGateway(Protocol):
    def charge(self, *, idempotency_key: str, amount: int, currency: str, token: str) -> ChargeResult: ...

    def refund(self, *, idempotency_key: str, charge_id: str, amount: int, currency: str) -> str: ...


class SimulatedGateway:
    """A stand-in provider: approves every token but `tok_declined` (declined) and
    `tok_gateway_error` (fails every time). It keeps its own ledger, as a provider would, in a
    database that is not the payment worker's, so tests can count real charges."""

    def __init__(self, method: str, ledger: Database) -> None:
        self.method = method
        self._charges = ledger["charges"]
        self._refunds = ledger["refunds"]

    def charge(self, *, idempotency_key: str, amount: int, currency: str, token: str) -> ChargeResult:
        if token == GATEWAY_ERROR_TOKEN:
            raise GatewayUnavailable(f"{self.method} gateway did not answer")
        if token == DECLINED_TOKEN:
            return ChargeResult(approved=False, decline_reason="card declined by issuer")
        entry: dict[str, Any] = {
            "_id": idempotency_key,
            "charge_id": f"ch_{new_id().replace('-', '')[:24]}",
            "method": self.method,
            "amount": amount,
            "currency": currency,
            "instrument": f"{self.method} ****{token[-4:]}",
            "at": utcnow(),
        }
        try:
            self._charges.insert_one(entry)
        except DuplicateKeyError:
            entry = self._charges.find_one({"_id": idempotency_key}) or entry
        return ChargeResult(approved=True, charge_id=entry["charge_id"], instrument=entry["instrument"])

    def refund(self, *, idempotency_key: str, charge_id: str, amount: int, currency: str) -> str:
        entry = {
            "_id": idempotency_key,
            "refund_id": f"re_{new_id().replace('-', '')[:24]}",
            "charge_id": charge_id,
            "amount": amount,
            "currency": currency,
            "at": utcnow(),
        }
        try:
            self._refunds.insert_one(entry)
        except DuplicateKeyError:
            entry = self._refunds.find_one({"_id": idempotency_key}) or entry
        return str(entry["refund_id"])
