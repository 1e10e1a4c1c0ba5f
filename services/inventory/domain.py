"""Stock rules: reserve all lines of an order or none, release, commit, restock, low-stock alerts.

A product's holds (units reserved per order) live on the product itself, so every change to a
SKU's stock is one single-document write that also says which order it was for: applying the
same command twice finds the hold already there (or gone) and changes nothing. A batch of
commands changes each product it touches once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

RECENT_OPERATIONS = 50  # how many restock ids a product remembers, to apply each once


class ReservationStatus(StrEnum):
    """What inventory decided for an order, remembered so that a redelivery gets the same answer.
    The units themselves are held, released and sold on the products."""

    RESERVING = "reserving"  # written by earlier versions before their holds: decided again
    RESERVED = "reserved"
    REJECTED = "rejected"
    RELEASED = "released"
    COMMITTED = "committed"  # the units are sold


class RejectReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    UNKNOWN_SKU = "unknown_sku"


class StockError(Exception):
    """A stock operation that cannot be applied as asked."""


@dataclass
class Product:
    sku: str
    name: str
    price: int  # minor units
    available: int = 0
    reserved: int = 0
    sold: int = 0
    low_stock_threshold: int = 0
    holds: dict[str, int] = field(default_factory=dict)  # order id -> units held
    recent_operations: list[str] = field(default_factory=list)
    version: int = 0

    def copy(self) -> Product:
        """An independent copy (its holds and remembered operations are new containers)."""
        return replace(self, holds=dict(self.holds), recent_operations=list(self.recent_operations))

    @property
    def is_low(self) -> bool:
        return self.available < self.low_stock_threshold

    def held_for(self, order_id: str) -> int:
        return self.holds.get(order_id, 0)

    def can_hold(self, order_id: str, quantity: int) -> bool:
        return self.available + self.held_for(order_id) >= quantity

    def hold(self, order_id: str, quantity: int) -> None:
        """Reserve `quantity` units for an order; holding them again changes nothing."""
        if self.held_for(order_id) == quantity:
            return
        if not self.can_hold(order_id, quantity):
            raise StockError(f"{self.sku}: {quantity} wanted, {self.available} available")
        self.release(order_id)
        self.available -= quantity
        self.reserved += quantity
        self.holds[order_id] = quantity

    def release(self, order_id: str) -> int:
        """Give an order's held units back to available stock; returns how many."""
        quantity = self.holds.pop(order_id, 0)
        self.available += quantity
        self.reserved -= quantity
        return quantity

    def commit(self, order_id: str) -> int:
        """An order's held units are sold; returns how many."""
        quantity = self.holds.pop(order_id, 0)
        self.reserved -= quantity
        self.sold += quantity
        return quantity

    def take_back(self, quantity: int, operation_id: str) -> bool:
        """Units sold come back to available stock, once per operation id; False if this
        operation was applied already."""
        if operation_id in self.recent_operations:
            return False
        self.sold -= quantity
        self.available += quantity
        self._remember(operation_id)
        return True

    def restock(self, quantity: int, operation_id: str) -> bool:
        """Add units once per operation id; False if this operation was applied already."""
        if operation_id in self.recent_operations:
            return False
        self.available += quantity
        self._remember(operation_id)
        return True

    def set(
        self,
        *,
        price: int,
        available: int,
        operation_id: str,
        name: str | None = None,
        low_stock_threshold: int | None = None,
    ) -> None:
        """Overwrite the catalog entry; a name or threshold not given stays as it is, and units held
        for orders stay held."""
        self.price = price
        self.available = available
        if name is not None:
            self.name = name
        if low_stock_threshold is not None:
            self.low_stock_threshold = low_stock_threshold
        self._remember(operation_id)

    def _remember(self, operation_id: str) -> None:
        self.recent_operations = [*self.recent_operations, operation_id][-RECENT_OPERATIONS:]


@dataclass(frozen=True)
class ReservedLine:
    sku: str
    quantity: int
    unit_price: int
    line_total: int


@dataclass
class Reservation:
    order_id: str  # the hold id: the order's id, or a change's hold
    status: ReservationStatus
    lines: list[ReservedLine] = field(default_factory=list)
    reason: RejectReason | None = None
    skus: list[str] = field(default_factory=list)  # the SKUs that were short or unknown
    order: str | None = None  # the order a change's hold is for (None: the hold is the order's)

    @property
    def owner(self) -> str:
        return self.order or self.order_id

    @property
    def total(self) -> int:
        return sum(line.line_total for line in self.lines)


def decide_reservation(
    hold: str, wanted: dict[str, int], products: dict[str, Product], order_id: str | None = None
) -> Reservation:
    """Decide, without changing anything, whether every line can be held under `hold` (the
    order's id, or a change's hold for `order_id`): all or none."""
    order = order_id if order_id != hold else None
    unknown = sorted(sku for sku in wanted if sku not in products)
    if unknown:
        return Reservation(
            hold, ReservationStatus.REJECTED, reason=RejectReason.UNKNOWN_SKU, skus=unknown, order=order
        )
    short = sorted(sku for sku, quantity in wanted.items() if not products[sku].can_hold(hold, quantity))
    if short:
        return Reservation(
            hold, ReservationStatus.REJECTED, reason=RejectReason.OUT_OF_STOCK, skus=short, order=order
        )
    lines = [
        ReservedLine(sku, quantity, products[sku].price, products[sku].price * quantity)
        for sku, quantity in wanted.items()
    ]
    return Reservation(hold, ReservationStatus.RESERVED, lines=lines, order=order)


def crossed_low_threshold(before: int, product: Product) -> bool:
    """True when this change took available stock from at or above the threshold to below it."""
    return before >= product.low_stock_threshold > product.available
