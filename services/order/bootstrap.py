"""Wire the order worker: its database, the saga bus, the events publisher, the intake consumer."""

from __future__ import annotations

from datetime import timedelta

from services.order.actors import intake_consumer, register_actors
from services.order.handlers import OrderHandlers
from services.order.store import OrderRepository
from shared import store
from shared.messaging.exchanges import EventPublisher, connect
from shared.messaging.saga_bus import SagaBroker, SagaBus
from shared.runtime import WorkerApp
from shared.settings import Settings


def bootstrap(settings: Settings) -> WorkerApp:
    client = store.connect(settings)
    orders = OrderRepository(store.database(client, settings, "order"))
    broker = SagaBroker(settings)
    bus = SagaBus(broker)
    events = connect(settings.amqp_url)
    handlers = OrderHandlers(
        orders,
        bus,
        EventPublisher(events),
        currency=settings.currency,
        max_message_bytes=settings.max_message_bytes,
        step_timeout=timedelta(seconds=settings.step_timeout),
    )
    register_actors(bus, handlers)
    return WorkerApp(
        "order",
        settings,
        broker,
        consumers=[lambda: intake_consumer(settings, handlers)],
        # After a restart, say again what every pending saga waits for: nothing stays pending forever.
        on_start=[orders.ensure_indexes, handlers.resume_pending],
        periodic=[("saga deadlines", settings.sweep_interval, handlers.expire_overdue)],
        closers=[events.release, client.close],
    )
