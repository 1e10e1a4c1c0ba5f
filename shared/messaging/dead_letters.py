"""The dead-letter queues: what went there and why, and putting messages back once fixed.

Two kinds exist. Queues consumed with kombu dead-letter to `<queue>.dlq`, keeping the original
body and headers, with the reason in `x-orderflow-reason`. dramatiq's queues dead-letter to
`<queue>.XQ`: the body is the dramatiq message, the reason in its options. Replaying sends a
message back to its queue with a confirmed publish before removing it from the dead letters, so a
replay interrupted half-way leaves a duplicate, never a loss, and the handlers drop duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Producer, Queue

from shared.messaging import topology

DEAD_LETTER_ID_HEADER = "x-orderflow-dead-letter-id"
_OURS = "x-orderflow-"
_DRAMATIQ_FAILURE_OPTIONS = (
    "retries",
    "traceback",
    "dead_letter_reason",
    "dead_lettered_at",
    "requeue_timestamp",
    "eta",
)

# Dead-letter queue -> the queue its messages came from.
DEAD_LETTER_QUEUES = {
    **{
        topology.dead_letter_queue(queue): queue
        for queue in (
            topology.ORDER_INTAKE_QUEUE,
            topology.NOTIFICATION_EVENTS_QUEUE,
            topology.REPORTING_EVENTS_QUEUE,
        )
    },
    **{
        f"{queue}.XQ": queue
        for queue in (topology.ORDER_SAGA_QUEUE, topology.INVENTORY_QUEUE, topology.PAYMENT_QUEUE)
    },
}


class UnknownQueue(ValueError):
    pass


def resolve(name: str) -> str:
    """The dead-letter queue meant by `name`: itself, or the dead-letter queue of a source queue."""
    if name in DEAD_LETTER_QUEUES:
        return name
    for dead, source in DEAD_LETTER_QUEUES.items():
        if source == name:
            return dead
    raise UnknownQueue(f"no dead-letter queue for {name!r}; known: {', '.join(sorted(DEAD_LETTER_QUEUES))}")


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


class DeadLetterOffice:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def counts(self) -> dict[str, int]:
        counts = {}
        for queue in DEAD_LETTER_QUEUES:
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
        with self._taken(queue, limit=100_000) as taken, self.connection.channel() as channel:
            producer = Producer(channel)
            for letter, message in taken:
                if ids is not None and letter.id not in ids:
                    continue
                body, headers = _original(letter)
                producer.publish(
                    body,
                    exchange="",
                    routing_key=letter.source,
                    content_type=letter.content_type or "application/octet-stream",
                    content_encoding="binary",
                    delivery_mode=2,
                    headers=headers,
                )
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
                    taken.append((_letter(queue, message), message))
            except self.connection.channel_errors:
                pass  # the queue does not exist yet: nothing was ever dead-lettered there
            yield taken


def _letter(queue: str, message: Any) -> DeadLetter:
    headers = dict(message.headers or {})
    source = DEAD_LETTER_QUEUES[queue]
    if queue.endswith(".XQ"):
        decoded = json.loads(message.body)
        options = decoded.get("options", {})
        traceback = (options.get("traceback") or "").strip().splitlines()
        reason = options.get("dead_letter_reason") or (traceback[-1] if traceback else "retries exhausted")
        return DeadLetter(
            id=decoded.get("message_id", "?"),
            queue=queue,
            source=decoded.get("queue_name", source),
            reason=reason,
            dead_lettered_at=options.get("dead_lettered_at"),
            body=message.body,
            content_type="application/json",
            headers=headers,
        )
    return DeadLetter(
        id=str(headers.get(DEAD_LETTER_ID_HEADER, message.delivery_tag)),
        queue=queue,
        source=str(headers.get("x-orderflow-queue", source)),
        reason=str(headers.get("x-orderflow-reason", "")),
        dead_lettered_at=headers.get("x-orderflow-dead-lettered-at"),
        body=message.body,
        content_type=message.content_type,
        headers=headers,
    )


def _original(letter: DeadLetter) -> tuple[bytes, dict[str, Any]]:
    """The message as it was before it failed: our bookkeeping removed, attempts counted afresh."""
    headers = {k: v for k, v in letter.headers.items() if not k.startswith(_OURS)}
    if not letter.queue.endswith(".XQ"):
        return letter.body, headers
    decoded = json.loads(letter.body)
    decoded["options"] = {
        k: v for k, v in decoded.get("options", {}).items() if k not in _DRAMATIQ_FAILURE_OPTIONS
    }
    return json.dumps(decoded, separators=(",", ":")).encode(), headers
