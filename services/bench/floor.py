"""The floor of this stack: the least a three-hop saga can do on the same broker and store.

Three processes, one per hop, each written the plainest way with pika and pymongo: take a
message, make one write by `_id`, publish the next message (persistent, waiting for the broker's
confirm), ack. The last hop publishes `order.confirmed` to the events exchange, where the
benchmark times it exactly as it times Orderflow. No validation, no retries, no idempotence: a
yardstick, not a product.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pika
from pymongo import MongoClient

from services.bench import probes
from shared.messaging import topology
from shared.messaging.publisher import Outgoing

HOPS = ("floor.reserve", "floor.charge", "floor.confirm")
PREFETCH = 50


def intake(body: bytes) -> Outgoing:
    """How the benchmark hands an order to the floor: straight to its first hop's queue."""
    return Outgoing("", HOPS[0], body)


def _hop(amqp_url: str, mongo_url: str, database: str, index: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_qos(prefetch_count=PREFETCH)
    orders: Any = MongoClient(mongo_url)[database]["orders"]
    persistent = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    last = index == len(HOPS) - 1

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        order_id = json.loads(body)["order_id"]
        if index == 0:
            orders.insert_one({"_id": order_id, "step": index})
        else:
            orders.update_one({"_id": order_id}, {"$set": {"step": index}})
        if last:
            event = {"type": "order.confirmed", "order_id": order_id, "status": "confirmed", "reason": None}
            ch.basic_publish(
                topology.EVENTS_EXCHANGE, "order.confirmed", json.dumps(event).encode(), persistent
            )
        else:
            ch.basic_publish("", HOPS[index + 1], body, persistent)
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(HOPS[index], on_message)
    with suppress(KeyboardInterrupt):
        channel.start_consuming()


@contextmanager
def running(amqp_url: str, mongo_url: str, database: str) -> Iterator[list[int]]:
    """The three hops, each a process; yields their pids."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(topology.EVENTS_EXCHANGE, "topic", durable=True)
    for queue in HOPS:
        channel.queue_declare(queue, durable=True)
    connection.close()
    context = multiprocessing.get_context("spawn")
    hops = [
        context.Process(
            target=_hop, args=(amqp_url, mongo_url, database, index), name=f"floor-{index}", daemon=True
        )
        for index in range(len(HOPS))
    ]
    for hop in hops:
        hop.start()

    def exited() -> str | None:
        for hop in hops:
            if hop.exitcode is not None:
                return f"{hop.name} exited with code {hop.exitcode}"
        return None

    try:
        probes.wait_until_consuming(amqp_url, list(HOPS), exited)
        yield [hop.pid for hop in hops if hop.pid is not None]
    finally:
        for hop in hops:
            hop.terminate()
        for hop in hops:
            hop.join(10)
