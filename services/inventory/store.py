"""The inventory worker's repositories: products (with their holds) and reservation decisions.

Reads and writes go by `_id`, many at once: a batch of stock commands costs a few round trips.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pymongo import ReplaceOne, UpdateOne
from pymongo.database import Database

from services.inventory.domain import (
    Product,
    RejectReason,
    Reservation,
    ReservationStatus,
    ReservedLine,
)
from shared.contracts.base import utcnow
from shared.documents import SCHEMA_FIELD, DocumentSchema
from shared.errors import TransientError
from shared.store import RecentCopies, find_by_ids, insert_new


class StaleProduct(TransientError):
    """A product changed since it was read: only one writer may change stock at a time."""


class DecidedElsewhere(TransientError):
    """Another stock writer recorded a decision for the order first (two writers overlap for a
    moment when a partition's consumer changes): decide again, from what it recorded."""


class ProductRepository:
    def __init__(self, db: Database) -> None:
        self._products = db["products"]

    def get(self, sku: str) -> Product | None:
        return self.get_many([sku]).get(sku)

    def get_many(self, skus: Iterable[str]) -> dict[str, Product]:
        return {doc["_id"]: _product(doc) for doc in find_by_ids(self._products, skus)}

    def all(self) -> list[Product]:
        """The whole catalog (bounded by it): for operators and the stock gauges, not per message."""
        return [_product(doc) for doc in self._products.find().sort("_id", 1)]

    def save(self, products: Iterable[Product]) -> None:
        """Write products, each guarded by the version it was read at (0 for a new one)."""
        products = list(products)
        if not products:
            return
        writes = []
        for product in products:
            document = {**_product_document(product), "version": product.version + 1}
            guard = {"$in": [0, None]} if product.version == 0 else product.version
            writes.append(
                ReplaceOne({"_id": product.sku, "version": guard}, document, upsert=product.version == 0)
            )
        result = self._products.bulk_write(writes, ordered=False)
        if result.matched_count + result.upserted_count != len(writes):
            raise StaleProduct(f"another writer changed one of {', '.join(p.sku for p in products)}")
        for product in products:
            product.version += 1


class CachedProducts:
    """Products as this process last read or wrote them, kept in memory in front of the repository.

    Each partition has one writer at a time (its queue's single active consumer), so the copy
    here is the current one. If another process wrote a product meanwhile (this one stood by, then
    took over), the version-guarded write fails, the copies are dropped, and the batch is retried
    from fresh reads.
    """

    def __init__(self, repository: ProductRepository) -> None:
        self.repository = repository
        self._recent: RecentCopies[Product] = RecentCopies(lambda product: product.sku, Product.copy)

    def get(self, sku: str) -> Product | None:
        return self.get_many([sku]).get(sku)

    def get_many(self, skus: Iterable[str]) -> dict[str, Product]:
        return self._recent.get_many(skus, self.repository.get_many)

    def all(self) -> list[Product]:
        return self.repository.all()

    def save(self, products: Iterable[Product]) -> None:
        products = list(products)
        try:
            self.repository.save(products)
        except StaleProduct:
            self._recent.clear()
            raise
        self._recent.keep(products)


class ReservationRepository:
    """Each partition's decision for each order, kept so a redelivered command gets the same answer.

    An order spanning partitions has a decision in each: they are stored under `<order id>:<partition>`.
    """

    def __init__(self, db: Database) -> None:
        self._reservations = db["reservations"]
        self._returns = db["stock_returns"]

    def get_many(self, partition: int, holds: Iterable[str]) -> dict[str, Reservation]:
        """Decisions by hold id (an order's id, or a change's hold)."""
        keys = (_key(hold, partition) for hold in holds)
        reservations = (_reservation(doc) for doc in find_by_ids(self._reservations, keys))
        return {reservation.order_id: reservation for reservation in reservations}

    def add(self, partition: int, reservations: Iterable[Reservation]) -> None:
        """Record decisions for orders that had none (one insert for all of them). One that had a
        decision is overwritten only if an earlier version left it half-made; if another writer
        decided meanwhile (a release, say), DecidedElsewhere: a reservation never overwrites it."""
        reservations = list(reservations)
        now = utcnow()
        documents = [
            {**_reservation_document(reservation, partition), "decided_at": now}
            for reservation in reservations
        ]
        taken = insert_new(self._reservations, documents)
        half_made = [
            ReplaceOne(
                {"_id": document["_id"], "status": ReservationStatus.RESERVING.value}, document, upsert=False
            )
            for document in documents
            if document["_id"] in taken
        ]
        if half_made and self._reservations.bulk_write(half_made, ordered=False).matched_count < len(
            half_made
        ):
            raise DecidedElsewhere(f"another writer decided for an order of partition {partition} first")

    def mark_committed(self, partition: int, order_ids: Iterable[str]) -> None:
        """The units these orders held are sold: their reservations are done with."""
        writes = [
            UpdateOne(
                {"_id": _key(order_id, partition), "status": ReservationStatus.RESERVED.value},
                {"$set": {"status": ReservationStatus.COMMITTED.value}},
            )
            for order_id in order_ids
        ]
        if writes:
            self._reservations.bulk_write(writes, ordered=False)

    def returned(self, partition: int, command_ids: Iterable[str]) -> set[str]:
        """Which of these ReturnStock commands were applied (a product remembers only its last
        operations; this, every one)."""
        keys = {_key(command_id, partition): command_id for command_id in command_ids}
        return {keys[document["_id"]] for document in find_by_ids(self._returns, keys)}

    def record_returns(self, partition: int, returns: Iterable[tuple[str, str, dict[str, int]]]) -> None:
        """ReturnStock commands applied (command id, order id, units per SKU): recorded after the
        products they changed are written (a crash between the two is caught by the products' own
        memory of recent operations)."""
        insert_new(
            self._returns,
            [
                {"_id": _key(command_id, partition), "order_id": order_id, "units": units}
                for command_id, order_id, units in returns
            ],
        )

    def returned_units(self, partition: int, order_id: str) -> dict[str, int]:
        """The units of an order taken back so far in a partition, per SKU. A scan: only when units
        sold are released (after a restore), never per message."""
        units: dict[str, int] = {}
        for document in self._returns.find({"order_id": order_id}):
            if document["_id"].endswith(f":{partition}"):
                for sku, quantity in document.get("units", {}).items():
                    units[sku] = units.get(sku, 0) + quantity
        return units

    def held_since(self, before: datetime, limit: int = 1000) -> list[tuple[str, int, str | None]]:
        """(order id, partition, change's hold or None) of reservations still holding units, made
        before `before`: their commit or release is overdue. A scan: for a periodic check, never
        per message."""
        cursor = self._reservations.find(
            {"status": ReservationStatus.RESERVED.value, "decided_at": {"$lte": before}},
            {"order_id": 1, "partition": 1, "hold": 1},
        ).limit(limit)
        return [
            (document["order_id"], document.get("partition", 0), document.get("hold")) for document in cursor
        ]

    def replace(self, partition: int, reservations: Iterable[Reservation]) -> None:
        writes = [
            ReplaceOne(
                {"_id": _key(reservation.order_id, partition)},
                _reservation_document(reservation, partition),
                upsert=True,
            )
            for reservation in reservations
        ]
        if writes:
            self._reservations.bulk_write(writes, ordered=False)


def _key(order_id: str, partition: int) -> str:
    return f"{order_id}:{partition}"


def _reservation_v1(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1, reservations stored before documents carried a version. The release before
    versions held stock for orders only (no `hold` of a change); earlier ones had one partition."""
    return {"hold": None, "partition": 0, "lines": [], "reason": None, "skus": [], **document}


# Version 2: every reservation says whose hold it is (None: the order's own). A migration's write
# requires the status it read, the field the worker's own updates are guarded by.
RESERVATIONS = DocumentSchema("inventory", "reservations", 2, {1: _reservation_v1}, guard=("status",))


def _reservation(document: dict[str, Any]) -> Reservation:
    document = RESERVATIONS.current(document)
    hold = document["hold"]
    return Reservation(
        order_id=hold or document["order_id"],
        order=document["order_id"] if hold else None,
        status=ReservationStatus(document["status"]),
        lines=[ReservedLine(**line) for line in document.get("lines", [])],
        reason=RejectReason(document["reason"]) if document.get("reason") else None,
        skus=document.get("skus", []),
    )


def _reservation_document(reservation: Reservation, partition: int) -> dict[str, Any]:
    return {
        "_id": _key(reservation.order_id, partition),
        "order_id": reservation.owner,
        "hold": reservation.order_id if reservation.order else None,
        "partition": partition,
        "status": reservation.status.value,
        "lines": [vars(line) for line in reservation.lines],
        "reason": reservation.reason.value if reservation.reason else None,
        "skus": reservation.skus,
        SCHEMA_FIELD: RESERVATIONS.version,
    }


def _product_v1(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1, products stored before documents carried a version: the earliest had no sales,
    thresholds or operations, and held their holds as a list of {order_id, quantity}."""
    return {
        "sold": 0,
        "low_stock_threshold": 0,
        "recent_operations": [],
        "version": 0,
        **document,
        "holds": json.dumps(_unpacked_holds(document.get("holds")), separators=(",", ":")),
    }


# Version 2: holds packed. The product's own version guards a migration's write, as it guards the
# worker's.
PRODUCTS = DocumentSchema("inventory", "products", 2, {1: _product_v1}, guard=("version",))


def _product(document: dict[str, Any]) -> Product:
    document = PRODUCTS.current(document)
    return Product(
        sku=document["_id"],
        name=document["name"],
        price=document["price"],
        available=document["available"],
        reserved=document["reserved"],
        sold=document.get("sold", 0),
        low_stock_threshold=document.get("low_stock_threshold", 0),
        holds=_unpacked_holds(document.get("holds")),
        recent_operations=document.get("recent_operations", []),
        version=document.get("version") or 0,
    )


# A product's holds are stored packed, as one JSON text: nothing queries inside them, and a hot
# SKU holds units for every order under way, hundreds in a burst. FerretDB decodes nested values one
# by one (measured: an update of a product with 300 holds as subdocuments cost 8.6 ms of its CPU,
# packed 1.1 ms), and MongoDB stores the text as compactly as the array. (Order ids may hold
# characters that field names may not, so a map of fields was never an option.)
def _unpacked_holds(stored: Any) -> dict[str, int]:
    if stored is None:
        return {}
    if isinstance(stored, str):
        return {str(order_id): int(units) for order_id, units in json.loads(stored).items()}
    # Written by earlier versions: a list of {order_id, quantity}.
    return {hold["order_id"]: hold["quantity"] for hold in stored}


def _product_document(product: Product) -> dict[str, Any]:
    return {
        "_id": product.sku,
        "name": product.name,
        "price": product.price,
        "available": product.available,
        "reserved": product.reserved,
        "sold": product.sold,
        "low_stock_threshold": product.low_stock_threshold,
        "holds": json.dumps(product.holds, separators=(",", ":")),
        "recent_operations": product.recent_operations,
        SCHEMA_FIELD: PRODUCTS.version,
    }
