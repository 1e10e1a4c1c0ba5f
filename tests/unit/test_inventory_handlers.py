"""Inventory use cases with fakes: a crash half-way through a reservation loses no stock."""

from __future__ import annotations

import copy

import pytest

from services.inventory.domain import Product, Reservation, ReservationStatus
from services.inventory.handlers import InventoryHandlers
from shared.contracts import saga
from tests.unit.fakes import Outbox


class Crash(Exception):
    pass


class FakeProducts:
    def __init__(self, *products: Product) -> None:
        self.products = {p.sku: p for p in products}
        self.crash_after_saves: int | None = None

    def get(self, sku: str) -> Product | None:
        return copy.deepcopy(self.products.get(sku))

    def get_many(self, skus: list[str]) -> dict[str, Product]:
        return {sku: copy.deepcopy(self.products[sku]) for sku in skus if sku in self.products}

    def all(self) -> list[Product]:
        return [copy.deepcopy(p) for p in self.products.values()]

    def save(self, product: Product) -> None:
        if self.crash_after_saves is not None:
            if self.crash_after_saves == 0:
                raise Crash("the process died")
            self.crash_after_saves -= 1
        self.products[product.sku] = copy.deepcopy(product)


class FakeReservations:
    def __init__(self) -> None:
        self.reservations: dict[str, Reservation] = {}

    def get(self, order_id: str) -> Reservation | None:
        return copy.deepcopy(self.reservations.get(order_id))

    def save(self, reservation: Reservation) -> None:
        self.reservations[reservation.order_id] = copy.deepcopy(reservation)


def reserve(*lines: tuple[str, int]) -> saga.ReserveStock:
    return saga.ReserveStock(order_id="o-1", lines=[saga.StockLine(sku=s, quantity=q) for s, q in lines])


def test_a_release_after_a_crash_half_way_through_a_reservation_returns_every_hold() -> None:
    products = FakeProducts(Product("A", "A", 100, available=5), Product("B", "B", 100, available=5))
    reservations, outbox = FakeReservations(), Outbox()
    handlers = InventoryHandlers(products, reservations, outbox, outbox)
    products.crash_after_saves = 1  # A is held, then the process dies before B
    with pytest.raises(Crash):
        handlers.reserve_stock(reserve(("A", 2), ("B", 3)))
    assert products.products["A"].reserved == 2
    products.crash_after_saves = None

    handlers.release_stock(saga.ReleaseStock(order_id="o-1"))  # the saga timed out meanwhile
    assert (products.products["A"].available, products.products["A"].reserved) == (5, 0)
    assert (products.products["B"].available, products.products["B"].reserved) == (5, 0)
    handlers.reserve_stock(reserve(("A", 2), ("B", 3)))  # the redelivered reservation comes last
    assert products.products["A"].reserved == 0, "a released order is never reserved again"
    assert reservations.reservations["o-1"].status is ReservationStatus.RELEASED


def test_a_redelivered_reservation_finishes_what_a_crash_left_half_done() -> None:
    products = FakeProducts(Product("A", "A", 100, available=5), Product("B", "B", 100, available=5))
    reservations, outbox = FakeReservations(), Outbox()
    handlers = InventoryHandlers(products, reservations, outbox, outbox)
    products.crash_after_saves = 1
    with pytest.raises(Crash):
        handlers.reserve_stock(reserve(("A", 2), ("B", 3)))
    products.crash_after_saves = None
    handlers.reserve_stock(reserve(("A", 2), ("B", 3)))
    assert (products.products["A"].reserved, products.products["B"].reserved) == (2, 3)
    assert reservations.reservations["o-1"].status is ReservationStatus.RESERVED
    assert [type(m).__name__ for m in outbox.sent] == ["StockReserved"]
