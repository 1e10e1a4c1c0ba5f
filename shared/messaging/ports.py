"""What handlers need from messaging: batches in, messages out. The outbox in production, fakes in tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, Protocol, TypeVar

from shared.contracts.base import Message
from shared.contracts.events import Event

M = TypeVar("M")


class CommandSender(Protocol):
    """Sends a saga message to the queue that owns it, now or after `delay`."""

    def send(self, message: Message, delay: timedelta | None = None) -> None: ...


class EventSink(Protocol):
    """Publishes a public event."""

    def publish(self, event: Event) -> None: ...


@dataclass(frozen=True)
class Backlog:
    """A queue as RabbitMQ sees it now: messages ready to deliver, and consumers attached."""

    ready: int
    consumers: int

    @property
    def worked_off(self) -> bool:
        """Messages wait, and someone is there to take them: a command in it is queued, not lost."""
        return self.ready > 0 and self.consumers > 0


class QueueProbe(Protocol):
    """Reads a queue's backlog (`QueueProbe` in shared/messaging/probe.py)."""

    def backlog(self, queue: str) -> Backlog: ...


class Batch(Generic[M]):
    """Messages of one kind taken off a queue together and handled together.

    A handler rejects a message it can never handle (a reply for an unknown order, say): that one is
    dead-lettered with the reason, the others go on. Anything the handler raises concerns the whole
    batch, which is retried.
    """

    def __init__(self, messages: Sequence[M]) -> None:
        self.messages = list(messages)
        self.rejected: list[tuple[M, str]] = []

    def __iter__(self) -> Iterator[M]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def reject(self, message: M, reason: str) -> None:
        self.rejected.append((message, reason))

    def reason_rejected(self, message: M) -> str | None:
        return next((reason for rejected, reason in self.rejected if rejected is message), None)
