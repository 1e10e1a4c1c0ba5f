"""A payment per order: charged at most once, refunded at most once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class PaymentStatus(StrEnum):
    CHARGING = "charging"
    CAPTURED = "captured"
    DECLINED = "declined"
    FAILED = "failed"
    REFUNDED = "refunded"
    VOIDED = "voided"  # refunded before any charge: a charge arriving later must not happen


class PaymentStateError(Exception):
    pass


@dataclass
class Payment:
    order_id: str
    method: str
    amount: int
    currency: str
    status: PaymentStatus
    created_at: datetime
    charge_id: str | None = None
    instrument: str | None = None
    detail: str | None = None
    refund_id: str | None = None
    attempts: int = 0

    def capture(self, charge_id: str, instrument: str | None) -> None:
        self._expect(PaymentStatus.CHARGING)
        self.status, self.charge_id, self.instrument = PaymentStatus.CAPTURED, charge_id, instrument

    def decline(self, reason: str) -> None:
        self._expect(PaymentStatus.CHARGING)
        self.status, self.detail = PaymentStatus.DECLINED, reason

    def fail(self, detail: str) -> None:
        self._expect(PaymentStatus.CHARGING)
        self.status, self.detail = PaymentStatus.FAILED, detail

    def refunded(self, refund_id: str) -> None:
        self._expect(PaymentStatus.CAPTURED)
        self.status, self.refund_id = PaymentStatus.REFUNDED, refund_id

    def _expect(self, status: PaymentStatus) -> None:
        if self.status is not status:
            raise PaymentStateError(f"payment of {self.order_id} is {self.status}, not {status}")
