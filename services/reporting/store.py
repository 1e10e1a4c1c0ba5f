"""The reporting read model: insert-only facts keyed by event, summed on demand.

Counters updated with `$inc` can lose increments when several reporting processes write one
document on a store without atomic updates; facts inserted under a unique id cannot, and
inserting one twice is a no-op. That makes the model exact under redelivery and at any scale.
What an order sells changes with its later events, so each change of it is a version of the
order's sale, inserted under `<order id>:<version>` too: of two processes moving one order's sale
on, one wins the version and the other reads again and goes on from the winner's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo.database import Database

from services.reporting.domain import earlier_sale, sale_id
from shared.store import find_by_ids, insert_new

# Versions of an order's sale looked up by `_id` per round trip: an order rarely has more.
_VERSIONS_PER_READ = 4
# Recorded once the sales of orders confirmed before sales had versions have their version 0.
_EARLIER_SALES_ADOPTED = "earlier-sales-adopted"


class SalesFacts:
    def __init__(self, db: Database) -> None:
        self._outcomes = db["order_outcomes"]  # one per order status event
        self._lines = db["sales_lines"]  # units and revenue a sale, return or exchange added, per SKU and day
        self._sales = db["order_sales"]  # one per version of an order's sale (see domain.next_sale)
        self._changes = db["order_changes"]  # one per amendment, return or exchange
        self._refunds = db["order_refunds"]  # one per refund

    def ensure_indexes(self) -> None:
        self._outcomes.create_index("status")
        self._outcomes.create_index("order_id")
        self._lines.create_index("sku")

    def adopt_earlier_sales(self) -> None:
        """Give each order whose confirmation an earlier release recorded (line facts with no
        `kind`) version 0 of its sale, so its later events count against it. At start, until
        done once: a scan, bounded by what the earlier release recorded."""
        if self._sales.find_one({"_id": _EARLIER_SALES_ADOPTED}):
            return
        lines: dict[str, list[dict[str, Any]]] = {}
        for line in self._lines.find({"kind": {"$exists": False}}):
            lines.setdefault(line["order_id"], []).append(line)
        insert_new(self._sales, [earlier_sale(order_id, facts) for order_id, facts in lines.items()])
        insert_new(self._sales, [{"_id": _EARLIER_SALES_ADOPTED}])

    def record_outcomes(self, outcomes: list[dict[str, Any]]) -> None:
        insert_new(self._outcomes, outcomes)

    def record_lines(self, lines: list[dict[str, Any]]) -> None:
        insert_new(self._lines, lines)

    def record_changes(self, changes: list[dict[str, Any]]) -> None:
        insert_new(self._changes, changes)

    def record_refunds(self, refunds: list[dict[str, Any]]) -> None:
        insert_new(self._refunds, refunds)

    def claim_sales(self, sales: list[dict[str, Any]]) -> set[str]:
        """Insert these versions of orders' sales; returns the ids another process claimed first."""
        return insert_new(self._sales, sales)

    def sales_of(self, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The last version recorded of each order's sale (none for an order without one). Versions
        are claimed one after the other, so they are read by `_id`, a few at a time."""
        latest: dict[str, dict[str, Any]] = {}
        read_up_to = dict.fromkeys(order_ids, -1)  # version 0: a sale an earlier release recorded
        while read_up_to:
            wanted = (
                sale_id(order_id, version)
                for order_id, last in read_up_to.items()
                for version in range(last + 1, last + 1 + _VERSIONS_PER_READ)
            )
            for sale in find_by_ids(self._sales, wanted):
                if sale["version"] > latest.get(sale["order_id"], {}).get("version", -1):
                    latest[sale["order_id"]] = sale
            read_up_to = {
                order_id: last + _VERSIONS_PER_READ
                for order_id, last in read_up_to.items()
                if order_id in latest and latest[order_id]["version"] == last + _VERSIONS_PER_READ
            }
        return latest

    def statuses_of(self, order_ids: list[str]) -> dict[str, set[str]]:
        """The statuses recorded so far for each of these orders."""
        recorded: dict[str, set[str]] = {}
        for outcome in self._outcomes.find({"order_id": {"$in": order_ids}}, {"order_id": 1, "status": 1}):
            recorded.setdefault(outcome["order_id"], set()).add(outcome["status"])
        return recorded

    def outcomes_by_status_and_reason(self) -> list[dict[str, Any]]:
        """Order counts grouped by status and reason: `{"_id": {"status", "reason"}, "orders": n}`."""
        pipeline = [{"$group": {"_id": {"status": "$status", "reason": "$reason"}, "orders": {"$sum": 1}}}]
        return list(self._outcomes.aggregate(pipeline))

    def sales_by(self, key: str) -> list[dict[str, Any]]:
        """Units and revenue of the lines grouped by `sku` or `day`, sorted by the key (net: what was
        taken back again counts negative)."""
        units = self._sum_by(key, "units")
        revenue = self._sum_by(key, "revenue")
        return [
            {"_id": group, "units": units[group], "revenue": revenue.get(group, 0)} for group in sorted(units)
        ]

    def units_of(self, kind: str) -> int:
        """Units of the lines of one kind (`returned`, `exchanged`, `sale`) added up."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"kind": kind}},
            {"$group": {"_id": None, "total": {"$sum": "$units"}}},
        ]
        return sum(row["total"] for row in self._lines.aggregate(pipeline))

    def orders_changed(self) -> list[dict[str, Any]]:
        """How many orders were amended, returned or exchanged: `{"_id": kind, "orders": n}`."""
        pipeline: list[dict[str, Any]] = [
            {"$group": {"_id": {"kind": "$kind", "order_id": "$order_id"}}},
            {"$group": {"_id": "$_id.kind", "orders": {"$sum": 1}}},
        ]
        return list(self._changes.aggregate(pipeline))

    def refund_totals(self) -> tuple[int, int]:
        """How many refunds, and the money they gave back."""
        count = [{"$group": {"_id": None, "total": {"$sum": 1}}}]
        amount = [{"$group": {"_id": None, "total": {"$sum": "$amount"}}}]
        return (
            sum(row["total"] for row in self._refunds.aggregate(count)),
            sum(row["total"] for row in self._refunds.aggregate(amount)),
        )

    def _sum_by(self, key: str, field: str) -> dict[Any, int]:
        # One accumulator per $group: FerretDB v1 sums only the first field-path $sum of a stage
        # correctly (the others come back 0), and two small aggregations cost little on MongoDB.
        pipeline = [{"$group": {"_id": f"${key}", "total": {"$sum": f"${field}"}}}]
        return {row["_id"]: row["total"] for row in self._lines.aggregate(pipeline)}
