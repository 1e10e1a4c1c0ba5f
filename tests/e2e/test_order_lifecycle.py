"""Requests that depend on timing, with a system of their own: an unpaid order's payment details
changed while it waits for stock, and shipped orders completed automatically."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.test_order_requests import ledger, status, the_event
from tests.support import unique, wait_for
from tests.system import System, new_order, running_system

# Inventory starts only when a test needs it: until then a new order waits for its stock.
POOLS = {"order": 1, "payment": 1, "notification": 1}
COMPLETE_AFTER_DAYS = 2 / 86_400  # two seconds


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("lifecycle-worker-logs"),
        POOLS,
        complete_after_days=COMPLETE_AFTER_DAYS,
        complete_check_interval=0.5,
    ) as system:
        yield system


def with_inventory(system: System) -> None:
    if not system.workers.running.get("inventory"):
        system.workers.start("inventory")
        system.wait_until_consuming("inventory")


def test_an_unpaid_order_is_charged_with_the_payment_details_it_was_changed_to(system: System) -> None:
    sku = unique("MUG")
    with_inventory(system)
    system.stock(sku, 3, price="8.00")
    system.workers.stop("inventory")
    order = new_order((sku, 1), token="tok_declined")
    order_id = order["order_id"]
    system.submit(order)
    the_event(system, order_id, "order.accepted")
    system.publish.request(
        "amend",
        {
            "order_id": order_id,
            "items": [{"sku": sku, "quantity": 1}],
            "payment": {"method": "alipay", "token": "tok_alipay_4242"},
        },
    )
    amended = the_event(system, order_id, "order.amended")
    assert (amended["status"], amended["payment_method"], amended["amount"]) == ("pending", "alipay", "0.00")

    with_inventory(system)
    confirmed = system.outcome(order_id)
    assert (confirmed["status"], confirmed["payment_method"]) == ("confirmed", "alipay")
    assert ledger(system, order_id) == (800, 0)
    (charge,) = system.database("simulated_gateway").charges.find({"_id": order_id})
    assert (charge["method"], charge["instrument"]) == ("alipay", "alipay ****4242")


def test_a_shipped_order_completes_by_itself_after_its_time(system: System) -> None:
    with_inventory(system)
    sku = unique("MUG")
    system.stock(sku, 3)
    order = new_order((sku, 1))
    order_id = order["order_id"]
    system.submit(order)
    assert system.outcome(order_id)["status"] == "confirmed"
    system.cli("orders", "ship", order_id)
    ship = {"order_id": order_id, "request_id": "ship-again"}
    system.publish.request("ship", ship)
    system.publish.request("ship", ship)  # redelivered: refused once ("shipped"), not twice

    completed = the_event(system, order_id, "order.completed", timeout=30)
    assert completed["status"] == "completed"
    wait_for(lambda: status(system, order_id)["status"] == "completed", what="the order to be completed")
    view = status(system, order_id)
    assert [(r["kind"], r["outcome"], r["reason"]) for r in view["requests"]] == [
        ("ship", "done", None),
        ("ship", "rejected", "shipped"),
        ("complete", "done", None),  # asked by the order worker itself, in time
    ]
    # Said again on the redelivery (at least once), but as the same event: subscribers keep one.
    rejections = {e["event_id"] for e in system.events.of(order_id) if e["type"] == "order.ship_rejected"}
    assert len(rejections) == 1
