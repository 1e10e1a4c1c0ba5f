"""Upgrades on the real broker and store: messages and documents as the earlier releases wrote them
are handled by this one, and `orderflow migrate` upgrades the documents once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from services.migrate import migrate_all
from shared.contracts.base import new_id
from shared.messaging import topology
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import Publish, queue_messages, saga_replies, unique, wait_for
from tests.unit.test_versions import old_order


def database(settings: Settings, service: str) -> Database:
    return MongoClient(settings.mongo_url, tz_aware=True)[settings.database_name(service)]


def send_as_before(publish: Publish, queue: str, actor: str, **payload: Any) -> None:
    """A saga message exactly as the release before the last sent it (git show a206b4a:
    shared/messaging/routes.py): the model's JSON dump, alone in a dramatiq message of its actor."""
    body = {
        "schema_version": 1,
        "message_id": new_id(),
        "occurred_at": datetime.now(UTC).isoformat(),
        **payload,
    }
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=(body,), kwargs={}, options={}
    )
    publish.raw("", queue, message.encode())


def test_an_old_payment_is_refunded_on_an_old_command(settings: Settings) -> None:
    order_id = unique("U")
    payments = database(settings, "payment")["payments"]
    with running("payment", settings, [topology.PAYMENT_QUEUE]), Publish(settings) as publish:
        # The release before the last: ChargePayment required a token and named no key.
        send_as_before(
            publish, topology.PAYMENT_QUEUE, "charge_payment",
            order_id=order_id, amount=2500, currency="CNY", method="credit_card", token="tok_visa",
        )  # fmt: skip
        wait_for(
            lambda: (payments.find_one({"_id": order_id}) or {}).get("status") == "captured", what="capture"
        )
        saga_replies(settings.amqp_url, 1)
        # As that release stored it: under the order id, without it as a field, no part refunds.
        payments.update_one({"_id": order_id}, {"$unset": {"order_id": "", "refunds": "", "schema": ""}})
        send_as_before(publish, topology.PAYMENT_QUEUE, "refund_payment", order_id=order_id)
        (reply,) = saga_replies(settings.amqp_url, 1)
    assert (reply["order_id"], reply["amount"], reply["schema_version"]) == (order_id, 2500, 2)
    stored = payments.find_one({"_id": order_id})
    assert stored is not None
    assert (stored["status"], stored["refunded"], stored["order_id"], stored["schema"]) == (
        "refunded",
        2500,
        order_id,
        2,
    )
    gateway: Database = MongoClient(settings.mongo_url)[f"{settings.db_prefix}_simulated_gateway"]
    assert gateway["refunds"].count_documents({}) == 1


def test_an_old_order_is_moved_on_by_an_old_reply_and_a_newer_reply_is_dead_lettered(
    settings: Settings,
) -> None:
    order_id = unique("U")
    orders = database(settings, "order")["orders"]
    now = datetime.now(UTC)
    # Cancelled with its charge's refund due, as the release before the last stored it.
    due = {"status": "cancelled", "step": "done", "reason": "payment_failed", "refund_required": True}
    orders.insert_one(
        old_order(_id=order_id, **due, deadline=now + timedelta(hours=1), due_since=now, version=4)
    )
    with running("order", settings, [topology.ORDER_SAGA_QUEUE]), Publish(settings) as publish:
        send_as_before(publish, topology.ORDER_SAGA_QUEUE, "payment_refunded", order_id=order_id, amount=1000)
        moved = wait_for(lambda: orders.find_one({"_id": order_id, "version": 5}), what="the refund recorded")
        send_as_before(
            publish,
            topology.ORDER_SAGA_QUEUE,
            "payment_refunded",
            order_id=order_id,
            amount=1,
            schema_version=3,
        )
        dlq = topology.dead_letter_queue(topology.ORDER_SAGA_QUEUE)
        ((_, headers),) = wait_for(lambda: queue_messages(settings.amqp_url, dlq), what="the dead letter")
    assert (moved["refunded"], moved["deadline"], moved["schema"], moved["requests"]) == (1000, None, 2, [])
    assert "schema version 3" in headers["x-orderflow-reason"]
    assert orders.find_one({"_id": order_id})["version"] == 5


def test_migrate_upgrades_every_old_document_once(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = database(settings, "order")["orders"]
    payments = database(settings, "payment")["payments"]
    inventory = database(settings, "inventory")
    created = datetime(2025, 1, 2, tzinfo=UTC)
    orders.insert_many(
        [old_order(_id="U-1"), old_order(_id="U-2", version=7), {**old_order(_id="U-3"), "schema": 2}]
    )
    payments.insert_one(
        {"_id": "U-1", "method": "alipay", "amount": 1000, "currency": "CNY", "status": "captured",
         "created_at": created, "charge_id": "ch_U-1", "captured": 1000}
    )  # fmt: skip
    inventory["reservations"].insert_one(
        {"_id": "U-1:0", "order_id": "U-1", "partition": 0, "status": "committed", "decided_at": created,
         "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 500, "line_total": 1000}], "reason": None,
         "skus": []}
    )  # fmt: skip
    inventory["products"].insert_one(
        {"_id": "SKU-1", "name": "n", "price": 500, "available": 3, "reserved": 2, "version": 4,
         "holds": [{"order_id": "U-9", "quantity": 2}]}
    )  # fmt: skip

    migrate_all(settings, dry_run=True)
    dry = capsys.readouterr().out
    assert "order.orders (schema 2): 2 older documents would be upgraded" in dry
    assert "5 documents to upgrade" in dry
    assert orders.count_documents({"schema": 2}) == 1

    migrate_all(settings, dry_run=False)
    assert "order.orders (schema 2): 2 upgraded" in capsys.readouterr().out
    order = orders.find_one({"_id": "U-2"})
    assert order is not None
    assert (order["schema"], order["version"], order["change"], order["queued"], order["status"]) == (
        2,
        7,
        None,
        [],
        "confirmed",
    )
    payment = payments.find_one({"_id": "U-1"})
    assert payment is not None and (payment["order_id"], payment["refunds"], payment["schema"]) == (
        "U-1",
        {},
        2,
    )
    reservation = inventory["reservations"].find_one({"_id": "U-1:0"})
    assert reservation is not None and (reservation["hold"], reservation["schema"]) == (None, 2)
    product = inventory["products"].find_one({"_id": "SKU-1"})
    assert product is not None and (product["holds"], product["version"], product["schema"]) == (
        '{"U-9":2}',
        4,
        2,
    )

    before = {name: list(database(settings, name).list_collection_names()) for name in ("order",)}
    migrate_all(settings, dry_run=False)
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith("nothing to migrate: every document is at its current version")
    )
    assert before == {name: list(database(settings, name).list_collection_names()) for name in ("order",)}


def test_events_as_the_last_release_published_them_are_still_notified(settings: Settings) -> None:
    """Ids and addresses were tightened without a version bump: everything the last release could
    publish (git show c4fab5d:shared/contracts/events.py) is still read, none is dead-lettered."""
    order_id = unique("U")
    # As the CLI names them.
    case_id, request_id = f"case-{uuid.uuid4().hex[:12]}", f"cli-{uuid.uuid4().hex[:20]}"
    # As the intake stored it: EmailStr's normalisation (the local part keeps its case).
    customer = {
        "customer_id": "crm:alice@example.com",
        "name": "Alice",
        "email": "Alice@example.com",
        "phone": None,
    }
    common = {"schema_version": 1, "occurred_at": datetime.now(UTC).isoformat(), "order_id": order_id}
    published = [
        {**common, "event_id": new_id(), "type": "order.confirmed", "status": "confirmed", "reason": None,
         "errors": [], "customer": customer, "total": "25.00", "currency": "CNY", "payment_method": "alipay",
         "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "12.50", "line_total": "25.00"}]},
        {**common, "event_id": new_id(), "type": "order.refunded", "status": "confirmed", "reason": None,
         "amount": "12.50", "currency": "CNY", "payment_method": "alipay", "customer": customer,
         "cause": "return", "request_id": request_id},
        {**common, "event_id": new_id(), "type": "support.opened", "case_id": case_id, "kind": "return",
         "status": "open", "text": "It arrived broken.", "customer": customer},
        {"schema_version": 1, "occurred_at": common["occurred_at"], "event_id": new_id(), "type": "stock.low",
         "sku": "SKU-1", "name": "Blue mug", "available": 1, "threshold": 3},
    ]  # fmt: skip
    notifications = database(settings, "notification")["notifications"]
    with (
        running("notification", settings, [topology.NOTIFICATION_EVENTS_QUEUE]),
        Publish(settings) as publish,
    ):
        for event in published:
            publish.raw(topology.EVENTS_EXCHANGE, event["type"], json.dumps(event).encode())
        wait_for(lambda: notifications.count_documents({}) == len(published), what="every event notified")
    dlq = topology.dead_letter_queue(topology.NOTIFICATION_EVENTS_QUEUE)
    assert queue_messages(settings.amqp_url, dlq) == []
    assert {n["recipient"] for n in notifications.find({"order_id": order_id})} == {"Alice@example.com"}
