"""Notification and reporting of what happens to orders after confirmation (shipped, completed,
cancelled on request, amended, returned, exchanged, refunded, requests refused), against the real
broker, store and an SMTP server: each event tells the customer once and counts once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo import MongoClient

from services.reporting.handlers import ReportingHandlers
from services.reporting.store import SalesFacts
from shared import store
from shared.contracts.events import (
    Event,
    EventCustomer,
    EventLine,
    OrderChanged,
    OrderRefunded,
    OrderRequestRejected,
    OrderStatusChanged,
)
from shared.messaging import topology
from shared.messaging.ports import Batch
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import Publish, SmtpInbox, isolated_settings, queue_depth, unique, wait_for

ALICE = EventCustomer(customer_id="C-1", name="Alice", email="alice@example.com")
START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def mugs(quantity: int, sku: str = "SKU-1") -> EventLine:
    return EventLine(
        sku=sku, quantity=quantity, unit_price="12.50", line_total=str(Decimal("12.50") * quantity)
    )


def status(
    kind: str, order_id: str, hours: float = 0, reason: str | None = None, items: Any = None, **extra: Any
) -> Event:
    return OrderStatusChanged(
        event_id=f"{order_id}:{kind}",
        type=f"order.{kind}",
        occurred_at=START + timedelta(hours=hours),
        order_id=order_id,
        status=kind,
        reason=reason,
        customer=ALICE,
        items=[mugs(2)] if items is None else items,
        total="25.00",
        currency="CNY",
        payment_method="alipay",
        **extra,
    )


def changed(
    kind: str, order_id: str, hours: float, amount: str, request: str = "r", **lines: list[EventLine]
) -> Event:
    return OrderChanged(
        event_id=f"{order_id}:{kind}:{request}",
        type=f"order.{kind}",
        occurred_at=START + timedelta(hours=hours),
        order_id=order_id,
        status="confirmed" if kind == "amended" else "shipped",
        request_id=f"{order_id}:{request}",
        total="0.00",
        previous_total="25.00",
        amount=amount,
        currency="CNY",
        customer=ALICE,
        **lines,
    )


def refunded(cause: str, order_id: str, hours: float, amount: str) -> Event:
    return OrderRefunded(
        event_id=f"{order_id}:refunded:{cause}",
        occurred_at=START + timedelta(hours=hours),
        order_id=order_id,
        status="cancelled" if cause == "cancel" else "confirmed",
        amount=amount,
        currency="CNY",
        customer=ALICE,
        cause=cause,
        request_id=f"{order_id}:r",
    )


def refused(kind: str, order_id: str) -> Event:
    return OrderRequestRejected(
        event_id=f"{order_id}:{kind}_rejected",
        type=f"order.{kind}_rejected",
        order_id=order_id,
        request_id=f"{order_id}:r",
        status="shipped",
        reason="shipped",
        detail=f"Order {order_id} has shipped already.",
        customer=ALICE,
    )


@pytest.fixture
def inbox() -> Iterator[SmtpInbox]:
    with SmtpInbox() as inbox:
        yield inbox


@pytest.fixture
def smtp_settings(inbox: SmtpInbox) -> Iterator[Settings]:
    with isolated_settings(smtp_url=inbox.url, operator_email="ops@example.com") as settings:
        yield settings


def notifications(settings: Settings) -> list[dict[str, Any]]:
    return list(MongoClient(settings.mongo_url)[settings.database_name("notification")].notifications.find())


def test_the_customer_hears_of_each_change_once(smtp_settings: Settings, inbox: SmtpInbox) -> None:
    settings, order_id = smtp_settings, unique("A")
    told = [
        status("shipped", order_id, carrier="SF Express", tracking="SF123"),
        status("completed", order_id),
        status("cancelled", unique("B"), reason="customer_request"),
        changed("amended", order_id, 1, "12.50", items=[mugs(3)]),
        changed("returned", order_id, 2, "-12.50", returned=[mugs(1)]),
        changed("exchanged", order_id, 3, "0.00", returned=[mugs(1)], replacement=[mugs(1, "SKU-2")]),
        refunded("return", order_id, 2, "12.50"),
        refused("cancel", order_id),
        refused("amend", order_id),
    ]
    not_told = [refused("ship", order_id), refused("complete", order_id)]
    with (
        running("notification", settings, [topology.NOTIFICATION_EVENTS_QUEUE]),
        Publish(settings) as publish,
    ):
        for event in [*told, *not_told, *told[3:7]]:  # the changes and the refund arrive twice
            publish.event(event)
        wait_for(lambda: len(inbox.messages) >= len(told), what="an email per event")
        wait_for(lambda: len(notifications(settings)) == len(told), what="a record per event")
        wait_for(
            lambda: queue_depth(settings.amqp_url, topology.NOTIFICATION_EVENTS_QUEUE) == 0,
            interval=0.5,
            what="every event, duplicates too, to be consumed",
        )
    assert len(inbox.messages) == len(told)
    assert sorted(n["_id"] for n in notifications(settings)) == sorted(event.event_id for event in told)
    bodies = {
        message["Subject"]: message.get_payload(decode=True).decode()
        for message in inbox.to("alice@example.com")
    }
    assert (
        "shipped with SF Express. Tracking number: SF123." in bodies[f"Your order {order_id} is on its way"]
    )
    assert f"Your order {order_id} is complete" in bodies
    assert "Whatever you paid for it will be refunded" in next(
        body for subject, body in bodies.items() if subject.endswith("was cancelled")
    )
    assert "We have charged the difference, 12.50 CNY." in bodies[f"Your order {order_id} was changed"]
    assert "12.50 CNY is refunded to you" in bodies[f"Your return from order {order_id} is done"]
    assert "1 x SKU-2" in bodies[f"Your exchange on order {order_id} is done"]
    assert "the items you returned" in bodies[f"Refund for your order {order_id}"]
    assert f"Order {order_id} has shipped already." in bodies[f"We could not cancel your order {order_id}"]
    assert f"We could not change your order {order_id}" in bodies
    assert {(n["status"], n["channel"]) for n in notifications(settings)} == {("sent", "email")}


def test_the_sales_report_is_net_of_what_happened_after_confirmation(settings: Settings) -> None:
    shipped, amended, cancelled, exchanged = (unique(prefix) for prefix in "ABCD")
    events = [
        # Shipped, one of its two units returned and refunded, then completed.
        status("confirmed", shipped),
        status("shipped", shipped, 1),
        changed("returned", shipped, 2, "-12.50", returned=[mugs(1)]),
        refunded("return", shipped, 2, "12.50"),
        status("completed", shipped, 3),
        # Amended up from 2 to 3 units and another SKU, then down to 1 unit (refunded).
        status("confirmed", amended),
        changed("amended", amended, 1, "25.00", items=[mugs(3), mugs(1, "SKU-2")]),
        changed("amended", amended, 2, "-37.50", request="r2", items=[mugs(1)]),
        refunded("amend", amended, 2, "37.50"),
        # Cancelled by the customer after confirmation, and refunded in full.
        status("confirmed", cancelled),
        status("cancelled", cancelled, 1, reason="customer_request"),
        refunded("cancel", cancelled, 1, "25.00"),
        # One unit exchanged for another SKU at the same price.
        status("confirmed", exchanged),
        changed("exchanged", exchanged, 1, "0.00", returned=[mugs(1)], replacement=[mugs(1, "SKU-2")]),
    ]
    facts = SalesFacts(store.database(store.connect(settings), settings, "reporting"))
    report = ReportingHandlers(facts, "CNY")
    with running("reporting", settings, [topology.REPORTING_EVENTS_QUEUE]), Publish(settings) as publish:
        # Every change arrives twice, the second time after everything else (a redelivery).
        for event in [*events, *events[2:4], *events[6:9], *events[10:12], events[13]]:
            publish.event(event)
        wait_for(lambda: report.sales_report().orders_exchanged == 1, what="the report to catch up")
        wait_for(
            lambda: queue_depth(settings.amqp_url, topology.REPORTING_EVENTS_QUEUE) == 0,
            interval=0.5,
            what="every event, duplicates too, to be consumed",
        )
    summary = report.sales_report().as_json()
    assert (summary["orders_confirmed"], summary["orders_shipped"], summary["orders_completed"]) == (4, 1, 1)
    assert summary["cancelled_by_reason"] == {"customer_request": 1}
    assert (summary["orders_amended"], summary["orders_returned"], summary["orders_exchanged"]) == (1, 1, 1)
    assert (summary["refunds"], summary["refunded"]) == (3, "75.00")
    # Sold now: 1 unit of the shipped order, 1 of the amended one, 2 of the exchanged one (1 swapped).
    assert (summary["units_sold"], summary["units_returned"]) == (4, 1)
    assert (summary["revenue"], summary["net_revenue"]) == ("50.00", "50.00")
    assert summary["by_sku"] == [
        {"sku": "SKU-1", "units": 3, "revenue": "37.50"},
        {"sku": "SKU-2", "units": 1, "revenue": "12.50"},
    ]
    assert summary["by_day"] == [{"day": "2026-03-01", "units": 4, "revenue": "50.00"}]


def test_an_order_amended_many_times_is_followed_to_its_last_version(settings: Settings) -> None:
    order_id = unique("A")
    facts = SalesFacts(store.database(store.connect(settings), settings, "reporting"))
    handlers = ReportingHandlers(facts, "CNY")
    handlers.on_events(Batch([status("confirmed", order_id)]))
    for units in range(3, 10):  # more versions than one read looks up
        handlers.on_events(
            Batch([changed("amended", order_id, units, "12.50", request=f"r{units}", items=[mugs(units)])])
        )
    assert facts.sales_of([order_id])[order_id]["version"] == 8
    assert handlers.sales_report().as_json()["by_sku"] == [{"sku": "SKU-1", "units": 9, "revenue": "112.50"}]
    redelivered = changed("amended", order_id, 3, "12.50", request="r3", items=[mugs(3)])
    handlers.on_events(Batch([redelivered]))
    assert facts.sales_of([order_id])[order_id]["version"] == 8
    handlers.on_events(Batch([status("cancelled", order_id, 10, reason="customer_request")]))
    assert facts.sales_of([order_id])[order_id]["version"] == 9
    summary = handlers.sales_report().as_json()
    assert (summary["units_sold"], summary["revenue"], summary["orders_amended"]) == (0, "0.00", 1)
    assert (summary["by_sku"], summary["by_day"]) == ([], [])


def test_orders_an_earlier_release_counted_are_adopted_once_and_not_counted_again(settings: Settings) -> None:
    order_id = unique("A")
    confirmed = status("confirmed", order_id)
    db = store.database(store.connect(settings), settings, "reporting")
    # What the release before sales had versions recorded for a confirmation.
    db["order_outcomes"].insert_one({"_id": confirmed.event_id, "order_id": order_id, "status": "confirmed"})
    db["sales_lines"].insert_one(
        {
            "_id": f"{confirmed.event_id}:SKU-1",
            "order_id": order_id,
            "sku": "SKU-1",
            "units": 2,
            "revenue": 2500,
            "day": "2026-03-01",
        }
    )
    facts = SalesFacts(db)
    facts.adopt_earlier_sales()
    facts.adopt_earlier_sales()  # every worker does at start; done once
    assert facts.sales_of([order_id])[order_id]["version"] == 0
    handlers = ReportingHandlers(facts, "CNY")
    # Amended after the upgrade: the order worker says its confirmation again, with the new lines.
    amended = changed("amended", order_id, 1, "12.50", items=[mugs(3)])
    handlers.on_events(Batch([status("confirmed", order_id, items=[mugs(3)]), amended]))
    assert handlers.sales_report().as_json()["by_sku"] == [{"sku": "SKU-1", "units": 3, "revenue": "37.50"}]
    handlers.on_events(Batch([status("cancelled", order_id, 2, reason="customer_request")]))
    assert handlers.sales_report().as_json()["by_sku"] == []
