"""The inventory worker's repositories: products (with their holds) and reservations."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from services.inventory.domain import (
    Product,
    RejectReason,
    Reservation,
    ReservationStatus,
    ReservedLine,
)


class StaleProduct(Exception):
    """The product changed since it was read: only one writer may change stock at a time."""


class ProductRepository:
    def __init__(self, db: Database) -> None:
        self._products = db["products"]

    def get(self, sku: str) -> Product | None:
        document = self._products.find_one({"_id": sku})
        return None if document is None else _product(document)

    def get_many(self, skus: list[str]) -> dict[str, Product]:
        return {doc["_id"]: _product(doc) for doc in self._products.find({"_id": {"$in": skus}})}

    def all(self) -> list[Product]:
        return [_product(doc) for doc in self._products.find().sort("_id", 1)]

    def save(self, product: Product) -> None:
        """Write a product, guarded by the version it was read at (0 for a new one)."""
        document = _product_document(product)
        document["version"] = product.version + 1
        if product.version == 0:
            result = self._products.replace_one(
                {"_id": product.sku, "version": {"$in": [0, None]}}, document, upsert=True
            )
        else:
            result = self._products.replace_one({"_id": product.sku, "version": product.version}, document)
        if not (result.matched_count or result.upserted_id is not None):
            raise StaleProduct(product.sku)
        product.version += 1


class ReservationRepository:
    def __init__(self, db: Database) -> None:
        self._reservations = db["reservations"]

    def get(self, order_id: str) -> Reservation | None:
        document = self._reservations.find_one({"_id": order_id})
        if document is None:
            return None
        return Reservation(
            order_id=document["_id"],
            status=ReservationStatus(document["status"]),
            lines=[ReservedLine(**line) for line in document.get("lines", [])],
            reason=RejectReason(document["reason"]) if document.get("reason") else None,
            skus=document.get("skus", []),
        )

    def save(self, reservation: Reservation) -> None:
        self._reservations.replace_one(
            {"_id": reservation.order_id},
            {
                "status": reservation.status.value,
                "lines": [vars(line) for line in reservation.lines],
                "reason": reservation.reason.value if reservation.reason else None,
                "skus": reservation.skus,
            },
            upsert=True,
        )


def _product(document: dict[str, Any]) -> Product:
    return Product(
        sku=document["_id"],
        name=document["name"],
        price=document["price"],
        available=document["available"],
        reserved=document["reserved"],
        sold=document.get("sold", 0),
        low_stock_threshold=document.get("low_stock_threshold", 0),
        holds={hold["order_id"]: hold["quantity"] for hold in document.get("holds", [])},
        recent_operations=document.get("recent_operations", []),
        version=document.get("version") or 0,
    )


def _product_document(product: Product) -> dict[str, Any]:
    return {
        "_id": product.sku,
        "name": product.name,
        "price": product.price,
        "available": product.available,
        "reserved": product.reserved,
        "sold": product.sold,
        "low_stock_threshold": product.low_stock_threshold,
        # A list, not a map: order ids may hold characters that field names may not.
        "holds": [{"order_id": order_id, "quantity": units} for order_id, units in product.holds.items()],
        "recent_operations": product.recent_operations,
    }
