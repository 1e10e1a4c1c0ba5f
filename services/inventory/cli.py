"""`orderflow stock ...`: stock changes go through the inventory queue, like every other stock change."""

from __future__ import annotations

import json

from services import commands
from services.inventory.domain import Product
from services.inventory.store import ProductRepository
from shared import store
from shared.contracts import saga
from shared.errors import UsageError
from shared.messaging import topology
from shared.money import InvalidAmount, to_decimal_string, to_minor
from shared.settings import Settings


def set_stock(
    settings: Settings,
    sku: str,
    quantity: int,
    price: str,
    name: str | None,
    threshold: int | None,
    wait: float,
) -> int:
    """Set a SKU's price and units; its name and low-stock threshold too when given (None keeps
    them, or gives a new SKU its own SKU as name and 0)."""
    try:
        minor = to_minor(price, settings.currency)
    except InvalidAmount as e:
        raise UsageError(f"--price: {e}") from e
    command = saga.SetStock(
        partition=_partition(settings, sku),
        sku=sku,
        quantity=quantity,
        price=minor,
        name=name,
        low_stock_threshold=threshold,
    )
    return _send_and_wait(settings, command, sku, wait)


def add_stock(settings: Settings, sku: str, quantity: int, wait: float) -> int:
    if _products(settings).get(sku) is None:
        print(f"error: unknown SKU {sku}; create it with `orderflow stock set`")
        return 1
    command = saga.Restock(partition=_partition(settings, sku), sku=sku, quantity=quantity)
    return _send_and_wait(settings, command, sku, wait)


def show_stock(settings: Settings, skus: list[str], as_json: bool) -> int:
    products = _products(settings)
    found = [p for p in products.all() if not skus or p.sku in skus]
    missing = sorted(set(skus) - {p.sku for p in found})
    if as_json:
        print(json.dumps([_as_json(p, settings.currency) for p in found], indent=2))
    else:
        header = f"{'SKU':<16} {'NAME':<24} {'PRICE':>10} {'AVAILABLE':>10} {'RESERVED':>9} {'SOLD':>7}"
        print(f"{header} {'LOW<':>5}")
        for p in found:
            flag = "  LOW" if p.is_low else ""
            price = to_decimal_string(p.price, settings.currency)
            print(
                f"{p.sku:<16} {p.name[:24]:<24} {price:>10} {p.available:>10} "
                f"{p.reserved:>9} {p.sold:>7} {p.low_stock_threshold:>5}{flag}"
            )
    for sku in missing:
        print(f"unknown SKU: {sku}")
    return 1 if missing else 0


def _as_json(product: Product, currency: str) -> dict[str, object]:
    return {
        "sku": product.sku,
        "name": product.name,
        "price": to_decimal_string(product.price, currency),
        "available": product.available,
        "reserved": product.reserved,
        "sold": product.sold,
        "low_stock_threshold": product.low_stock_threshold,
        "low": product.is_low,
    }


def _products(settings: Settings) -> ProductRepository:
    return ProductRepository(store.database(store.connect(settings), settings, "inventory"))


def _partition(settings: Settings, sku: str) -> int:
    return topology.partition_of(sku, settings.inventory_partitions)


def _send_and_wait(settings: Settings, command: saga.SetStock | saga.Restock, sku: str, wait: float) -> int:
    commands.send(settings, command)
    products = _products(settings)

    def applied() -> Product | None:
        product = products.get(sku)
        return product if product is not None and command.message_id in product.recent_operations else None

    product = commands.applied(applied, wait, "inventory")
    print(f"{sku}: {product.available} available at {to_decimal_string(product.price, settings.currency)}")
    return 0
