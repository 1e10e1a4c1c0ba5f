"""A worker's messaging, wired once from the settings: topology, publisher, outbox, delivery policy.

Nothing here connects when it is built; connections open on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from kombu import Queue

from shared.contracts import saga
from shared.contracts.base import Message
from shared.messaging.delivery import DeliveryPolicy, retry_delays
from shared.messaging.exchanges import Decoder, QueueConsumer
from shared.messaging.nodes import connect_to_a_node
from shared.messaging.outbox import Outbox
from shared.messaging.ports import Batch
from shared.messaging.publisher import Publisher
from shared.messaging.saga_bus import SagaBroker, SagaBus
from shared.messaging.tls import AmqpTls
from shared.messaging.topology import POOLS, Topology
from shared.settings import Settings

M = TypeVar("M")
T = TypeVar("T")


def topology_of(settings: Settings) -> Topology:
    """The deployment's queues: its partitions, its dead-letter queues' limits, and a delay queue
    per retry backoff and timer (the step timeout, and the backoff of a finished order's
    follow-ups); the longest backoff is also where a message waits while its dead-letter queue is full."""
    retries = retry_delays(settings.max_retries, settings.min_backoff_ms, settings.max_backoff_ms)
    return Topology(
        partitions=settings.inventory_partitions,
        delays=frozenset(retries | {settings.max_backoff_ms}),
        timer_delays=frozenset(
            round(settings.step_timeout * factor * 1000) for factor in saga.FOLLOW_UP_BACKOFF
        ),
        dead_letter_max_messages=settings.dead_letter_max_messages,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
        quorum=settings.quorum_queues,
        delivery_limit=settings.delivery_limit,
    )


class Transport:
    """The messaging of one role (a worker pool, the operator's CLI, an upstream system): it
    connects as that role's broker user, and declares what that role owns."""

    def __init__(self, settings: Settings, role: str | None = None) -> None:
        self.settings = settings
        self.role = role
        self.amqp_url = settings.amqp_url_of(role)
        self.tls = AmqpTls.of(settings)
        self.publisher = Publisher(self.amqp_url, self.tls)
        self.step_timeout = timedelta(seconds=settings.step_timeout)
        self.topology = topology_of(settings)
        self.outbox = Outbox(self.topology)
        self.policy = DeliveryPolicy(
            self.outbox,
            self.publisher,
            max_retries=settings.max_retries,
            min_backoff_ms=settings.min_backoff_ms,
            max_backoff_ms=settings.max_backoff_ms,
        )
        self._bus: SagaBus | None = None

    @property
    def bus(self) -> SagaBus:
        """The saga's dramatiq actors; only workers that consume saga queues create it."""
        if self._bus is None:
            self._bus = SagaBus(SagaBroker(self.amqp_url, self.tls), self.policy)
        return self._bus

    @property
    def has_bus(self) -> bool:
        return self._bus is not None

    def consumer(
        self,
        queue: Queue,
        decode: Decoder[M],
        handle: Callable[[Batch[M]], None],
        admit: Callable[[], bool] | None = None,
    ) -> Callable[[], QueueConsumer[Any]]:
        """A factory of consumers of a public queue (one per consumer thread); `admit`, if given,
        says whether to take more messages now."""
        return lambda: QueueConsumer(
            self.amqp_url,
            queue,
            decode,
            handle,
            self.policy,
            batch_size=self.settings.batch_size,
            admit=admit,
            tls=self.tls,
        )

    def flushing(self, task: Callable[[], T]) -> Callable[[], T]:
        """`task`, for running outside any delivery (periodically): what it says is published,
        confirmed, once it returns, and dropped if it raises."""

        def run() -> T:
            try:
                result = task()
            except BaseException:
                self.outbox.discard()
                raise
            self.publisher.publish(self.outbox.take())
            return result

        return run

    def send(self, *messages: Message) -> None:
        """Send saga messages now, outside any delivery (the CLI does), confirmed."""

        def send_all() -> None:
            for message in messages:
                self.outbox.send(message)

        self.flushing(send_all)()

    def declare(self) -> None:
        """Declare what this role owns: a worker pool with a broker user of its own, its queues and
        exchanges; the operator, or anyone on the administrative URL, everything; an upstream
        system or a subscriber, nothing (they may configure nothing of Orderflow's)."""
        own_user = self.settings.has_own_amqp_url(self.role)
        if own_user and self.role not in POOLS and self.role != "operator":
            return
        with connect_to_a_node(self.tls.connection(self.amqp_url)) as connection:
            self.topology.declare(connection, self.role if own_user and self.role in POOLS else None)

    def close(self) -> None:
        self.publisher.close()
        if self._bus is not None:
            self._bus.broker.close()
