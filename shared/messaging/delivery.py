"""One delivery policy for every consumer, whichever library delivers the message.

A batch taken off a queue is handled together, then:

- a message that does not decode, or that the handler rejects, is dead-lettered at once to the
  queue's `.dlq`, with the reason in the `x-orderflow-reason` header;
- if the handler raises a PermanentError, the whole batch is dead-lettered with that reason;
- if it raises anything else, every message still to do is retried after an exponential backoff
  (through a delay queue, back into its own queue), up to `max_retries` times, and then
  dead-lettered with the last error;
- what the handler said (its outbox), the retries and the dead letters are published together
  and confirmed by RabbitMQ before the batch is acked;
- a dead letter its dead-letter queue refuses (the queue is full: x-max-length with
  reject-publish) is not lost: the message goes round its own queue's longest retry delay, its
  attempt not counted, and is handled (and dead-lettered) again once there is room.

Every message is counted once per attempt (succeeded, retried or failed) and timed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from shared import metrics
from shared.contracts.base import new_id
from shared.errors import PermanentError
from shared.messaging.outbox import Outbox
from shared.messaging.ports import Batch
from shared.messaging.publisher import Outgoing, Publisher, PublishFailed

log = logging.getLogger(__name__)

M = TypeVar("M")

# Headers Orderflow sets on a message it sends on again; the dead-letter office reads them back.
REASON_HEADER = "x-orderflow-reason"
ATTEMPTS_HEADER = "x-orderflow-attempts"
DEAD_LETTER_ID_HEADER = "x-orderflow-dead-letter-id"
SOURCE_QUEUE_HEADER = "x-orderflow-queue"
ROUTING_KEY_HEADER = "x-orderflow-routing-key"
DEAD_LETTERED_AT_HEADER = "x-orderflow-dead-lettered-at"
HEADER_PREFIX = "x-orderflow-"

MAX_REASON_CHARACTERS = 4000


class Source(Protocol):
    """The queue a batch came from, and how to send its messages on again."""

    @property
    def queue(self) -> str: ...

    def retry(self, received: Sequence[Received[Any]], attempt: int, delay_ms: int) -> list[Outgoing]: ...

    def dead_letter(self, received: Received[Any], reason: str) -> Outgoing: ...


@dataclass(frozen=True)
class Received(Generic[M]):
    """One message taken off a queue: decoded, or why it could not be; its attempt number; and the
    delivery it came in (a saga message travels with others in one dramatiq message)."""

    source: Source
    raw: Any  # what its source needs to send it on again
    message: M | None
    attempt: int = 1
    problem: str | None = None


def dead_letter_headers(queue: str, routing_key: str, reason: str) -> dict[str, Any]:
    """What a dead letter says about itself, beside the headers it came with."""
    return {
        REASON_HEADER: reason[:MAX_REASON_CHARACTERS],
        DEAD_LETTER_ID_HEADER: new_id(),
        SOURCE_QUEUE_HEADER: queue,
        ROUTING_KEY_HEADER: routing_key,
        DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
    }


def attempt_of(value: Any) -> int:
    """The attempt a retry counter says a message is on: 1 for a first delivery, whatever anyone put there."""
    try:
        return max(0, int(value or 0)) + 1
    except (TypeError, ValueError):
        return 1


def backoff_ms(attempt: int, min_ms: int, max_ms: int) -> int:
    """How long the `attempt`-th failed attempt waits before the next: doubling, capped."""
    return int(min(min_ms * 2 ** (attempt - 1), max_ms))


def retry_delays(max_retries: int, min_ms: int, max_ms: int) -> frozenset[int]:
    """Every backoff a retry may wait: the topology declares a delay queue for each."""
    return frozenset(backoff_ms(attempt, min_ms, max_ms) for attempt in range(1, max_retries + 1))


class DeliveryPolicy:
    """Handles batches for the entry points of every queue, the same way."""

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        max_retries: int,
        min_backoff_ms: int,
        max_backoff_ms: int,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.max_retries = max_retries
        self.min_backoff_ms = min_backoff_ms
        self.max_backoff_ms = max_backoff_ms

    def process(
        self,
        handler: str,
        received: Sequence[Received[M]],
        handle: Callable[[Batch[M]], None],
    ) -> None:
        """Handle a batch, then publish what it said, its retries and its dead letters, confirmed.

        Raises PublishFailed if RabbitMQ did not confirm them: the batch must not be acked then.
        """
        started = time.perf_counter()
        valid = [item for item in received if item.message is not None]
        outgoing: list[Outgoing] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        letters: dict[int, tuple[Received[M], str]] = {}  # id() of each dead letter in `outgoing`

        def dead_letter(item: Received[M], reason: str, why: str) -> None:
            log.error("dead-lettering a message from %s: %s", item.source.queue, reason[:500])
            letter = item.source.dead_letter(item, reason)
            letters[id(letter)] = (item, why)
            outgoing.append(letter)

        for item in received:
            if item.message is None:
                dead_letter(item, item.problem or "invalid message", "invalid")
        if valid:
            batch = Batch([item.message for item in valid if item.message is not None])
            try:
                handle(batch)
            except PermanentError as e:
                self.outbox.discard()
                for item in valid:
                    dead_letter(item, f"{type(e).__name__}: {e}", "permanent")
            except Exception as e:
                self.outbox.discard()
                self._retry_or_give_up(valid, e, outgoing, outcomes, dead_letter)
            else:
                outgoing[:0] = self.outbox.take()
                for item in valid:
                    reason = batch.reason_rejected(item.message)  # type: ignore[arg-type]
                    if reason is None:
                        outcomes[(item.source.queue, "succeeded")] += 1
                    else:
                        dead_letter(item, reason, "permanent")
        refused = self._publish(outgoing, letters)
        for letter in outgoing:
            if id(letter) in letters:
                item, why = letters[id(letter)]
                queue = item.source.queue
                if id(letter) in refused:
                    outcomes[(queue, "retried")] += 1
                else:
                    metrics.DEAD_LETTERS.labels(queue, why).inc()
                    outcomes[(queue, "failed")] += 1
        seconds = time.perf_counter() - started
        for (queue, outcome), count in outcomes.items():
            metrics.MESSAGES.labels(queue, handler, outcome).inc(count)
        for item in received:
            metrics.MESSAGE_SECONDS.labels(item.source.queue, handler).observe(seconds)

    def _publish(self, outgoing: list[Outgoing], letters: dict[int, tuple[Received[M], str]]) -> set[int]:
        """Publish, confirmed; returns the id() of the dead letters a full dead-letter queue refused,
        whose messages were sent round their queue's longest retry delay instead. PublishFailed if
        anything else was not confirmed."""
        try:
            self.publisher.publish(outgoing)
            return set()
        except PublishFailed as e:
            refused = [outgoing[position] for position in e.refused]
            if not refused or any(id(letter) not in letters for letter in refused):
                raise
            why = str(e)
        # Every message but these dead letters was confirmed: wait, in their own queues, for room.
        waiting: dict[tuple[int, int], list[Received[M]]] = {}
        for letter in refused:
            item = letters[id(letter)][0]
            waiting.setdefault((id(item.source), item.attempt), []).append(item)
        again: list[Outgoing] = []
        for (_, attempt), items in waiting.items():
            source = items[0].source
            log.error(
                "dead-letter queue of %s is full (%s): %d message(s) wait %d ms in its retries, then "
                "are handled again; make room with `orderflow dlq list`, `replay` or `purge`",
                source.queue,
                why,
                len(items),
                self.max_backoff_ms,
            )
            metrics.DEAD_LETTERS_REFUSED.labels(source.queue).inc(len(items))
            # The counter stays at this attempt: waiting for room is not a failed attempt.
            again.extend(source.retry(items, attempt - 1, self.max_backoff_ms))
        self.publisher.publish(again)
        return {id(letter) for letter in refused}

    def _retry_or_give_up(
        self,
        valid: Sequence[Received[M]],
        error: Exception,
        outgoing: list[Outgoing],
        outcomes: Counter[tuple[str, str]],
        dead_letter: Callable[[Received[M], str, str], None],
    ) -> None:
        # Messages that came together in one delivery are sent on together.
        deliveries: dict[tuple[int, int], list[Received[M]]] = {}
        for item in valid:
            deliveries.setdefault((id(item.source), item.attempt), []).append(item)
        for (_, attempt), items in deliveries.items():
            source = items[0].source
            if attempt > self.max_retries:
                log.error(
                    "giving up on %d message(s) from %s after %d attempts", len(items), source.queue, attempt
                )
                for item in items:
                    dead_letter(item, f"gave up after {attempt} attempts: {error!r}", "exhausted")
                continue
            delay = backoff_ms(attempt, self.min_backoff_ms, self.max_backoff_ms)
            log.warning(
                "attempt %d at %d message(s) from %s failed (%r); retrying in %d ms",
                attempt,
                len(items),
                source.queue,
                error,
                delay,
            )
            outgoing.extend(source.retry(items, attempt, delay))
            outcomes[(source.queue, "retried")] += len(items)
