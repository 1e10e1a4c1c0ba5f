"""Nothing lost, nothing doubled: the saga under hostile input, crashes and outages of its services."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection

from shared.messaging import topology
from shared.messaging.dead_letters import DeadLetterOffice
from shared.messaging.publisher import Outgoing, Publisher, PublishFailed
from tests.faults import invariants
from tests.faults.own_services import OwnServices
from tests.support import queue_depth, unique, wait_for
from tests.system import SERVICES, System, new_order

HOSTILE_EXAMPLES = 1500

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
almost_orders = st.fixed_dictionaries(
    {
        "order_id": st.one_of(st.text(max_size=80), st.integers(), st.from_regex(r"\AH-[a-z0-9]{1,12}\Z")),
        "customer": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"customer_id": st.text(max_size=70), "name": st.text(), "email": st.text()}
            ),
        ),
        "items": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries({"sku": st.text(max_size=70), "quantity": json_values}), max_size=3
            ),
        ),
        "payment": st.one_of(json_values, st.fixed_dictionaries({"method": st.text(), "token": json_values})),
    }
)
VALID = json.dumps(new_order(("SKU", 1))).encode()
hostile_bodies = st.one_of(
    st.binary(max_size=500),
    json_values.map(lambda v: json.dumps(v).encode()),
    almost_orders.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", errors="surrogatepass")),
    st.integers(0, len(VALID) - 1).map(lambda n: VALID[:n]),
    st.integers(100, 20_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(60_000, 200_000).map(
        lambda n: json.dumps({"order_id": "H-big", "customer": "x" * n}).encode()
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    ),
)


def dead_letter_bodies(system: System, queue: str) -> Counter[bytes]:
    """The bodies in a dead-letter queue, read without taking them."""
    url = system.settings.amqp_url
    with Connection(url) as connection:
        office = DeadLetterOffice(connection, Publisher(url), system.settings.inventory_partitions)
        return Counter(letter.body for letter in office.browse(queue, limit=100_000))


def test_hostile_input_is_accounted_for_and_breaks_nothing(system: System, figure) -> None:
    url = system.settings.amqp_url
    dlq = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)
    before = dead_letter_bodies(system, dlq)
    published: list[bytes] = []

    @settings(
        max_examples=HOSTILE_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_bodies)
    def throw(body: bytes) -> None:
        system.submit(body)
        published.append(body)

    throw()
    # A message is acked once RabbitMQ has confirmed its dead letter, and RabbitMQ counts a dead
    # letter in its queue before it confirms it (once it is on disk): the dead-letter queue can
    # hold them all while the intake still holds the last batch, unacked. Both settle, in any order.
    wait_for(
        lambda: (
            queue_depth(url, dlq) - before.total() >= len(published)
            and queue_depth(url, topology.ORDER_INTAKE_QUEUE) == 0
        ),
        timeout=120,
        interval=0.5,
        what=f"all {len(published)} hostile messages out of the intake and in the dead-letter queue",
    )
    # Each one dead-lettered exactly once: no more, no fewer, no other.
    dead = dead_letter_bodies(system, dlq) - before
    assert dead == Counter(published), {
        "dead-lettered more than published": list((dead - Counter(published)).items())[:5],
        "published, not dead-lettered": list((Counter(published) - dead).items())[:5],
    }
    for service, processes in system.workers.running.items():
        assert all(p.poll() is None for p in processes), f"{service} died"
    sku = unique("AFTER")
    system.stock(sku, 1)
    good = new_order((sku, 1))
    system.submit(good)
    assert system.outcome(good["order_id"])["status"] == "confirmed"
    figure(f"hostile input: {len(published)} generated messages, all dead-lettered; the next order confirmed")


def stocked(system: System, count: int, units: int) -> dict[str, int]:
    stock = {unique("SKU"): units for _ in range(count)}
    for sku, quantity in stock.items():
        system.stock(sku, quantity, price="2.00")
    return stock


def random_orders(stock: dict[str, int], count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    # With the simulated provider's faults in the mix: money must still come out exact.
    tokens = ["tok_visa"] * 8 + [
        "tok_declined",
        "tok_gateway_error",
        "tok_lost_reply",
        "tok_slow",
        "tok_refund_error",
    ]
    return [
        new_order(
            *[(sku, rng.randint(1, 3)) for sku in rng.sample(sorted(stock), rng.choice([1, 1, 2]))],
            token=rng.choice(tokens),
            method=rng.choice(["credit_card", "alipay", "wechat_pay"]),
        )
        for _ in range(count)
    ]


class Submitter(threading.Thread):
    """Publishes orders at a steady pace on a connection of its own, as an upstream system would."""

    def __init__(self, system: System, orders: list[dict[str, Any]], per_second: float) -> None:
        super().__init__(daemon=True)
        self.system, self.orders, self.interval = system, orders, 1 / per_second
        self.sent = 0
        self.error: BaseException | None = None
        self._pace = threading.Event()

    def run(self) -> None:
        publisher = Publisher(self.system.settings.amqp_url)
        try:
            for order in self.orders:
                self._publish(publisher, json.dumps(order).encode())
                self.sent += 1
                self._pace.wait(self.interval)
        except BaseException as e:
            self.error = e
        finally:
            publisher.close()

    def _publish(self, publisher: Publisher, body: bytes) -> None:
        """Until the broker confirms it: an upstream system keeps trying while the broker is away."""
        deadline = time.monotonic() + 120
        while True:
            try:
                publisher.publish([Outgoing(topology.INTAKE_EXCHANGE, topology.INTAKE_ROUTING_KEY, body)])
                return
            except PublishFailed:
                if time.monotonic() > deadline:
                    raise
                self._pace.wait(0.5)


def test_crashes_of_any_worker_lose_and_double_nothing(system: System, figure) -> None:
    stock = stocked(system, count=5, units=60)
    orders = random_orders(stock, count=250, seed=7)
    submitter = Submitter(system, orders, per_second=12)
    submitter.start()
    rng = random.Random(11)
    victims = [*rng.sample(SERVICES, len(SERVICES))]  # each kind once, then at random
    pace = threading.Event()
    kills = []
    while submitter.is_alive() or len(kills) < len(SERVICES):
        service = victims.pop(0) if victims else rng.choice(SERVICES)
        index = rng.randrange(len(system.workers.running[service]))
        system.workers.kill(service, index)
        system.workers.start(service)
        kills.append(service)
        pace.wait(2.0)
    submitter.join()
    assert submitter.error is None, submitter.error
    figures = invariants.check(system, orders, stock)
    figure(f"crashes: {len(kills)} SIGKILLs ({', '.join(kills)}); {len(orders)} orders: {figures}")


@pytest.mark.parametrize(("outage", "seed"), [("stop-broker", 3), ("stop-store", 5)])
def test_a_restart_of_the_broker_or_the_store_mid_flow_loses_and_doubles_nothing(
    outage_system: System, own_services: OwnServices, outage: str, seed: int, figure
) -> None:
    # A broker and a store of the test's own: stopping the machine's would break everyone else's.
    system = outage_system
    stock = stocked(system, count=3, units=40)
    orders = random_orders(stock, count=80, seed=seed)
    submitter = Submitter(system, orders, per_second=10)
    submitter.start()
    wait_for(lambda: submitter.sent >= 20, what="orders in flight")
    own_services.restart(outage)
    submitter.join(120)
    assert submitter.error is None, submitter.error
    figures = invariants.check(system, orders, stock)
    figure(f"{outage} and start mid-flow: {len(orders)} orders: {figures}")
