"""Each role's broker user may do what its role needs and nothing more (shared/messaging/roles.py):
the broker itself refuses the rest, on the permissions `make services` (and every test vhost) gives."""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import amqp
import pytest
from amqp.exceptions import AccessRefused
from kombu import Connection

from shared.messaging import topology
from shared.messaging.topology import exchange_to
from shared.runtime import serve
from shared.settings import ROLES, Settings
from tests.integration.conftest import running
from tests.support import consumer_count, isolated_settings, queue_depth, queue_messages, unique, wait_for


@pytest.fixture
def settings() -> Iterator[Settings]:
    with isolated_settings() as settings:
        missing = [role for role in ROLES if getattr(settings, f"amqp_url_{role}") is None]
        if missing:
            pytest.skip(f"no broker users of their own for {', '.join(missing)}: run `make services`")
        yield settings


def _as(settings: Settings, role: str, act: Callable[[Any], Any]) -> Any:
    """`act` on a channel of `role`'s own connection, the broker's answer awaited."""
    with Connection(settings.amqp_url_of(role)) as connection:
        channel = connection.channel()
        channel.confirm_select()
        result = act(channel)
        channel.basic_qos(0, 1, False)  # a round trip: a refusal closes the channel before it answers
        return result


def _publish(exchange: str, routing_key: str, body: bytes = b"{}") -> Callable[[Any], None]:
    return lambda channel: channel.basic_publish(
        amqp.Message(body), exchange=exchange, routing_key=routing_key
    )


def _refused(settings: Settings, role: str, act: Callable[[Any], Any]) -> str:
    with pytest.raises(AccessRefused) as refused:
        _as(settings, role, act)
    return str(refused.value)


def test_upstream_may_submit_orders_and_requests_and_nothing_else(settings: Settings) -> None:
    submission = json.dumps({"order_id": unique("o")}).encode()
    _as(settings, "upstream", _publish(topology.INTAKE_EXCHANGE, topology.INTAKE_ROUTING_KEY, submission))
    _as(settings, "upstream", _publish(topology.INTAKE_EXCHANGE, "order.cancel"))
    wait_for(lambda: queue_depth(settings.amqp_url, topology.ORDER_INTAKE_QUEUE) == 1, what="the order")

    # No forged events, no saga commands (a refund), by any way in.
    assert "orderflow.events" in _refused(
        settings, "upstream", _publish(topology.EVENTS_EXCHANGE, "order.confirmed")
    )
    refund = exchange_to(topology.PAYMENT_QUEUE)
    assert refund in _refused(settings, "upstream", _publish(refund, topology.PAYMENT_QUEUE))
    assert "amq.default" in _refused(settings, "upstream", _publish("", topology.PAYMENT_QUEUE))
    delayed = exchange_to(topology.PAYMENT_QUEUE, settings.max_backoff_ms)
    assert delayed in _refused(settings, "upstream", _publish(delayed, topology.PAYMENT_QUEUE))
    # Nor another routing key on the intake than an order's or a request's.
    assert "stock.low" in _refused(settings, "upstream", _publish(topology.INTAKE_EXCHANGE, "stock.low"))
    # Nor read what the order worker is sent.
    assert topology.ORDER_INTAKE_QUEUE in _refused(
        settings, "upstream", lambda channel: channel.basic_get(topology.ORDER_INTAKE_QUEUE)
    )
    assert queue_depth(settings.amqp_url, topology.PAYMENT_QUEUE) == 0


def test_a_subscriber_reads_events_through_queues_of_its_own_only(settings: Settings) -> None:
    own = f"subscriber.{unique('audit')}"

    def subscribe(channel: Any) -> None:
        channel.queue_declare(own, durable=True, auto_delete=False)
        channel.queue_bind(own, topology.EVENTS_EXCHANGE, "order.#")

    _as(settings, "subscriber", subscribe)
    _as(settings, "order", _publish(topology.EVENTS_EXCHANGE, "order.confirmed"))
    wait_for(lambda: _as(settings, "subscriber", lambda channel: channel.basic_get(own)), what="the event")

    for queue in (topology.NOTIFICATION_EVENTS_QUEUE, topology.PAYMENT_QUEUE, topology.ORDER_INTAKE_QUEUE):
        assert queue in _refused(settings, "subscriber", lambda channel, q=queue: channel.basic_get(q))
    # Nor bind a queue of its own to the intake, to read orders as they are submitted.
    assert topology.INTAKE_EXCHANGE in _refused(
        settings, "subscriber", lambda channel: channel.queue_bind(own, topology.INTAKE_EXCHANGE, "#")
    )
    assert "orderflow.events" in _refused(
        settings, "subscriber", _publish(topology.EVENTS_EXCHANGE, "order.confirmed")
    )


def test_only_the_order_worker_publishes_order_events_and_inventory_only_stock_alerts(
    settings: Settings,
) -> None:
    _as(settings, "order", _publish(topology.EVENTS_EXCHANGE, "order.confirmed"))
    _as(settings, "order", _publish(topology.EVENTS_EXCHANGE, "support.opened"))
    _as(settings, "inventory", _publish(topology.EVENTS_EXCHANGE, "stock.low"))

    assert "order.confirmed" in _refused(
        settings, "inventory", _publish(topology.EVENTS_EXCHANGE, "order.confirmed")
    )
    assert "stock.low" in _refused(settings, "order", _publish(topology.EVENTS_EXCHANGE, "stock.low"))
    for role in ("payment", "notification", "reporting"):
        assert "orderflow.events" in _refused(
            settings, role, _publish(topology.EVENTS_EXCHANGE, "order.refunded")
        )


def test_each_worker_writes_only_where_it_sends(settings: Settings) -> None:
    to = {queue: exchange_to(queue) for queue in (topology.ORDER_SAGA_QUEUE, topology.PAYMENT_QUEUE)}
    stock = exchange_to(topology.stock_queue(0))
    # Replies go to the order worker; commands from it alone.
    _as(settings, "payment", _publish(to[topology.ORDER_SAGA_QUEUE], topology.ORDER_SAGA_QUEUE))
    _as(settings, "inventory", _publish(to[topology.ORDER_SAGA_QUEUE], topology.ORDER_SAGA_QUEUE))
    _as(settings, "order", _publish(to[topology.PAYMENT_QUEUE], topology.PAYMENT_QUEUE))

    assert stock in _refused(settings, "payment", _publish(stock, topology.stock_queue(0)))
    assert to[topology.PAYMENT_QUEUE] in _refused(
        settings, "inventory", _publish(to[topology.PAYMENT_QUEUE], topology.PAYMENT_QUEUE)
    )
    for role in ("notification", "reporting"):
        assert to[topology.PAYMENT_QUEUE] in _refused(
            settings, role, _publish(to[topology.PAYMENT_QUEUE], topology.PAYMENT_QUEUE)
        )
    # Through a pool's exchange, only to the queues the saga sends to: not the intake, the requests
    # (an order or a cancel that did not come from upstream) or the dead letters.
    order = exchange_to(topology.ORDER_SAGA_QUEUE)
    for role, queue in (
        ("payment", topology.ORDER_INTAKE_QUEUE),
        ("inventory", topology.ORDER_REQUESTS_QUEUE),
        ("payment", topology.dead_letter_queue(topology.ORDER_SAGA_QUEUE)),
    ):
        assert queue in _refused(settings, role, _publish(order, queue))
    dead = topology.dead_letter_queue(topology.PAYMENT_QUEUE)
    assert dead in _refused(settings, "order", _publish(to[topology.PAYMENT_QUEUE], dead))
    assert queue_depth(settings.amqp_url, topology.ORDER_INTAKE_QUEUE) == 0
    # A worker reads its own queues only.
    assert topology.PAYMENT_QUEUE in _refused(
        settings, "order", lambda channel: channel.basic_get(topology.PAYMENT_QUEUE)
    )


def test_a_worker_may_not_configure_another_pools_queues(settings: Settings) -> None:
    arguments = topology.Topology().queue_arguments(topology.PAYMENT_QUEUE)

    def redeclare(channel: Any) -> None:
        channel.queue_declare(topology.PAYMENT_QUEUE, durable=True, auto_delete=False, arguments=arguments)

    _as(settings, "payment", redeclare)
    assert topology.PAYMENT_QUEUE in _refused(settings, "order", redeclare)
    assert topology.PAYMENT_QUEUE in _refused(
        settings, "order", lambda channel: channel.queue_delete(topology.PAYMENT_QUEUE)
    )
    assert topology.PAYMENT_QUEUE in _refused(
        settings, "upstream", lambda channel: channel.queue_purge(topology.PAYMENT_QUEUE)
    )


def test_a_pool_that_binds_to_what_another_owns_waits_for_it() -> None:
    with isolated_settings(declared=False) as settings:
        if settings.amqp_url_notification is None:
            pytest.skip("no broker users of their own: run `make services`")
        # Nothing of Orderflow's is declared: the notification pool may not declare the events
        # exchange it binds to, so it waits, retrying, until the order pool (its owner) has.
        app = importlib.import_module("services.notification.bootstrap").bootstrap(settings)
        stop = threading.Event()
        thread = threading.Thread(target=serve, args=(app, 1, stop), daemon=True)
        thread.start()
        try:
            with running("order", settings, [topology.ORDER_INTAKE_QUEUE]):
                wait_for(
                    lambda: consumer_count(settings.amqp_url, topology.NOTIFICATION_EVENTS_QUEUE),
                    timeout=30,
                    what="the notification pool consuming once the events exchange exists",
                )
        finally:
            stop.set()
            thread.join(60)


def test_a_quorum_queue_dead_letters_a_poison_message_after_its_delivery_limit() -> None:
    """A message whose consumer dies with it again and again (here: returns it unsettled) goes to its
    queue's dead-letter queue once delivered more than ORDERFLOW_DELIVERY_LIMIT times."""
    with isolated_settings(queue_type="quorum", delivery_limit=2) as settings:
        queue, dead = topology.PAYMENT_QUEUE, topology.dead_letter_queue(topology.PAYMENT_QUEUE)
        _as(settings, "order", _publish(exchange_to(queue), queue, b'{"poison": true}'))
        with Connection(settings.amqp_url_of("payment")) as connection, connection.channel() as channel:
            deliveries = 0
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                deliveries += 1
                channel.basic_reject(message.delivery_tag, requeue=True)
                assert deliveries <= 3, "delivered past its limit"
        assert deliveries == 3  # the first delivery and two redeliveries, then dead-lettered
        (letter,) = wait_for(lambda: queue_messages(settings.amqp_url, dead), what="the dead letter")
        assert letter[0] == b'{"poison": true}'
