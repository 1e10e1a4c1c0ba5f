"""The dead-letter queues: what went there and why, and putting messages back once fixed.

Every consumed queue dead-letters to `<queue>.dlq` (shared/messaging/delivery.py): the message as
it came (for a saga queue, a dramatiq message carrying the one saga message that failed), with the
reason in `x-orderflow-reason`. Replaying publishes a message back to its queue, confirmed,
before removing it from the dead letters, so a replay interrupted half-way leaves a duplicate,
never a loss, and the handlers drop duplicates.

A dead letter is whatever bytes came: it is shown with its secrets masked (shared/redaction.py),
as text if it is UTF-8 and as base64 or escaped bytes if not, and replayed exactly as it came.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection, Queue

from shared import redaction
from shared.errors import UsageError
from shared.messaging import topology
from shared.messaging.delivery import (
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTERED_AT_HEADER,
    HEADER_PREFIX,
    REASON_HEADER,
    SOURCE_QUEUE_HEADER,
)
from shared.messaging.publisher import NOT_CARRIED_OVER, Outgoing, Publisher, raw_body
from shared.messaging.saga_bus import DEAD_LETTER_REASON_OPTION, RETRIES_OPTION

# How much of a body `orderflow dlq list` shows in text.
PREVIEW_CHARACTERS = 120


class UnknownQueue(UsageError):
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
    headers: dict[str, Any]
    # Its AMQP properties as they came (content type and encoding among them), headers apart.
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def is_saga_message(self) -> bool:
        return not self.source.startswith(tuple(queue.name for queue in topology.PUBLIC_QUEUES))

    @property
    def shown_body(self) -> bytes:
        """The body with its secrets masked: what a person may see of it."""
        return redaction.redact_bytes(self.body)

    def as_json(self) -> dict[str, Any]:
        """For `dlq list --json`: the body as text if it is UTF-8, else `body_base64`; secrets masked."""
        shown = self.shown_body
        try:
            text: str | None = shown.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return {
            "id": self.id,
            "queue": self.queue,
            "source": self.source,
            "reason": redaction.redact_text(self.reason),
            "dead_lettered_at": self.dead_lettered_at,
            "size": len(self.body),
            "body": text,
            "body_base64": None if text is not None else base64.b64encode(shown).decode("ascii"),
            "headers": {k: redaction.redact_text(str(v)) for k, v in self.headers.items()},
        }

    def preview(self) -> str:
        """One line of the body for a terminal: secrets masked, control characters escaped; of a
        dramatiq message, its actor and what it carries."""
        shown = self.shown_body
        try:
            text = shown.decode("utf-8")
        except UnicodeDecodeError:
            return f"({len(self.body)} bytes, not UTF-8) {shown[:PREVIEW_CHARACTERS]!r}"
        if self.is_saga_message:
            text = _carried(text)
        cut = "…" if len(text) > PREVIEW_CHARACTERS else ""
        return printable(text[:PREVIEW_CHARACTERS]) + cut

    def original(self) -> Outgoing:
        """The message as it was before it failed: our bookkeeping removed, attempts counted afresh."""
        headers = {
            k: v for k, v in self.headers.items() if not k.startswith(HEADER_PREFIX) and k != "x-death"
        }
        properties = {k: v for k, v in self.properties.items() if k not in NOT_CARRIED_OVER}
        body = self.body
        if self.is_saga_message:
            body = _without_failure_options(self.body)
        return Outgoing(
            topology.exchange_to(self.source),
            self.source,
            body,
            content_type=properties.pop("content_type", None),
            content_encoding=properties.pop("content_encoding", None),
            headers=headers,
            properties=properties,
        )


def _carried(text: str) -> str:
    """`actor_name: [payloads]` of a dramatiq message; anything else as it is."""
    try:
        decoded = json.loads(text)
        return f"{decoded['actor_name']}: {json.dumps(decoded['args'], ensure_ascii=False)}"
    except (ValueError, TypeError, KeyError, RecursionError):
        return text


def printable(text: str) -> str:
    """`text` with anything a terminal would act on (newlines, escapes) written as an escape."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class DeadLetterOffice:
    def __init__(self, connection: Connection, publisher: Publisher, partitions: int) -> None:
        self.connection = connection
        self.publisher = publisher
        self.queues = dead_letter_queues(partitions)

    def counts(self) -> dict[str, int]:
        return self.counts_of(list(self.queues))

    def counts_of(self, queues: list[str]) -> dict[str, int]:
        counts = {}
        for queue in queues:
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

    def count(self, queue: str) -> int:
        return self.counts_of([queue])[queue]

    def purge(self, queue: str, limit: int) -> int:
        """Delete the first `limit` messages of a dead-letter queue (those a person agreed to, not
        any that arrived since); returns how many."""
        with self._taken(queue, limit) as taken:
            for _, message in taken:
                message.ack()
        return len(taken)

    @contextmanager
    def _taken(self, queue: str, limit: int) -> Iterator[list[tuple[DeadLetter, Any]]]:
        with self.connection.channel() as channel:
            # py-amqp decodes a body to text by its content encoding; a replay sends the bytes.
            channel.auto_decode = False
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
            dead_lettered_at=None if (at := headers.get(DEAD_LETTERED_AT_HEADER)) is None else str(at),
            body=raw_body(message),
            headers=headers,
            properties=dict(message.properties),
        )


def _without_failure_options(body: bytes) -> bytes:
    """A dramatiq message's body with its retry count and failure reason removed (as it was)."""
    try:
        decoded = json.loads(body)
        options = decoded["options"]
        if not isinstance(options, dict):
            return body
        decoded["options"] = {
            k: v for k, v in options.items() if k not in (RETRIES_OPTION, DEAD_LETTER_REASON_OPTION)
        }
        return json.dumps(decoded, separators=(",", ":")).encode()
    except (ValueError, TypeError, KeyError, RecursionError):
        return body  # not a dramatiq message: it goes back as it came
