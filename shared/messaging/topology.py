"""Every exchange and queue of Orderflow: their names, their arguments, who owns them, and declaring them.

Each worker pool owns its queues and declares them (a broker user of its own may configure
nothing else); the operator (`orderflow topology declare`, or the definitions file
deploy/rabbitmq/definitions.json loaded when the broker starts) declares the whole topology.

Saga messages, retries and dead letters reach a pool's queues through exchanges of that pool's
own, `orderflow.to.<pool>` and its delay exchanges, never through the default exchange: whoever
may write to the default exchange may write to every queue, and broker permissions name exchanges.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Connection, Exchange, Queue, binding

from shared.errors import OrderflowError, TransientError
from shared.messaging.publisher import Outgoing, Publisher, PublishFailed

# Public exchanges (kombu): upstream systems publish to the intake; anyone may subscribe to events.
INTAKE_EXCHANGE = "orderflow.intake"
INTAKE_ROUTING_KEY = "order.submit"
# Requests about orders already submitted (shared/contracts/requests.py).
REQUEST_ROUTING_KEYS = ("order.cancel", "order.amend", "order.ship", "order.complete")
EVENTS_EXCHANGE = "orderflow.events"

# Queues on the public exchanges, one per consuming worker.
ORDER_INTAKE_QUEUE = "orderflow.order.intake"
# Requests have a queue of their own: they are never held back with new orders when the order
# worker admits no more sagas.
ORDER_REQUESTS_QUEUE = "orderflow.order.requests"
NOTIFICATION_EVENTS_QUEUE = "orderflow.notification.events"
REPORTING_EVENTS_QUEUE = "orderflow.reporting.events"

# Saga queues (consumed by dramatiq actors).
ORDER_SAGA_QUEUE = "orderflow.order.saga"
PAYMENT_QUEUE = "orderflow.payment.commands"
STOCK_QUEUE_PREFIX = "orderflow.inventory.stock"

# Routing keys the workers' own event queues are bound to.
NOTIFICATION_EVENT_KEYS = (
    "order.confirmed",
    "order.cancelled",
    "order.refunded",
    "order.shipped",
    "order.completed",
    "order.amended",
    "order.returned",
    "order.exchanged",
    "order.cancel_rejected",
    "order.amend_rejected",
    "stock.low",
    "support.opened",
    "support.answered",
    "support.closed",
)
REPORTING_EVENT_KEYS = (
    "order.confirmed",
    "order.cancelled",
    "order.rejected",
    "order.shipped",
    "order.completed",
    "order.amended",
    "order.returned",
    "order.exchanged",
    "order.refunded",
)

# The pools, by what their queues' names start with (`orderflow.<pool>.`).
POOLS = ("order", "inventory", "payment", "notification", "reporting")

# `orderflow.to.<pool>`: an exchange to each of the pool's queues and dead-letter queues, bound
# under the queue's name. A message published to `delay_exchange(pool, ms)` with a queue's
# name as routing key waits `ms` in a queue of that delay, then RabbitMQ dead-letters it, routing
# key unchanged, into the pool's exchange. One delay queue per pool and delay value: every message
# in it expires in publishing order.
ROUTE_PREFIX = "orderflow.to"
# Where earlier releases delayed messages for every pool, through the default exchange.
RETIRED_DELAY_PREFIX = "orderflow.delay"

# RabbitMQ refuses any message larger than this (`max_message_size` in deploy/rabbitmq/rabbitmq.conf,
# which scripts/services.sh and docker-compose.yml give the broker), so an oversized intake message
# is turned away by the broker before any consumer reads it. It is 16 times the intake's limit
# (ORDERFLOW_MAX_MESSAGE_BYTES, 64 KiB: a message somewhat over it is still dead-lettered whole,
# with the reason) and 4 times the largest saga envelope (routes.ENVELOPE_BYTES).
BROKER_MAX_MESSAGE_BYTES = 1024 * 1024

# Dead-letter queues are bounded (ORDERFLOW_DEAD_LETTER_MAX_MESSAGES and _MAX_BYTES; these are
# their defaults) and a full one refuses what is published to it (reject-publish).
DEAD_LETTER_MAX_MESSAGES = 100_000
DEAD_LETTER_MAX_BYTES = 1024**3
# A dead letter may be looked at this many times (each `orderflow dlq list` takes and returns it).
DEAD_LETTER_DELIVERY_LIMIT = 1_000_000_000


# Queues earlier builds declared and this one no longer uses: dramatiq's own dead-letter
# queues (Orderflow's are `<queue>.dlq`) and the single stock queue (now one per partition).
RETIRED_QUEUES = (
    "orderflow.order.saga.XQ",
    "orderflow.payment.commands.XQ",
    "orderflow.inventory.stock",
    "orderflow.inventory.stock.DQ",
    "orderflow.inventory.stock.XQ",
)


class TopologyConflict(OrderflowError):
    """A queue exists with other arguments than this release gives it: an older release declared it."""

    def __init__(self, queue: str, detail: str) -> None:
        super().__init__(
            f"queue {queue} exists with other arguments ({detail}); stop the workers of the older "
            "release, let the queue drain and run `orderflow topology upgrade`"
        )
        self.queue = queue


def stock_queue(partition: int) -> str:
    """The queue of one inventory partition: every stock command for its SKUs, one consumer at a time."""
    return f"{STOCK_QUEUE_PREFIX}.{partition}"


def partition_of(sku: str, partitions: int) -> int:
    """The inventory partition that owns a SKU: a stable hash, the same in every process."""
    return zlib.crc32(sku.encode()) % partitions


def dead_letter_queue(queue: str) -> str:
    """Where a queue's invalid, poison and exhausted messages go, with the reason in a header."""
    return f"{queue}.dlq"


def set_aside_queue(queue: str) -> str:
    """Where `orderflow topology upgrade` keeps a dead-letter queue's messages while it redeclares it."""
    return f"{queue}.upgrading"


def owner_of(queue: str) -> str:
    """The pool whose queue `queue` is (its dead-letter and delay queues included)."""
    pool = queue.split(".")[1] if queue.startswith("orderflow.") else ""
    if pool not in POOLS:
        raise ValueError(f"{queue} is no pool's queue")
    return pool


def route_exchange(pool: str) -> str:
    """The exchange through which anyone allowed to sends to `pool`'s queues."""
    return f"{ROUTE_PREFIX}.{pool}"


def delay_exchange(pool: str, milliseconds: int) -> str:
    """The exchange (and queue) where messages for `pool`'s queues wait `milliseconds`."""
    return f"{ROUTE_PREFIX}.{pool}.delay.{milliseconds}"


def exchange_to(queue: str, milliseconds: int = 0) -> str:
    """Where to publish a message for `queue`, with its name as routing key, to arrive at once or
    after `milliseconds`."""
    pool = owner_of(queue)
    return delay_exchange(pool, milliseconds) if milliseconds else route_exchange(pool)


def dramatiq_delay_queue(queue: str) -> str:
    """dramatiq consumes `<queue>.DQ` beside every queue; Orderflow delays messages its own way
    (delay_exchange), so it stays empty, but it must exist."""
    return f"{queue}.DQ"


INTAKE = Exchange(INTAKE_EXCHANGE, type="topic", durable=True)
EVENTS = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)


def _bound(name: str, exchange: Exchange, keys: tuple[str, ...]) -> Queue:
    return Queue(name, bindings=[binding(exchange, routing_key=key) for key in keys], durable=True)


ORDER_INTAKE = _bound(ORDER_INTAKE_QUEUE, INTAKE, (INTAKE_ROUTING_KEY,))
ORDER_REQUESTS = _bound(ORDER_REQUESTS_QUEUE, INTAKE, REQUEST_ROUTING_KEYS)
NOTIFICATION_EVENTS = _bound(NOTIFICATION_EVENTS_QUEUE, EVENTS, NOTIFICATION_EVENT_KEYS)
REPORTING_EVENTS = _bound(REPORTING_EVENTS_QUEUE, EVENTS, REPORTING_EVENT_KEYS)
PUBLIC_QUEUES = (ORDER_INTAKE, ORDER_REQUESTS, NOTIFICATION_EVENTS, REPORTING_EVENTS)


# Each public queue's bindings: (exchange, routing key).
PUBLIC_BINDINGS: dict[str, tuple[tuple[str, str], ...]] = {
    queue.name: tuple(sorted((b.exchange.name, b.routing_key) for b in queue.bindings))
    for queue in PUBLIC_QUEUES
}


@dataclass(frozen=True)
class Declared:
    """One exchange or queue as declared, with the pool that owns it and its bindings (queues)."""

    kind: str  # "exchange" or "queue"
    name: str
    owner: str
    type: str = "direct"
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)
    bindings: tuple[tuple[str, str], ...] = ()


class TopologyMissing(TransientError):
    """Something a pool binds to or sends through, owned by another pool, is not declared yet."""


@dataclass(frozen=True)
class Topology:
    """The exchanges and queues of one deployment: they depend on how many inventory partitions
    it has, on its retry and timer delays, and on the type of its queues."""

    partitions: int = 1
    # Retries' backoffs: every pool has a delay queue of each.
    delays: frozenset[int] = field(default_factory=frozenset)
    # The order pool's timers: it alone has delay queues of these.
    timer_delays: frozenset[int] = field(default_factory=frozenset)
    dead_letter_max_messages: int = DEAD_LETTER_MAX_MESSAGES
    dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES
    # Quorum queues (replicated, for a cluster) rather than classic ones.
    quorum: bool = False
    delivery_limit: int = 20

    @property
    def stock_queues(self) -> list[str]:
        return [stock_queue(partition) for partition in range(self.partitions)]

    @property
    def saga_queues(self) -> list[str]:
        return [ORDER_SAGA_QUEUE, PAYMENT_QUEUE, *self.stock_queues]

    @property
    def consumed_queues(self) -> list[str]:
        """Every queue a worker consumes, each with a dead-letter queue of its own."""
        return [queue for pool in POOLS for queue in self.queues_of(pool)]

    @property
    def dead_letter_queues(self) -> list[str]:
        return [dead_letter_queue(queue) for queue in self.consumed_queues]

    def queues_of(self, pool: str) -> list[str]:
        """The queues `pool` consumes."""
        return {
            "order": [ORDER_INTAKE_QUEUE, ORDER_REQUESTS_QUEUE, ORDER_SAGA_QUEUE],
            "inventory": self.stock_queues,
            "payment": [PAYMENT_QUEUE],
            "notification": [NOTIFICATION_EVENTS_QUEUE],
            "reporting": [REPORTING_EVENTS_QUEUE],
        }[pool]

    def delays_of(self, pool: str) -> frozenset[int]:
        """The delays a message for `pool`'s queues may wait."""
        return self.delays | self.timer_delays if pool == "order" else self.delays

    def _typed(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"x-queue-type": "quorum", **arguments} if self.quorum else arguments

    def dead_letter_queue_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-max-length": self.dead_letter_max_messages,
            "x-max-length-bytes": self.dead_letter_max_bytes,
            # A full dead-letter queue refuses (nacks) a new message, so its publisher knows
            # and keeps it; the default, drop-head, would silently drop the oldest dead letter.
            "x-overflow": "reject-publish",
        }
        if self.quorum:
            # Browsing dead letters (`orderflow dlq list`) takes each and gives it back: RabbitMQ 4
            # counts that as a delivery, and drops a quorum queue's message after 20 by default.
            arguments["x-delivery-limit"] = DEAD_LETTER_DELIVERY_LIMIT
        return self._typed(arguments)

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        """A consumed queue's arguments."""
        arguments: dict[str, Any] = {
            # A message a consumer rejects (one dramatiq cannot decode, or, on a quorum queue, one
            # delivered more than the delivery limit) is kept, not dropped.
            "x-dead-letter-exchange": route_exchange(owner_of(queue)),
            "x-dead-letter-routing-key": dead_letter_queue(queue),
        }
        if queue.startswith(STOCK_QUEUE_PREFIX):
            # Stock is decided serially per partition: one consumer is active, the rest stand by.
            arguments["x-single-active-consumer"] = True
        if self.quorum:
            # A poison message goes to the dead-letter queue, and is kept there even while it is
            # full (at-least-once needs reject-publish; nothing bounds a consumed queue otherwise).
            arguments |= {
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        return self._typed(arguments)

    def delay_queue_arguments(self, pool: str, milliseconds: int) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-message-ttl": milliseconds,
            "x-dead-letter-exchange": route_exchange(pool),
        }
        if self.quorum:
            # A quorum queue dead-letters at most once unless told otherwise: a message due back
            # while its target's leader moves would be lost.
            arguments |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        return self._typed(arguments)

    def owned(self, pool: str) -> Iterator[Declared]:
        """What `pool` declares: its exchanges before its queues, which are bound to them."""
        if pool == "order":  # it consumes the intake and publishes most events
            yield Declared("exchange", INTAKE_EXCHANGE, pool, type="topic")
            yield Declared("exchange", EVENTS_EXCHANGE, pool, type="topic")
        route = route_exchange(pool)
        # A topic exchange, though every binding is a queue's exact name: the broker's topic
        # permissions then say which of the pool's queues each sender may reach.
        yield Declared("exchange", route, pool, type="topic")
        delays = sorted(self.delays_of(pool))
        for milliseconds in delays:
            yield Declared("exchange", delay_exchange(pool, milliseconds), pool, type="fanout")
        for queue in self.queues_of(pool):
            bindings = ((route, queue), *PUBLIC_BINDINGS.get(queue, ()))
            yield Declared("queue", queue, pool, arguments=self.queue_arguments(queue), bindings=bindings)
            if queue in self.saga_queues:
                yield Declared("queue", dramatiq_delay_queue(queue), pool, arguments=self._typed({}))
            dead = dead_letter_queue(queue)
            yield Declared(
                "queue", dead, pool, arguments=self.dead_letter_queue_arguments(), bindings=((route, dead),)
            )
        for milliseconds in delays:
            name = delay_exchange(pool, milliseconds)
            arguments = self.delay_queue_arguments(pool, milliseconds)
            yield Declared("queue", name, pool, arguments=arguments, bindings=((name, ""),))

    def entities(self) -> Iterator[Declared]:
        """Everything to declare, each pool's after the order pool's public exchanges."""
        for pool in POOLS:
            yield from self.owned(pool)

    def declare(self, connection: Connection, pool: str | None = None) -> None:
        """Declare what `pool` owns (everything if None); TopologyConflict if a queue exists with
        other arguments, TopologyMissing if a public exchange it binds to is not declared yet."""
        entities = self.entities() if pool is None else self.owned(pool)
        with connection.channel() as channel:
            for entity in entities:
                try:
                    _declare(channel, entity)
                except PreconditionFailed as e:
                    raise TopologyConflict(entity.name, str(e.reply_text)) from e
                except NotFound as e:
                    raise TopologyMissing(
                        f"{entity.name} cannot be bound yet ({e.reply_text}): the order pool, or an "
                        "operator's `orderflow topology declare`, declares the public exchanges"
                    ) from e

    def upgrade(
        self, connection: Connection, publisher: Publisher | None = None
    ) -> tuple[list[str], list[str]]:
        """Bring a broker an older release declared in line with this one. A queue whose arguments
        changed, and a retired queue, is deleted (and the former declared anew) only while it is
        empty and unused: RabbitMQ checks both atomically (a quorum queue: checked, then deleted,
        so stop what publishes to it first). A queue nobody consumes (the pools stopped) has its
        messages set aside first (`set_aside_queue`) and put back, in order, once it is declared
        anew: dead letters, and commands or orders waiting for the new release's pools. Returns
        what was done and what is left to the operator (queues still holding messages or
        consumed). `publisher` moves the messages: one to the same broker, as the caller reaches
        it (by default, one to `connection`'s node, closed afterwards)."""
        done: list[str] = []
        left: list[str] = []
        own_publisher = publisher is None
        publisher = publisher or Publisher(connection.as_uri(include_password=True))
        try:
            for entity in self.entities():
                try:
                    with connection.channel() as channel:
                        _declare(channel, entity)
                except PreconditionFailed:
                    if entity.kind == "queue" and not _consumers(connection, entity.name):
                        aside = set_aside_queue(entity.name)
                        with connection.channel() as channel:
                            channel.queue_declare(aside, durable=True, auto_delete=False)
                        _move(connection, publisher, entity.name, aside)
                    if _delete_if_idle(connection, entity.name, self.quorum):
                        with connection.channel() as channel:
                            _declare(channel, entity)
                        done.append(f"declared {entity.name} anew with this release's arguments")
                    else:
                        left.append(f"{entity.name} has other arguments and holds messages or consumers")
            for entity in self.entities():
                if entity.kind == "queue":
                    _put_back(connection, publisher, entity.name, done, left)
        finally:
            if own_publisher:
                publisher.close()
        retired_delays = [f"{RETIRED_DELAY_PREFIX}.{ms}" for ms in sorted(self.delays | self.timer_delays)]
        for queue in (*RETIRED_QUEUES, *retired_delays):
            if not _exists(connection, queue):
                continue
            if _delete_if_idle(connection, queue, self.quorum):
                done.append(f"deleted retired queue {queue}")
                if queue in retired_delays:  # and the exchange of the same name that fed it
                    with connection.channel() as channel:
                        channel.exchange_delete(queue)
            else:
                left.append(f"retired queue {queue} holds messages or consumers")
        return done, left


def _declare(channel: Any, entity: Declared) -> None:
    if entity.kind == "exchange":
        channel.exchange_declare(entity.name, entity.type, durable=True, auto_delete=False)
        return
    channel.queue_declare(entity.name, durable=True, auto_delete=False, arguments=entity.arguments)
    for exchange, routing_key in entity.bindings:
        channel.queue_bind(entity.name, exchange, routing_key)


def _put_back(
    connection: Connection, publisher: Publisher, queue: str, done: list[str], left: list[str]
) -> None:
    """Move the messages set aside for `queue` back into it, as many as its limits take."""
    aside = set_aside_queue(queue)
    if not _exists(connection, aside):
        return
    what = "dead letters" if queue.endswith(".dlq") else "messages"
    try:
        moved = _move(connection, publisher, aside, queue)
    except PublishFailed as e:
        left.append(f"{aside} holds {what} of {queue} that do not fit under its limits ({e})")
        return
    if _delete_if_idle(connection, aside):
        done.append(f"kept the {moved} {what[:-1]}(s) of {queue}")
    else:
        left.append(f"{aside} holds {what} of {queue} or has consumers")


def _move(connection: Connection, publisher: Publisher, source: str, target: str) -> int:
    """Move every message of `source` to the end of `target`, in order, each confirmed before it is
    removed: interrupted, it leaves duplicates, never a loss. Returns how many were moved;
    PublishFailed if `target` refused some (those stay in `source`)."""
    moved = 0
    with connection.channel() as channel:
        while True:
            taken: list[Any] = []
            while len(taken) < _MOVE_BATCH and (message := channel.basic_get(source, no_ack=False)):
                taken.append(message)
            if not taken:
                return moved
            try:
                publisher.publish([Outgoing.again(message, "", target) for message in taken])
            except PublishFailed as e:
                refused = set(e.refused)  # when some were refused, the others were confirmed
                for position, message in enumerate(taken if refused else ()):
                    if position not in refused:
                        channel.basic_ack(message.delivery_tag)
                raise
            channel.basic_ack(taken[-1].delivery_tag, multiple=True)
            moved += len(taken)


_MOVE_BATCH = 500


def _consumers(connection: Connection, queue: str) -> int:
    with connection.channel() as channel:
        return int(channel.queue_declare(queue, passive=True).consumer_count)


def _exists(connection: Connection, queue: str) -> bool:
    try:
        with connection.channel() as channel:
            channel.queue_declare(queue, passive=True)
        return True
    except NotFound:
        return False


def _delete_if_idle(connection: Connection, queue: str, quorum: bool = False) -> bool:
    """Delete `queue` if it holds no message and has no consumer. Quorum queues do not take
    RabbitMQ's atomic check (if-empty, if-unused: NOT_IMPLEMENTED, closing the connection), so
    there it is checked first, then deleted."""
    try:
        with connection.channel() as channel:
            if not quorum:
                channel.queue_delete(queue, if_unused=True, if_empty=True)
                return True
            state = channel.queue_declare(queue, passive=True)
            if state.message_count or state.consumer_count:
                return False
            channel.queue_delete(queue)
            return True
    except PreconditionFailed:
        return False
