"""Sales facts from order events, and the sales report they add up to.

An order sells the lines it was confirmed with, as amended since, until it is cancelled. Those
three events are the steps of its sale; what the steps add to the sales, per day and SKU, is the
difference each one made on its day (`sold_per_day`), worked out from all the steps seen, in the
order they happened, whatever the order they arrive in. Returns and exchanges move units of their
own: those that came back count negative, a replacement positive. Refunds and changes are facts
too, counted and summed on demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.contracts.events import EventLine, OrderChanged, OrderRefunded, OrderStatusChanged
from shared.contracts.intake import units_per_sku
from shared.money import to_decimal_string, to_minor, to_signed_minor

ReportableEvent = OrderStatusChanged | OrderChanged | OrderRefunded

# The events that set what an order sells; on one instant, they apply in the order they can happen.
SALE_STEPS = {"order.confirmed": 0, "order.amended": 1, "order.cancelled": 2}
CHANGE_KINDS = {"order.amended": "amended", "order.returned": "returned", "order.exchanged": "exchanged"}


def outcome_fact(event: OrderStatusChanged, currency: str) -> dict[str, Any]:
    """The event's outcome; its amounts are in its own currency, or in `currency` if it names none."""
    return {
        "_id": event.event_id,
        "order_id": event.order_id,
        "status": event.status,
        "reason": event.reason,
        "total": _minor(event.total, event.currency or currency),
        "currency": event.currency,
        "payment_method": event.payment_method,
        "day": _day(event.occurred_at),
        "occurred_at": event.occurred_at,
    }


def sale_step(event: OrderStatusChanged | OrderChanged, currency: str) -> dict[str, Any] | None:
    """The event as a step of its order's sale: when it happened and the lines it leaves the order
    with (units and revenue per SKU); None for an event that does not change what the order sells."""
    if event.type not in SALE_STEPS:
        return None
    return {
        "event_id": event.event_id,
        "type": event.type,
        "at": _instant(event.occurred_at),
        "day": _day(event.occurred_at),
        "lines": _per_sku(event.items, event.currency or currency),
    }


def sold_per_day(steps: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """What an order's steps add to the sales, as (units, revenue) per (day, SKU): the confirmed
    lines on the day of the confirmation, each amendment's difference on its day, all of it taken
    back on the day of a cancellation. An amendment before the confirmation (of an unpaid order)
    or after a cancellation sells nothing."""
    added: dict[tuple[str, str], tuple[int, int]] = {}
    sold: dict[str, tuple[int, int]] = {}
    selling = False
    for step in sorted(steps, key=lambda step: (step["at"], SALE_STEPS[step["type"]], step["event_id"])):
        selling = step["type"] == "order.confirmed" or (selling and step["type"] == "order.amended")
        now = {line["sku"]: (line["units"], line["revenue"]) for line in step["lines"]} if selling else {}
        for sku in sorted({*sold, *now}):
            (units_before, revenue_before), (units, revenue) = sold.get(sku, (0, 0)), now.get(sku, (0, 0))
            key = (step["day"], sku)
            so_far = added.get(key, (0, 0))
            added[key] = (so_far[0] + units - units_before, so_far[1] + revenue - revenue_before)
        sold = now
    return {key: value for key, value in added.items() if value != (0, 0)}


def sale_id(order_id: str, version: int) -> str:
    """The id of one version of an order's sale: claiming it is inserting it."""
    return f"{order_id}:{version}"


def next_sale(
    order_id: str, latest: dict[str, Any] | None, steps: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The next version of the order's sale (after `latest`, the last recorded, if any) with these
    steps added, holding the line facts that bring what was counted to what its steps now add up
    to; None if every step is in it already (a redelivery)."""
    known = list(latest["steps"]) if latest else []
    seen = {step["event_id"] for step in known}
    new: dict[str, dict[str, Any]] = {}
    for step in steps:
        if step["event_id"] not in seen:
            new.setdefault(step["event_id"], step)
    if not new:
        return None
    version = latest["version"] + 1 if latest else 1
    counted = _added_up(latest["counted"]) if latest else {}
    adds_up_to = sold_per_day([*known, *new.values()])
    facts: list[dict[str, Any]] = []
    for day, sku in sorted({*counted, *adds_up_to}):
        (units_before, revenue_before), (units, revenue) = (
            counted.get((day, sku), (0, 0)),
            adds_up_to.get((day, sku), (0, 0)),
        )
        if (units, revenue) != (units_before, revenue_before):
            facts.append(
                {
                    "_id": f"{sale_id(order_id, version)}:{len(facts)}",
                    "order_id": order_id,
                    "kind": "sale",
                    "sku": sku,
                    "units": units - units_before,
                    "revenue": revenue - revenue_before,
                    "day": day,
                }
            )
    return {
        "_id": sale_id(order_id, version),
        "order_id": order_id,
        "version": version,
        "steps": [*known, *new.values()],
        "counted": [
            {"day": day, "sku": sku, "units": units, "revenue": revenue}
            for (day, sku), (units, revenue) in sorted(adds_up_to.items())
        ],
        "facts": facts,
    }


def earlier_sale(order_id: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Version 0 of the sale of an order confirmed before sales had versions, from the line facts
    an earlier release recorded for its confirmation (`<event id>:<sku>`, counted already): a
    confirmation sent again, or a later change, then finds it."""
    first, counted = lines[0], sorted(_added_up(lines).items())
    step = {
        "event_id": first["_id"].removesuffix(f":{first['sku']}"),
        "type": "order.confirmed",
        "at": f"{first['day']}T00:00:00.000000+00:00",  # the day is all those facts kept
        "day": first["day"],
        "lines": [{"sku": sku, "units": units, "revenue": revenue} for (_, sku), (units, revenue) in counted],
    }
    return {
        "_id": sale_id(order_id, 0),
        "order_id": order_id,
        "version": 0,
        "steps": [step],
        "counted": [
            {"day": day, "sku": sku, "units": units, "revenue": revenue}
            for (day, sku), (units, revenue) in counted
        ],
        "facts": [],
    }


def change_fact(event: OrderChanged, currency: str) -> dict[str, Any]:
    """An amendment, return or exchange done: its kind and the money it moved (signed: charged is
    positive, refunded negative)."""
    return {
        "_id": event.event_id,
        "order_id": event.order_id,
        "kind": CHANGE_KINDS[event.type],
        "amount": to_signed_minor(event.amount, event.currency or currency),
        "day": _day(event.occurred_at),
    }


def change_lines(event: OrderChanged, currency: str) -> list[dict[str, Any]]:
    """The units a return or an exchange moved, per SKU: those that came back negative, the
    replacement positive. Nothing for an amendment: its difference is a step of the sale."""
    if event.type == "order.amended":
        return []
    moved = (("returned", event.returned, -1), ("replacement", event.replacement, 1))
    return [
        {
            "_id": f"{event.event_id}:{what}:{line['sku']}",
            "order_id": event.order_id,
            "kind": CHANGE_KINDS[event.type],
            "sku": line["sku"],
            "units": sign * line["units"],
            "revenue": sign * line["revenue"],
            "day": _day(event.occurred_at),
        }
        for what, lines, sign in moved
        for line in _per_sku(lines, event.currency or currency)
    ]


def refund_fact(event: OrderRefunded, currency: str) -> dict[str, Any]:
    """Money that went back to the customer, and what for (`cause`)."""
    return {
        "_id": event.event_id,
        "order_id": event.order_id,
        "cause": event.cause,
        "amount": to_minor(event.amount, event.currency or currency),
        "day": _day(event.occurred_at),
    }


@dataclass
class SalesReport:
    currency: str
    orders_accepted: int = 0
    orders_confirmed: int = 0
    orders_shipped: int = 0
    orders_completed: int = 0
    orders_cancelled: int = 0
    orders_rejected: int = 0
    cancelled_by_reason: dict[str, int] = field(default_factory=dict)
    orders_amended: int = 0
    orders_returned: int = 0
    orders_exchanged: int = 0
    units_sold: int = 0
    units_returned: int = 0
    revenue: int = 0
    refunds: int = 0
    refunded: int = 0
    by_sku: list[dict[str, Any]] = field(default_factory=list)
    by_day: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "orders_accepted": self.orders_accepted,
            "orders_confirmed": self.orders_confirmed,
            "orders_shipped": self.orders_shipped,
            "orders_completed": self.orders_completed,
            "orders_cancelled": self.orders_cancelled,
            "orders_rejected": self.orders_rejected,
            "cancelled_by_reason": dict(sorted(self.cancelled_by_reason.items())),
            "orders_amended": self.orders_amended,
            "orders_returned": self.orders_returned,
            "orders_exchanged": self.orders_exchanged,
            "units_sold": self.units_sold,
            "units_returned": self.units_returned,
            # Net: what the orders still sell, after cancellations, amendments, returns and exchanges.
            "revenue": to_decimal_string(self.revenue, self.currency),
            "net_revenue": to_decimal_string(self.revenue, self.currency),
            "refunds": self.refunds,
            "refunded": to_decimal_string(self.refunded, self.currency),
            "by_sku": [_money_row(row, "sku", self.currency) for row in self.by_sku],
            "by_day": [_money_row(row, "day", self.currency) for row in self.by_day],
        }


def build_report(
    currency: str,
    outcomes: list[dict[str, Any]],
    by_sku: list[dict[str, Any]],
    by_day: list[dict[str, Any]],
    *,
    changed: Sequence[dict[str, Any]] = (),
    units_returned: int = 0,
    refunds: int = 0,
    refunded: int = 0,
) -> SalesReport:
    report = SalesReport(currency=currency, units_returned=units_returned, refunds=refunds, refunded=refunded)
    for row in outcomes:
        status, reason, orders = row["_id"]["status"], row["_id"].get("reason"), row["orders"]
        if status == "pending":
            report.orders_accepted += orders
        elif status == "confirmed":
            report.orders_confirmed += orders
        elif status == "shipped":
            report.orders_shipped += orders
        elif status == "completed":
            report.orders_completed += orders
        elif status == "cancelled":
            report.orders_cancelled += orders
            report.cancelled_by_reason[reason or "unknown"] = (
                report.cancelled_by_reason.get(reason or "unknown", 0) + orders
            )
        elif status == "rejected":
            report.orders_rejected += orders
    orders_changed = {row["_id"]: row["orders"] for row in changed}
    report.orders_amended = orders_changed.get("amended", 0)
    report.orders_returned = orders_changed.get("returned", 0)
    report.orders_exchanged = orders_changed.get("exchanged", 0)
    # A SKU (or a day) whose sales were all taken back again leaves no row.
    report.by_sku = [
        {"sku": row["_id"], "units": row["units"], "revenue": row["revenue"]}
        for row in by_sku
        if row["units"] or row["revenue"]
    ]
    report.by_day = [
        {"day": row["_id"], "units": row["units"], "revenue": row["revenue"]}
        for row in by_day
        if row["units"] or row["revenue"]
    ]
    report.units_sold = sum(row["units"] for row in by_sku)
    report.revenue = sum(row["revenue"] for row in by_sku)
    return report


def _per_sku(lines: list[EventLine], currency: str) -> list[dict[str, Any]]:
    """Units and revenue (minor units) per SKU of the lines, in the order first named."""
    revenue: dict[str, int] = {}
    for line in lines:
        revenue[line.sku] = revenue.get(line.sku, 0) + _line_revenue(line, currency)
    units = units_per_sku((line.sku, line.quantity) for line in lines)
    return [{"sku": sku, "units": units[sku], "revenue": revenue[sku]} for sku in units]


def _line_revenue(line: EventLine, currency: str) -> int:
    if line.line_total:
        return to_minor(line.line_total, currency)
    return to_minor(line.unit_price, currency) * line.quantity if line.unit_price else 0


def _added_up(lines: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """Units and revenue of line facts (or of what a sale counted) per (day, SKU)."""
    added: dict[tuple[str, str], tuple[int, int]] = {}
    for line in lines:
        units, revenue = added.get((line["day"], line["sku"]), (0, 0))
        added[(line["day"], line["sku"])] = (units + line["units"], revenue + line["revenue"])
    return added


def _minor(amount: str | None, currency: str) -> int:
    return to_minor(amount, currency) if amount else 0


def _day(at: datetime) -> str:
    return at.date().isoformat()


def _instant(at: datetime) -> str:
    """A sortable text of the instant: the store keeps milliseconds only, and no time zone."""
    return (at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)).isoformat(
        timespec="microseconds"
    )


def _money_row(row: dict[str, Any], key: str, currency: str) -> dict[str, Any]:
    return {key: row[key], "units": row["units"], "revenue": to_decimal_string(row["revenue"], currency)}
