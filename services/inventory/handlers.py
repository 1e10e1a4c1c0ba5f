"""Inventory use cases. Every change to stock goes through here, one batch at a time per partition.

Correctness does not rest on the store's conditional updates (the FerretDB stand-in evaluates
them as a read and a separate write): each partition's commands arrive on one single-active-
consumer queue, so one inventory process decides for a partition at a time, and inside it a lock
per partition orders its threads. A batch reads the reservations and products it concerns once,
decides each command in turn against them, and writes each product it changed once.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

from services.inventory.domain import (
    Product,
    Reservation,
    ReservationStatus,
    crossed_low_threshold,
    decide_reservation,
)
from services.inventory.store import CachedProducts, ProductRepository, ReservationRepository
from shared import metrics
from shared.contracts import saga
from shared.contracts.base import derive_id, new_id
from shared.contracts.events import LowStock
from shared.contracts.intake import units_per_sku
from shared.logs import message_context
from shared.messaging.ports import Batch, CommandSender, EventSink

log = logging.getLogger(__name__)

C = TypeVar(
    "C", saga.ReserveStock, saga.ReleaseStock, saga.CommitStock, saga.ReturnStock, saga.SetStock, saga.Restock
)


class InventoryHandlers:
    def __init__(
        self,
        products: ProductRepository | CachedProducts,
        reservations: ReservationRepository,
        replies: CommandSender,
        events: EventSink,
        partition_of: Callable[[str], int] = lambda sku: 0,
    ) -> None:
        self.products = products
        self.reservations = reservations
        self.replies = replies
        self.events = events
        self.partition_of = partition_of
        self._locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)

    def reserve_stock(self, batch: Batch[saga.ReserveStock]) -> None:
        """Hold every line of each order (or change), or none; reply either way (again, on a
        redelivery). Units are held under the command's hold id: the order's, or a change's."""
        commands = self._owned(batch, lambda command: [line.sku for line in command.lines])
        with self._partition(commands) as (partition, changed):
            decided = self.reservations.get_many(partition, (_hold(command) for command in commands))
            products = self.products.get_many(line.sku for command in commands for line in command.lines)
            new: list[Reservation] = []
            for command in commands:
                hold = _hold(command)
                with message_context(message_id=command.message_id, order_id=command.order_id):
                    reservation = decided.get(hold)
                    if reservation is None or reservation.status is ReservationStatus.RESERVING:
                        reservation = self._reserve(command, products, changed)
                        decided[hold] = reservation
                        new.append(reservation)
                    elif reservation.status is ReservationStatus.RELEASED:
                        log.warning("%s was released before it was reserved; not reserving", hold)
                        # A writer that overlapped the release may have held units for it: undo them.
                        for line in command.lines:
                            if line.sku in products and products[line.sku].release(hold):
                                changed[line.sku] = products[line.sku]
                        continue
                    self.replies.send(_reply(reservation, command))
            # Holds first: a reservation on record means its units are held.
            self.products.save(changed.values())
            self.reservations.add(partition, new)

    def _reserve(
        self, command: saga.ReserveStock, products: dict[str, Product], changed: dict[str, Product]
    ) -> Reservation:
        wanted = units_per_sku((line.sku, line.quantity) for line in command.lines)
        hold = _hold(command)
        reservation = decide_reservation(hold, wanted, products, order_id=command.order_id)
        if reservation.status is ReservationStatus.RESERVED:
            for sku, quantity in wanted.items():
                product = products[sku]
                before = product.available
                product.hold(hold, quantity)
                changed[sku] = product
                if crossed_low_threshold(before, product):
                    self._alert(product, cause=hold)
        else:
            # A redelivery after a crash mid-way may find some lines already held: undo them.
            for sku in wanted:
                if sku in products and products[sku].release(hold):
                    changed[sku] = products[sku]
            log.info("%s: %s %s", hold, reservation.reason, ", ".join(reservation.skus))
        return reservation

    def release_stock(self, batch: Batch[saga.ReleaseStock]) -> None:
        """Compensation: give back the units each order holds. Releasing twice, or nothing, is fine.
        Units already sold for it (a store restored from a backup taken while the order was being
        confirmed: the order, restored pending, gives up) come back to available stock too."""
        commands = self._owned(batch, lambda command: command.skus)
        with self._partition(commands) as (partition, changed):
            decided = self.reservations.get_many(partition, (_hold(command) for command in commands))
            skus = {sku for command in commands for sku in self._skus_held(command, decided)}
            products = self.products.get_many(skus)
            released = []
            for command in commands:
                hold = _hold(command)
                for sku in self._skus_held(command, decided):
                    if sku in products and products[sku].release(hold):
                        changed[sku] = products[sku]
                earlier = decided.get(hold)
                if earlier is not None and earlier.status is ReservationStatus.COMMITTED:
                    self._take_back_sold(earlier, products, changed, partition)
                released.append(
                    Reservation(
                        hold,
                        ReservationStatus.RELEASED,
                        lines=earlier.lines if earlier else [],
                        order=command.order_id,
                    )
                )
                self.replies.send(
                    saga.StockReleased(
                        message_id=derive_id(hold, "stock-released", str(command.partition)),
                        order_id=command.order_id,
                        partition=command.partition,
                        hold=command.hold,
                    )
                )
            self.products.save(changed.values())
            self.reservations.replace(partition, released)

    def _take_back_sold(
        self,
        reservation: Reservation,
        products: dict[str, Product],
        changed: dict[str, Product],
        partition: int,
    ) -> None:
        log.warning("%s is released after its units were sold: taking them back", reservation.order_id)
        # What a cancel, an amendment or a return took back already does not come back twice.
        returned = self.reservations.returned_units(partition, reservation.order_id)
        operation = derive_id(reservation.order_id, "released-after-commit", str(partition))
        for line in reservation.lines:
            product = products.get(line.sku)
            quantity = line.quantity - returned.get(line.sku, 0)
            if product is not None and quantity > 0 and product.take_back(quantity, operation):
                changed[line.sku] = product

    def commit_stock(self, batch: Batch[saga.CommitStock]) -> None:
        """The orders are confirmed: the units they hold are sold (committing twice changes
        nothing), and their reservations are done with."""
        commands = self._owned(batch, lambda command: command.skus)
        with self._partition(commands) as (partition, changed):
            products = self.products.get_many(sku for command in commands for sku in command.skus)
            for command in commands:
                for sku in command.skus:
                    if sku in products and products[sku].commit(_hold(command)):
                        changed[sku] = products[sku]
            self.products.save(changed.values())
            self.reservations.mark_committed(partition, (_hold(command) for command in commands))

    def return_stock(self, batch: Batch[saga.ReturnStock]) -> None:
        """Units sold for orders come back to available stock (a cancel after confirmation, an
        amendment, a return), once per command (its id is recorded for good); reply either way.
        Units the order still holds (its commit has not arrived) are sold first, so that the
        commit, when it comes, finds nothing left to do."""
        commands = self._owned(batch, lambda command: [line.sku for line in command.lines])
        with self._partition(commands) as (partition, changed):
            done = self.reservations.returned(partition, (command.message_id for command in commands))
            products = self.products.get_many(line.sku for command in commands for line in command.lines)
            for command in commands:
                if command.message_id in done:
                    continue
                for line in command.lines:
                    product = products.get(line.sku)
                    if product is None:
                        log.warning(
                            "%s returned for %s is no longer in the catalog", line.sku, command.order_id
                        )
                        continue
                    product.commit(command.order_id)
                    if product.take_back(line.quantity, command.message_id):
                        changed[line.sku] = product
                        log.info("%s: %d back from %s", line.sku, line.quantity, command.order_id)
            self.products.save(changed.values())
            self.reservations.record_returns(
                partition,
                (
                    (
                        command.message_id,
                        command.order_id,
                        units_per_sku((line.sku, line.quantity) for line in command.lines),
                    )
                    for command in commands
                ),
            )
            for command in commands:
                self.replies.send(
                    saga.StockReturned(
                        message_id=derive_id(command.message_id, "stock-returned"),
                        order_id=command.order_id,
                        partition=command.partition,
                        returned=command.message_id,
                    )
                )

    def ask_about_held_stock(self, before: datetime) -> int:
        """Reservations made before `before` that still hold units: their order's commit or
        release never arrived (lost, or dead-lettered). Ask each order what to do; it answers
        with the command its state implies. Returns how many are overdue."""
        held = self.reservations.held_since(before)
        for order_id, partition, hold in held:
            self.replies.send(
                saga.StockStillHeld(message_id=new_id(), order_id=order_id, partition=partition, hold=hold)
            )
        if held:
            log.warning("%d reservation(s) still hold units past their time; asking their orders", len(held))
        metrics.STOCK_HOLDS_OVERDUE.set(len(held))
        return len(held)

    def set_stock(self, batch: Batch[saga.SetStock]) -> None:
        commands = self._owned(batch, lambda command: [command.sku])
        with self._partition(commands) as (_, changed):
            products = self.products.get_many(command.sku for command in commands)
            for command in commands:
                product = products.get(command.sku) or Product(command.sku, command.sku, command.price)
                if command.message_id in product.recent_operations:
                    continue
                before = product.available
                product.set(
                    price=command.price,
                    available=command.quantity,
                    operation_id=command.message_id,
                    name=command.name,
                    low_stock_threshold=command.low_stock_threshold,
                )
                products[command.sku] = changed[command.sku] = product
                log.info("%s set: %d available at %d", product.sku, product.available, product.price)
                if crossed_low_threshold(before, product):
                    self._alert(product, cause=command.message_id)
            self.products.save(changed.values())

    def restock(self, batch: Batch[saga.Restock]) -> None:
        commands = self._owned(batch, lambda command: [command.sku])
        with self._partition(commands) as (_, changed):
            products = self.products.get_many(command.sku for command in commands)
            for command in commands:
                product = products.get(command.sku)
                if product is None:
                    batch.reject(command, f"cannot restock unknown SKU {command.sku}")
                elif product.restock(command.quantity, command.message_id):
                    changed[command.sku] = product
                    log.info(
                        "%s restocked by %d: %d available", product.sku, command.quantity, product.available
                    )
            self.products.save(changed.values())

    def export_stock_levels(self) -> None:
        """Stock per SKU for the metrics; every inventory process does it, standing by or not."""
        for product in self.products.all():
            metrics.STOCK_AVAILABLE.labels(product.sku).set(product.available)
            metrics.STOCK_RESERVED.labels(product.sku).set(product.reserved)
            metrics.STOCK_LOW.labels(product.sku).set(1 if product.is_low else 0)

    # Internals --------------------------------------------------------------------------------

    def _owned(self, batch: Batch[C], skus_of: Callable[[C], Iterable[str]]) -> list[C]:
        """The commands sent to the partition that owns their SKUs; the others are rejected: a
        worker with another ORDERFLOW_INVENTORY_PARTITIONS sent them, and deciding them here could
        oversell."""
        owned = []
        for command in batch:
            strangers = sorted(sku for sku in skus_of(command) if self.partition_of(sku) != command.partition)
            if strangers:
                batch.reject(
                    command,
                    f"{', '.join(strangers)} not in partition {command.partition}: every worker and the CLI "
                    "must have the same ORDERFLOW_INVENTORY_PARTITIONS",
                )
            else:
                owned.append(command)
        return owned

    @contextmanager
    def _partition(self, commands: Sequence[saga.StockCommand]) -> Iterator[tuple[int, dict[str, Product]]]:
        """One batch at a time per partition (a batch comes from one partition's queue); yields the
        partition, and the products the batch changes, by SKU."""
        partition = commands[0].partition if commands else 0
        with self._locks[partition]:
            yield partition, {}

    def _skus_held(self, command: saga.ReleaseStock, decided: dict[str, Reservation]) -> list[str]:
        """The SKUs the command names, and those its reservation says were held (older commands
        named none)."""
        reservation = decided.get(_hold(command))
        recorded = [line.sku for line in reservation.lines] if reservation else []
        return sorted({*command.skus, *recorded})

    def _alert(self, product: Product, cause: str) -> None:
        self.events.publish(
            LowStock(
                event_id=derive_id(product.sku, "low-stock", cause),
                sku=product.sku,
                name=product.name,
                available=product.available,
                threshold=product.low_stock_threshold,
            )
        )
        metrics.LOW_STOCK_ALERTS.inc()


def _hold(command: saga.ReserveStock | saga.ReleaseStock | saga.CommitStock) -> str:
    """Whose units a command is about: a change's hold, or the order's own."""
    return command.hold or command.order_id


def _reply(
    reservation: Reservation, command: saga.ReserveStock
) -> saga.StockReserved | saga.StockReservationFailed:
    hold, partition = reservation.order_id, command.partition
    if reservation.status is ReservationStatus.REJECTED:
        assert reservation.reason is not None
        return saga.StockReservationFailed(
            message_id=derive_id(hold, "stock-reservation-failed", str(partition)),
            order_id=command.order_id,
            partition=partition,
            reason=reservation.reason.value,
            skus=reservation.skus,
            hold=command.hold,
        )
    return saga.StockReserved(
        message_id=derive_id(hold, "stock-reserved", str(partition)),
        order_id=command.order_id,
        partition=partition,
        lines=[saga.PricedLine(**vars(line)) for line in reservation.lines],
        total=reservation.total,
        hold=command.hold,
    )
