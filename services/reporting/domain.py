"""Sales facts from order events, and the sales report they add up to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.contracts.events import OrderStatusChanged
from shared.money import to_decimal_string, to_minor


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
        "day": event.occurred_at.date().isoformat(),
        "occurred_at": event.occurred_at,
    }


def line_facts(event: OrderStatusChanged, currency: str) -> list[dict[str, Any]]:
    """One fact per line of a confirmed order; none for any other status."""
    if event.status != "confirmed":
        return []
    return [
        {
            "_id": f"{event.event_id}:{item.sku}",
            "order_id": event.order_id,
            "sku": item.sku,
            "units": item.quantity,
            "revenue": _minor(item.line_total, event.currency or currency),
            "day": event.occurred_at.date().isoformat(),
        }
        for item in event.items
    ]


@dataclass
class SalesReport:
    currency: str
    orders_accepted: int = 0
    orders_confirmed: int = 0
    orders_cancelled: int = 0
    orders_rejected: int = 0
    cancelled_by_reason: dict[str, int] = field(default_factory=dict)
    units_sold: int = 0
    revenue: int = 0
    by_sku: list[dict[str, Any]] = field(default_factory=list)
    by_day: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "orders_accepted": self.orders_accepted,
            "orders_confirmed": self.orders_confirmed,
            "orders_cancelled": self.orders_cancelled,
            "orders_rejected": self.orders_rejected,
            "cancelled_by_reason": dict(sorted(self.cancelled_by_reason.items())),
            "units_sold": self.units_sold,
            "revenue": to_decimal_string(self.revenue, self.currency),
            "by_sku": [_money_row(row, "sku", self.currency) for row in self.by_sku],
            "by_day": [_money_row(row, "day", self.currency) for row in self.by_day],
        }


def build_report(
    currency: str, outcomes: list[dict[str, Any]], by_sku: list[dict[str, Any]], by_day: list[dict[str, Any]]
) -> SalesReport:
    report = SalesReport(currency=currency)
    for row in outcomes:
        status, reason, orders = row["_id"]["status"], row["_id"].get("reason"), row["orders"]
        if status == "pending":
            report.orders_accepted += orders
        elif status == "confirmed":
            report.orders_confirmed += orders
        elif status == "cancelled":
            report.orders_cancelled += orders
            report.cancelled_by_reason[reason or "unknown"] = (
                report.cancelled_by_reason.get(reason or "unknown", 0) + orders
            )
        elif status == "rejected":
            report.orders_rejected += orders
    report.by_sku = [{"sku": row["_id"], "units": row["units"], "revenue": row["revenue"]} for row in by_sku]
    report.by_day = [{"day": row["_id"], "units": row["units"], "revenue": row["revenue"]} for row in by_day]
    report.units_sold = sum(row["units"] for row in by_sku)
    report.revenue = sum(row["revenue"] for row in by_sku)
    return report


def _minor(amount: str | None, currency: str) -> int:
    return to_minor(amount, currency) if amount else 0


def _money_row(row: dict[str, Any], key: str, currency: str) -> dict[str, Any]:
    return {key: row[key], "units": row["units"], "revenue": to_decimal_string(row["revenue"], currency)}
