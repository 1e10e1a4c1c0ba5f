"""The dead-letter queues: what went there and why, and putting messages back once fixed.

Every consumed queue dead-letters to `<queue>.dlq` (shared/messaging/delivery.py): the message as
it came (for a saga queue, a dramatiq message carrying the one saga message that failed), with the
reason in `x-orderflow-reason`. Replaying publishes a message back to its queue, confirmed,
before removing it from the dead letters, so a replay interrupted half-way leaves a duplicate,
never a loss, and the handlers drop duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Queue

from shared.messaging import topology
from shared.messaging.delivery import (
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTERED_AT_HEADER,
    HEADER_PREFIX,
    REASON_HEADER,
    SOURCE_QUEUE_HEADER,
)
from shared.messaging.publisher import Outgoing, Publisher
from shared.messaging.saga_bus import DEAD_LETTER_REASON_OPTION, RETRIES_OPTION


class UnknownQueue(ValueError):
    pass


def dead_letter_queues(partitions: int) -> dict[str, str]:
    """Dead-letter queue -> the queue its messages came from."""
    return {
        topology.dead_letter_queue(queue): queue
        for queue in topology.Topology(partitions=partitions).consumed_queues
    }


def resolve(name: str, partitions: int) -> str:
    """The dead-letter queue meant by `name`: itself, or the dead-letter queue of a source queue."""
    queues = dead_letter_queues(partitions)
    if name in queues:
        return name
    for dead, source in queues.items():
        if source == name:
            return dead
    raise UnknownQueue(f"no dead-letter queue for {name!r}; known: {', '.join(sorted(queues))}")


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str
    source: str
    reason: str
    dead_lettered_at: str | None
    body: bytes
    content_type: str | None
    headers: dict[str, Any]

    @property
    def is_saga_message(self) -> bool:
        return not self.source.startswith(tuple(queue.name for queue in topology.PUBLIC_QUEUES))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.queue,
            "source": self.source,
            "reason": self.reason,
            "dead_lettered_at": self.dead_lettered_at,
            "body": self.body.decode("utf-8", errors="replace"),
            "headers": {k: str(v) for k, v in self.headers.items()},
        }

    def original(self) -> Outgoing:
        """The message as it was before it failed: our bookkeeping removed, attempts counted afresh."""
        headers = {
            k: v for k, v in self.headers.items() if not k.startswith(HEADER_PREFIX) and k != "x-death"
        }
        body = self.body
        if self.is_saga_message:
            body = _without_failure_options(self.body)
        return Outgoing(
            "",
            self.source,
            body,
            content_type=self.content_type,
            content_encoding=None if self.content_type is None else "utf-8",
            headers=headers,
        )


class DeadLetterOffice:
    def __init__(self, connection: Connection, publisher: Publisher, partitions: int) -> None:
        self.connection = connection
        self.publisher = publisher
        self.queues = dead_letter_queues(partitions)

    def counts(self) -> dict[str, int]:
        counts = {}
        for queue in self.queues:
            with self.connection.channel() as channel:
                try:
                    counts[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except self.connection.channel_errors:
                    counts[queue] = 0
        return counts

    def browse(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        """Read without removing: what is taken is returned to the queue when the channel closes."""
        with self._taken(queue, limit) as taken:
            return [letter for letter, _ in taken]

    def replay(self, queue: str, ids: set[str] | None = None) -> list[str]:
        """Send the named messages (all, if `ids` is None) back to their queue; returns their ids."""
        replayed = []
        with self._taken(queue, limit=100_000) as taken:
            chosen = [(letter, message) for letter, message in taken if ids is None or letter.id in ids]
            self.publisher.publish([letter.original() for letter, _ in chosen])
            for letter, message in chosen:
                message.ack()
                replayed.append(letter.id)
        return replayed

    def purge(self, queue: str) -> int:
        with self.connection.channel() as channel:
            try:
                return int(Queue(queue, no_declare=True).bind(channel).purge() or 0)
            except self.connection.channel_errors:
                return 0

    @contextmanager
    def _taken(self, queue: str, limit: int) -> Iterator[list[tuple[DeadLetter, Any]]]:
        with self.connection.channel() as channel:
            bound = Queue(queue, no_declare=True).bind(channel)
            taken: list[tuple[DeadLetter, Any]] = []
            try:
                while len(taken) < limit and (message := bound.get(no_ack=False)) is not None:
                    taken.append((self._letter(queue, message), message))
            except self.connection.channel_errors:
                pass  # the queue does not exist yet: nothing was ever dead-lettered there
            yield taken

    def _letter(self, queue: str, message: Any) -> DeadLetter:
        headers = dict(message.headers or {})
        return DeadLetter(
            id=str(headers.get(DEAD_LETTER_ID_HEADER, message.delivery_tag)),
            queue=queue,
            source=str(headers.get(SOURCE_QUEUE_HEADER, self.queues[queue])),
            # A message RabbitMQ dead-lettered itself (one dramatiq could not decode) has no reason.
            reason=str(headers.get(REASON_HEADER, "rejected by its consumer")),
            dead_lettered_at=headers.get(DEAD_LETTERED_AT_HEADER),
            # kombu hands over a body it could decode as text.
            body=message.body if isinstance(message.body, bytes) else str(message.body).encode(),
            content_type=message.properties.get("content_type"),
            headers=headers,
        )


def _without_failure_options(body: bytes) -> bytes:
    """A dramatiq message's body with its retry count and failure reason removed (as it was)."""
    try:
        decoded = json.loads(body)
        options = decoded["options"]
    except (ValueError, TypeError, KeyError):
        return body  # not a dramatiq message: it goes back as it came
    decoded["options"] = {
        k: v for k, v in options.items() if k not in (RETRIES_OPTION, DEAD_LETTER_REASON_OPTION)
    }
    return json.dumps(decoded, separators=(",", ":")).encode()
