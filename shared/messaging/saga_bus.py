"""The saga's command bus: pydantic messages sent and handled as dramatiq actors over RabbitMQ."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import xq_name
from dramatiq.middleware import (
    AgeLimit,
    CurrentMessage,
    Middleware,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from pydantic import ValidationError

from shared import metrics
from shared.contracts import saga
from shared.contracts.base import Message
from shared.errors import PermanentError
from shared.logs import message_context
from shared.messaging import topology
from shared.settings import Settings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# Which queue consumes each saga message. The actor's name is the message type in snake_case.
ROUTES: dict[type[Message], str] = {
    saga.ReserveStock: topology.INVENTORY_QUEUE,
    saga.ReleaseStock: topology.INVENTORY_QUEUE,
    saga.CommitStock: topology.INVENTORY_QUEUE,
    saga.SetStock: topology.INVENTORY_QUEUE,
    saga.Restock: topology.INVENTORY_QUEUE,
    saga.ChargePayment: topology.PAYMENT_QUEUE,
    saga.RefundPayment: topology.PAYMENT_QUEUE,
    saga.StockReserved: topology.ORDER_SAGA_QUEUE,
    saga.StockReservationFailed: topology.ORDER_SAGA_QUEUE,
    saga.StockReleased: topology.ORDER_SAGA_QUEUE,
    saga.PaymentCaptured: topology.ORDER_SAGA_QUEUE,
    saga.PaymentDeclined: topology.ORDER_SAGA_QUEUE,
    saga.PaymentFailed: topology.ORDER_SAGA_QUEUE,
    saga.PaymentRefunded: topology.ORDER_SAGA_QUEUE,
}


# Set on a message this process dead-lettered itself, so its metrics say `failed`.
DEAD_LETTERED = "orderflow_dead_lettered"


def actor_name(message_type: type[Message]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", message_type.__name__).lower()


class MessageMetrics(Middleware):
    """Counts and times every message an actor handles. First in the list, so that its after-hook
    runs last (dramatiq runs them in reverse) and sees whether Retries gave the message up."""

    def __init__(self) -> None:
        self._started = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._started.at = time.perf_counter()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        queue, actor = message.queue_name, message.actor_name
        if message.options.get(DEAD_LETTERED):
            outcome = "failed"
        elif exception is None:
            outcome = "succeeded"
        elif message.failed:
            outcome = "failed"
            metrics.DEAD_LETTERS.labels(queue, "exhausted").inc()
        else:
            outcome = "retried"
        metrics.MESSAGES.labels(queue, actor, outcome).inc()
        started = getattr(self._started, "at", None)
        if started is not None:
            metrics.MESSAGE_SECONDS.labels(queue, actor).observe(time.perf_counter() - started)


class SagaBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker with publisher confirms and single-active-consumer queues."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            url=settings.amqp_url,
            confirm_delivery=True,
            middleware=[
                MessageMetrics(),
                AgeLimit(),
                TimeLimit(),
                ShutdownNotifications(),
                Retries(
                    max_retries=settings.max_retries,
                    min_backoff=settings.min_backoff_ms,
                    max_backoff=settings.max_backoff_ms,
                ),
                CurrentMessage(),
            ],
        )

    # dramatiq has no public hook for queue arguments; this is the one place it builds them
    # (for the queue and its delay queue alike), and every process declares with the same ones.
    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)
        if queue_name in topology.SINGLE_ACTIVE_CONSUMER_QUEUES:
            arguments["x-single-active-consumer"] = True
        return arguments


class SagaBus:
    """Sends saga messages to the queue that owns them, and turns handlers into dramatiq actors."""

    def __init__(self, broker: SagaBroker) -> None:
        self.broker = broker

    def send(self, message: Message) -> None:
        """Enqueue a message; returns once RabbitMQ has confirmed it (publisher confirms)."""
        message_type = type(message)
        self.broker.enqueue(
            dramatiq.Message(
                queue_name=ROUTES[message_type],
                actor_name=actor_name(message_type),
                args=(message.model_dump(mode="json"),),
                kwargs={},
                options={},
                message_id=message.message_id,
            )
        )

    def handle(self, message_type: type[M], handler: Callable[[M], None], **options: Any) -> dramatiq.Actor:
        """Register `handler` as the actor for `message_type`.

        The payload is validated against the contract first. A message that does not match it, or
        whose handler raises a PermanentError, is dead-lettered at once with the reason; any other
        exception is retried with backoff by dramatiq's Retries middleware.
        """

        def entrypoint(payload: Any) -> None:
            try:
                message = message_type.model_validate(payload)
            except ValidationError as e:
                self._dead_letter(f"invalid {message_type.__name__}: {_summary(e)}", "invalid")
                return
            with message_context(message_id=message.message_id, order_id=message.correlation_id):
                try:
                    handler(message)
                except PermanentError as e:
                    self._dead_letter(f"{type(e).__name__}: {e}", "permanent")

        entrypoint.__name__ = actor_name(message_type)
        return dramatiq.Actor(
            entrypoint,
            broker=self.broker,
            actor_name=actor_name(message_type),
            queue_name=ROUTES[message_type],
            priority=0,
            options=options,
        )

    def _dead_letter(self, reason: str, why: str) -> None:
        current = CurrentMessage.get_current_message()
        assert current is not None, "dead-lettering outside of a message"
        log.error("dead-lettering message %s: %s", current.message_id, reason)
        metrics.DEAD_LETTERS.labels(current.queue_name, why).inc()
        current.options[DEAD_LETTERED] = True  # read by MessageMetrics; the message is acked after
        dead = current.copy(
            options={"dead_letter_reason": reason, "dead_lettered_at": datetime.now(UTC).isoformat()}
        )
        self.broker.channel.basic_publish(
            exchange="",
            routing_key=xq_name(current.queue_name),
            body=dead.encode(),
            properties=pika.BasicProperties(delivery_mode=2, headers={"x-orderflow-reason": reason}),
        )


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}" for e in error.errors()[:10]
    )
