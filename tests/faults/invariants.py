"""What must hold after any fault, checked against the system's own outputs and the provider's ledger."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.support import wait_for
from tests.system import System


def settle(system: System, orders: list[dict[str, Any]], timeout: float = 180) -> dict[str, dict[str, Any]]:
    """Wait until every order has its outcome; returns them by order id."""
    ids = {order["order_id"] for order in orders}

    def all_done() -> dict[str, dict[str, Any]] | None:
        outcomes = system.events.outcomes()
        return {i: outcomes[i] for i in ids} if ids <= outcomes.keys() else None

    return wait_for(all_done, timeout=timeout, interval=0.5, what=f"outcomes of {len(ids)} orders")


def check(system: System, orders: list[dict[str, Any]], initial_stock: dict[str, int]) -> dict[str, int]:
    """Every order confirmed or cancelled; stock conserved; one charge per confirmed order and none
    left unrefunded for a cancelled one; the report and the notifications count each order once."""
    outcomes = settle(system, orders)
    statuses = Counter(outcome["status"] for outcome in outcomes.values())
    assert set(statuses) <= {"confirmed", "cancelled"}, statuses
    confirmed = {i: o for i, o in outcomes.items() if o["status"] == "confirmed"}
    assert not system.cli_json("sagas", "stuck")

    sold: Counter[str] = Counter()
    for outcome in confirmed.values():
        for item in outcome["items"]:
            sold[item["sku"]] += item["quantity"]

    def stock_conserved() -> bool:
        products = {p["sku"]: p for p in system.cli_json("stock", "show", *initial_stock)}
        return all(
            products[sku]["available"] + sold[sku] == initial_stock[sku] and products[sku]["reserved"] == 0
            for sku in initial_stock
        )

    wait_for(
        stock_conserved, timeout=60, interval=0.5, what="available + sold = initial, 0 reserved, per SKU"
    )

    ledger = system.database("simulated_gateway")
    charges = {c["_id"]: c for c in ledger.charges.find({"_id": {"$in": list(outcomes)}})}
    refunded = {r["charge_id"] for r in ledger.refunds.find()}
    for order_id in confirmed:
        assert order_id in charges and charges[order_id]["charge_id"] not in refunded, order_id
    for order_id in outcomes.keys() - confirmed.keys():
        assert order_id not in charges or charges[order_id]["charge_id"] in refunded, f"{order_id} charged"

    def reported() -> bool:
        report = system.cli_json("report", "sales")
        rows = {row["sku"]: row["units"] for row in report["by_sku"]}
        return all(rows.get(sku, 0) == units for sku, units in sold.items())

    wait_for(reported, timeout=60, interval=0.5, what="the report to count each confirmed unit once")

    notifications = system.database("notifications").notifications
    wait_for(
        lambda: (
            notifications.count_documents(
                {"order_id": {"$in": list(confirmed)}, "kind": "order.confirmed", "status": "sent"}
            )
            == len(confirmed)
        ),
        timeout=60,
        interval=0.5,
        what="one sent notification per confirmed order",
    )
    emails = Counter(message["To"] for message in system.inbox.messages if "confirmed" in message["Subject"])
    missing = [i for i, o in confirmed.items() if not emails[o["customer"]["email"]]]
    assert not missing, f"confirmed orders never emailed: {missing[:5]}"
    return {
        "confirmed": len(confirmed),
        "cancelled": statuses["cancelled"],
        "duplicate_emails": sum(n - 1 for n in emails.values() if n > 1),
    }
