"""Notification and reporting against the real broker, store and an SMTP server: each event counts once."""

from __future__ import annotations

import json

import pytest
from pymongo import MongoClient

from services.reporting.handlers import ReportingHandlers
from services.reporting.store import SalesFacts
from shared import store
from shared.contracts.events import EventCustomer, EventLine, LowStock, OrderStatusChanged
from shared.messaging import topology
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import Publish, SmtpInbox, isolated_settings, queue_depth, queue_messages, unique, wait_for

ALICE = EventCustomer(customer_id="C-1", name="Alice", email="alice@example.com")


def order_event(
    status: str, order_id: str | None = None, reason: str | None = None, **extra
) -> OrderStatusChanged:
    order_id = order_id or unique("A")
    return OrderStatusChanged(
        event_id=f"{order_id}:{status}",
        type=f"order.{'accepted' if status == 'pending' else status}",
        order_id=order_id,
        status=status,
        reason=reason,
        customer=ALICE,
        items=[EventLine(sku="SKU-1", quantity=2, unit_price="12.50", line_total="25.00")],
        total="25.00",
        currency="CNY",
        payment_method="alipay",
        **extra,
    )


@pytest.fixture
def publisher(settings: Settings):
    with Publish(settings) as publish:
        yield publish


@pytest.fixture
def inbox():
    with SmtpInbox() as inbox:
        yield inbox


@pytest.fixture
def smtp_settings(inbox: SmtpInbox):
    with isolated_settings(smtp_url=inbox.url, operator_email="ops@example.com") as settings:
        yield settings


def notifications(settings: Settings) -> list[dict]:
    return list(MongoClient(settings.mongo_url)[settings.database_name("notification")].notifications.find())


def test_each_event_is_emailed_once_and_recorded(smtp_settings: Settings, inbox: SmtpInbox) -> None:
    settings = smtp_settings
    confirmed, cancelled = order_event("confirmed"), order_event("cancelled", reason="payment_declined")
    low = LowStock(event_id=unique("low"), sku="SKU-1", name="Blue mug", available=1, threshold=3)
    with (
        running("notification", settings, [topology.NOTIFICATION_EVENTS_QUEUE]),
        Publish(settings) as publisher,
    ):
        for event in (confirmed, confirmed, cancelled, low, order_event("pending"), confirmed):
            publisher.event(event)
        wait_for(lambda: len(inbox.messages) >= 3, what="three emails")
        wait_for(lambda: len(notifications(settings)) == 3, what="three records")
        # The duplicates were consumed too: nothing is left in the queue, and no more mail came.
        wait_for(
            lambda: queue_depth(settings.amqp_url, topology.NOTIFICATION_EVENTS_QUEUE) == 0,
            interval=0.5,
            what="every event, duplicates too, to be consumed",
        )
    subjects = sorted(message["Subject"] for message in inbox.messages)
    assert subjects == sorted(
        [
            f"Your order {confirmed.order_id} is confirmed",
            f"Your order {cancelled.order_id} was cancelled",
            "Low stock: SKU-1 (1 left)",
        ]
    )
    assert len(inbox.to("alice@example.com")) == 2
    assert len(inbox.to("ops@example.com")) == 1
    assert "payment was declined" in inbox.to("alice@example.com")[
        1
    ].get_payload() or "payment was declined" in (inbox.to("alice@example.com")[0].get_payload())
    assert {(n["status"], n["channel"]) for n in notifications(settings)} == {("sent", "email")}


def test_a_broken_event_goes_to_the_dead_letter_queue(settings: Settings, publisher: Publish) -> None:
    with running("notification", settings, [topology.NOTIFICATION_EVENTS_QUEUE]):
        publisher.raw(
            topology.EVENTS_EXCHANGE, "order.confirmed", b'{"type": "order.confirmed", "order_id": 7}'
        )
        dlq = topology.dead_letter_queue(topology.NOTIFICATION_EVENTS_QUEUE)
        ((raw, headers),) = wait_for(lambda: queue_messages(settings.amqp_url, dlq), what="the dead letter")
    assert json.loads(raw)["order_id"] == 7
    assert "not a valid event" in headers["x-orderflow-reason"]


def test_a_forged_event_is_dead_lettered_with_the_reason_and_mails_no_one(
    smtp_settings: Settings, inbox: SmtpInbox
) -> None:
    settings = smtp_settings
    valid = order_event("confirmed")

    def forged(order_id: str | None = None, **customer: str) -> dict:
        """A new `order.confirmed` (an event id of its own), with what a forger changed in it."""
        event = order_event("confirmed").model_dump(mode="json")
        return {
            **event,
            "order_id": order_id or event["order_id"],
            "customer": {**event["customer"], **customer},
        }

    injected = [
        forged(email="alice@example.com\r\nBcc: mallory@example.net"),
        forged(email="alice@example.com, mallory@example.net"),
        forged(email="Mallory <mallory@example.net>"),
        forged(email="m" * 64 + "@" + "x" * 250 + ".com"),
        forged(order_id="A-1\r\nBcc: mallory@example.net"),  # into the subject
    ]
    dlq = topology.dead_letter_queue(topology.NOTIFICATION_EVENTS_QUEUE)
    letters: list[tuple[bytes, dict]] = []
    with (
        running("notification", settings, [topology.NOTIFICATION_EVENTS_QUEUE]),
        Publish(settings) as publisher,
    ):
        for body in injected:
            publisher.raw(topology.EVENTS_EXCHANGE, "order.confirmed", json.dumps(body).encode())
        publisher.event(valid)
        wait_for(
            lambda: letters.extend(queue_messages(settings.amqp_url, dlq)) or len(letters) >= len(injected),
            what="every forged event dead-lettered",
        )
        wait_for(lambda: inbox.messages, what="the valid event's email")
        wait_for(
            lambda: queue_depth(settings.amqp_url, topology.NOTIFICATION_EVENTS_QUEUE) == 0,
            interval=0.5,
            what="every event to be consumed",
        )
    reasons = {json.loads(raw)["event_id"]: headers["x-orderflow-reason"] for raw, headers in letters}
    assert len(reasons) == len(injected)
    for body in injected[:4]:
        assert "not a valid event: order.confirmed.customer.email: " in reasons[body["event_id"]]
    assert "order.confirmed.order_id: " in reasons[injected[4]["event_id"]]
    assert not any("mallory" in reason for reason in reasons.values()), "no forged value in a reason"
    # Only the valid event was mailed, to its one recipient, and only it was recorded.
    assert [(m["To"], m["Subject"]) for m in inbox.messages] == [
        ("alice@example.com", f"Your order {valid.order_id} is confirmed")
    ]
    assert [n["_id"] for n in notifications(settings)] == [valid.event_id]


def test_the_sales_report_counts_every_order_once(settings: Settings, publisher: Publish) -> None:
    confirmed = [order_event("confirmed") for _ in range(3)]
    cancelled = [
        order_event("cancelled", reason=r) for r in ("out_of_stock", "out_of_stock", "payment_failed")
    ]
    rejected = order_event("rejected", reason="invalid")
    facts = SalesFacts(store.database(store.connect(settings), settings, "reporting"))
    with running("reporting", settings, [topology.REPORTING_EVENTS_QUEUE]):
        for event in [*confirmed, *cancelled, rejected, *confirmed, cancelled[0]]:
            publisher.event(event)
        report = ReportingHandlers(facts, "CNY")
        wait_for(lambda: report.sales_report().orders_rejected == 1, what="the report to catch up")
        wait_for(
            lambda: queue_depth(settings.amqp_url, topology.REPORTING_EVENTS_QUEUE) == 0,
            interval=0.5,
            what="every event, duplicates too, to be consumed",
        )
    summary = report.sales_report().as_json()
    assert summary["orders_confirmed"] == 3
    assert summary["orders_cancelled"] == 3
    assert summary["cancelled_by_reason"] == {"out_of_stock": 2, "payment_failed": 1}
    assert summary["units_sold"] == 6
    assert summary["revenue"] == "75.00"
    assert summary["by_sku"] == [{"sku": "SKU-1", "units": 6, "revenue": "75.00"}]
