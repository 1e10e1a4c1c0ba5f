"""The entry points of the public queues: kombu consumers that take batches and decode them.

A consumer takes every message RabbitMQ has already delivered to it, up to a batch, without
waiting for more: one message alone is handled at once, and a burst is handled a batch at a time.
Each message is decoded here, at the edge; the handler gets typed messages, and failures follow
the delivery policy every consumer shares (shared/messaging/delivery.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from kombu import Connection, Consumer, Queue

from shared.errors import InvalidMessage
from shared.messaging import topology
from shared.messaging.delivery import (
    ATTEMPTS_HEADER,
    DeliveryPolicy,
    Received,
    attempt_of,
    dead_letter_headers,
)
from shared.messaging.nodes import connect_to_a_node
from shared.messaging.ports import Batch
from shared.messaging.publisher import Outgoing, PublishFailed, raw_body
from shared.messaging.tls import AmqpTls

log = logging.getLogger(__name__)

M = TypeVar("M")

# How long to wait for more messages already on their way before handling what has arrived.
_GATHER_SECONDS = 0.001
# How long a consumer whose admission is closed waits before asking again.
_ADMISSION_PAUSE_SECONDS = 0.05


class InboundMessage:
    """A message as consumed from a public queue, before any decoding."""

    def __init__(self, message: Any) -> None:
        self.message = message
        self.body = raw_body(message)
        self.content_type: str | None = message.properties.get("content_type")
        self.headers: dict[str, Any] = dict(message.headers or {})
        self.routing_key: str = message.delivery_info.get("routing_key", "")
        self.message_id: str | None = message.properties.get("message_id")

    @property
    def attempt(self) -> int:
        """1 for a first delivery; the header is ours, but anyone may have set it."""
        return attempt_of(self.headers.get(ATTEMPTS_HEADER))

    def send_on(self, exchange: str, routing_key: str, headers: dict[str, Any]) -> Outgoing:
        """This message, body and properties as they came, with `headers` added."""
        return Outgoing.again(self.message, exchange, routing_key, headers)


Decoder = Callable[[InboundMessage], M]


class _QueueSource:
    def __init__(self, queue: str) -> None:
        self.queue = queue

    def retry(self, received: Sequence[Received[Any]], attempt: int, delay_ms: int) -> list[Outgoing]:
        return [
            item.raw.send_on(
                topology.exchange_to(self.queue, delay_ms), self.queue, {ATTEMPTS_HEADER: attempt}
            )
            for item in received
        ]

    def dead_letter(self, received: Received[Any], reason: str) -> Outgoing:
        inbound: InboundMessage = received.raw
        return inbound.send_on(
            topology.exchange_to(self.queue),
            topology.dead_letter_queue(self.queue),
            dead_letter_headers(self.queue, inbound.routing_key, reason),
        )


class QueueConsumer(Generic[M]):
    """Consumes one durable queue in batches, reconnecting with backoff when the broker goes away."""

    def __init__(
        self,
        amqp_url: str,
        queue: Queue,
        decode: Decoder[M],
        handle: Callable[[Batch[M]], None],
        policy: DeliveryPolicy,
        *,
        batch_size: int,
        admit: Callable[[], bool] | None = None,
        tls: AmqpTls | None = None,
    ) -> None:
        self.amqp_url = amqp_url
        self.tls = tls or AmqpTls()
        self.admit = admit
        self.queue = queue
        self.decode = decode
        self.handle = handle
        self.policy = policy
        self.batch_size = batch_size
        self.handler_name = getattr(handle, "__name__", "handler")
        self.source = _QueueSource(queue.name)
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Consume until stopped: the batch in hand finishes, prefetched messages are requeued."""
        backoff = 0.5
        while not self.stopping.is_set():
            connection = self.tls.connection(self.amqp_url, heartbeat=30)
            lost = (
                OSError,
                PublishFailed,
                *connection.recoverable_connection_errors,
                *connection.channel_errors,
            )
            try:
                with connect_to_a_node(connection):
                    self._consume(connection)
                backoff = 0.5
            except lost as e:
                log.warning("consumer of %s: %r; reconnecting in %.1f s", self.queue.name, e, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _consume(self, connection: Connection) -> None:
        arrived: list[Any] = []
        with connection.channel() as channel:
            channel.basic_qos(0, self.batch_size, False)
            consumer = Consumer(channel, queues=[self.queue], on_message=arrived.append, auto_declare=False)
            with consumer:
                while not self.stopping.is_set():
                    if self.admit is not None and not self.admit():
                        # The handler has as much under way as it may: more would only wait here.
                        self.stopping.wait(_ADMISSION_PAUSE_SECONDS)
                        connection.heartbeat_check()
                        continue
                    try:
                        connection.drain_events(timeout=1)
                    except TimeoutError:
                        connection.heartbeat_check()
                        continue
                    while len(arrived) < self.batch_size:
                        try:
                            connection.drain_events(timeout=_GATHER_SECONDS)
                        except TimeoutError:
                            break
                    batch, arrived[:] = list(arrived), []
                    if batch:  # other methods than deliveries end a drain too (connection.blocked)
                        self._process(batch)

    def _process(self, messages: list[Any]) -> None:
        received = [self._received(InboundMessage(message)) for message in messages]
        self.policy.process(self.handler_name, received, self.handle)
        # Everything it led to is confirmed: ack the batch (and nothing before it is unacked).
        messages[-1].ack(multiple=True)

    def _received(self, inbound: InboundMessage) -> Received[M]:
        try:
            return Received(self.source, inbound, self.decode(inbound), inbound.attempt)
        except InvalidMessage as e:
            return Received(self.source, inbound, None, inbound.attempt, f"{type(e).__name__}: {e}")


class ConsumerThread(threading.Thread):
    """Runs a QueueConsumer until stopped."""

    def __init__(self, consumer: QueueConsumer[Any], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.consumer = consumer

    def run(self) -> None:
        # A bug that escapes the consumer must not silently end consumption.
        while not self.consumer.stopping.is_set():
            try:
                self.consumer.run()
            except Exception:
                log.exception("consumer of %s failed; restarting it", self.consumer.queue.name)
                self.consumer.stopping.wait(1)

    def stop(self) -> None:
        self.consumer.stop()
