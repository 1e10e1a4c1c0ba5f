"""Money is never wrong: charges whose outcome is unknown, refunds that fail, compensations that
must finish. Every test checks the simulated provider's own ledger, not only our records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.invariants import gateway_holds
from tests.support import unique, wait_for
from tests.system import System, new_order, running_system

# Long enough for a test to stop a worker while a step waits, short enough to keep the tests quick.
STEP_TIMEOUT = 3.0
POOLS = {"order": 1, "inventory": 1, "payment": 1, "notification": 1, "reporting": 1}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("worker-logs"),
        POOLS,
        step_timeout=STEP_TIMEOUT,
        sweep_interval=0.5,
        sim_gateway_delay=0.5,
    ) as system:
        yield system


def ordered(system: System, token: str, units: int = 2) -> dict:
    sku = unique("PAY")
    system.stock(sku, 5)
    order = new_order((sku, units), token=token)
    system.submit(order)
    return order


def test_a_charge_whose_reply_was_lost_is_found_by_its_key_and_confirmed_once(system: System) -> None:
    order = ordered(system, "tok_lost_reply")
    outcome = system.outcome(order["order_id"])
    assert (outcome["status"], outcome["total"]) == ("confirmed", "25.00")
    assert gateway_holds(system, [order["order_id"]]) == {order["order_id"]: 2500}
    payment = system.cli_json("payments", "show", order["order_id"])
    assert (payment["status"], payment["captured"], payment["refunded"]) == ("captured", "25.00", "0.00")
    assert payment["attempts"] == 2, "the first call captured and timed out; the second found the capture"
    status = wait_for(
        lambda: (s := system.cli_json("status", order["order_id"]))["pending_compensations"] == [] and s,
        what="each partition to confirm its commit",
    )
    assert status["payment"]["captured"] == "25.00"


def test_a_slow_gateway_still_charges_once(system: System) -> None:
    order = ordered(system, "tok_slow")
    assert system.outcome(order["order_id"])["status"] == "confirmed"
    assert gateway_holds(system, [order["order_id"]]) == {order["order_id"]: 2500}


def test_a_gateway_that_keeps_failing_cancels_the_order_and_voids_its_key(system: System) -> None:
    order = ordered(system, "tok_gateway_error")
    outcome = system.outcome(order["order_id"])
    assert (outcome["status"], outcome["reason"]) == ("cancelled", "payment_failed")
    payment = wait_for(
        lambda: (p := system.cli_json("payments", "show", order["order_id"]))["status"] == "failed" and p,
        what="the failed payment",
    )
    assert (payment["captured"], payment["refunded"]) == ("0.00", "0.00")
    ledger = system.database("simulated_gateway")
    assert ledger.keys.find_one({"_id": order["order_id"]})["kind"] == "void", "nothing can be charged later"
    assert gateway_holds(system, [order["order_id"]]) == {order["order_id"]: 0}
    status = wait_for(
        lambda: (s := system.cli_json("status", order["order_id"]))["pending_compensations"] == [] and s,
        what="the void to be recorded",
    )
    assert status["payment"]["refunded"] == "0.00"
    assert "refunded" not in [entry["step"] for entry in status["history"]], "no money moved back"
    (email,) = wait_for(lambda: system.emails_to(order["customer"]["email"]), what="the cancellation email")
    assert "You have not been charged" not in email.get_payload(), "it could not be known when it was sent"


def test_a_late_capture_is_refunded_through_refund_errors_and_the_order_records_it(system: System) -> None:
    system.workers.stop("payment")
    order = ordered(system, "tok_refund_error")
    outcome = system.outcome(order["order_id"], timeout=30)
    assert (outcome["status"], outcome["reason"]) == ("cancelled", "timeout")

    # One thread: the queued charge captures first, then the refund fails three times (one round of
    # attempts) and the order asks again after the step timeout, until it is done.
    system.workers.start("payment", threads=1)
    ledger = system.database("simulated_gateway")
    wait_for(lambda: ledger.charges.find_one({"_id": order["order_id"]}), what="the late capture")
    status = wait_for(
        lambda: (s := system.cli_json("status", order["order_id"]))["payment"]["refunded"] and s,
        timeout=60,
        what="the refund to be recorded",
    )
    assert (status["status"], status["reason"], status["payment"]["refunded"]) == (
        "cancelled",
        "timeout",
        "25.00",
    )
    assert [(e["step"], e.get("amount")) for e in status["history"]][-1] == ("refunded", "25.00")
    assert status["pending_compensations"] == []
    assert gateway_holds(system, [order["order_id"]]) == {order["order_id"]: 0}
    assert (
        ledger.refunds.count_documents(
            {"charge_id": ledger.charges.find_one({"_id": order["order_id"]})["charge_id"]}
        )
        == 1
    )
    refunded = wait_for(
        lambda: {
            e["event_id"]: e for e in system.events.of(order["order_id"]) if e["type"] == "order.refunded"
        },
        what="order.refunded",
    )
    # Said again if its order's state is said again (a redelivery), always under the same event id.
    assert [(e["amount"], e["currency"], e["reason"]) for e in refunded.values()] == [
        ("25.00", "CNY", "timeout")
    ]
    payment = system.cli_json("payments", "show", order["order_id"])
    assert (payment["status"], payment["captured"], payment["refunded"]) == ("refunded", "25.00", "25.00")
    assert payment["refund_attempts"] >= 4
    wait_for(
        lambda: any(
            "refunded 25.00" in m.get_payload() for m in system.emails_to(order["customer"]["email"])
        ),
        what="the refund email",
    )
    system.workers.stop("payment")
    system.workers.start("payment")


def test_payments_show_exits_1_for_an_order_with_no_payment(system: System) -> None:
    result = system.cli("payments", "show", unique("NOPAY"), check=False)
    assert result.returncode == 1 and "no payment" in result.stderr
