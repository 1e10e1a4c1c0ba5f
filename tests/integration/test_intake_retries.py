"""An intake message keeps the properties it came with (no content type stays none, a charset stays,
its headers stay) through retries, the dead-letter queue and replay, and is judged by them alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from services.order.intake import Submission, decode_submission
from shared.errors import TransientError
from shared.messaging import topology
from shared.messaging.dead_letters import DeadLetterOffice
from shared.messaging.exchanges import ConsumerThread, InboundMessage
from shared.messaging.ports import Batch
from shared.messaging.publisher import Outgoing, Publisher
from shared.messaging.transport import Transport
from shared.settings import Settings
from tests.integration.conftest import running
from tests.integration.test_dead_letters import cli
from tests.support import EventCollector, isolated_settings, queue_depth, unique, wait_for
from tests.system import new_order

DLQ = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)
# As upstream systems send them: no content type at all, or JSON with a charset parameter.
CONTENT_TYPES = (None, "application/json; charset=utf-8")


@pytest.fixture
def settings() -> Iterator[Settings]:
    with isolated_settings(max_retries=2) as settings:
        yield settings


def upstream_message(order: dict[str, Any], content_type: str | None) -> Outgoing:
    return Outgoing(
        topology.INTAKE_EXCHANGE,
        topology.INTAKE_ROUTING_KEY,
        json.dumps(order).encode(),
        content_type=content_type,
        content_encoding=None,
        message_id=f"upstream-{order['order_id']}",
        headers={"x-upstream-trace": f"trace-{order['order_id']}"},
        properties={"app_id": "shop", "correlation_id": order["order_id"]},
    )


# Headers Orderflow adds, and those RabbitMQ adds when a delay queue dead-letters a message back.
BOOKKEEPING = ("x-orderflow-", "x-death", "x-first-death-", "x-last-death-")


def as_sent(message: Any) -> tuple[Any, ...]:
    """What a message says about itself, but the bookkeeping headers."""
    properties = message.properties
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith(BOOKKEEPING)}
    return (
        properties.get("content_type"),
        properties.get("content_encoding"),
        properties.get("message_id"),
        properties.get("app_id"),
        properties.get("correlation_id"),
        headers,
    )


def expected(order: dict[str, Any], content_type: str | None) -> tuple[Any, ...]:
    oid = order["order_id"]
    return (content_type, None, f"upstream-{oid}", "shop", oid, {"x-upstream-trace": f"trace-{oid}"})


def test_a_valid_order_keeps_its_properties_through_retries_dead_letters_and_replay(
    settings: Settings,
) -> None:
    orders = [new_order(("SKU-1", 1)) for _ in CONTENT_TYPES]
    transport = Transport(settings)
    transport.declare()
    seen: dict[str, list[tuple[tuple[Any, ...], int, str]]] = {o["order_id"]: [] for o in orders}

    def decode(inbound: InboundMessage) -> Submission:
        submission = decode_submission(inbound.body, inbound.content_type, settings.max_message_bytes)
        order_id = str(inbound.message.properties.get("correlation_id"))
        seen[order_id].append((as_sent(inbound.message), inbound.attempt, type(submission).__name__))
        return submission

    def store_away(batch: Batch[Submission]) -> None:
        raise TransientError("the store is briefly unavailable")

    # The intake's consumer, with the order worker's decoding, and a handler whose store is away.
    consumer = ConsumerThread(transport.consumer(topology.ORDER_INTAKE, decode, store_away)(), "intake")
    consumer.start()
    publisher = Publisher(settings.amqp_url)
    try:
        publisher.publish([upstream_message(o, t) for o, t in zip(orders, CONTENT_TYPES, strict=True)])
        wait_for(lambda: queue_depth(settings.amqp_url, DLQ) == 2, what="both orders dead-lettered")
    finally:
        consumer.stop()
        consumer.join(30)
        publisher.close()
        transport.close()

    for order, content_type in zip(orders, CONTENT_TYPES, strict=True):
        # Every delivery, the first and each retry, came as it was sent and was a valid order.
        assert seen[order["order_id"]] == [
            (expected(order, content_type), attempt, "OrderSubmission") for attempt in (1, 2, 3)
        ]

    with Connection(settings.amqp_url) as connection:
        letters = DeadLetterOffice(connection, Publisher(settings.amqp_url), 1).browse(DLQ)
    assert len(letters) == 2
    for letter in letters:
        assert letter.reason.startswith("gave up after 3 attempts: TransientError"), letter.reason
    by_order = {json.loads(letter.body)["order_id"]: letter for letter in letters}
    for order, content_type in zip(orders, CONTENT_TYPES, strict=True):
        letter = by_order[order["order_id"]]
        assert ("content_type" in letter.properties) is (content_type is not None)
        assert letter.properties.get("content_type") == content_type
        assert letter.headers["x-upstream-trace"] == f"trace-{order['order_id']}"

    replay = cli(settings, "dlq", "replay", DLQ, "--all")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    with Connection(settings.amqp_url) as connection, connection.channel() as channel:
        replayed = [channel.basic_get(topology.ORDER_INTAKE_QUEUE, no_ack=False) for _ in orders]
        # Read, not taken: they go back to the queue when the channel closes.
        assert sorted(map(as_sent, replayed), key=str) == sorted(
            (expected(o, t) for o, t in zip(orders, CONTENT_TYPES, strict=True)), key=str
        )

    # The order worker takes them in as the valid orders they are.
    with EventCollector(settings.amqp_url) as events, running("order", settings, []):
        for order in orders:
            accepted = wait_for(
                lambda o=order: [e for e in events.of(o["order_id"]) if e["type"] == "order.accepted"],
                what=f"{order['order_id']} accepted",
            )
            assert accepted[0]["status"] == "pending"
    assert queue_depth(settings.amqp_url, DLQ) == 0


def test_an_order_is_still_refused_for_a_content_type_that_is_not_json(settings: Settings) -> None:
    order = {**new_order(("SKU-1", 1)), "order_id": unique("XML")}
    publisher = Publisher(settings.amqp_url)
    try:
        Transport(settings).declare()
        publisher.publish([upstream_message(order, "application/xml")])
    finally:
        publisher.close()
    with running("order", settings, [topology.ORDER_INTAKE_QUEUE]):
        wait_for(lambda: queue_depth(settings.amqp_url, DLQ) == 1, what="the dead letter")
    with Connection(settings.amqp_url) as connection:
        (letter,) = DeadLetterOffice(connection, Publisher(settings.amqp_url), 1).browse(DLQ)
    assert "unsupported content type 'application/xml'" in letter.reason
    assert letter.properties["content_type"] == "application/xml"
