"""Wire the order worker: its database, its transport, the saga's actors, the intake consumer."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from services.order.actors import (
    intake_consumer,
    register_actors,
    register_customer_actors,
    register_support_actors,
    requests_consumer,
)
from services.order.customer_handlers import CustomerHandlers
from services.order.customers import CustomerBook
from services.order.handlers import OrderHandlers
from services.order.store import OrderRepository, RecentOrders
from services.order.support_handlers import SupportHandlers
from services.order.support_store import CaseRepository
from shared import store
from shared.messaging import topology
from shared.messaging.probe import RabbitQueueProbe
from shared.messaging.transport import Transport
from shared.runtime import WorkerApp
from shared.settings import Settings

TIMER_FLUSH_SECONDS = 1.0


def bootstrap(settings: Settings) -> WorkerApp:
    client = store.connect(settings, "order")
    partition_of = partial(topology.partition_of, partitions=settings.inventory_partitions)
    orders = RecentOrders(OrderRepository(store.database(client, settings, "order"), partition_of))
    customers = CustomerBook(store.database(client, settings, "order"))
    transport = Transport(settings, "order")
    probe = RabbitQueueProbe(transport.amqp_url, transport.tls)
    handlers = OrderHandlers(
        orders,
        transport.outbox,
        transport.outbox,
        probe,
        currency=settings.currency,
        step_timeout=transport.step_timeout,
        partition_of=partition_of,
        max_in_flight=settings.max_in_flight,
        compensation_grace=timedelta(seconds=settings.compensation_grace),
        complete_after=timedelta(days=settings.complete_after_days),
        customers=customers,
    )
    register_actors(transport.bus, handlers)
    register_customer_actors(transport.bus, CustomerHandlers(customers, orders, transport.outbox))
    # The support desk decides cases on the orders as stored, not on this process's recent copies.
    support_desk = SupportHandlers(
        CaseRepository(store.database(client, settings, "order")),
        orders.repository,
        transport.outbox,
        transport.outbox,
    )
    register_support_actors(transport.bus, support_desk)
    return WorkerApp(
        "order",
        settings,
        transport,
        saga_queues=[topology.ORDER_SAGA_QUEUE],
        consumers=[intake_consumer(transport, handlers), requests_consumer(transport, handlers)],
        on_start=[orders.ensure_indexes],
        periodic=[
            ("deadline timers", TIMER_FLUSH_SECONDS, transport.flushing(handlers.flush_timers)),
            # Timers arrive as messages; the sweep is the rare safety net under them.
            ("saga sweep", settings.sweep_interval, transport.flushing(handlers.sweep)),
            (
                "completing shipped orders",
                settings.complete_check_interval,
                transport.flushing(handlers.complete_shipped),
            ),
        ],
        # The timers of the last steps leave before the transport closes.
        closers=[transport.flushing(handlers.flush_timers), probe.close, client.close],
    )
