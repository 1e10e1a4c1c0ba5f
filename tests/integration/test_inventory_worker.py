"""The inventory worker against the real broker and store: all or none, idempotence, compensation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.inventory.store import ProductRepository
from shared import store
from shared.contracts import saga
from shared.messaging import topology
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import (
    EventCollector,
    Publish,
    queue_messages,
    saga_replies,
    settings_env,
    unique,
    wait_for,
)


@pytest.fixture
def inventory(settings: Settings):
    with running("inventory", settings, [topology.stock_queue(0)]) as app:
        yield app


@pytest.fixture
def bus(settings: Settings):
    with Publish(settings) as publish:
        yield publish


@pytest.fixture
def products(settings: Settings) -> ProductRepository:
    return ProductRepository(store.database(store.connect(settings), settings, "inventory"))


def stock(
    bus: Publish, products: ProductRepository, sku: str, quantity: int, price: int = 100, threshold: int = 0
):
    command = saga.SetStock(sku=sku, quantity=quantity, price=price, name=sku, low_stock_threshold=threshold)
    bus.saga(command)
    wait_for(
        lambda: (p := products.get(sku)) and command.message_id in p.recent_operations, what=f"{sku} set"
    )


def replies(settings: Settings, count: int) -> list[dict]:
    return saga_replies(settings.amqp_url, count)


def levels(products: ProductRepository, sku: str) -> tuple[int, int, int]:
    product = products.get(sku)
    assert product is not None
    return product.available, product.reserved, product.sold


def test_an_order_with_one_short_line_reserves_nothing(settings, inventory, bus, products) -> None:
    a, b = unique("A"), unique("B")
    stock(bus, products, a, 5)
    stock(bus, products, b, 1)
    bus.saga(
        saga.ReserveStock(
            order_id="o-1", lines=[saga.StockLine(sku=a, quantity=2), saga.StockLine(sku=b, quantity=2)]
        )
    )
    (reply,) = replies(settings, 1)
    assert (reply["actor"], reply["reason"], reply["skus"]) == (
        "stock_reservation_failed",
        "out_of_stock",
        [b],
    )
    assert levels(products, a) == (5, 0, 0)
    assert levels(products, b) == (1, 0, 0)


def test_reserve_release_and_commit(settings, inventory, bus, products) -> None:
    a = unique("A")
    stock(bus, products, a, 5, price=1250)
    bus.saga(saga.ReserveStock(order_id="o-2", lines=[saga.StockLine(sku=a, quantity=2)]))
    (reserved,) = replies(settings, 1)
    assert (reserved["actor"], reserved["total"]) == ("stock_reserved", 2500)
    assert reserved["lines"] == [{"sku": a, "quantity": 2, "unit_price": 1250, "line_total": 2500}]
    assert levels(products, a) == (3, 2, 0)

    bus.saga(saga.ReleaseStock(order_id="o-2", skus=[a]))
    (released,) = replies(settings, 1)
    assert released["actor"] == "stock_released"
    assert levels(products, a) == (5, 0, 0)

    bus.saga(saga.ReserveStock(order_id="o-3", lines=[saga.StockLine(sku=a, quantity=4)]))
    replies(settings, 1)
    bus.saga(saga.CommitStock(order_id="o-3", skus=[a]))
    wait_for(lambda: levels(products, a) == (1, 0, 4), what="the commit")


def test_a_redelivered_reservation_holds_once_and_replies_the_same(
    settings, inventory, bus, products
) -> None:
    a = unique("A")
    stock(bus, products, a, 5)
    command = saga.ReserveStock(order_id="o-4", lines=[saga.StockLine(sku=a, quantity=3)])
    bus.saga(command)
    bus.saga(command)
    first, second = replies(settings, 2)
    assert first["message_id"] == second["message_id"]
    assert levels(products, a) == (2, 3, 0)


def test_unknown_skus_are_refused(settings, inventory, bus) -> None:
    bus.saga(saga.ReserveStock(order_id="o-5", lines=[saga.StockLine(sku="NO-SUCH-SKU", quantity=1)]))
    (reply,) = replies(settings, 1)
    assert (reply["reason"], reply["skus"]) == ("unknown_sku", ["NO-SUCH-SKU"])


def test_restock_applies_once(settings, inventory, bus, products) -> None:
    a = unique("A")
    stock(bus, products, a, 1)
    command = saga.Restock(sku=a, quantity=4)
    bus.saga(command)
    bus.saga(command)
    wait_for(lambda: levels(products, a)[0] == 5, what="the restock")
    bus.saga(saga.Restock(sku=a, quantity=1))
    wait_for(lambda: levels(products, a)[0] == 6, what="the second restock")


def test_falling_below_the_threshold_raises_one_alert(settings, inventory, bus, products) -> None:
    a = unique("A")
    with EventCollector(settings.amqp_url) as collector:
        stock(bus, products, a, 5, threshold=3)
        bus.saga(saga.ReserveStock(order_id="o-6", lines=[saga.StockLine(sku=a, quantity=3)]))
        bus.saga(saga.ReserveStock(order_id="o-7", lines=[saga.StockLine(sku=a, quantity=1)]))
        replies(settings, 2)
        alert = wait_for(lambda: [e for e in collector.events if e["type"] == "stock.low"], what="an alert")
    assert len(alert) == 1
    assert (alert[0]["sku"], alert[0]["available"], alert[0]["threshold"]) == (a, 2, 3)


def test_a_message_breaking_the_contract_is_dead_lettered_alone_with_the_reason(
    settings, inventory, bus, products
) -> None:
    import dramatiq

    a = unique("A")
    stock(bus, products, a, 5)
    good = saga.ReserveStock(order_id="o-9", lines=[saga.StockLine(sku=a, quantity=1)])
    envelope = dramatiq.Message(
        queue_name=topology.stock_queue(0),
        actor_name="reserve_stock",
        args=({"order_id": "o-8", "lines": "not a list"}, good.model_dump(mode="json")),
        kwargs={},
        options={},
    )
    bus.raw("", topology.stock_queue(0), envelope.encode())
    (reply,) = replies(settings, 1)
    assert (reply["actor"], reply["order_id"]) == ("stock_reserved", "o-9"), "its neighbour went on"
    dead = wait_for(
        lambda: queue_messages(settings.amqp_url, topology.dead_letter_queue(topology.stock_queue(0))),
        what="a dead letter",
    )
    body, headers = dead[0]
    assert "invalid ReserveStock" in headers["x-orderflow-reason"]
    assert [payload["order_id"] for payload in json.loads(body)["args"]] == ["o-8"]
    assert json.loads(body)["options"]["dead_letter_reason"].startswith("invalid ReserveStock: lines")


def test_stock_set_keeps_the_name_and_threshold_it_is_not_given(settings, inventory) -> None:
    def orderflow(*args: str) -> str:
        command = [str(Path(sys.executable).with_name("orderflow")), *args]
        env = {"PATH": "/usr/bin:/bin", **settings_env(settings)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def shown(sku: str) -> tuple[str, int, str, int]:
        (product,) = json.loads(orderflow("stock", "show", sku, "--json"))
        return product["name"], product["low_stock_threshold"], product["price"], product["available"]

    mug, new = unique("MUG"), unique("NEW")
    orderflow(
        *f"stock set {mug} --quantity 3 --price 1.00 --low-stock-threshold 5".split(), "--name", "Blue mug"
    )
    orderflow("stock", "set", mug, "--quantity", "20", "--price", "2.50")
    assert shown(mug) == ("Blue mug", 5, "2.50", 20)
    orderflow("stock", "set", mug, "--quantity", "20", "--price", "2.50", "--low-stock-threshold", "0")
    assert shown(mug) == ("Blue mug", 0, "2.50", 20)
    orderflow("stock", "set", new, "--quantity", "1", "--price", "1.00")
    assert shown(new) == (new, 0, "1.00", 1)
