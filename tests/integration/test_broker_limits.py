"""Limits the broker enforces: the size of a message, and the length of a dead-letter queue, which
refuses more when full without losing any."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import dramatiq
import pytest
from kombu import Connection
from prometheus_client import REGISTRY

from shared.messaging import topology
from shared.messaging.publisher import Outgoing, Publisher, PublishFailed
from shared.messaging.transport import Transport
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import isolated_settings, queue_depth, queue_messages, unique, wait_for

INTAKE_DLQ = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)


def publish(settings: Settings, *messages: Outgoing) -> None:
    Transport(settings).declare()
    publisher = Publisher(settings.amqp_url)
    try:
        publisher.publish(messages)
    finally:
        publisher.close()


def to_intake(body: bytes) -> Outgoing:
    return Outgoing(topology.INTAKE_EXCHANGE, topology.INTAKE_ROUTING_KEY, body)


def refused(queue: str) -> float:
    return REGISTRY.get_sample_value("orderflow_dead_letters_refused_total", {"queue": queue}) or 0.0


def test_the_broker_refuses_a_message_over_its_limit_and_the_intake_dead_letters_one_over_its_own(
    settings: Settings,
) -> None:
    limit = topology.BROKER_MAX_MESSAGE_BYTES
    with pytest.raises(PublishFailed):
        publish(settings, to_intake(b"x" * (limit + 1)))
    assert queue_depth(settings.amqp_url, topology.ORDER_INTAKE_QUEUE) == 0, "refused at the door"

    publish(settings, to_intake(b"x" * limit))
    with running("order", settings, [topology.ORDER_INTAKE_QUEUE]):
        (letter,) = wait_for(lambda: queue_messages(settings.amqp_url, INTAKE_DLQ), what="the dead letter")
    body, headers = letter
    assert len(body) == limit, "dead-lettered whole"
    reason = headers["x-orderflow-reason"]
    assert f"message is {limit} bytes, more than the limit of {settings.max_message_bytes}" in reason


@pytest.fixture
def small_dead_letter_queues() -> Iterator[Settings]:
    with isolated_settings(dead_letter_max_messages=2) as settings:
        yield settings


def drain_dead_letters(settings: Settings, queue: str, expected: int) -> list[bytes]:
    """Take dead letters off as they come (making room for more) until `expected` were taken."""
    taken: list[bytes] = []

    def all_taken() -> bool:
        for body, _ in queue_messages(settings.amqp_url, queue):
            taken.append(body if isinstance(body, bytes) else str(body).encode())
        assert len(taken) <= expected, f"more dead letters than messages: {taken}"
        return len(taken) == expected

    wait_for(all_taken, timeout=60, interval=0.2, what=f"{expected} dead letters in {queue}")
    return taken


def test_a_full_intake_dead_letter_queue_refuses_more_and_loses_none(small_dead_letter_queues) -> None:
    settings = small_dead_letter_queues
    bodies = [f"not an order {unique('junk')}".encode() for _ in range(5)]
    before = refused(topology.ORDER_INTAKE_QUEUE)
    publish(settings, *map(to_intake, bodies))
    with running("order", settings, [topology.ORDER_INTAKE_QUEUE]):
        wait_for(
            lambda: refused(topology.ORDER_INTAKE_QUEUE) > before,
            what="the full dead-letter queue refusing a message, counted",
        )
        assert queue_depth(settings.amqp_url, INTAKE_DLQ) == 2, "at its x-max-length, never over"
        # The refused ones come round again and go in as room is made.
        assert Counter(drain_dead_letters(settings, INTAKE_DLQ, 5)) == Counter(bodies)
        for queue in (
            topology.ORDER_INTAKE_QUEUE,
            topology.exchange_to(topology.ORDER_INTAKE_QUEUE, settings.max_backoff_ms),
        ):
            wait_for(lambda q=queue: queue_depth(settings.amqp_url, q) == 0, what=f"{queue} empty")


def test_a_full_saga_dead_letter_queue_refuses_more_and_loses_none(small_dead_letter_queues) -> None:
    settings = small_dead_letter_queues
    dlq = topology.dead_letter_queue(topology.PAYMENT_QUEUE)
    order_ids = [unique("O") for _ in range(4)]
    broken = [
        dramatiq.Message(
            queue_name=topology.PAYMENT_QUEUE,
            actor_name="charge_payment",
            args=({"order_id": order_id, "amount": "not an amount"},),
            kwargs={},
            options={},
        )
        for order_id in order_ids
    ]
    before = refused(topology.PAYMENT_QUEUE)
    publish(settings, *(Outgoing("", topology.PAYMENT_QUEUE, m.encode()) for m in broken))
    with running("payment", settings, [topology.PAYMENT_QUEUE]):
        wait_for(lambda: refused(topology.PAYMENT_QUEUE) > before, what="a refusal, counted")
        assert queue_depth(settings.amqp_url, dlq) == 2
        letters = drain_dead_letters(settings, dlq, 4)
        dead = sorted(json.loads(letter)["args"][0]["order_id"] for letter in letters)
        assert dead == sorted(order_ids), "each broken command dead-lettered once"
        wait_for(lambda: queue_depth(settings.amqp_url, topology.PAYMENT_QUEUE) == 0, what="none left")


def test_dead_letter_queues_are_declared_with_their_bounds(small_dead_letter_queues) -> None:
    settings = small_dead_letter_queues
    Transport(settings).declare()
    arguments = {"x-max-length": 2, "x-max-length-bytes": 1024**3, "x-overflow": "reject-publish"}
    with Connection(settings.amqp_url) as connection, connection.channel() as channel:
        for queue in topology.Topology().dead_letter_queues:
            # Declaring with the same arguments succeeds; with others, RabbitMQ refuses.
            channel.queue_declare(queue, durable=True, auto_delete=False, arguments=arguments)
