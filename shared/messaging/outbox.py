"""What a handler says while it handles a batch, kept until the batch is done.

Handlers send saga messages and publish events through the outbox; nothing leaves the process
until the entry point takes the lot and publishes it in one confirmed burst, after the handler
stored its effects and before the batch is acked. A handler that fails says nothing: the batch is
retried, and the state it may have stored says the same things again (deterministic ids).
Each thread handles one batch at a time, so each thread has an outbox of its own.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta

from shared.contracts.base import Message
from shared.contracts.events import Event
from shared.messaging import routes, topology
from shared.messaging.publisher import Outgoing
from shared.messaging.topology import Topology, owner_of


class UndeclaredDelay(ValueError):
    """A delay no delay queue was declared for (the topology declares every delay the settings use,
    for the pools that use it)."""


class Outbox:
    """Collects what handlers send (CommandSender) and publish (EventSink), per thread."""

    def __init__(self, topology: Topology | None = None) -> None:
        self._topology = topology or Topology()
        self._local = threading.local()

    def send(self, message: Message, delay: timedelta | None = None) -> None:
        milliseconds = 0 if delay is None else round(delay.total_seconds() * 1000)
        pool = owner_of(routes.queue_of(message))
        if milliseconds and milliseconds not in self._topology.delays_of(pool):
            raise UndeclaredDelay(f"no delay queue of {milliseconds} ms is declared for the {pool} pool")
        self._buffer()[1].append((message, milliseconds))

    def publish(self, event: Event) -> None:
        self._buffer()[0].append(event)

    def take(self) -> list[Outgoing]:
        """Everything said since the last take, as AMQP messages: events first, then saga messages
        (so that a reply to a command cannot overtake the event of the state that sent it)."""
        events, commands = self._buffer()
        self._local.buffer = ([], [])
        outgoing = [
            Outgoing(
                topology.EVENTS_EXCHANGE,
                event.routing_key,
                event.model_dump_json().encode(),
                message_id=event.event_id,
                mandatory=False,  # anyone may subscribe to events, and no one may have yet
            )
            for event in events
        ]
        grouped: dict[tuple[str, int, type[Message]], list[Message]] = defaultdict(list)
        for message, milliseconds in commands:
            grouped[(routes.queue_of(message), milliseconds, type(message))].append(message)
        for (queue, milliseconds, _), messages in grouped.items():
            exchange = topology.exchange_to(queue, milliseconds)
            outgoing.extend(
                Outgoing(exchange, queue, envelope.encode(), message_id=envelope.message_id)
                for envelope in routes.envelopes(queue, messages)
            )
        return outgoing

    def discard(self) -> None:
        self._local.buffer = ([], [])

    def _buffer(self) -> tuple[list[Event], list[tuple[Message, int]]]:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = ([], [])
        return buffer
