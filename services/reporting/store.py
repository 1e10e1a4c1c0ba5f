"""The reporting read model: insert-only facts keyed by event, summed on demand.

Counters updated with `$inc` can lose increments when several reporting processes write one
document on a store without atomic updates; facts inserted under a unique id cannot, and
inserting one twice is a no-op. That makes the model exact under redelivery and at any scale.
"""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from shared.store import insert_new


class SalesFacts:
    def __init__(self, db: Database) -> None:
        self._outcomes = db["order_outcomes"]  # one per order status event
        self._lines = db["sales_lines"]  # one per line of a confirmed order

    def ensure_indexes(self) -> None:
        self._outcomes.create_index("status")
        self._outcomes.create_index("order_id")
        self._lines.create_index("sku")

    def record_outcomes(self, outcomes: list[dict[str, Any]]) -> None:
        insert_new(self._outcomes, outcomes)

    def record_lines(self, lines: list[dict[str, Any]]) -> None:
        insert_new(self._lines, lines)

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
        """Units and revenue of confirmed lines grouped by `sku` or `day`, sorted by the key."""
        units = self._sum_by(key, "units")
        revenue = self._sum_by(key, "revenue")
        return [
            {"_id": group, "units": units[group], "revenue": revenue.get(group, 0)} for group in sorted(units)
        ]

    def _sum_by(self, key: str, field: str) -> dict[Any, int]:
        # One accumulator per $group: FerretDB v1 sums only the first field-path $sum of a stage
        # correctly (the others come back 0), and two small aggregations cost little on MongoDB.
        pipeline = [{"$group": {"_id": f"${key}", "total": {"$sum": f"${field}"}}}]
        return {row["_id"]: row["total"] for row in self._lines.aggregate(pipeline)}
