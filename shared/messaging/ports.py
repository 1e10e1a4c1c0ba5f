"""What handlers need from messaging, as protocols: the real buses in production, fakes in unit tests."""

from __future__ import annotations

from typing import Protocol

from shared.contracts.base import Message
from shared.contracts.events import Event


class CommandSender(Protocol):
    """Sends a saga message to the queue that owns it (`SagaBus`)."""

    def send(self, message: Message) -> None: ...


class EventSink(Protocol):
    """Publishes a public event (`EventPublisher`)."""

    def publish(self, event: Event) -> None: ...
