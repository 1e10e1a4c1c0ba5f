"""Commands and replies of the order saga, carried by dramatiq between order, inventory and payment.

Commands are imperatives (`ReserveStock`), replies are facts in the past tense (`StockReserved`).
Amounts are integer minor units. Stock is partitioned by SKU: every stock command names the
inventory partition that owns its SKUs, and a reply names the partition it comes from.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import Message, MinorUnits, OrderMessage, Quantity, Sku


class StockLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: Sku
    quantity: Quantity


class PricedLine(StockLine):
    unit_price: MinorUnits
    line_total: MinorUnits


Partition = Annotated[int, Field(ge=0)]


# Inventory commands ---------------------------------------------------------------------------


class ReserveStock(OrderMessage):
    """Hold every line, or none of them (all the lines are in one partition)."""

    partition: Partition = 0
    lines: list[StockLine] = Field(min_length=1)


class ReleaseStock(OrderMessage):
    """Compensation: give back whatever the order holds of these SKUs (nothing, if it holds nothing)."""

    partition: Partition = 0
    skus: list[Sku] = Field(default_factory=list)


class CommitStock(OrderMessage):
    """The order is confirmed: the units it holds of these SKUs are sold."""

    partition: Partition = 0
    skus: list[Sku] = Field(default_factory=list)


class SetStock(Message):
    """Create or overwrite a catalog entry: price and available units, and the name and low-stock
    threshold if given (None keeps an existing entry's; a new one gets the SKU and 0)."""

    partition: Partition = 0
    sku: Sku
    quantity: int = Field(ge=0)
    price: MinorUnits
    name: str | None = Field(default=None, min_length=1, max_length=200)
    low_stock_threshold: int | None = Field(default=None, ge=0)


class Restock(Message):
    partition: Partition = 0
    sku: Sku
    quantity: int = Field(ge=1)


STOCK_COMMANDS = (ReserveStock, ReleaseStock, CommitStock, SetStock, Restock)
StockCommand = ReserveStock | ReleaseStock | CommitStock | SetStock | Restock


# Inventory replies ----------------------------------------------------------------------------


class StockReserved(OrderMessage):
    partition: Partition = 0
    lines: list[PricedLine]
    total: MinorUnits


class StockReservationFailed(OrderMessage):
    partition: Partition = 0
    reason: Literal["out_of_stock", "unknown_sku"]
    skus: list[str]


class StockReleased(OrderMessage):
    partition: Partition = 0


class StockStillHeld(OrderMessage):
    """Inventory asks the order: units it reserved for the order in this partition are still held
    long after the reservation (a commit or release that never arrived). The order answers with
    the command its state implies."""

    partition: Partition = 0


# The order's own timer ------------------------------------------------------------------------


# A finished order whose refund or stock commits are still outstanding asks for them again after
# the step timeout times these, in turn, then the last one for as long as it takes.
FOLLOW_UP_BACKOFF = (1, 2, 4, 8, 16)


class StepDeadline(OrderMessage):
    """Sent by the order worker to itself, delayed by the step timeout: is the saga still waiting?"""

    # The order's version when the timer was set: a timer is about the step it was set in.
    version: int = Field(ge=0)
    # Set again because the step's command may have been in a consumer's hands: no more of those.
    extended: bool = False


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
