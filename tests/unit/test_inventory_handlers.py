"""Inventory use cases with fakes: a crash half-way through a reservation loses no stock."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest

from services.inventory.domain import Product, Reservation, ReservationStatus
from services.inventory.handlers import InventoryHandlers
from services.inventory.store import DecidedElsewhere
from shared.contracts import saga
from shared.messaging.ports import Batch
from tests.unit.fakes import Recorder, batch


class Crash(Exception):
    pass


class FakeProducts:
    def __init__(self, *products: Product) -> None:
        self.products = {p.sku: p for p in products}
        self.crash_after_saves: int | None = None
        self.before_save: Callable[[], None] | None = None  # once, as another writer overlapping

    def get(self, sku: str) -> Product | None:
        return copy.deepcopy(self.products.get(sku))

    def get_many(self, skus: Iterable[str]) -> dict[str, Product]:
        return {sku: copy.deepcopy(self.products[sku]) for sku in skus if sku in self.products}

    def all(self) -> list[Product]:
        return [copy.deepcopy(p) for p in self.products.values()]

    def save(self, products: Iterable[Product]) -> None:
        """Product by product, as the store applies a bulk write: a crash can stop it half-way."""
        if self.before_save is not None:
            before, self.before_save = self.before_save, None
            before()
        for product in products:
            if self.crash_after_saves is not None:
                if self.crash_after_saves == 0:
                    raise Crash("the process died")
                self.crash_after_saves -= 1
            self.products[product.sku] = copy.deepcopy(product)


class FakeReservations:
    """Decisions per partition and order, as the repository keeps them."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[int, str], Reservation] = {}
        self.decided_at = datetime(2026, 1, 1, tzinfo=UTC)  # when every decision here was made
        self.returns: dict[tuple[int, str], tuple[str, dict[str, int]]] = {}

    def returned(self, partition: int, command_ids: Iterable[str]) -> set[str]:
        return {command_id for command_id in command_ids if (partition, command_id) in self.returns}

    def record_returns(self, partition: int, returns: Iterable[tuple[str, str, dict[str, int]]]) -> None:
        for command_id, order_id, units in returns:
            self.returns.setdefault((partition, command_id), (order_id, dict(units)))

    def returned_units(self, partition: int, order_id: str) -> dict[str, int]:
        units: dict[str, int] = {}
        for (p, _), (order, returned) in self.returns.items():
            if p == partition and order == order_id:
                for sku, quantity in returned.items():
                    units[sku] = units.get(sku, 0) + quantity
        return units

    @property
    def reservations(self) -> dict[str, Reservation]:
        """Partition 0's decisions, by order."""
        return {order_id: r for (partition, order_id), r in self.decisions.items() if partition == 0}

    def get_many(self, partition: int, order_ids: Iterable[str]) -> dict[str, Reservation]:
        return {
            i: copy.deepcopy(self.decisions[(partition, i)])
            for i in order_ids
            if (partition, i) in self.decisions
        }

    def add(self, partition: int, reservations: Iterable[Reservation]) -> None:
        for reservation in reservations:
            earlier = self.decisions.get((partition, reservation.order_id))
            if earlier is not None and earlier.status is not ReservationStatus.RESERVING:
                raise DecidedElsewhere(f"{reservation.order_id} was decided by another writer")
            self.decisions[(partition, reservation.order_id)] = copy.deepcopy(reservation)

    def mark_committed(self, partition: int, order_ids: Iterable[str]) -> None:
        for order_id in order_ids:
            decision = self.decisions.get((partition, order_id))
            if decision is not None and decision.status is ReservationStatus.RESERVED:
                decision.status = ReservationStatus.COMMITTED

    def held_since(self, before: datetime, limit: int = 1000) -> list[tuple[str, int, str | None]]:
        if self.decided_at > before:
            return []
        return [
            (r.owner, p, r.order_id if r.order else None)
            for (p, _), r in self.decisions.items()
            if r.status is ReservationStatus.RESERVED
        ]

    def replace(self, partition: int, reservations: Iterable[Reservation]) -> None:
        for reservation in reservations:
            self.decisions[(partition, reservation.order_id)] = copy.deepcopy(reservation)


def reserve(*lines: tuple[str, int], order_id: str = "o-1") -> Batch[saga.ReserveStock]:
    return batch(
        saga.ReserveStock(order_id=order_id, lines=[saga.StockLine(sku=s, quantity=q) for s, q in lines])
    )


def test_a_release_after_a_crash_half_way_through_a_reservation_returns_every_hold() -> None:
    products = FakeProducts(Product("A", "A", 100, available=5), Product("B", "B", 100, available=5))
    reservations, outbox = FakeReservations(), Recorder()
    handlers = InventoryHandlers(products, reservations, outbox, outbox)
    products.crash_after_saves = 1  # A is held, then the process dies before B
    with pytest.raises(Crash):
        handlers.reserve_stock(reserve(("A", 2), ("B", 3)))
    assert products.products["A"].reserved == 2
    products.crash_after_saves = None

    handlers.release_stock(batch(saga.ReleaseStock(order_id="o-1", skus=["A", "B"])))  # timed out meanwhile
    assert (products.products["A"].available, products.products["A"].reserved) == (5, 0)
    assert (products.products["B"].available, products.products["B"].reserved) == (5, 0)
    handlers.reserve_stock(reserve(("A", 2), ("B", 3)))  # the redelivered reservation comes last
    assert products.products["A"].reserved == 0, "a released order is never reserved again"
    assert reservations.reservations["o-1"].status is ReservationStatus.RELEASED


def test_a_redelivered_reservation_finishes_what_a_crash_left_half_done() -> None:
    products = FakeProducts(Product("A", "A", 100, available=5), Product("B", "B", 100, available=5))
    reservations, outbox = FakeReservations(), Recorder()
    handlers = InventoryHandlers(products, reservations, outbox, outbox)
    products.crash_after_saves = 1
    with pytest.raises(Crash):
        handlers.reserve_stock(reserve(("A", 2), ("B", 3)))
    outbox.clear()  # a handler that fails says nothing: the transport drops what it said
    products.crash_after_saves = None
    handlers.reserve_stock(reserve(("A", 2), ("B", 3)))
    assert (products.products["A"].reserved, products.products["B"].reserved) == (2, 3)
    assert reservations.reservations["o-1"].status is ReservationStatus.RESERVED
    assert [type(m).__name__ for m in outbox.sent] == ["StockReserved"]


def test_a_batch_of_orders_for_scarce_stock_never_oversells() -> None:
    products = FakeProducts(Product("A", "A", 100, available=3, low_stock_threshold=2))
    reservations, outbox = FakeReservations(), Recorder()
    handlers = InventoryHandlers(products, reservations, outbox, outbox)
    commands = batch(
        *(saga.ReserveStock(order_id=f"o-{n}", lines=[saga.StockLine(sku="A", quantity=1)]) for n in range(5))
    )
    handlers.reserve_stock(commands)
    replies = {m.order_id: type(m).__name__ for m in outbox.sent}
    assert sorted(replies.values()) == ["StockReservationFailed"] * 2 + ["StockReserved"] * 3
    assert (products.products["A"].available, products.products["A"].reserved) == (0, 3)
    assert [e.available for e in outbox.published] == [1], "one alert, when the threshold was crossed"
    reserved = [order_id for order_id, kind in replies.items() if kind == "StockReserved"]
    handlers.commit_stock(batch(*(saga.CommitStock(order_id=o, skus=["A"]) for o in reserved)))
    handlers.commit_stock(batch(*(saga.CommitStock(order_id=o, skus=["A"]) for o in reserved)))
    assert (products.products["A"].reserved, products.products["A"].sold) == (0, 3)


def test_a_command_for_a_sku_of_another_partition_is_rejected_not_decided() -> None:
    products = FakeProducts(Product("A", "A", 100, available=3))
    reservations, outbox = FakeReservations(), Recorder()
    handlers = InventoryHandlers(products, reservations, outbox, outbox, partition_of=lambda sku: 1)
    commands = reserve(("A", 1))
    handlers.reserve_stock(commands)
    ((_, reason),) = commands.rejected
    assert "ORDERFLOW_INVENTORY_PARTITIONS" in reason
    assert products.products["A"].reserved == 0 and outbox.sent == []


def test_each_partition_decides_for_its_own_lines_of_an_order() -> None:
    products = FakeProducts(Product("A", "A", 100, available=0), Product("B", "B", 100, available=5))
    reservations, outbox = FakeReservations(), Recorder()
    handlers = InventoryHandlers(
        products, reservations, outbox, outbox, partition_of=lambda sku: 0 if sku == "A" else 1
    )
    lines = {"A": saga.StockLine(sku="A", quantity=1), "B": saga.StockLine(sku="B", quantity=2)}
    handlers.reserve_stock(batch(saga.ReserveStock(order_id="o-1", partition=0, lines=[lines["A"]])))
    handlers.reserve_stock(batch(saga.ReserveStock(order_id="o-1", partition=1, lines=[lines["B"]])))
    refused, reserved = outbox.sent
    assert (type(refused).__name__, refused.partition) == ("StockReservationFailed", 0)
    assert (type(reserved).__name__, reserved.partition) == ("StockReserved", 1), "not partition 0's answer"
    assert products.products["B"].reserved == 2


def test_a_reservation_overlapping_a_release_by_another_writer_leaves_no_hold() -> None:
    products = FakeProducts(Product("A", "A", 100, available=5))
    reservations, outbox = FakeReservations(), Recorder()
    # After a failover two processes may write for a partition for a moment, each with its own locks.
    old, new = (InventoryHandlers(products, reservations, outbox, outbox) for _ in range(2))
    products.before_save = lambda: new.release_stock(batch(saga.ReleaseStock(order_id="o-1", skus=["A"])))
    with pytest.raises(DecidedElsewhere):
        old.reserve_stock(reserve(("A", 2)))  # its holds are written, its decision is fenced off
    old.reserve_stock(reserve(("A", 2)))  # the batch is retried
    assert (products.products["A"].available, products.products["A"].reserved) == (5, 0)
    assert reservations.reservations["o-1"].status is ReservationStatus.RELEASED


def test_a_hold_whose_commit_never_came_makes_inventory_ask_its_order() -> None:
    products = FakeProducts(Product("A", "A", 100, available=5))
    reservations, outbox = FakeReservations(), Recorder()
    handlers = InventoryHandlers(products, reservations, outbox, outbox)
    handlers.reserve_stock(reserve(("A", 2), order_id="o-1"))
    handlers.reserve_stock(reserve(("A", 1), order_id="o-2"))
    handlers.commit_stock(batch(saga.CommitStock(order_id="o-1", skus=["A"])))
    assert (
        products.products["A"].sold == 2
        and reservations.reservations["o-1"].status is ReservationStatus.COMMITTED
    )
    outbox.clear()
    assert handlers.ask_about_held_stock(before=reservations.decided_at + timedelta(seconds=1)) == 1
    assert [(type(m).__name__, m.order_id) for m in outbox.sent] == [("StockStillHeld", "o-2")]
    assert handlers.ask_about_held_stock(before=reservations.decided_at - timedelta(seconds=1)) == 0


def test_stock_set_without_a_name_or_threshold_keeps_an_existing_products_and_defaults_a_new_one() -> None:
    products = FakeProducts(Product("MUG", "Blue mug", 100, available=3, low_stock_threshold=5))
    outbox = Recorder()
    handlers = InventoryHandlers(products, FakeReservations(), outbox, outbox)
    handlers.set_stock(batch(saga.SetStock(sku="MUG", quantity=20, price=250)))
    handlers.set_stock(batch(saga.SetStock(sku="NEW", quantity=1, price=100)))
    mug, new = products.products["MUG"], products.products["NEW"]
    assert (mug.name, mug.low_stock_threshold, mug.price, mug.available) == ("Blue mug", 5, 250, 20)
    assert (new.name, new.low_stock_threshold) == ("NEW", 0)


def test_a_stock_set_from_an_earlier_release_still_decodes_and_sets_everything() -> None:
    earlier = {"sku": "MUG", "quantity": 2, "price": 100, "name": "Mug", "low_stock_threshold": 3}
    command = saga.SetStock.model_validate(earlier)
    assert (command.name, command.low_stock_threshold) == ("Mug", 3)
    products, outbox = FakeProducts(Product("MUG", "Old", 90)), Recorder()
    InventoryHandlers(products, FakeReservations(), outbox, outbox).set_stock(batch(command))
    assert (products.products["MUG"].name, products.products["MUG"].low_stock_threshold) == ("Mug", 3)


def test_units_sold_for_an_order_that_is_then_released_come_back_once() -> None:
    # A store restored from a backup taken while the order was being confirmed: the order comes
    # back pending, gives up, and releases units the live system had already sold.
    products = FakeProducts(Product("A", "A", 100, available=5))
    reservations, outbox = FakeReservations(), Recorder()
    handlers = InventoryHandlers(products, reservations, outbox, outbox)
    handlers.reserve_stock(reserve(("A", 2)))
    handlers.commit_stock(batch(saga.CommitStock(order_id="o-1", skus=["A"])))
    assert (products.products["A"].available, products.products["A"].sold) == (3, 2)
    release = saga.ReleaseStock(order_id="o-1", skus=["A"])
    handlers.release_stock(batch(release))
    handlers.release_stock(batch(release))  # redelivered
    assert (
        products.products["A"].available,
        products.products["A"].reserved,
        products.products["A"].sold,
    ) == (
        5,
        0,
        0,
    )
    assert [type(m).__name__ for m in outbox.sent][-2:] == ["StockReleased", "StockReleased"]


def test_units_taken_back_already_are_not_taken_back_again_when_the_sold_units_are_released() -> None:
    # Restored from a backup read while the order was confirmed and then amended down: the order,
    # restored pending, gives up; only what the amendment did not take back comes back now.
    products = FakeProducts(Product("A", "A", 100, available=5))
    reservations, outbox = FakeReservations(), Recorder()
    handlers = InventoryHandlers(products, reservations, outbox, outbox)
    handlers.reserve_stock(reserve(("A", 3)))
    handlers.commit_stock(batch(saga.CommitStock(order_id="o-1", skus=["A"])))
    handlers.return_stock(
        batch(saga.ReturnStock(order_id="o-1", lines=[saga.StockLine(sku="A", quantity=1)]))
    )
    assert (products.products["A"].available, products.products["A"].sold) == (3, 2)
    handlers.release_stock(batch(saga.ReleaseStock(order_id="o-1", skus=["A"])))
    assert (products.products["A"].available, products.products["A"].sold) == (5, 0)
