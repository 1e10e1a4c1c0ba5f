"""Inventory use cases. Every change to stock goes through here, one at a time.

Correctness does not rest on the store's conditional updates (the FerretDB stand-in evaluates
them as a read and a separate write): all stock commands arrive on one single-active-consumer
queue, so one inventory process decides at a time, and inside it a lock serialises its threads.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from services.inventory.domain import (
    Product,
    Reservation,
    ReservationStatus,
    crossed_low_threshold,
    decide_reservation,
    merge_lines,
)
from services.inventory.store import ProductRepository, ReservationRepository
from shared import metrics
from shared.contracts import saga
from shared.contracts.base import derive_id
from shared.contracts.events import LowStock
from shared.errors import PermanentError
from shared.messaging.ports import CommandSender, EventSink

log = logging.getLogger(__name__)


class UnknownSku(PermanentError):
    pass


class InventoryHandlers:
    def __init__(
        self,
        products: ProductRepository,
        reservations: ReservationRepository,
        replies: CommandSender,
        events: EventSink,
    ) -> None:
        self.products = products
        self.reservations = reservations
        self.replies = replies
        self.events = events
        self._one_at_a_time = threading.Lock()

    def reserve_stock(self, command: saga.ReserveStock) -> None:
        """Hold every line of the order, or none; reply either way (again, on a redelivery)."""
        with self._one_at_a_time:
            reservation = self.reservations.get(command.order_id)
            if reservation is None or reservation.status is ReservationStatus.RESERVING:
                reservation = self._reserve(command)
            elif reservation.status is ReservationStatus.RELEASED:
                log.warning("order %s was released before it was reserved; not reserving", command.order_id)
                return
        self.replies.send(_reply(reservation))

    def _reserve(self, command: saga.ReserveStock) -> Reservation:
        wanted = merge_lines([(line.sku, line.quantity) for line in command.lines])
        products = self.products.get_many(list(wanted))
        reservation = decide_reservation(command.order_id, wanted, products)
        alerts: list[LowStock] = []
        if reservation.status is ReservationStatus.RESERVED:
            # Say which SKUs will be held before holding any, so that a release arriving after a
            # crash half-way (a timeout, say) finds every hold to give back.
            self.reservations.save(replace(reservation, status=ReservationStatus.RESERVING))
            for sku, quantity in wanted.items():
                product = products[sku]
                before = product.available
                product.hold(command.order_id, quantity)
                self.products.save(product)
                if crossed_low_threshold(before, product):
                    alerts.append(_low_stock(product, cause=command.order_id))
        else:
            # A redelivery after a crash mid-way may find some lines already held: undo them.
            for product in products.values():
                if product.release(command.order_id):
                    self.products.save(product)
            log.info("order %s: %s %s", command.order_id, reservation.reason, ", ".join(reservation.skus))
        self.reservations.save(reservation)
        for alert in alerts:
            self.events.publish(alert)
            metrics.LOW_STOCK_ALERTS.inc()
        return reservation

    def release_stock(self, command: saga.ReleaseStock) -> None:
        """Compensation: return the order's held units. Releasing twice, or nothing, is fine."""
        with self._one_at_a_time:
            reservation = self.reservations.get(command.order_id)
            if reservation is not None and reservation.status is ReservationStatus.COMMITTED:
                raise PermanentError(f"order {command.order_id} is committed; its stock is sold")
            for product in self._holding(reservation):
                product.release(command.order_id)
                self.products.save(product)
            self.reservations.save(
                Reservation(
                    command.order_id,
                    ReservationStatus.RELEASED,
                    lines=reservation.lines if reservation else [],
                )
            )
        self.replies.send(
            saga.StockReleased(
                message_id=derive_id(command.order_id, "stock-released"), order_id=command.order_id
            )
        )

    def commit_stock(self, command: saga.CommitStock) -> None:
        """The order is confirmed: its held units become sold."""
        with self._one_at_a_time:
            reservation = self.reservations.get(command.order_id)
            if reservation is None or reservation.status not in (
                ReservationStatus.RESERVED,
                ReservationStatus.COMMITTED,
            ):
                raise PermanentError(f"order {command.order_id} has no reservation to commit")
            for product in self._holding(reservation):
                product.commit(command.order_id)
                self.products.save(product)
            reservation.status = ReservationStatus.COMMITTED
            self.reservations.save(reservation)

    def set_stock(self, command: saga.SetStock) -> None:
        with self._one_at_a_time:
            product = self.products.get(command.sku) or Product(command.sku, command.name, command.price)
            if command.message_id in product.recent_operations:
                return
            before = product.available
            product.set(
                name=command.name,
                price=command.price,
                available=command.quantity,
                low_stock_threshold=command.low_stock_threshold,
                operation_id=command.message_id,
            )
            self.products.save(product)
            log.info("%s set: %d available at %d", product.sku, product.available, product.price)
        if crossed_low_threshold(before, product):
            self.events.publish(_low_stock(product, cause=command.message_id))
            metrics.LOW_STOCK_ALERTS.inc()

    def restock(self, command: saga.Restock) -> None:
        with self._one_at_a_time:
            product = self.products.get(command.sku)
            if product is None:
                raise UnknownSku(f"cannot restock unknown SKU {command.sku}")
            if product.restock(command.quantity, command.message_id):
                self.products.save(product)
                log.info("%s restocked by %d: %d available", product.sku, command.quantity, product.available)

    def export_stock_levels(self) -> None:
        """Stock per SKU for the metrics; every inventory process does it, standing by or not."""
        for product in self.products.all():
            metrics.STOCK_AVAILABLE.labels(product.sku).set(product.available)
            metrics.STOCK_RESERVED.labels(product.sku).set(product.reserved)
            metrics.STOCK_LOW.labels(product.sku).set(1 if product.is_low else 0)

    def _holding(self, reservation: Reservation | None) -> list[Product]:
        if reservation is None:
            return []
        products = self.products.get_many([line.sku for line in reservation.lines])
        return [product for product in products.values() if product.held_for(reservation.order_id)]


def _reply(reservation: Reservation) -> saga.StockReserved | saga.StockReservationFailed:
    order_id = reservation.order_id
    if reservation.status is ReservationStatus.REJECTED:
        assert reservation.reason is not None
        return saga.StockReservationFailed(
            message_id=derive_id(order_id, "stock-reservation-failed"),
            order_id=order_id,
            reason=reservation.reason.value,
            skus=reservation.skus,
        )
    return saga.StockReserved(
        message_id=derive_id(order_id, "stock-reserved"),
        order_id=order_id,
        lines=[saga.PricedLine(**vars(line)) for line in reservation.lines],
        total=reservation.total,
    )


def _low_stock(product: Product, cause: str) -> LowStock:
    return LowStock(
        event_id=derive_id(product.sku, "low-stock", cause),
        sku=product.sku,
        name=product.name,
        available=product.available,
        threshold=product.low_stock_threshold,
    )
