"""The payment worker against the real broker and store: one charge per order, bounded retries."""

from __future__ import annotations

import pytest
from pymongo import MongoClient

from shared.contracts import saga
from shared.messaging import topology
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import Publish, saga_replies, unique


@pytest.fixture
def bus(settings: Settings):
    with running("payment", settings, [topology.PAYMENT_QUEUE]), Publish(settings) as publish:
        yield publish


def charge(order_id: str, token: str = "tok_visa", method: str = "credit_card") -> saga.ChargePayment:
    return saga.ChargePayment(order_id=order_id, amount=2500, currency="CNY", method=method, token=token)


def replies(settings: Settings, count: int) -> list[dict]:
    return saga_replies(settings.amqp_url, count)


def database(settings: Settings, name: str):
    return MongoClient(settings.mongo_url)[f"{settings.db_prefix}_{name}"]


def test_a_charge_sent_three_times_charges_once(settings: Settings, bus: Publish) -> None:
    order_id = unique("P")
    for _ in range(3):
        bus.saga(charge(order_id, method="alipay"))
    captured = replies(settings, 3)
    assert {r["actor"] for r in captured} == {"payment_captured"}
    assert len({r["charge_id"] for r in captured}) == 1
    assert database(settings, "simulated_gateway").charges.count_documents({"_id": order_id}) == 1
    payment = database(settings, "payments").payments.find_one({"_id": order_id})
    assert (payment["status"], payment["amount"], payment["method"]) == ("captured", 2500, "alipay")
    assert "tok_visa" not in str(payment), "never store the token"


def test_a_declined_token_is_declined(settings: Settings, bus: Publish) -> None:
    bus.saga(charge(unique("P"), token="tok_declined", method="wechat_pay"))
    (reply,) = replies(settings, 1)
    assert reply["actor"] == "payment_declined"


def test_a_gateway_error_fails_the_payment_after_bounded_attempts(settings: Settings, bus: Publish) -> None:
    order_id = unique("P")
    bus.saga(charge(order_id, token="tok_gateway_error"))
    (reply,) = replies(settings, 1)
    assert reply["actor"] == "payment_failed"
    payment = database(settings, "payments").payments.find_one({"_id": order_id})
    assert (payment["status"], payment["attempts"]) == ("failed", settings.payment_attempts)
    assert database(settings, "simulated_gateway").charges.count_documents({}) == 0


def test_a_refund_returns_the_captured_amount_once(settings: Settings, bus: Publish) -> None:
    order_id = unique("P")
    bus.saga(charge(order_id))
    replies(settings, 1)
    bus.saga(saga.RefundPayment(order_id=order_id))
    bus.saga(saga.RefundPayment(order_id=order_id))
    refunded = replies(settings, 2)
    assert [r["amount"] for r in refunded] == [2500, 2500]
    assert database(settings, "simulated_gateway").refunds.count_documents({}) == 1


def test_a_change_is_charged_on_file_under_its_own_key_and_refunded_in_parts_once(
    settings: Settings, bus: Publish
) -> None:
    order_id = unique("P")
    bus.saga(charge(order_id))
    (captured,) = replies(settings, 1)
    key = f"{order_id}/change/1"
    for _ in range(2):  # a redelivery charges nothing more
        bus.saga(
            saga.ChargePayment(
                order_id=order_id,
                amount=700,
                currency="CNY",
                method="credit_card",
                on_file=captured["charge_id"],
                key=key,
            )
        )
    again = replies(settings, 2)
    assert {(r["actor"], r["key"], r["amount"]) for r in again} == {("payment_captured", key, 700)}
    gateway = database(settings, "simulated_gateway")
    extra = gateway.charges.find_one({"_id": key})
    assert (extra["amount"], extra["on_file"]) == (700, captured["charge_id"])
    assert extra["instrument"] == gateway.charges.find_one({"_id": order_id})["instrument"]

    refund = saga.RefundAmount(
        order_id=order_id,
        refund_key=f"{order_id}/change/2/refund",
        parts=[saga.RefundPart(key=key, amount=700), saga.RefundPart(key=order_id, amount=300)],
    )
    bus.saga(refund)
    bus.saga(refund)
    assert [r["amount"] for r in replies(settings, 2)] == [1000, 1000]
    refunds = {
        r["charge_id"]: r["amount"]
        for r in gateway.refunds.find({"charge_id": {"$in": [extra["charge_id"], captured["charge_id"]]}})
    }
    assert refunds == {extra["charge_id"]: 700, captured["charge_id"]: 300}
    payment = database(settings, "payments").payments.find_one({"_id": order_id})
    assert (payment["status"], payment["refunded"]) == ("captured", 300)


def test_a_charge_on_file_the_provider_refuses_further_charges_on_is_declined(
    settings: Settings, bus: Publish
) -> None:
    order_id = unique("P")
    bus.saga(charge(order_id, token="tok_no_further_charges"))
    (captured,) = replies(settings, 1)
    bus.saga(
        saga.ChargePayment(
            order_id=order_id,
            amount=100,
            currency="CNY",
            method="credit_card",
            on_file=captured["charge_id"],
            key=f"{order_id}/change/1",
        )
    )
    (reply,) = replies(settings, 1)
    assert (reply["actor"], reply["key"]) == ("payment_declined", f"{order_id}/change/1")
    assert (
        database(settings, "simulated_gateway").charges.count_documents({"_id": f"{order_id}/change/1"}) == 0
    )
