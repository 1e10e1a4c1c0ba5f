"""Payment gateway adapters. A real provider sits behind each; here, a simulated one.

Providers take an idempotency key: asking twice for the same charge charges once, and the key is
how the outcome of a call whose answer was lost is found again (`lookup`), or made certain
(`void`: nothing is ever captured under the key after it). Nothing but what the provider returns
(its charge id, a masked card) is ever stored: never a token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.contracts.base import new_id, utcnow
from shared.errors import TransientError

# Tokens the simulated provider treats specially, as real providers' test cards do.
DECLINED_TOKEN = "tok_declined"  # declined by the issuer
GATEWAY_ERROR_TOKEN = "tok_gateway_error"  # every charge call fails; nothing is captured
LOST_REPLY_TOKEN = "tok_lost_reply"  # the first charge call captures, then times out
SLOW_TOKEN = "tok_slow"  # every charge call answers after the simulated delay
REFUND_ERROR_TOKEN = "tok_refund_error"  # the first refund calls of its charge fail
REFUND_ERRORS = 3
# Approved, but any later charge on the same instrument (an amendment's difference) is declined.
NO_FURTHER_CHARGES_TOKEN = "tok_no_further_charges"

VOIDED = "voided by the merchant: nothing can be charged under this key"


class GatewayUnavailable(TransientError):
    """The provider could not be reached, failed, or did not answer in time: the request may or
    may not have taken effect, and the same request may succeed later."""


class RefundRefused(Exception):
    """The provider refuses the refund for good: more than what is left of the charge."""


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    charge_id: str | None = None
    decline_reason: str | None = None
    instrument: str | None = None  # what the provider says about the card or wallet, masked
    amount: int = 0  # what the provider captured
    at: datetime | None = None  # when the provider captured it, if it says
    voided: bool = False  # declined because the key was voided (by a void whose reply may have been lost)


@dataclass(frozen=True)
class Capture:
    """What the provider holds under an idempotency key."""

    charge_id: str
    amount: int
    currency: str
    instrument: str | None = None
    at: datetime | None = None  # when the provider captured it, if it says


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    amount: int
    at: datetime | None = None  # when the provider refunded it, if it says


class PaymentGateway(Protocol):
    def charge(self, *, idempotency_key: str, amount: int, currency: str, token: str) -> ChargeResult: ...

    def charge_on_file(
        self, *, idempotency_key: str, charge_id: str, amount: int, currency: str
    ) -> ChargeResult:
        """Charge again the instrument of an earlier capture (the customer agreed to it)."""
        ...

    def lookup(self, *, idempotency_key: str) -> Capture | None:
        """The capture made under the key, if any."""
        ...

    def void(self, *, idempotency_key: str) -> Capture | None:
        """Make sure nothing is ever captured under the key; the capture, if one came first."""
        ...

    def refund(self, *, idempotency_key: str, charge_id: str, amount: int, currency: str) -> RefundResult: ...


class SimulatedGateway:
    """A stand-in provider with the faults real ones have, chosen by token (see the constants
    above); it approves any other token. It keeps its own ledger, as a provider would, in a
    database that is not the payment worker's, so tests can count real money:

    - `keys`: one document per idempotency key, inserted by the first charge or void under it.
      The insert is atomic, so of a charge and a void racing under one key exactly one wins.
    - `charges`: the captures, one per key that a charge won.
    - `refunds`: one per refund idempotency key.
    """

    def __init__(
        self,
        method: str,
        ledger: Database,
        delay_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.method = method
        self.delay_seconds = delay_seconds
        self.sleep = sleep
        self._keys: Collection = ledger["keys"]
        self._charges: Collection = ledger["charges"]
        self._refunds: Collection = ledger["refunds"]

    def charge(self, *, idempotency_key: str, amount: int, currency: str, token: str) -> ChargeResult:
        if token == SLOW_TOKEN:
            self.sleep(self.delay_seconds)
        if token == GATEWAY_ERROR_TOKEN:
            raise GatewayUnavailable(f"{self.method} gateway did not answer")
        if token == DECLINED_TOKEN:
            return ChargeResult(approved=False, decline_reason="card declined by issuer")
        request = self._charge_request(
            idempotency_key,
            amount,
            currency,
            instrument=f"{self.method} ****{token[-4:]}",
            refund_errors=REFUND_ERRORS if token == REFUND_ERROR_TOKEN else 0,
            further_charges=token != NO_FURTHER_CHARGES_TOKEN,
        )
        first = self._claim(request)
        if first["kind"] != "charge":
            return ChargeResult(approved=False, decline_reason=VOIDED, voided=True)
        if token == LOST_REPLY_TOKEN and first is request:
            self._captured(first)
            raise GatewayUnavailable(f"{self.method} gateway timed out (the charge went through)")
        return self._approved(first)

    def charge_on_file(
        self, *, idempotency_key: str, charge_id: str, amount: int, currency: str
    ) -> ChargeResult:
        earlier = self._charges.find_one({"charge_id": charge_id})
        if earlier is None:
            return ChargeResult(approved=False, decline_reason=f"no capture {charge_id} on file")
        if not earlier.get("further_charges", True):
            return ChargeResult(approved=False, decline_reason="card declined by issuer")
        request = self._charge_request(
            idempotency_key, amount, currency, instrument=earlier.get("instrument"), on_file=charge_id
        )
        first = self._claim(request)
        if first["kind"] != "charge":
            return ChargeResult(approved=False, decline_reason=VOIDED, voided=True)
        return self._approved(first)

    def lookup(self, *, idempotency_key: str) -> Capture | None:
        request = self._keys.find_one({"_id": idempotency_key})
        return self._captured(request) if request and request["kind"] == "charge" else None

    def void(self, *, idempotency_key: str) -> Capture | None:
        first = self._claim({"_id": idempotency_key, "kind": "void", "at": utcnow()})
        return self._captured(first) if first["kind"] == "charge" else None

    def refund(self, *, idempotency_key: str, charge_id: str, amount: int, currency: str) -> RefundResult:
        charge = self._charges.find_one({"charge_id": charge_id})
        if charge is None:
            raise GatewayUnavailable(f"{self.method} gateway knows no charge {charge_id}")
        if charge.get("refund_errors", 0) > 0:
            self._charges.update_one({"_id": charge["_id"]}, {"$inc": {"refund_errors": -1}})
            raise GatewayUnavailable(f"{self.method} gateway failed to refund {charge_id}")
        done = self._refunds.find_one({"_id": idempotency_key})
        if done is not None:
            return _refund_result(done)
        refunded = sum(int(entry["amount"]) for entry in self._refunds.find({"charge_id": charge_id}))
        if refunded + amount > charge["amount"]:
            raise RefundRefused(
                f"{self.method} gateway refuses to refund {amount} of {charge_id}: "
                f"{refunded} of its {charge['amount']} refunded already"
            )
        entry: dict[str, Any] = {
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
        return _refund_result(entry)

    def _charge_request(
        self, idempotency_key: str, amount: int, currency: str, **details: Any
    ) -> dict[str, Any]:
        """A charge as the provider keeps it under its key (with a new charge id)."""
        return {
            "_id": idempotency_key,
            "kind": "charge",
            "charge_id": f"ch_{new_id().replace('-', '')[:24]}",
            "method": self.method,
            "amount": amount,
            "currency": currency,
            "refund_errors": 0,
            **details,
            "at": utcnow(),
        }

    def _approved(self, request: dict[str, Any]) -> ChargeResult:
        capture = self._captured(request)
        return ChargeResult(
            approved=True,
            charge_id=capture.charge_id,
            instrument=capture.instrument,
            amount=capture.amount,
            at=capture.at,
        )

    def _claim(self, request: dict[str, Any]) -> dict[str, Any]:
        """Insert the first request under its key; returns whichever request came first."""
        try:
            self._keys.insert_one(request)
            return request
        except DuplicateKeyError:
            first = self._keys.find_one({"_id": request["_id"]})
            assert first is not None, "a key once claimed is never removed"
            return first

    def _captured(self, request: dict[str, Any]) -> Capture:
        """The capture a charge request made (recorded now if its first caller died before)."""
        charge = {key: value for key, value in request.items() if key != "kind"}
        with suppress(DuplicateKeyError):
            self._charges.insert_one(charge)
        return Capture(
            charge_id=request["charge_id"],
            amount=request["amount"],
            currency=request["currency"],
            instrument=request.get("instrument"),
            at=request.get("at"),
        )


def _refund_result(entry: dict[str, Any]) -> RefundResult:
    return RefundResult(refund_id=str(entry["refund_id"]), amount=int(entry["amount"]), at=entry.get("at"))
