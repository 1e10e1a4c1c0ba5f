"""The public exchanges over kombu: publishing with confirms, and consuming with bounded retries.

A consumed message is acked only after its handler returned, or after it was dead-lettered or
re-queued for another attempt by a confirmed publish. Invalid and poison messages go to the
queue's `.dlq` with the reason in the `x-orderflow-reason` header and the original body.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Consumer, Exchange, Producer, Queue, binding
from kombu.mixins import ConsumerMixin
from kombu.pools import producers

from shared import metrics
from shared.contracts.base import new_id
from shared.contracts.events import Event
from shared.errors import PermanentError
from shared.messaging import topology
from shared.settings import Settings

log = logging.getLogger(__name__)

INTAKE = Exchange(topology.INTAKE_EXCHANGE, type="topic", durable=True)
EVENTS = Exchange(topology.EVENTS_EXCHANGE, type="topic", durable=True)

REASON_HEADER = "x-orderflow-reason"
ATTEMPTS_HEADER = "x-orderflow-attempts"

_RETRY_POLICY = {"max_retries": 10, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3}


def connect(amqp_url: str) -> Connection:
    """A lazy kombu connection whose publishes wait for the broker's confirm."""
    return Connection(amqp_url, transport_options={"confirm_publish": True}, heartbeat=30)


def bound_queue(name: str, exchange: Exchange, routing_keys: list[str]) -> Queue:
    """A durable queue bound to `exchange` with each routing key."""

    return Queue(name, bindings=[binding(exchange, routing_key=key) for key in routing_keys], durable=True)


class EventPublisher:
    """Publishes public events, persistent and confirmed; safe to share between threads."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def publish(self, event: Event) -> None:
        self.publish_raw(
            EVENTS,
            event.routing_key,
            event.model_dump_json().encode(),
            message_id=event.event_id,
        )

    def publish_raw(
        self,
        exchange: Exchange,
        routing_key: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        message_id: str | None = None,
    ) -> None:
        with producers[self._connection].acquire(block=True, timeout=30) as producer:
            producer.publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                content_type=content_type,
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=message_id,
                declare=[exchange],
                retry=True,
                retry_policy=_RETRY_POLICY,
            )


@dataclass(frozen=True)
class Delivery:
    """A message as consumed from a public queue, before any decoding."""

    body: bytes
    content_type: str | None
    routing_key: str
    headers: dict[str, Any]

    @property
    def attempt(self) -> int:
        """1 for a first delivery; the header is ours, but anyone may have set it."""
        try:
            return max(0, int(self.headers.get(ATTEMPTS_HEADER, 0))) + 1
        except (TypeError, ValueError):
            return 1


Handler = Callable[[Delivery], None]


class QueueConsumer(ConsumerMixin):
    """Consumes one durable queue, reconnecting with backoff when the broker goes away."""

    def __init__(
        self,
        connection: Connection,
        queue: Queue,
        handler: Handler,
        *,
        prefetch: int = 10,
        max_attempts: int = 6,
        min_backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.dead_letters = Queue(topology.dead_letter_queue(queue.name), durable=True)
        self.handler = handler
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.min_backoff_seconds = min_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._producer: Producer | None = None

    def get_consumers(self, consumer_type: Callable[..., Consumer], channel: Any) -> list[Consumer]:
        self.dead_letters.bind(channel).declare()
        self._producer = Producer(channel)
        return [consumer_type(queues=[self.queue], on_message=self._on_message, prefetch_count=self.prefetch)]

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, interval)

    def _on_message(self, message: Any) -> None:
        delivery = Delivery(
            body=message.body if isinstance(message.body, bytes) else str(message.body).encode(),
            content_type=message.content_type,
            routing_key=message.delivery_info.get("routing_key", ""),
            headers=dict(message.headers or {}),
        )
        started = time.perf_counter()
        outcome = "succeeded"
        try:
            self.handler(delivery)
        except PermanentError as e:
            outcome = "failed"
            self._dead_letter(delivery, f"{type(e).__name__}: {e}", "invalid")
        except Exception as e:
            if delivery.attempt >= self.max_attempts:
                outcome = "failed"
                log.exception("giving up on a message after %d attempts", delivery.attempt)
                self._dead_letter(delivery, f"gave up after {delivery.attempt} attempts: {e!r}", "exhausted")
            else:
                outcome = "retried"
                log.warning("attempt %d failed (%r); retrying", delivery.attempt, e)
                backoff = self.min_backoff_seconds * 2 ** (delivery.attempt - 1)
                time.sleep(min(backoff, self.max_backoff_seconds))
                self._publish(self.queue.name, delivery, {ATTEMPTS_HEADER: delivery.attempt})
        message.ack()
        handler = getattr(self.handler, "__name__", "handler")
        metrics.MESSAGES.labels(self.queue.name, handler, outcome).inc()
        metrics.MESSAGE_SECONDS.labels(self.queue.name, handler).observe(time.perf_counter() - started)

    def _dead_letter(self, delivery: Delivery, reason: str, why: str) -> None:
        log.error("dead-lettering a message from %s: %s", self.queue.name, reason[:500])
        metrics.DEAD_LETTERS.labels(self.queue.name, why).inc()
        self._publish(
            self.dead_letters.name,
            delivery,
            {
                REASON_HEADER: reason[:4000],
                "x-orderflow-dead-letter-id": new_id(),
                "x-orderflow-queue": self.queue.name,
                "x-orderflow-routing-key": delivery.routing_key,
                "x-orderflow-dead-lettered-at": datetime.now(UTC).isoformat(),
            },
        )

    def _publish(self, queue_name: str, delivery: Delivery, extra_headers: dict[str, Any]) -> None:
        assert self._producer is not None
        self._producer.publish(
            delivery.body,
            exchange="",
            routing_key=queue_name,
            content_type=delivery.content_type or "application/octet-stream",
            content_encoding="binary",
            delivery_mode=2,
            headers={**delivery.headers, **extra_headers},
        )


def consumer_for(settings: Settings, queue: Queue, handler: Handler) -> QueueConsumer:
    """A consumer of `queue` with the retry budget and backoff of the settings."""
    return QueueConsumer(
        connect(settings.amqp_url),
        queue,
        handler,
        max_attempts=settings.max_retries + 1,
        min_backoff_seconds=settings.min_backoff_ms / 1000,
        max_backoff_seconds=settings.max_backoff_ms / 1000,
    )


class ConsumerThread(threading.Thread):
    """Runs a QueueConsumer until stopped; the message in hand finishes first, the rest are requeued."""

    def __init__(self, consumer: QueueConsumer, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.consumer = consumer

    def run(self) -> None:
        # ConsumerMixin reconnects by itself after connection errors; anything else that escapes
        # (a bug in dead-lettering, say) must not silently end consumption either.
        while not self.consumer.should_stop:
            try:
                self.consumer.run()
            except Exception:
                log.exception("consumer of %s failed; restarting it", self.consumer.queue.name)
                time.sleep(1)

    def stop(self, timeout: float = 30.0) -> None:
        self.consumer.should_stop = True
        self.join(timeout)


# The public queues of Orderflow's own consumers. Every worker and the CLI declare them before
# publishing, so no intake message or event is dropped for want of a bound queue.
ORDER_INTAKE = bound_queue(topology.ORDER_INTAKE_QUEUE, INTAKE, [topology.INTAKE_ROUTING_KEY])
NOTIFICATION_EVENTS = bound_queue(
    topology.NOTIFICATION_EVENTS_QUEUE, EVENTS, ["order.confirmed", "order.cancelled", "stock.low"]
)
REPORTING_EVENTS = bound_queue(topology.REPORTING_EVENTS_QUEUE, EVENTS, ["order.*"])
PUBLIC_QUEUES = (ORDER_INTAKE, NOTIFICATION_EVENTS, REPORTING_EVENTS)


def declare_public_topology(connection: Connection) -> None:
    """Declare both exchanges, our consumers' queues with their bindings, and their dead-letter queues."""
    with connection.channel() as channel:
        for exchange in (INTAKE, EVENTS):
            exchange.bind(channel).declare()
        for queue in PUBLIC_QUEUES:
            queue.bind(channel).declare()
            Queue(topology.dead_letter_queue(queue.name), durable=True).bind(channel).declare()
