"""Wire the inventory worker: its database, the saga bus, the events publisher."""

from __future__ import annotations

from services.inventory.actors import register_actors
from services.inventory.handlers import InventoryHandlers
from services.inventory.store import ProductRepository, ReservationRepository
from shared import store
from shared.messaging.exchanges import EventPublisher, connect
from shared.messaging.saga_bus import SagaBroker, SagaBus
from shared.runtime import WorkerApp
from shared.settings import Settings

STOCK_LEVELS_INTERVAL_SECONDS = 5.0


def bootstrap(settings: Settings) -> WorkerApp:
    client = store.connect(settings)
    db = store.database(client, settings, "inventory")
    broker = SagaBroker(settings)
    bus = SagaBus(broker)
    events = connect(settings.amqp_url)
    handlers = InventoryHandlers(
        ProductRepository(db), ReservationRepository(db), bus, EventPublisher(events)
    )
    register_actors(bus, handlers)
    return WorkerApp(
        "inventory",
        settings,
        broker,
        periodic=[("stock levels", STOCK_LEVELS_INTERVAL_SECONDS, handlers.export_stock_levels)],
        closers=[events.release, client.close],
    )
