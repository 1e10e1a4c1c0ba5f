"""The order worker against the real broker and store: intake, rejection to the DLQ, the first step."""

from __future__ import annotations

import json

import pytest

from shared.messaging import topology
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import EventCollector, Publish, dramatiq_payloads, queue_messages, unique, wait_for
from tests.unit.factories import body, submission


@pytest.fixture
def order_worker(settings: Settings):
    with running("order", settings, [topology.ORDER_INTAKE_QUEUE, topology.ORDER_SAGA_QUEUE]) as app:
        yield app


@pytest.fixture
def publish(settings: Settings):
    with Publish(settings) as publish:
        yield publish.order


def test_a_valid_order_is_accepted_and_asks_inventory_to_reserve(settings, order_worker, publish) -> None:
    order_id = unique("A")
    with EventCollector(settings.amqp_url) as events:
        publish(body(submission(order_id, ("SKU-1", 2), ("SKU-2", 1))))
        accepted = wait_for(lambda: events.of(order_id), what="order.accepted")
    assert accepted[0]["type"] == "order.accepted"
    assert accepted[0]["status"] == "pending"
    (command,) = wait_for(
        lambda: dramatiq_payloads(settings.amqp_url, topology.stock_queue(0)), what="ReserveStock"
    )
    assert command["actor"] == "reserve_stock"
    assert command["lines"] == [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}]


def test_an_invalid_order_is_rejected_and_dead_lettered_with_its_reason(
    settings, order_worker, publish
) -> None:
    order_id = unique("A")
    data = submission(order_id)
    data["items"][0]["quantity"] = -1
    with EventCollector(settings.amqp_url) as events:
        publish(body(data))
        (rejected,) = wait_for(lambda: events.of(order_id), what="order.rejected")
    assert (rejected["type"], rejected["status"], rejected["reason"]) == (
        "order.rejected",
        "rejected",
        "invalid",
    )
    assert rejected["errors"] == ["items.0.quantity: Input should be greater than or equal to 1"]
    dlq = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)
    ((raw, headers),) = wait_for(lambda: queue_messages(settings.amqp_url, dlq), what="the dead letter")
    assert json.loads(raw) == data, "the original body, untouched"
    assert "items.0.quantity" in headers["x-orderflow-reason"]
    assert headers["x-orderflow-queue"] == topology.ORDER_INTAKE_QUEUE


def test_garbage_is_dead_lettered_and_the_next_order_still_flows(settings, order_worker, publish) -> None:
    order_id = unique("A")
    with EventCollector(settings.amqp_url) as events:
        publish(b"\xff\xfe not json at all")
        publish(b"<order/>", content_type="application/xml")
        publish(body(submission(order_id)))
        wait_for(lambda: events.of(order_id), what="the good order")
    dead = wait_for(
        lambda: queue_messages(settings.amqp_url, topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)),
        what="dead letters",
    )
    reasons = sorted(headers["x-orderflow-reason"] for _, headers in dead)
    assert len(reasons) == 2
    assert "Invalid JSON" in reasons[0] or "unsupported content type" in reasons[0]
    assert any("unsupported content type 'application/xml'" in reason for reason in reasons)


def test_an_order_published_without_a_content_type_is_accepted(settings, order_worker, publish) -> None:
    order_id = unique("A")
    with EventCollector(settings.amqp_url) as events:
        publish(body(submission(order_id)), content_type=None)
        (accepted,) = wait_for(lambda: events.of(order_id), what="order.accepted")
    assert accepted["type"] == "order.accepted"
