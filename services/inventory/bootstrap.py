"""Wire the inventory worker: its database, its transport, the actors of its partitions."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from services.inventory.actors import register_actors
from services.inventory.handlers import InventoryHandlers
from services.inventory.store import CachedProducts, ProductRepository, ReservationRepository
from shared import store
from shared.contracts.base import utcnow
from shared.messaging import topology
from shared.messaging.transport import Transport
from shared.runtime import WorkerApp
from shared.settings import Settings

STOCK_LEVELS_INTERVAL_SECONDS = 5.0


def bootstrap(settings: Settings) -> WorkerApp:
    client = store.connect(settings, "inventory")
    db = store.database(client, settings, "inventory")
    transport = Transport(settings, "inventory")
    handlers = InventoryHandlers(
        CachedProducts(ProductRepository(db)),
        ReservationRepository(db),
        transport.outbox,
        transport.outbox,
        partition_of=partial(topology.partition_of, partitions=settings.inventory_partitions),
    )
    register_actors(transport.bus, handlers)
    partitions = transport.topology.stock_queues
    transport.bus.consume(partitions)
    return WorkerApp(
        "inventory",
        settings,
        transport,
        saga_queues=partitions,
        partitioned=True,
        periodic=[
            ("stock levels", STOCK_LEVELS_INTERVAL_SECONDS, handlers.export_stock_levels),
            # A hold whose commit or release never came: a scan, rare by design.
            (
                "held stock",
                settings.sweep_interval,
                transport.flushing(
                    lambda: handlers.ask_about_held_stock(
                        utcnow() - timedelta(seconds=settings.compensation_grace)
                    )
                ),
            ),
        ],
        closers=[client.close],
    )
