"""Several broker URLs are nodes to fail over: every client reaches the first node that answers,
however far down the list it is (here, after two that refuse connections)."""

from __future__ import annotations

import threading
from typing import Any

from kombu import Connection, Queue

from shared.messaging.exchanges import InboundMessage, QueueConsumer
from shared.messaging.ports import Batch
from shared.messaging.probe import RabbitQueueProbe
from shared.messaging.publisher import Outgoing, Publisher
from shared.messaging.saga_bus import SagaBroker
from shared.messaging.transport import Transport
from shared.settings import Settings
from tests.support import free_port, unique, wait_for


def after_two_dead_nodes(settings: Settings) -> str:
    """The administrator's URL of the broker, third in a list after two nodes that are not there."""
    (url,) = settings.amqp_urls()
    dead = [url.replace(":5672/", f":{free_port()}/") for _ in range(2)]
    assert all(node != url for node in dead), "the broker is on RabbitMQ's usual port"
    return ";".join([*dead, url])


def test_the_publisher_consumers_and_probe_reach_the_third_node(settings: Settings) -> None:
    nodes = after_two_dead_nodes(settings)
    queue = Queue(unique("failover"), durable=True, auto_delete=False)
    with Connection(settings.amqp_urls()[0]) as connection:
        queue.bind(connection.default_channel).declare()
    publisher = Publisher(nodes)
    publisher.publish([Outgoing("", queue.name, b"{}")])
    publisher.close()

    handled: list[Any] = []
    transport = Transport(Settings(**{**settings.model_dump(), "amqp_url": nodes}))

    def handle(batch: Batch[InboundMessage]) -> None:
        handled.extend(batch.messages)

    consumer: QueueConsumer[Any] = transport.consumer(queue, lambda inbound: inbound, handle)()
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: handled, timeout=10, what="the message, consumed through the third node")
    finally:
        consumer.stop()
        thread.join(10)
        transport.close()

    probe = RabbitQueueProbe(nodes)
    assert probe.backlog(queue.name).ready == 0
    probe.close()
    # dramatiq's consumers (pika) take the list as their own, and try every node in turn.
    broker = SagaBroker(nodes)
    assert broker.connection.is_open
    broker.close()
