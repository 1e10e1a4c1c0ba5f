"""Saga deadlines: a step with no reply is compensated; a late charge is refunded; nothing stays pending."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import unique, wait_for
from tests.system import System, new_order, running_system

# Long enough for a test to stop a worker while a step waits, short enough to keep the tests quick.
STEP_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    # No payment worker: every charge waits for one.
    pools = {"order": 1, "inventory": 1, "notification": 1, "reporting": 1}
    with running_system(
        tmp_path_factory.mktemp("worker-logs"), pools, step_timeout=STEP_TIMEOUT, sweep_interval=0.2
    ) as system:
        yield system


def test_a_charge_with_no_reply_times_out_and_a_late_capture_is_refunded(system: System) -> None:
    sku = unique("SLOW")
    system.stock(sku, 5)
    order = new_order((sku, 2))
    system.submit(order)

    # The charge waits for a payment worker, and the order worker is stopped too: the saga is stuck.
    wait_for(
        lambda: system.cli_json("status", order["order_id"])["step"] == "charging_payment", what="charging"
    )
    system.workers.stop("order")
    stuck = wait_for(lambda: system.cli_json("sagas", "stuck"), timeout=STEP_TIMEOUT * 5, what="a stuck saga")
    assert [(s["order_id"], s["step"]) for s in stuck] == [(order["order_id"], "charging_payment")]

    # A restarted order worker resumes it: compensated and cancelled with `timeout`, stock back.
    system.workers.start("order")
    outcome = system.outcome(order["order_id"], timeout=30)
    assert (outcome["status"], outcome["reason"]) == ("cancelled", "timeout")
    assert system.levels(sku) == (5, 0)
    assert system.cli_json("sagas", "stuck") == []

    # The payment worker comes back and works through its queue, the charge and the refund in
    # either order: charged then refunded, or voided first and never charged. The gateway holds
    # nothing for the order either way.
    system.workers.start("payment")
    ledger = system.database("simulated_gateway")
    payment = wait_for(
        lambda: (
            (p := system.database("payments").payments.find_one({"_id": order["order_id"]}))
            and p["status"] in ("refunded", "voided")
            and p
        ),
        what="the payment to be refunded or voided",
    )
    charges = list(ledger.charges.find({"_id": order["order_id"]}))
    refunds = [
        refund for charge in charges for refund in ledger.refunds.find({"charge_id": charge["charge_id"]})
    ]
    if payment["status"] == "refunded":
        assert [charge["amount"] for charge in charges] == [refund["amount"] for refund in refunds] == [2500]
    else:
        assert charges == refunds == []
    system.workers.stop("payment")


def test_a_reservation_with_no_reply_times_out_and_is_released(system: System) -> None:
    sku = unique("SLOW")
    system.stock(sku, 5)
    system.workers.stop("inventory")
    order = new_order((sku, 2))
    system.submit(order)
    # The release is asked for when the reservation times out, and it waits in the queue with it.
    wait_for(
        lambda: system.cli_json("status", order["order_id"])["reason"] == "timeout",
        what="the reservation to time out",
    )
    system.workers.start("inventory")
    outcome = system.outcome(order["order_id"], timeout=30)
    assert (outcome["status"], outcome["reason"]) == ("cancelled", "timeout")
    assert system.levels(sku) == (5, 0)
