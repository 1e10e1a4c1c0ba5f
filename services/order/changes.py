"""Changes to a placed order: a cancel after confirmation, an amendment, a return, an exchange.

A change takes the order's lines from what they are to what they should be, and its money by the
difference, as a small saga of its own beside the order's:

1. `reserving`: the units it adds are held, all or none, under the change's own hold id;
2. `charging`: a higher total is charged, the difference, under the change's own payment key;
3. `settling`: the added units are sold, the removed ones come back to stock, a lower total is
   refunded, charge by charge.

Only the first two can fail, and nothing irreversible has happened before them: a refusal gives
the holds back and undoes the charge (`undoing`), and the order stays as it was. Settling cannot
fail: it is asked for until each part of it is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from shared.contracts.intake import MAX_UNITS_PER_SKU, units_per_sku


class ChangeKind(StrEnum):
    CANCEL = "cancel"
    AMEND = "amend"
    RETURN = "return"
    EXCHANGE = "exchange"


class ChangeStep(StrEnum):
    RESERVING = "reserving"
    CHARGING = "charging"
    SETTLING = "settling"
    UNDOING = "undoing"


class ChangeRefused(Exception):
    """The change cannot be made as asked; the order stays as it is."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: int | None = None
    line_total: int | None = None
    partition: int = 0  # the inventory partition that owns the SKU

    def priced(self, unit_price: int) -> Line:
        return replace(self, unit_price=unit_price, line_total=unit_price * self.quantity)


@dataclass
class Change:
    number: int  # the order's changes are numbered: its holds and payment keys are named after it
    request_id: str
    kind: ChangeKind
    lines: list[Line]  # the order's lines once the change is done
    added: list[Line]  # units to hold and sell
    removed: list[Line]  # units sold that come back, at the price paid for them
    step: ChangeStep
    started_at: datetime
    entered_by: str = ""  # the message whose handling moved the change to its step
    awaiting: list[str] = field(default_factory=list)  # "stock/<partition>", "payment"
    amount: int | None = None  # the difference once priced: charged if positive, refunded if negative
    refund: list[tuple[str, int]] = field(default_factory=list)  # (charge key, amount) of the refund
    payment_method: str | None = None  # an amendment's new payment details, while a charge may need them
    payment_token: str | None = None
    reason: str | None = None  # why the order is cancelled; or why the change was refused
    detail: str | None = None
    case_id: str | None = None
    charge_asked: bool = False
    refused: list[int] = field(default_factory=list)  # partitions that refused to hold the added units

    def copy(self) -> Change:
        return replace(
            self,
            lines=list(self.lines),
            added=list(self.added),
            removed=list(self.removed),
            awaiting=list(self.awaiting),
            refund=list(self.refund),
            refused=list(self.refused),
        )

    @property
    def total(self) -> int:
        return sum(line.line_total or 0 for line in self.lines)

    def added_partitions(self) -> list[int]:
        return sorted({line.partition for line in self.added})

    def removed_partitions(self) -> list[int]:
        return sorted({line.partition for line in self.removed})


@dataclass(frozen=True)
class RequestRecord:
    """What became of a request about the order, kept with the order: a redelivered request is
    known by its id, and `orderflow status` shows them."""

    request_id: str
    kind: str
    outcome: str  # "done" or "rejected"
    at: datetime
    cause: str  # the message whose handling settled it: its redelivery says the outcome again
    reason: str | None = None
    detail: str | None = None
    number: int | None = None  # of the change that carried it out
    previous_total: int | None = None
    total: int | None = None
    amount: int = 0  # charged if positive, refunded if negative
    added: tuple[Line, ...] = ()  # the units the change sold (an exchange's replacement)
    removed: tuple[Line, ...] = ()  # the units that came back (a return's)
    case_id: str | None = None


def planned(
    kind: ChangeKind,
    current: list[Line],
    wanted: list[tuple[str, int]],
    returned: list[tuple[str, int]],
    partition_of: Callable[[str], int],
) -> tuple[list[Line], list[Line], list[Line]]:
    """The lines after the change, the units it adds and the units it takes back.

    An amendment (`wanted`: the full new list) adds and removes the difference per SKU; a cancel
    takes everything back; a return takes back `returned`; an exchange takes back `returned` and
    adds `wanted` (the replacement), even of the same SKU (the units sent back are not the ones
    sent out). Units of a SKU the order has keep the price paid for it; units of a new SKU are
    priced by inventory when they are held."""
    paid = {line.sku: line for line in current}
    have = {line.sku: line.quantity for line in current}
    if kind is ChangeKind.CANCEL:
        take_back, add = dict(have), {}
    elif kind is ChangeKind.AMEND:
        want = _units(wanted)
        take_back = {sku: units - want.get(sku, 0) for sku, units in have.items() if units > want.get(sku, 0)}
        add = {sku: units - have.get(sku, 0) for sku, units in want.items() if units > have.get(sku, 0)}
    else:
        take_back = _units(returned)
        add = _units(wanted) if kind is ChangeKind.EXCHANGE else {}
        beyond = sorted(sku for sku, units in take_back.items() if units > have.get(sku, 0))
        if beyond:
            raise ChangeRefused(
                "not_in_order", f"more units of {', '.join(beyond)} returned than the order has"
            )
    after = dict(have)
    for sku, units in take_back.items():
        after[sku] -= units
    for sku, units in add.items():
        after[sku] = after.get(sku, 0) + units

    def line(sku: str, units: int) -> Line:
        bare = Line(sku, units, partition=partition_of(sku))
        price = paid[sku].unit_price if sku in paid else None
        return bare if price is None else bare.priced(price)

    lines = [line(sku, units) for sku, units in after.items() if units > 0]
    return (
        lines,
        [line(sku, units) for sku, units in add.items()],
        [line(sku, u) for sku, u in take_back.items()],
    )


def priced(change: Change, prices: dict[str, int]) -> None:
    """Inventory priced the units of new SKUs as it held them: the lines take those prices."""
    change.lines = [
        line.priced(prices[line.sku]) if line.unit_price is None and line.sku in prices else line
        for line in change.lines
    ]
    change.added = [
        line.priced(prices[line.sku]) if line.unit_price is None and line.sku in prices else line
        for line in change.added
    ]


def refund_parts(charges: list[tuple[str, int]], amount: int) -> list[tuple[str, int]]:
    """`amount` taken from the charges (key, what is left of it), the newest first."""
    parts = []
    for key, left in reversed(charges):
        if amount <= 0:
            break
        part = min(left, amount)
        if part > 0:
            parts.append((key, part))
            amount -= part
    assert amount <= 0, "a refund is never more than what is left of the order's charges"
    return parts


def _units(lines: list[tuple[str, int]]) -> dict[str, int]:
    units = units_per_sku(lines)
    too_many = sorted(sku for sku, count in units.items() if count > MAX_UNITS_PER_SKU)
    if too_many:
        raise ChangeRefused(
            "invalid", f"more than {MAX_UNITS_PER_SKU} units in total of {', '.join(too_many)}"
        )
    return units
