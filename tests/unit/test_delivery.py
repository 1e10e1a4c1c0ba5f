"""The delivery policy every consumer shares: attempts, backoff, retries, dead letters, what is published."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.errors import PermanentError
from shared.messaging.delivery import DeliveryPolicy, Received, attempt_of, backoff_ms, retry_delays
from shared.messaging.outbox import Outbox
from shared.messaging.ports import Batch
from shared.messaging.publisher import Outgoing, PublishFailed


@pytest.mark.parametrize(
    ("value", "attempt"), [(None, 1), (2, 3), ("3", 4), ("garbage", 1), (-5, 1), ([1], 1)]
)
def test_a_message_counts_its_attempts_whatever_its_counter_holds(value: object, attempt: int) -> None:
    assert attempt_of(value) == attempt


def test_backoff_doubles_up_to_its_cap_and_every_delay_is_known_beforehand() -> None:
    assert [backoff_ms(attempt, 200, 5000) for attempt in range(1, 7)] == [200, 400, 800, 1600, 3200, 5000]
    assert retry_delays(6, 200, 5000) == {200, 400, 800, 1600, 3200, 5000}


class Source:
    queue = "orderflow.test"

    def retry(self, received: Sequence[Received[Any]], attempt: int, delay_ms: int) -> list[Outgoing]:
        return [
            Outgoing(f"delay.{delay_ms}", self.queue, f"{item.raw}#{attempt}".encode()) for item in received
        ]

    def dead_letter(self, received: Received[Any], reason: str) -> Outgoing:
        return Outgoing("", f"{self.queue}.dlq", str(received.raw).encode(), headers={"reason": reason})


class Publisher:
    def __init__(self) -> None:
        self.published: list[Outgoing] = []

    def publish(self, messages: Sequence[Outgoing]) -> None:
        self.published.extend(messages)


def policy() -> tuple[DeliveryPolicy, Publisher, Outbox]:
    outbox, publisher = Outbox(), Publisher()
    return (
        DeliveryPolicy(outbox, publisher, max_retries=2, min_backoff_ms=100, max_backoff_ms=1000),
        publisher,
        outbox,
    )  # type: ignore[arg-type]


def test_invalid_and_rejected_messages_are_dead_lettered_alone_and_the_others_handled() -> None:
    delivery, publisher, _ = policy()
    handled: list[str] = []

    def handle(batch: Batch[str]) -> None:
        handled.extend(batch)
        batch.reject(batch.messages[1], "no such order")

    source = Source()
    received = [
        Received(source, "a", "a"),
        Received(source, "junk", None, problem="not JSON"),
        Received(source, "b", "b"),
    ]
    delivery.process("test", received, handle)
    assert handled == ["a", "b"]
    assert [(m.routing_key, dict(m.headers)) for m in publisher.published] == [
        ("orderflow.test.dlq", {"reason": "not JSON"}),
        ("orderflow.test.dlq", {"reason": "no such order"}),
    ]


def test_a_failing_batch_is_retried_with_backoff_then_dead_lettered_with_the_last_error() -> None:
    delivery, publisher, _ = policy()

    def fail(batch: Batch[str]) -> None:
        raise ConnectionError("store down")

    source = Source()
    delivery.process(
        "test", [Received(source, "a", "a", attempt=1), Received(source, "b", "b", attempt=3)], fail
    )
    first, last = publisher.published
    assert (first.exchange, first.body) == ("delay.100", b"a#1")
    assert last.routing_key == "orderflow.test.dlq"
    assert "gave up after 3 attempts" in last.headers["reason"] and "store down" in last.headers["reason"]


def test_what_a_failed_handler_said_is_dropped_and_what_a_good_one_said_goes_first() -> None:
    from shared.contracts.events import LowStock

    delivery, publisher, outbox = policy()
    event = LowStock(sku="A", name="A", available=1, threshold=2)

    def say_then_fail(batch: Batch[str]) -> None:
        outbox.publish(event)
        raise ConnectionError("down")

    delivery.process("test", [Received(Source(), "a", "a")], say_then_fail)
    assert [m.exchange for m in publisher.published] == ["delay.100"]

    def say_and_reject(batch: Batch[str]) -> None:
        outbox.publish(event)
        batch.reject(batch.messages[0], "bad")

    publisher.published.clear()
    source = Source()
    delivery.process("test", [Received(source, "a", "a"), Received(source, "b", "b")], say_and_reject)
    assert [m.exchange for m in publisher.published] == ["orderflow.events", ""]


def test_a_permanent_error_dead_letters_the_batch_at_once() -> None:
    delivery, publisher, _ = policy()

    def refuse(batch: Batch[str]) -> None:
        raise PermanentError("cannot ever work")

    delivery.process("test", [Received(Source(), "a", "a")], refuse)
    (letter,) = publisher.published
    assert letter.headers["reason"] == "PermanentError: cannot ever work"


class FullDeadLetterQueues(Publisher):
    """Refuses every dead letter, as RabbitMQ does when a dead-letter queue at its x-max-length has
    x-overflow reject-publish: the others in the same batch are confirmed."""

    def publish(self, messages: Sequence[Outgoing]) -> None:
        refused = [i for i, message in enumerate(messages) if message.routing_key.endswith(".dlq")]
        self.published.extend(m for i, m in enumerate(messages) if i not in refused)
        if refused:
            raise PublishFailed("RabbitMQ refused a message to (default exchange) / x.dlq", refused)


def test_a_dead_letter_its_full_queue_refuses_waits_in_its_own_queue_at_the_same_attempt() -> None:
    from shared.contracts.events import LowStock

    outbox, publisher = Outbox(), FullDeadLetterQueues()
    delivery = DeliveryPolicy(outbox, publisher, max_retries=2, min_backoff_ms=100, max_backoff_ms=1000)
    refused_before = REGISTRY.get_sample_value(
        "orderflow_dead_letters_refused_total", {"queue": Source.queue}
    )
    event = LowStock(sku="A", name="A", available=1, threshold=2)

    def say_and_reject(batch: Batch[str]) -> None:
        outbox.publish(event)
        batch.reject(batch.messages[0], "no such order")

    source = Source()
    delivery.process(
        "test",
        [
            Received(source, "junk", None, attempt=1, problem="not JSON"),
            Received(source, "a", "a", attempt=3),
        ],
        say_and_reject,
    )
    # The event went out; each refused message goes round the longest backoff, its counter
    # unchanged (attempt 1 and 3 again when they come back), and nothing was dead-lettered.
    assert [(m.exchange, m.body) for m in publisher.published] == [
        ("orderflow.events", event.model_dump_json().encode()),
        ("delay.1000", b"junk#0"),
        ("delay.1000", b"a#2"),
    ]
    refused = REGISTRY.get_sample_value("orderflow_dead_letters_refused_total", {"queue": Source.queue})
    assert (refused or 0) - (refused_before or 0) == 2


def test_a_refusal_of_anything_but_a_dead_letter_fails_the_batch() -> None:
    class RefusesEverything(Publisher):
        def publish(self, messages: Sequence[Outgoing]) -> None:
            raise PublishFailed("RabbitMQ refused", list(range(len(messages))))

    delivery = DeliveryPolicy(
        Outbox(), RefusesEverything(), max_retries=2, min_backoff_ms=100, max_backoff_ms=1000
    )

    def fail(batch: Batch[str]) -> None:
        raise ConnectionError("store down")

    with pytest.raises(PublishFailed):
        delivery.process("test", [Received(Source(), "a", "a")], fail)
