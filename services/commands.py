"""Operator commands that a worker carries out: the CLI sends them through RabbitMQ, like any other
message for that worker, then waits until the worker's database shows them applied.

A command not applied in time (no worker running, say) stays queued and is applied when one runs:
the CLI says so and exits 3 (`NotApplied`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from shared.contracts.base import Message
from shared.errors import CommandError
from shared.messaging.publisher import Outgoing
from shared.messaging.transport import Transport
from shared.settings import Settings

T = TypeVar("T")

# How often the CLI looks whether its command was applied.
POLL_SECONDS = 0.1


class NotApplied(CommandError):
    """The command is queued, but no worker applied it in time (exit 3)."""

    exit_code = 3


def send(settings: Settings, *commands: Message) -> None:
    """Send saga messages to the workers' queues as the operator, confirmed, the topology declared
    first."""
    transport = Transport(settings, "operator")
    try:
        transport.declare()
        transport.send(*commands)
    finally:
        transport.close()


def publish(settings: Settings, *messages: Outgoing) -> None:
    """Publish to a public exchange (the intake) as the operator, confirmed, the topology declared
    first."""
    transport = Transport(settings, "operator")
    try:
        transport.declare()
        transport.publisher.publish(list(messages))
    finally:
        transport.close()


def applied(seen: Callable[[], T | None], wait: float, worker: str) -> T:
    """What `seen` returns once it returns something, within `wait` seconds; NotApplied after."""
    deadline = time.monotonic() + wait
    while (result := seen()) is None:
        if time.monotonic() >= deadline:
            raise NotApplied(
                f"queued, but not applied within {wait:.0f} s: is the {worker} worker running? "
                "It stays queued and is applied when one runs"
            )
        time.sleep(POLL_SECONDS)
    return result
