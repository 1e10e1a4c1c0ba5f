"""Entry points of the inventory worker: stock commands from its partitions' single-active-consumer queues."""

from __future__ import annotations

from services.inventory.handlers import InventoryHandlers
from shared.contracts import saga
from shared.messaging.saga_bus import SagaBus


def register_actors(bus: SagaBus, handlers: InventoryHandlers) -> None:
    bus.handle(saga.ReserveStock, handlers.reserve_stock)
    bus.handle(saga.ReleaseStock, handlers.release_stock)
    bus.handle(saga.CommitStock, handlers.commit_stock)
    bus.handle(saga.ReturnStock, handlers.return_stock)
    bus.handle(saga.SetStock, handlers.set_stock)
    bus.handle(saga.Restock, handlers.restock)
