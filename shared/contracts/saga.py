"""Commands and replies of the order saga, carried by dramatiq between order, inventory and payment.

Commands are imperatives (`ReserveStock`), replies are facts in the past tense (`StockReserved`).
Amounts are integer minor units.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import Message, MinorUnits, OrderMessage, Quantity, Sku


class StockLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: Sku
    quantity: Quantity


class PricedLine(StockLine):
    unit_price: MinorUnits
    line_total: MinorUnits


# Inventory commands ---------------------------------------------------------------------------


class ReserveStock(OrderMessage):
    lines: list[StockLine] = Field(min_length=1)


class ReleaseStock(OrderMessage):
    """Compensation: give back whatever the order holds (nothing, if it holds nothing)."""


class CommitStock(OrderMessage):
    """The order is confirmed: its reserved units are sold."""


class SetStock(Message):
    """Create or overwrite a catalog entry: name, price and available units."""

    sku: Sku
    quantity: int = Field(ge=0)
    price: MinorUnits
    name: str = Field(min_length=1, max_length=200)
    low_stock_threshold: int = Field(ge=0)


class Restock(Message):
    sku: Sku
    quantity: int = Field(ge=1)


# Inventory replies ----------------------------------------------------------------------------


class StockReserved(OrderMessage):
    lines: list[PricedLine]
    total: MinorUnits


class StockReservationFailed(OrderMessage):
    reason: Literal["out_of_stock", "unknown_sku"]
    skus: list[str]


class StockReleased(OrderMessage):
    pass


# Payment commands and replies -----------------------------------------------------------------


class ChargePayment(OrderMessage):
    amount: MinorUnits
    currency: str
    method: str
    token: str


class RefundPayment(OrderMessage):
    pass


class PaymentCaptured(OrderMessage):
    amount: MinorUnits
    charge_id: str


class PaymentDeclined(OrderMessage):
    detail: str


class PaymentFailed(OrderMessage):
    detail: str


class PaymentRefunded(OrderMessage):
    amount: MinorUnits
