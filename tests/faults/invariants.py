"""What must hold after any fault, checked against the system's own outputs and the provider's ledger."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.money import to_minor
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
    oversold = {sku: units for sku, units in sold.items() if units > initial_stock[sku]}
    assert not oversold, f"sold more than there was: {oversold} of {initial_stock}"

    def stock_conserved() -> bool:
        products = {p["sku"]: p for p in system.cli_json("stock", "show", *initial_stock)}
        return all(
            products[sku]["available"] + sold[sku] == initial_stock[sku] and products[sku]["reserved"] == 0
            for sku in initial_stock
        )

    wait_for(
        stock_conserved, timeout=60, interval=0.5, what="available + sold = initial, 0 reserved, per SKU"
    )

    # Money, from the provider's own ledger: a confirmed order's total is held, exactly; a
    # cancelled order's money comes back (its refund may finish after the cancellation).
    expected = {order_id: to_minor(o["total"], o["currency"]) for order_id, o in confirmed.items()}
    expected.update({order_id: 0 for order_id in outcomes.keys() - confirmed.keys()})
    held = wait_for(
        lambda: (h := gateway_holds(system, list(outcomes))) == expected and h,
        timeout=90,
        interval=0.5,
        what="the gateway to hold each confirmed total and nothing for a cancelled order",
    )

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
    ledger = system.database("simulated_gateway")
    captured = {c["_id"]: c["amount"] for c in ledger.charges.find({"_id": {"$in": list(outcomes)}})}
    return {
        "confirmed": len(confirmed),
        "cancelled": statuses["cancelled"],
        "duplicate_emails": sum(n - 1 for n in emails.values() if n > 1),
        "money_checked": len(held),
        "captured_minor": sum(captured.values()),
        "refunded_minor": sum(captured.values()) - sum(held.values()),
    }


def gateway_holds(system: System, order_ids: list[str]) -> dict[str, int]:
    """What the simulated provider holds per order, from its own ledger: captured less refunded."""
    ledger = system.database("simulated_gateway")
    charges = {c["charge_id"]: c for c in ledger.charges.find({"_id": {"$in": order_ids}})}
    held = {order_id: 0 for order_id in order_ids}
    for charge in charges.values():
        held[charge["_id"]] += charge["amount"]
    for refund in ledger.refunds.find({"charge_id": {"$in": list(charges)}}):
        held[charges[refund["charge_id"]]["_id"]] -= refund["amount"]
    return held
