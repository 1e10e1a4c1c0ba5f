"""What customers are told about their orders after confirmation: shipped, completed, cancelled on
request, changed, refunded (and what for), and requests refused."""

from __future__ import annotations

from typing import Any

import pytest

from services.notification.domain import for_change, for_order, for_refund, for_refused_request
from shared.contracts.events import (
    EventCustomer,
    EventLine,
    OrderChanged,
    OrderRefunded,
    OrderRequestRejected,
    OrderStatusChanged,
)

ALICE = EventCustomer(customer_id="C-1", name="Alice", email="alice@example.com")
MUG = EventLine(sku="SKU-1", quantity=2, unit_price="12.50", line_total="25.00")


def status(kind: str, reason: str | None = None, customer: Any = ALICE, **extra: Any) -> OrderStatusChanged:
    return OrderStatusChanged(
        event_id=f"A-1:{kind}",
        type=f"order.{kind}",
        order_id="A-1",
        status=kind,
        reason=reason,
        customer=customer,
        items=[MUG],
        total="25.00",
        currency="CNY",
        **extra,
    )


def changed(kind: str, amount: str, **extra: Any) -> OrderChanged:
    return OrderChanged(
        event_id=f"A-1:{kind}",
        type=f"order.{kind}",
        order_id="A-1",
        status="confirmed",
        request_id="r-1",
        total="37.50",
        previous_total="25.00",
        amount=amount,
        currency="CNY",
        customer=ALICE,
        **extra,
    )


def refund(cause: str, customer: Any = ALICE) -> OrderRefunded:
    return OrderRefunded(
        event_id=f"A-1:refunded:{cause.replace(' ', '-')}",  # an id holds no spaces; a cause may
        order_id="A-1",
        status="cancelled",
        amount="12.50",
        currency="CNY",
        customer=customer,
        cause=cause,
        request_id="r-1",
    )


def refused(kind: str, customer: Any = ALICE) -> OrderRequestRejected:
    return OrderRequestRejected(
        event_id=f"A-1:{kind}_rejected",
        type=f"order.{kind}_rejected",
        order_id="A-1",
        request_id="r-1",
        status="shipped",
        reason="shipped",
        detail="Order A-1 has shipped already and can no longer be changed.",
        customer=customer,
    )


def test_a_shipped_order_names_its_carrier_and_tracking_number() -> None:
    notification = for_order(status("shipped", carrier="SF Express", tracking="SF123456"))
    assert notification is not None
    assert (notification.kind, notification.recipient, notification.notification_id) == (
        "order.shipped",
        "alice@example.com",
        "A-1:shipped",
    )
    assert notification.subject == "Your order A-1 is on its way"
    assert "shipped with SF Express. Tracking number: SF123456." in notification.body
    assert "2 x SKU-1 at 12.50 = 25.00" in notification.body


def test_a_shipped_order_without_carrier_or_tracking_says_neither() -> None:
    notification = for_order(status("shipped"))
    assert notification is not None
    assert "your order has shipped." in notification.body
    assert "None" not in notification.body and "Tracking" not in notification.body


def test_a_completed_order() -> None:
    notification = for_order(status("completed"))
    assert notification is not None
    assert (notification.kind, notification.subject) == ("order.completed", "Your order A-1 is complete")


def test_a_cancellation_the_customer_asked_for_promises_the_refund_of_what_was_paid() -> None:
    notification = for_order(status("cancelled", reason="customer_request"))
    assert notification is not None
    assert notification.subject == "Your order A-1 was cancelled"
    assert "As you asked, your order was cancelled." in notification.body
    assert "Whatever you paid for it will be refunded, and we will tell you when." in notification.body
    assert "not been charged" not in notification.body


def test_an_operators_cancellation_gives_their_reason() -> None:
    notification = for_order(status("cancelled", reason="damaged in our warehouse"))
    assert notification is not None
    assert "Reason: damaged in our warehouse\n" in notification.body
    assert "Whatever you paid for it will be refunded" in notification.body


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        ("payment_declined", "because the payment was declined. You have not been charged."),
        ("out_of_stock", "because some items are out of stock. You have not been charged."),
        (
            "timeout",
            "in time. If any amount was taken for it, it will be refunded, and we will tell you when.",
        ),
        (None, "because of a problem. If any amount was taken for it"),
    ],
)
def test_the_sagas_cancellations_read_as_before(reason: str | None, said: str) -> None:
    notification = for_order(status("cancelled", reason=reason))
    assert notification is not None and said in notification.body


@pytest.mark.parametrize(
    ("cause", "what"),
    [
        ("cancel", "for your cancelled order A-1."),
        ("amend", "for your order A-1: the difference after you changed it."),
        ("return", "for your order A-1: the items you returned."),
        ("exchange", "for your order A-1: the difference on the items you exchanged."),
        ("something new", "for your order A-1."),
    ],
)
def test_a_refund_says_what_it_was_for(cause: str, what: str) -> None:
    notification = for_refund(refund(cause))
    assert notification is not None
    assert (notification.kind, notification.subject) == ("order.refunded", "Refund for your order A-1")
    assert f"We have refunded 12.50 CNY {what}" in notification.body


def test_an_amendment_lists_the_new_lines_and_what_was_charged() -> None:
    lines = [MUG, EventLine(sku="SKU-2", quantity=1, unit_price="12.50", line_total="12.50")]
    notification = for_change(changed("amended", "12.50", items=lines))
    assert notification is not None
    assert (notification.kind, notification.subject) == ("order.amended", "Your order A-1 was changed")
    assert "2 x SKU-1 at 12.50 = 25.00\n  1 x SKU-2 at 12.50 = 12.50" in notification.body
    assert "New total: 37.50 CNY (it was 25.00 CNY)." in notification.body
    assert "We have charged the difference, 12.50 CNY." in notification.body


@pytest.mark.parametrize(
    ("amount", "said"),
    [
        ("-12.50", "12.50 CNY is refunded to you; a separate note confirms the refund."),
        ("0.00", "Nothing more to pay, and nothing to refund."),
    ],
)
def test_an_amendment_says_what_goes_back(amount: str, said: str) -> None:
    notification = for_change(changed("amended", amount, items=[MUG]))
    assert notification is not None and said in notification.body and "-12.50" not in notification.body


def test_a_return_lists_what_came_back_and_the_refund() -> None:
    notification = for_change(changed("returned", "-12.50", returned=[MUG]))
    assert notification is not None
    assert notification.subject == "Your return from order A-1 is done"
    assert "We have taken back:\n\n  2 x SKU-1" in notification.body
    assert "12.50 CNY is refunded to you" in notification.body


def test_an_exchange_lists_both_sides() -> None:
    replacement = EventLine(sku="SKU-3", quantity=2, unit_price="12.50", line_total="25.00")
    notification = for_change(changed("exchanged", "0.00", returned=[MUG], replacement=[replacement]))
    assert notification is not None
    assert notification.subject == "Your exchange on order A-1 is done"
    assert "and are sending you instead:\n\n  2 x SKU-3" in notification.body
    assert "Nothing more to pay" in notification.body


@pytest.mark.parametrize(
    ("kind", "subject"),
    [("cancel", "We could not cancel your order A-1"), ("amend", "We could not change your order A-1")],
)
def test_a_refused_request_says_why(kind: str, subject: str) -> None:
    notification = for_refused_request(refused(kind))
    assert notification is not None
    assert (notification.kind, notification.subject) == (f"order.{kind}_rejected", subject)
    assert "has shipped already and can no longer be changed." in notification.body
    assert "Your order is unchanged." in notification.body


def test_operators_refusals_and_events_without_a_customer_tell_no_one() -> None:
    assert for_refused_request(refused("ship")) is None
    assert for_refused_request(refused("cancel", customer=None)) is None
    assert for_refund(refund("amend", customer=None)) is None
    assert for_order(status("shipped", customer=None)) is None
    assert for_order(status("rejected", reason="invalid")) is None
