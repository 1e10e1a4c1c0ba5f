"""The public intake: what upstream systems publish to `orderflow.intake` with key `order.submit`."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.base import CustomerId, CustomerName, OrderId, Phone, Sku, SubmittedEmail

MAX_LINES = 100
MAX_UNITS_PER_SKU = 10_000


def units_per_sku(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Lines of the same SKU added up: an order holds each SKU once, in the order first named."""
    units: dict[str, int] = {}
    for sku, quantity in lines:
        units[sku] = units.get(sku, 0) + quantity
    return units


class PaymentMethod(StrEnum):
    CREDIT_CARD = "credit_card"
    ALIPAY = "alipay"
    WECHAT_PAY = "wechat_pay"


class _Strict(BaseModel):
    # Strict: "2" is not a quantity and 2 is not a name. Unknown fields are ignored, so upstreams
    # may send more than we read.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Customer(_Strict):
    customer_id: CustomerId
    name: CustomerName
    email: SubmittedEmail
    phone: Phone | None = None
    address: str | None = Field(default=None, min_length=1, max_length=500)


class OrderLine(_Strict):
    sku: Sku
    quantity: int = Field(ge=1, le=MAX_UNITS_PER_SKU)


class PaymentDetails(_Strict):
    method: PaymentMethod
    token: str = Field(min_length=1, max_length=256)


class OrderSubmission(_Strict):
    """An order as an upstream system submits it. Prices are never taken from here."""

    schema_version: int = 1  # the current version (shared/contracts/versions.py); upstreams may omit it
    order_id: OrderId
    customer: Customer
    items: list[OrderLine] = Field(min_length=1, max_length=MAX_LINES)
    payment: PaymentDetails

    @model_validator(mode="after")
    def _units_per_sku(self) -> OrderSubmission:
        totals = units_per_sku((item.sku, item.quantity) for item in self.items)
        too_many = sorted(sku for sku, units in totals.items() if units > MAX_UNITS_PER_SKU)
        if too_many:
            raise ValueError(f"more than {MAX_UNITS_PER_SKU} units in total of {', '.join(too_many)}")
        return self
