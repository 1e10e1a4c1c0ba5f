"""Stock rules: all or none, idempotent holds, release, commit, restock once, low-stock crossing."""

import pytest

from services.inventory.domain import (
    Product,
    RejectReason,
    ReservationStatus,
    StockError,
    crossed_low_threshold,
    decide_reservation,
)
from shared.contracts.intake import units_per_sku


def product(sku: str, available: int, price: int = 100, threshold: int = 0) -> Product:
    return Product(sku, sku, price, available=available, low_stock_threshold=threshold)


def test_all_lines_available_are_priced_from_the_catalog() -> None:
    products = {"A": product("A", 5, price=250), "B": product("B", 1, price=100)}
    decision = decide_reservation("o1", {"A": 2, "B": 1}, products)
    assert decision.status is ReservationStatus.RESERVED
    assert [(line.sku, line.unit_price, line.line_total) for line in decision.lines] == [
        ("A", 250, 500),
        ("B", 100, 100),
    ]
    assert decision.total == 600


def test_one_short_line_rejects_the_whole_order() -> None:
    decision = decide_reservation("o1", {"A": 2, "B": 2}, {"A": product("A", 5), "B": product("B", 1)})
    assert (decision.status, decision.reason, decision.skus) == (
        ReservationStatus.REJECTED,
        RejectReason.OUT_OF_STOCK,
        ["B"],
    )
    assert decision.lines == []


def test_unknown_skus_are_named() -> None:
    decision = decide_reservation("o1", {"A": 1, "Z": 1, "Y": 1}, {"A": product("A", 5)})
    assert (decision.reason, decision.skus) == (RejectReason.UNKNOWN_SKU, ["Y", "Z"])


def test_holding_twice_holds_once() -> None:
    p = product("A", 5)
    p.hold("o1", 3)
    p.hold("o1", 3)
    assert (p.available, p.reserved, p.held_for("o1")) == (2, 3, 3)


def test_units_already_held_by_the_order_count_towards_it() -> None:
    p = product("A", 3)
    p.hold("o1", 3)
    assert p.can_hold("o1", 3) and not p.can_hold("o2", 1)


def test_holding_more_than_available_is_refused() -> None:
    with pytest.raises(StockError):
        product("A", 1).hold("o1", 2)


def test_release_gives_units_back_once() -> None:
    p = product("A", 5)
    p.hold("o1", 2)
    assert p.release("o1") == 2
    assert p.release("o1") == 0
    assert (p.available, p.reserved) == (5, 0)


def test_commit_sells_held_units_once() -> None:
    p = product("A", 5)
    p.hold("o1", 2)
    assert p.commit("o1") == 2
    assert p.commit("o1") == 0
    assert (p.available, p.reserved, p.sold) == (3, 0, 2)


def test_restock_applies_each_operation_once() -> None:
    p = product("A", 1)
    assert p.restock(4, "op-1")
    assert not p.restock(4, "op-1")
    assert p.available == 5


def test_low_stock_fires_only_when_crossing_the_threshold() -> None:
    p = product("A", 5, threshold=3)
    before = p.available
    p.hold("o1", 2)
    assert not crossed_low_threshold(before, p)  # 3 is not below 3
    before = p.available
    p.hold("o2", 1)
    assert crossed_low_threshold(before, p)
    before = p.available
    p.hold("o3", 1)
    assert not crossed_low_threshold(before, p), "already below: no second alert"


def test_lines_of_one_sku_are_merged() -> None:
    assert units_per_sku([("A", 1), ("B", 2), ("A", 3)]) == {"A": 4, "B": 2}


def test_setting_a_product_keeps_the_name_and_threshold_not_given() -> None:
    mug = Product("MUG", "Blue mug", 100, available=3, low_stock_threshold=5)
    mug.set(price=250, available=20, operation_id="op-1")
    assert (mug.name, mug.low_stock_threshold, mug.price, mug.available) == ("Blue mug", 5, 250, 20)
    mug.set(price=250, available=20, operation_id="op-2", name="Red mug", low_stock_threshold=0)
    assert (mug.name, mug.low_stock_threshold) == ("Red mug", 0)
