"""Commands and replies of the order saga, carried by dramatiq between order, inventory and payment.

Commands are imperatives (`ReserveStock`), replies are facts in the past tense (`StockReserved`).
Amounts are integer minor units. Stock is partitioned by SKU: every stock command names the
inventory partition that owns its SKUs, and a reply names the partition it comes from.

An order holds stock and pays under its own id; a change to a placed order (an amendment, an
exchange) holds the units it adds under a hold id of its own (`hold`), and charges or refunds its
difference under keys of its own (`key`), so it can be undone without touching the order's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import Message, MessageId, MinorUnits, OrderKey, OrderMessage, Quantity, Sku
from shared.contracts.versions import upcaster


class StockLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: Sku
    quantity: Quantity


class PricedLine(StockLine):
    unit_price: MinorUnits
    line_total: MinorUnits


Partition = Annotated[int, Field(ge=0)]
# Whose units a stock command or reply is about: the order's own (None), or a change's
# (`<order id>/change/<n>`).
Hold = Annotated[OrderKey | None, Field(default=None)]
# The idempotency key of a charge: the order's own (None: the order id), or a change's
# (`<order id>/change/<n>`).
PaymentKey = Annotated[OrderKey | None, Field(default=None)]


# Inventory commands ---------------------------------------------------------------------------


class ReserveStock(OrderMessage):
    """Hold every line, or none of them (all the lines are in one partition)."""

    partition: Partition = 0
    lines: list[StockLine] = Field(min_length=1)
    hold: Hold = None


class ReleaseStock(OrderMessage):
    """Compensation: give back whatever the order holds of these SKUs (nothing, if it holds nothing)."""

    partition: Partition = 0
    skus: list[Sku] = Field(default_factory=list)
    hold: Hold = None


class CommitStock(OrderMessage):
    """The order is confirmed: the units it holds of these SKUs are sold."""

    partition: Partition = 0
    skus: list[Sku] = Field(default_factory=list)
    hold: Hold = None


class ReturnStock(OrderMessage):
    """Units sold for the order come back (a cancel after confirmation, an amendment that removes
    them, a return): sold goes back to available, once per message id."""

    partition: Partition = 0
    lines: list[StockLine] = Field(min_length=1)


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


STOCK_COMMANDS = (ReserveStock, ReleaseStock, CommitStock, ReturnStock, SetStock, Restock)
StockCommand = ReserveStock | ReleaseStock | CommitStock | ReturnStock | SetStock | Restock


# Inventory replies ----------------------------------------------------------------------------


class StockReserved(OrderMessage):
    partition: Partition = 0
    lines: list[PricedLine]
    total: MinorUnits
    hold: Hold = None


class StockReservationFailed(OrderMessage):
    partition: Partition = 0
    reason: Literal["out_of_stock", "unknown_sku"]
    skus: list[Sku]
    hold: Hold = None


class StockReleased(OrderMessage):
    partition: Partition = 0
    hold: Hold = None


class StockReturned(OrderMessage):
    """The units of a ReturnStock are available again; `returned` is that command's message id."""

    partition: Partition = 0
    returned: MessageId


class StockStillHeld(OrderMessage):
    """Inventory asks the order: units it reserved for the order in this partition are still held
    long after the reservation (a commit or release that never arrived). The order answers with
    the command its state implies."""

    partition: Partition = 0
    hold: Hold = None


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
    """Charge `amount` under the idempotency key `key`: with the customer's token, or, without
    one, again on the instrument of the earlier capture `on_file` (a merchant-initiated charge, as
    providers allow for a customer who agreed to it)."""

    amount: MinorUnits
    currency: str
    method: str
    token: str | None = None
    on_file: str | None = None
    key: PaymentKey = None


class RefundPayment(OrderMessage):
    """Undo the charge under `key` wholly: refund what was captured, or void the key."""

    key: PaymentKey = None


class RefundPart(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: OrderKey  # the charge's idempotency key: the order id, or a change's
    amount: int = Field(ge=1)


class RefundAmount(OrderMessage):
    """Refund part of what was captured for the order, charge by charge; `refund_key` is the
    refund's idempotency key (each part is refunded once under it)."""

    refund_key: OrderKey  # `<order id>/change/<n>/refund`
    parts: list[RefundPart] = Field(min_length=1)


class PaymentCaptured(OrderMessage):
    amount: MinorUnits
    charge_id: str
    key: PaymentKey = None


class PaymentDeclined(OrderMessage):
    detail: str
    key: PaymentKey = None


class PaymentFailed(OrderMessage):
    detail: str
    key: PaymentKey = None


class PaymentRefunded(OrderMessage):
    """What was refunded: for a RefundPayment, the charge under `key` (None: the order's own) was
    undone; for a RefundAmount, the parts of the refund under `refund_key` were refunded.

    Version 2: version 1 said both in `key` (see the upcaster below)."""

    schema_version: int = 2
    amount: MinorUnits
    key: PaymentKey = None
    refund_key: OrderKey | None = None


# Versions. The last release added optional fields only (`hold` on stock messages, `key` on payment
# messages, `token` made optional beside `on_file`): a message without them, as the release before
# it sent, is read as the order's own, so they stay at version 1.


@upcaster(PaymentRefunded, 1)
def _payment_refunded_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 named a RefundAmount's refund key in `key`. A refund key ends in `/refund`, and a
    charge key (an order id, or `<order id>/change/<n>`) never does: order ids hold no `/`."""
    key = payload.get("key")
    if isinstance(key, str) and key.endswith("/refund"):
        return {**payload, "key": None, "refund_key": key}
    return payload
