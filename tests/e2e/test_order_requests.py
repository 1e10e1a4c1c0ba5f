"""Requests about placed orders end to end: cancel, amend, ship and complete, through the intake
and the CLI, on the real services; money checked on the simulated provider's own ledger."""

from __future__ import annotations

import json
from typing import Any

from shared.messaging import topology
from shared.messaging.delivery import REASON_HEADER
from tests.support import queue_messages, unique, wait_for
from tests.system import System, new_order


def ledger(system: System, order_id: str) -> tuple[int, int]:
    """What the provider captured for the order (its charge and its changes'), and refunded of it,
    in minor units, from the provider's own books."""
    gateway = system.database("simulated_gateway")
    charges = [
        c for c in gateway.charges.find() if c["_id"] == order_id or c["_id"].startswith(f"{order_id}/")
    ]
    charge_ids = [c["charge_id"] for c in charges]
    refunds = list(gateway.refunds.find({"charge_id": {"$in": charge_ids}})) if charge_ids else []
    return sum(c["amount"] for c in charges), sum(r["amount"] for r in refunds)


def events(system: System, order_id: str, *types: str) -> list[dict[str, Any]]:
    return [event for event in system.events.of(order_id) if event["type"] in types]


def the_event(system: System, order_id: str, event_type: str, timeout: float = 60.0) -> dict[str, Any]:
    return wait_for(
        lambda: next(iter(events(system, order_id, event_type)), None),
        timeout=timeout,
        what=f"{event_type} of {order_id}",
    )


def confirmed_order(system: System, *items: tuple[str, int], **options: Any) -> dict[str, Any]:
    order = new_order(*items, **options)
    system.submit(order)
    assert system.outcome(order["order_id"])["status"] == "confirmed"
    return order


def status(system: System, order_id: str) -> dict[str, Any]:
    return system.cli_json("status", order_id)


def test_a_confirmed_order_cancelled_by_its_customer_is_refunded_and_restocked(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 5, price="12.50")
    order = confirmed_order(system, (sku, 2))
    order_id = order["order_id"]
    wait_for(lambda: system.levels(sku) == (3, 0), what="the units to be sold")

    cancel = {"order_id": order_id, "reason": "customer_request"}
    system.publish.request("cancel", cancel)
    system.publish.request("cancel", cancel)  # a redelivery: the same request, carried out once

    refunded = the_event(system, order_id, "order.refunded")
    assert (refunded["amount"], refunded["cause"]) == ("25.00", "cancel")
    kinds = [e["type"] for e in system.events.of(order_id)]
    assert kinds.index("order.cancelled") < kinds.index("order.refunded")
    cancelled = the_event(system, order_id, "order.cancelled")
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "customer_request")
    assert ledger(system, order_id) == (2500, 2500)
    wait_for(lambda: system.levels(sku) == (5, 0), what="the sold units to be back")
    view = status(system, order_id)
    assert (view["status"], view["reason"], view["paid"]) == ("cancelled", "customer_request", "0.00")
    assert [(r["kind"], r["outcome"]) for r in view["requests"]] == [("cancel", "done")]
    subjects = wait_for(
        lambda: (
            (s := [m["Subject"] for m in system.emails_to(order["customer"]["email"])]) and len(s) >= 3 and s
        ),
        what="the confirmation, cancellation and refund emails",
    )
    assert any("cancelled" in subject for subject in subjects) and any("Refund" in s for s in subjects)
    assert ledger(system, order_id) == (2500, 2500), "the redelivered cancel refunded nothing more"


def test_a_pending_order_is_cancelled_where_its_saga_stands(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 5)
    order = new_order((sku, 1), token="tok_slow")  # the charge hangs at the provider for a while
    system.submit(order)
    order_id = order["order_id"]
    wait_for(lambda: status(system, order_id)["step"] == "charging_payment", what="the charge to be asked")

    result = system.cli("orders", "cancel", order_id, "--reason", "changed my mind", "--json")
    assert json.loads(result.stdout)["status"] == "cancelled"
    cancelled = system.outcome(order_id)
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "changed my mind")
    wait_for(lambda: system.levels(sku) == (5, 0), what="the held units to be released")
    # The charge may have gone through at the provider: it is refunded (or its key voided).
    wait_for(
        lambda: (lambda c, r: c == r)(*ledger(system, order_id)), what="whatever was charged to be refunded"
    )
    wait_for(
        lambda: status(system, order_id)["payment"]["refunded"] is not None, what="the refund to be recorded"
    )


def test_a_shipped_order_cannot_be_cancelled_or_amended_and_completes(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 5)
    order = confirmed_order(system, (sku, 1))
    order_id = order["order_id"]
    shipped = json.loads(
        system.cli("orders", "ship", order_id, "--carrier", "SF", "--tracking", "SF1", "--json").stdout
    )
    assert (shipped["outcome"], shipped["status"]) == ("done", "shipped")
    event = the_event(system, order_id, "order.shipped")
    assert (event["carrier"], event["tracking"], event["status"]) == ("SF", "SF1", "shipped")

    refused = system.cli("orders", "cancel", order_id, check=False)
    assert refused.returncode == 1
    assert "refused (shipped)" in refused.stderr and "return" in refused.stderr
    rejected = the_event(system, order_id, "order.cancel_rejected")
    assert (rejected["reason"], rejected["status"]) == ("shipped", "shipped")

    system.publish.request("amend", {"order_id": order_id, "items": [{"sku": sku, "quantity": 2}]})
    assert the_event(system, order_id, "order.amend_rejected")["reason"] == "shipped"

    system.cli("orders", "complete", order_id)
    assert the_event(system, order_id, "order.completed")["status"] == "completed"
    view = status(system, order_id)
    assert (view["status"], view["carrier"], view["tracking"]) == ("completed", "SF", "SF1")
    assert [h["status"] for h in view["history"]][-2:] == ["shipped", "completed"]
    assert ledger(system, order_id) == (1250, 0)
    email = order["customer"]["email"]
    wait_for(
        lambda: (
            {f"Your order {order_id} is on its way", f"Your order {order_id} is complete"}
            <= {message["Subject"] for message in system.emails_to(email)}
        ),
        what="the shipping and completion emails",
    )
    (shipping,) = [m for m in system.emails_to(email) if m["Subject"].endswith("is on its way")]
    assert "with SF. Tracking number: SF1." in shipping.get_payload(decode=True).decode()


def test_an_amendment_holds_what_it_adds_and_charges_the_difference_once(system: System) -> None:
    kept, added = unique("MUG"), unique("CAP")
    system.stock(kept, 5, price="12.50")
    system.stock(added, 3, price="4.00")
    order = confirmed_order(system, (kept, 1))
    order_id = order["order_id"]

    amend = {"order_id": order_id, "items": [{"sku": kept, "quantity": 2}, {"sku": added, "quantity": 1}]}
    system.publish.request("amend", amend, message_id="amend-1")
    system.publish.request("amend", amend, message_id="amend-1")  # redelivered

    amended = the_event(system, order_id, "order.amended")
    assert (amended["total"], amended["previous_total"], amended["amount"]) == ("29.00", "12.50", "16.50")
    assert sorted((line["sku"], line["quantity"]) for line in amended["items"]) == sorted(
        [(kept, 2), (added, 1)]
    )
    wait_for(
        lambda: system.levels(kept) == (3, 0) and system.levels(added) == (2, 0), what="the added units sold"
    )
    assert ledger(system, order_id) == (2900, 0)
    view = status(system, order_id)
    assert (view["total"], view["paid"]) == ("29.00", "29.00")
    assert [(r["request_id"], r["outcome"]) for r in view["requests"]] == [("amend-1", "done")]
    payment = system.cli_json("payments", "show", order_id)
    assert (payment["key"], payment["captured"]) == (order_id, "12.50")
    assert [(c["key"], c["captured"]) for c in payment["changes"]] == [(f"{order_id}/change/1", "16.50")]


def test_an_amendment_that_removes_units_refunds_them_and_restocks(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 5, price="10.00")
    order = confirmed_order(system, (sku, 3))
    order_id = order["order_id"]
    result = system.cli("orders", "amend", order_id, "--items", json.dumps([{"sku": sku, "quantity": 1}]))
    assert "refunded 20.00" in result.stdout
    refund = the_event(system, order_id, "order.refunded")
    assert (refund["amount"], refund["cause"]) == ("20.00", "amend")
    assert ledger(system, order_id) == (3000, 2000)
    wait_for(lambda: system.levels(sku) == (4, 0), what="the removed units back in stock")


def test_an_amendment_beyond_stock_is_rejected_and_changes_nothing(system: System) -> None:
    kept, short = unique("MUG"), unique("CAP")
    system.stock(kept, 5)
    system.stock(short, 1)
    order = confirmed_order(system, (kept, 1))
    order_id = order["order_id"]
    items = json.dumps([{"sku": kept, "quantity": 3}, {"sku": short, "quantity": 2}])
    refused = system.cli("orders", "amend", order_id, "--items", items, check=False)
    assert refused.returncode == 1 and "out_of_stock" in refused.stderr
    assert the_event(system, order_id, "order.amend_rejected")["reason"] == "out_of_stock"
    wait_for(
        lambda: system.levels(kept) == (4, 0) and system.levels(short) == (1, 0), what="the holds given back"
    )
    view = status(system, order_id)
    assert [(i["sku"], i["quantity"]) for i in view["items"]] == [(kept, 1)] and view["total"] == "12.50"
    assert ledger(system, order_id) == (1250, 0)


def test_a_declined_difference_rejects_the_amendment(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 5)
    order = confirmed_order(system, (sku, 1), token="tok_no_further_charges")
    order_id = order["order_id"]
    system.publish.request("amend", {"order_id": order_id, "items": [{"sku": sku, "quantity": 2}]})
    assert the_event(system, order_id, "order.amend_rejected")["reason"] == "payment_declined"
    wait_for(lambda: system.levels(sku) == (4, 0), what="the added hold given back")
    assert ledger(system, order_id) == (1250, 0)


def test_requests_for_unknown_orders_and_invalid_requests_are_dead_lettered(system: System) -> None:
    ghost = unique("GHOST")
    system.publish.request("cancel", {"order_id": ghost})
    system.publish.request("amend", {"order_id": ghost, "items": []})
    dlq = topology.dead_letter_queue(topology.ORDER_REQUESTS_QUEUE)
    letters: list[tuple[bytes, dict[str, Any]]] = []

    def dead_lettered() -> bool:
        letters.extend(queue_messages(system.settings.amqp_url, dlq))
        return len([raw for raw, _ in letters if ghost in str(raw)]) == 2

    wait_for(dead_lettered, what="both requests dead-lettered")
    reasons = sorted(str(headers[REASON_HEADER]) for raw, headers in letters if ghost in str(raw))
    assert "unknown order" in reasons[0] + reasons[1]
    assert "invalid order.amend request: items" in reasons[0] + reasons[1]
    result = system.cli("orders", "cancel", ghost, check=False)
    assert result.returncode == 1 and "unknown order" in result.stderr
    bad = system.cli("orders", "amend", ghost, "--items", "[1]", check=False)
    assert bad.returncode == 2
