"""The entry points of the saga queues: dramatiq actors that decode batches and hand them to handlers.

dramatiq runs the consumers (its Worker, threads and middleware) and defines the messages on the
wire; what handlers say is published by the outbox, and failures follow the delivery policy that
every consumer shares (shared/messaging/delivery.py), so dramatiq's own retries are not used.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import q_name
from dramatiq.middleware import CurrentMessage, ShutdownNotifications, TimeLimit
from pydantic import ValidationError

from shared.contracts.base import Message
from shared.contracts.versions import NewerSchema, upcast
from shared.logs import message_context
from shared.messaging import routes, topology
from shared.messaging.delivery import (
    DeliveryPolicy,
    Received,
    attempt_of,
    dead_letter_headers,
)
from shared.messaging.ports import Batch
from shared.messaging.publisher import Outgoing, PublishFailed
from shared.messaging.tls import AmqpTls

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# Where a dramatiq message keeps its retry count (dramatiq's own Retries middleware uses the same).
RETRIES_OPTION = "retries"
DEAD_LETTER_REASON_OPTION = "dead_letter_reason"


class SagaBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker, consuming queues that Orderflow declares itself."""

    def __init__(self, amqp_url: str, tls: AmqpTls | None = None) -> None:
        # Several nodes (`url1;url2`) are tried in turn, on connecting and reconnecting.
        super().__init__(
            url=amqp_url,
            middleware=[TimeLimit(), ShutdownNotifications(), CurrentMessage()],
        )
        # dramatiq takes no TLS options with a URL: the same nodes, as pika parameters that carry them.
        self.parameters = (tls or AmqpTls()).pika_parameters(amqp_url)

    def declare_queue(self, queue_name: str, *, ensure: bool = False) -> None:
        # dramatiq has no hook for queue arguments (single active consumer, dead-letter queues):
        # Topology.declare() declares every queue first, and dramatiq only records the name here.
        super().declare_queue(queue_name, ensure=False)
        self.queues_pending.discard(q_name(queue_name))


class SagaBus:
    """Registers handlers of saga messages as dramatiq actors, one actor per message type."""

    def __init__(self, broker: SagaBroker, policy: DeliveryPolicy) -> None:
        self.broker = broker
        self.policy = policy

    def handle(
        self, message_type: type[M], handler: Callable[[Batch[M]], None], *, concurrency: int = 1
    ) -> dramatiq.Actor:
        """Register `handler` for batches of `message_type`.

        Each payload is validated against the contract; one that breaks it is dead-lettered alone
        with the reason, and the handler gets the others. Dramatiq messages of the type that
        arrive while `concurrency` batches of it are being handled join the next batch.
        """
        name = routes.actor_name(message_type)
        coalescers: dict[str, _Coalescer] = {}
        guard = threading.Lock()

        def handle_together(envelopes: list[_Envelope]) -> None:
            received = [item for envelope in envelopes for item in envelope.received(message_type)]

            def handle(batch: Batch[M]) -> None:
                first = batch.messages[0]
                with message_context(message_id=first.message_id, order_id=_order_of(batch)):
                    handler(batch)

            self.policy.process(name, received, handle)

        def entrypoint(*payloads: Any) -> None:
            # The message being processed: dramatiq's MessageProxy, which can be failed.
            current: Any = CurrentMessage.get_current_message()
            assert current is not None, "a saga actor runs only inside dramatiq's worker"
            with guard:
                coalescer = coalescers.setdefault(
                    current.queue_name, _Coalescer(handle_together, concurrency)
                )
            try:
                coalescer.submit(_Envelope(current, payloads))
            except PublishFailed:
                # Neither its effects' messages nor its retry could be published. It goes round
                # its queue's longest retry delay as it came, to be handled again; if even that
                # cannot be published, it is rejected, and RabbitMQ moves it to its dead-letter
                # queue (unless the broker is away: then it is delivered again once it is back).
                log.exception("could not publish for a %s message; it will be handled again", name)
                if not self._set_back(current):
                    current.fail()

        entrypoint.__name__ = name
        return dramatiq.Actor(
            entrypoint,
            broker=self.broker,
            actor_name=name,
            queue_name=routes.home_queue(message_type),
            priority=0,
            options={},
        )

    def _set_back(self, current: Any) -> bool:
        """Send a dramatiq message, unchanged, round its queue's longest retry delay; False if that
        could not be published either."""
        delay = self.policy.max_backoff_ms
        try:
            self.policy.publisher.publish(
                [
                    Outgoing(
                        topology.exchange_to(current.queue_name, delay),
                        current.queue_name,
                        current.encode(),
                        message_id=current.message_id,
                    )
                ]
            )
        except PublishFailed:
            log.exception("could not send a %s message round its retries either", current.actor_name)
            return False
        return True

    def consume(self, queues: Sequence[str]) -> None:
        """Make dramatiq aware of queues this worker consumes beyond its actors' (partitions)."""
        for queue in queues:
            self.broker.declare_queue(queue)


@dataclass
class _Envelope:
    """One dramatiq message in hand, until the batch it joined is done."""

    current: Any
    payloads: tuple[Any, ...]
    done: bool = False
    error: BaseException | None = None

    def received(self, message_type: type[M]) -> list[Received[M]]:
        source = _EnvelopeSource(self.current)
        attempt = attempt_of(self.current.options.get(RETRIES_OPTION))
        return [_decode(source, message_type, payload, attempt) for payload in self.payloads]


class _Coalescer:
    """Batches envelopes that wait: a thread whose envelope arrives while `concurrency` batches of
    its kind are being handled leaves it for the next batch, which one of the waiting threads
    handles for all of them. Alone, an envelope is handled at once; under load, a backlog of small
    envelopes is worked off in batches, which cost less per message the bigger they get."""

    def __init__(self, handle: Callable[[list[_Envelope]], None], concurrency: int) -> None:
        self._handle = handle
        self._concurrency = concurrency
        self._running = 0
        self._waiting: list[_Envelope] = []
        self._changed = threading.Condition()

    def submit(self, envelope: _Envelope) -> None:
        """Return once `envelope` was handled (in whichever batch), raising what its batch raised."""
        with self._changed:
            self._waiting.append(envelope)
            while not envelope.done and self._running >= self._concurrency:
                self._changed.wait()
            if not envelope.done:
                batch, self._waiting = self._waiting, []
                self._running += 1
        if not envelope.done:
            error: BaseException | None = None
            try:
                self._handle(batch)
            except BaseException as e:
                error = e
            with self._changed:
                self._running -= 1
                for handled in batch:
                    handled.done, handled.error = True, error
                self._changed.notify_all()
        if envelope.error is not None:
            raise envelope.error


class _EnvelopeSource:
    """A dramatiq message's queue, and how to send its payloads on again."""

    def __init__(self, current: Any) -> None:
        self._current = current

    @property
    def queue(self) -> str:
        return str(self._current.queue_name)

    def retry(self, received: Sequence[Received[Any]], attempt: int, delay_ms: int) -> list[Outgoing]:
        envelope = self._current.copy(
            args=tuple(item.raw for item in received), options={RETRIES_OPTION: attempt}
        )
        return [
            Outgoing(
                topology.exchange_to(self.queue, delay_ms),
                self.queue,
                envelope.encode(),
                message_id=envelope.message_id,
            )
        ]

    def dead_letter(self, received: Received[Any], reason: str) -> Outgoing:
        letter = self._current.copy(args=(received.raw,), options={DEAD_LETTER_REASON_OPTION: reason})
        return Outgoing(
            topology.exchange_to(self.queue),
            topology.dead_letter_queue(self.queue),
            letter.encode(),
            message_id=letter.message_id,
            headers=dead_letter_headers(self.queue, self.queue, reason),
        )


def _decode(source: _EnvelopeSource, message_type: type[M], payload: Any, attempt: int) -> Received[M]:
    """A payload as the current version of its contract (an older one upcast), or a dead letter."""
    try:
        return Received(source, payload, message_type.model_validate(upcast(message_type, payload)), attempt)
    except NewerSchema as e:
        return Received(source, payload, None, attempt, str(e))
    except ValidationError as e:
        return Received(source, payload, None, attempt, f"invalid {message_type.__name__}: {_summary(e)}")


def _order_of(batch: Batch[Any]) -> str | None:
    order_ids = {getattr(message, "order_id", None) for message in batch}
    return order_ids.pop() if len(order_ids) == 1 else None


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}" for e in error.errors()[:10]
    )
