"""The order saga end to end: five worker pools as separate processes, driven as an upstream would."""

from __future__ import annotations

import json
import time

import pytest

from shared.messaging import topology
from tests.support import queue_messages, unique, wait_for
from tests.system import System, new_order


def charges(system: System, order_id: str) -> int:
    """Charges the (simulated) payment provider made for an order, from its own ledger."""
    return system.database("simulated_gateway").charges.count_documents({"_id": order_id})


def test_happy_path(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 5, price="12.50")
    order = new_order((sku, 2), method="alipay")
    system.submit(order)

    outcome = system.outcome(order["order_id"])
    assert (outcome["status"], outcome["reason"], outcome["total"]) == ("confirmed", None, "25.00")
    assert [e["type"] for e in system.events.of(order["order_id"])] == ["order.accepted", "order.confirmed"]
    status = system.cli_json("status", order["order_id"])
    assert (status["status"], status["total"], status["reason"]) == ("confirmed", "25.00", None)
    assert status["items"] == [{"sku": sku, "quantity": 2, "unit_price": "12.50", "line_total": "25.00"}]
    assert [h["step"] for h in status["history"]] == ["reserving_stock", "charging_payment", "done"]
    wait_for(lambda: system.levels(sku) == (3, 0), what="the reservation to be committed")
    (email,) = wait_for(lambda: system.emails_to(order["customer"]["email"]), what="the confirmation email")
    assert email["Subject"] == f"Your order {order['order_id']} is confirmed"
    assert charges(system, order["order_id"]) == 1


def test_unknown_order_status_exits_1(system: System) -> None:
    result = system.cli("status", "NO-SUCH-ORDER", check=False)
    assert result.returncode == 1
    assert "unknown order" in result.stderr


def test_out_of_stock_cancels_and_keeps_stock(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 1)
    order = new_order((sku, 2))
    system.submit(order)
    outcome = system.outcome(order["order_id"])
    assert (outcome["status"], outcome["reason"]) == ("cancelled", "out_of_stock")
    assert system.levels(sku) == (1, 0)
    assert charges(system, order["order_id"]) == 0


def test_unknown_sku_cancels(system: System) -> None:
    order = new_order((unique("GHOST"), 1))
    system.submit(order)
    assert system.outcome(order["order_id"])["reason"] == "unknown_sku"


@pytest.mark.parametrize(
    ("token", "reason"), [("tok_declined", "payment_declined"), ("tok_gateway_error", "payment_failed")]
)
def test_a_failed_payment_releases_the_stock_before_the_cancellation(
    system: System, token: str, reason: str
) -> None:
    sku = unique("MUG")
    system.stock(sku, 5)
    order = new_order((sku, 3), token=token)
    system.submit(order)
    outcome = system.outcome(order["order_id"])
    assert (outcome["status"], outcome["reason"]) == ("cancelled", reason)
    # No polling: the cancellation is announced only once the stock is back.
    assert system.levels(sku) == (5, 0)
    assert charges(system, order["order_id"]) == 0
    (email,) = wait_for(lambda: system.emails_to(order["customer"]["email"]), what="the cancellation email")
    assert "cancelled" in email["Subject"]


def test_a_multi_line_order_with_one_short_line_reserves_nothing(system: System) -> None:
    plenty, scarce = unique("PLENTY"), unique("SCARCE")
    system.stock(plenty, 10)
    system.stock(scarce, 1)
    order = new_order((plenty, 3), (scarce, 2))
    system.submit(order)
    assert system.outcome(order["order_id"])["reason"] == "out_of_stock"
    assert system.levels(plenty) == (10, 0)
    assert system.levels(scarce) == (1, 0)


def test_the_same_order_three_times_is_one_order_one_reservation_one_charge(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 10)
    order = new_order((sku, 2))
    for _ in range(3):
        system.submit(order)
    assert system.outcome(order["order_id"])["status"] == "confirmed"
    wait_for(lambda: system.levels(sku) == (8, 0), what="one committed reservation")
    status = system.cli_json("status", order["order_id"])
    assert [h["step"] for h in status["history"]] == ["reserving_stock", "charging_payment", "done"]
    assert charges(system, order["order_id"]) == 1
    wait_for(lambda: system.emails_to(order["customer"]["email"]), what="the email")
    # Whatever was still in flight has settled: still one of each.
    wait_for(lambda: system.levels(sku) == (8, 0), what="stock to stay put")
    confirmed = [e for e in system.events.of(order["order_id"]) if e["type"] == "order.confirmed"]
    assert len({e["event_id"] for e in confirmed}) == 1
    assert len(system.emails_to(order["customer"]["email"])) == 1


def test_bad_input_is_rejected_with_a_reason_and_the_next_good_order_confirms(system: System) -> None:
    sku = unique("MUG")
    system.stock(sku, 5)

    def invalid(change) -> dict:
        order = new_order((sku, 1))
        change(order)
        return order

    readable = {
        "wrong types": invalid(lambda o: o["items"][0].update(quantity="1")),
        "empty items": invalid(lambda o: o.update(items=[])),
        "negative quantity": invalid(lambda o: o["items"][0].update(quantity=-1)),
        "unknown payment method": invalid(lambda o: o["payment"].update(method="bitcoin")),
        "oversized field": invalid(lambda o: o["customer"].update(name="x" * 10_000)),
    }
    unreadable = [b"{not json", b"[1, 2, 3]", json.dumps({"order_id": 42}).encode(), b""]
    dlq = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)
    queue_messages(system.settings.amqp_url, dlq)  # start from an empty dead-letter queue

    for order in readable.values():
        system.submit(order)
    for raw in unreadable:
        system.submit(raw)
    good = new_order((sku, 1))
    system.submit(good)

    assert system.outcome(good["order_id"])["status"] == "confirmed"
    for problem, order in readable.items():
        outcome = system.outcome(order["order_id"])
        assert (outcome["status"], outcome["reason"]) == ("rejected", "invalid"), problem
        assert outcome["errors"], problem
        assert system.cli_json("status", order["order_id"])["status"] == "rejected"
    expected = len(readable) + len(unreadable)
    dead: list = []
    wait_for(
        lambda: dead.extend(queue_messages(system.settings.amqp_url, dlq)) or len(dead) >= expected,
        what="DLQ",
    )
    assert len(dead) == expected
    assert all(headers["x-orderflow-reason"] for _, headers in dead)
    assert system.levels(sku) == (4, 0) or wait_for(
        lambda: system.levels(sku) == (4, 0), what="one unit sold"
    )


def test_thirty_concurrent_orders_for_ten_units_never_oversell(system: System, figure) -> None:
    sku = unique("HOT")
    system.stock(sku, 10, price="9.99")
    email = f"{unique('crowd')}@example.com"
    orders = [new_order((sku, 1), email=email) for _ in range(30)]
    started = time.monotonic()
    for order in orders:
        system.submit(order)
    outcomes = [system.outcome(order["order_id"], timeout=120) for order in orders]
    figure(f"30 concurrent orders for 10 units: all settled in {time.monotonic() - started:.2f} s")
    statuses = sorted((o["status"], o["reason"]) for o in outcomes)
    assert statuses.count(("confirmed", None)) == 10
    assert statuses.count(("cancelled", "out_of_stock")) == 20
    wait_for(lambda: system.levels(sku) == (0, 0), what="0 available and 0 reserved")
    (product,) = system.cli_json("stock", "show", sku)
    assert product["sold"] == 10
    wait_for(lambda: len(system.emails_to(email)) == 30, timeout=60, what="an email per order")
    subjects = [m["Subject"] for m in system.emails_to(email)]
    assert sum("confirmed" in s for s in subjects) == 10

    def sku_row() -> dict | None:
        rows = system.cli_json("report", "sales")["by_sku"]
        return next((r for r in rows if r["sku"] == sku and r["units"] == 10), None)

    row = wait_for(sku_row, what="the report to count the ten")
    assert row == {"sku": sku, "units": 10, "revenue": "99.90"}


def test_the_cli_submits_files_of_json_lines(system: System, tmp_path) -> None:
    sku = unique("MUG")
    system.stock(sku, 5)
    orders = [new_order((sku, 1)) for _ in range(2)]
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in orders))
    assert system.cli("submit", str(path)).stdout.strip() == "submitted 2 orders"
    assert {system.outcome(o["order_id"])["status"] for o in orders} == {"confirmed"}


def test_low_stock_alerts_the_operators(system: System) -> None:
    sku = unique("LOW")
    system.stock(sku, 4, threshold=3)
    system.submit(new_order((sku, 2)))
    (alert,) = wait_for(
        lambda: [m for m in system.emails_to("ops@example.com") if sku in m["Subject"]], what="alert"
    )
    assert alert["Subject"] == f"Low stock: {sku} (2 left)"


def test_the_sales_report_matches_the_confirmed_orders(system: System) -> None:
    sku = unique("REPORT")
    system.stock(sku, 50, price="2.50")
    orders = [new_order((sku, n)) for n in (1, 2, 3)] + [new_order((sku, 4), token="tok_declined")]
    for order in orders:
        system.submit(order)
    for order in orders:
        system.outcome(order["order_id"])

    def consistent() -> dict | None:
        report = system.cli_json("report", "sales")
        confirmed = {e["order_id"] for e in system.events.events if e["type"] == "order.confirmed"}
        cancelled = {e["order_id"] for e in system.events.events if e["type"] == "order.cancelled"}
        ok = report["orders_confirmed"] == len(confirmed) and report["orders_cancelled"] == len(cancelled)
        return report if ok else None

    report = wait_for(consistent, what="the report to match the events")
    row = next(r for r in report["by_sku"] if r["sku"] == sku)
    assert row == {"sku": sku, "units": 6, "revenue": "15.00"}
    assert report["cancelled_by_reason"].get("payment_declined", 0) >= 1
