"""A payment per charge: charged at most once, refunded at most once per refund, never left in doubt.

An order is charged under its own id as idempotency key; a change to it (an amendment, an
exchange) that costs more is charged under a key of its own. A refund of part of an order's
money is taken from its charges, each refunded once per refund key (`refunds`).

A charge whose calls all failed may still have gone through at the provider: its outcome is
`unknown` until the provider, asked by idempotency key, says what it holds. A capture always wins
over a local failure; `failed` means the provider holds nothing and never will (the key is void).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class PaymentStatus(StrEnum):
    CHARGING = "charging"
    CAPTURED = "captured"
    DECLINED = "declined"
    FAILED = "failed"  # the provider holds nothing, and its key is void: nothing can follow
    UNKNOWN = "unknown"  # the provider could not be asked: it may hold a capture
    REFUNDED = "refunded"
    VOIDED = "voided"  # undone before anything was captured: a charge arriving later must not happen


# A charge may be settled from these: a capture found later overrides a charge in doubt.
UNSETTLED = (PaymentStatus.CHARGING, PaymentStatus.UNKNOWN)
# Nothing was captured and nothing will be.
NOTHING_CAPTURED = (PaymentStatus.DECLINED, PaymentStatus.FAILED, PaymentStatus.VOIDED)


class PaymentStateError(Exception):
    pass


@dataclass
class Payment:
    order_id: str
    method: str
    amount: int  # what was asked
    currency: str
    status: PaymentStatus
    created_at: datetime
    charge_id: str | None = None
    instrument: str | None = None
    detail: str | None = None
    refund_id: str | None = None
    attempts: int = 0  # charge calls made
    captured: int = 0  # what the provider captured, as it said
    refunded: int = 0  # what the provider refunded, as it said
    refund_attempts: int = 0
    key: str | None = None  # the charge's idempotency key (None: the order id)
    refunds: dict[str, int] = field(default_factory=dict)  # refund key -> amount, of part refunds

    @property
    def idempotency_key(self) -> str:
        return self.key or self.order_id

    @property
    def refundable(self) -> int:
        return self.captured - self.refunded

    def capture(self, charge_id: str, instrument: str | None, amount: int) -> None:
        # The provider's word wins over a local failure.
        self._expect(*UNSETTLED, PaymentStatus.FAILED)
        self.status, self.charge_id, self.instrument = PaymentStatus.CAPTURED, charge_id, instrument
        self.captured, self.detail = amount, None

    def decline(self, reason: str) -> None:
        self._expect(*UNSETTLED)
        self.status, self.detail = PaymentStatus.DECLINED, reason

    def fail(self, detail: str) -> None:
        self._expect(*UNSETTLED)
        self.status, self.detail = PaymentStatus.FAILED, detail

    def in_doubt(self, detail: str) -> None:
        self._expect(*UNSETTLED)
        self.status, self.detail = PaymentStatus.UNKNOWN, detail

    def refund(self, refund_id: str, amount: int) -> None:
        """The rest of the capture went back: the payment is undone."""
        self._expect(PaymentStatus.CAPTURED)
        self.status, self.refund_id, self.refunded = PaymentStatus.REFUNDED, refund_id, self.refunded + amount

    def refund_part(self, refund_key: str, amount: int) -> None:
        """Part of the capture went back, once per refund key."""
        self._expect(PaymentStatus.CAPTURED)
        if refund_key in self.refunds:
            return
        if amount > self.refundable:
            raise PaymentStateError(
                f"payment {self.idempotency_key}: {amount} is more than {self.refundable}"
            )
        self.refunds = {**self.refunds, refund_key: amount}
        self.refunded += amount

    def void(self) -> None:
        """Nothing was captured, and the provider will capture nothing: undone for good."""
        if self.status in (PaymentStatus.DECLINED, PaymentStatus.FAILED):
            return  # already nothing, and more telling
        self._expect(*UNSETTLED, PaymentStatus.VOIDED)
        self.status = PaymentStatus.VOIDED

    @property
    def settled(self) -> bool:
        return self.status not in UNSETTLED

    def _expect(self, *statuses: PaymentStatus) -> None:
        if self.status not in statuses:
            expected = " or ".join(statuses)
            raise PaymentStateError(f"payment of {self.order_id} is {self.status}, not {expected}")
