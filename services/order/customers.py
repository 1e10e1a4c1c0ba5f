"""Customers: one record per customer id, in the order worker's own database, kept from the orders.

A customer's first order creates its record and every later one updates it with the details it
carries, so the record holds what the last order (or the last `orderflow customers set`) said. The
customer's orders are listed beside it: each intake batch inserts one document per customer it
names, holding that batch's order ids (`customer_orders`, `_id` = the customer id, `/`, a digest
of the ids). Inserts under a unique id are never lost, while two writers updating one document at
once can lose one's update on FerretDB; and an insert costs the store far less than an update of a
growing list.

Recording is on the intake's hot path, so the details are written only when they differ from the
customer's as this process last wrote or read them. Another process may have written since: every
write over an existing record (an order's new details, `set`, `forget`) changes the customers'
epoch, and a process that sees it change forgets its copies. One read of the epoch per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from services.order.domain import Customer, Order
from shared.contracts.base import derive_id, new_id
from shared.contracts.customers import DETAILS, ForgetCustomer, UpdateCustomer
from shared.store import DUPLICATE_KEY, RecentCopies, find_by_ids, insert_new

RECENT_OPERATIONS = 20  # how many operator commands a customer remembers, to apply each once
EPOCH = "customers"  # the one document of the `customer_epoch` collection


@dataclass
class CustomerRecord:
    customer_id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    # When its personal data were erased; None while it has some (an order or a `set` brings them back).
    forgotten_at: datetime | None = None
    # Ids of the last operator commands applied: each is applied once, and the CLI waits to see its own.
    recent_operations: list[str] = field(default_factory=list)

    @property
    def details(self) -> Customer:
        return Customer(self.customer_id, self.name, self.email, self.phone, self.address)

    def copy(self) -> CustomerRecord:
        return replace(self, recent_operations=list(self.recent_operations))

    def update(self, command: UpdateCustomer) -> bool:
        """Set the details the command gives; False if it was applied before."""
        if command.message_id in self.recent_operations:
            return False
        for detail, value in command.details().items():
            setattr(self, detail, value)
        self.forgotten_at = None
        self._applied(command.message_id)
        return True

    def forget(self, command: ForgetCustomer, now: datetime) -> bool:
        """Erase the personal data, keeping the id; False if done before."""
        if command.message_id in self.recent_operations:
            return False
        self.name = self.email = self.phone = self.address = None
        self.forgotten_at = now
        self._applied(command.message_id)
        return True

    def _applied(self, operation_id: str) -> None:
        self.recent_operations = [*self.recent_operations, operation_id][-RECENT_OPERATIONS:]


@dataclass(frozen=True)
class Recording:
    """What a batch of orders says of one customer: the details of the latest, and all their ids."""

    customer: Customer
    orders: tuple[str, ...]


def recordings(orders: Iterable[Order]) -> list[Recording]:
    """The customers of these orders, each as its latest order gives it. An order whose customer
    was forgotten has nothing left to record."""
    latest: dict[str, Customer] = {}
    placed: dict[str, dict[str, None]] = {}
    for order in orders:
        if order.customer is None or order.customer.forgotten:
            continue
        latest[order.customer.customer_id] = order.customer
        placed.setdefault(order.customer.customer_id, {})[order.order_id] = None
    return [Recording(customer, tuple(placed[customer_id])) for customer_id, customer in latest.items()]


def changed(recorded: Iterable[Recording], stored: dict[str, Customer]) -> list[Recording]:
    """The recordings whose details the store does not hold (as `stored` says it does)."""
    return [
        recording
        for recording in recorded
        if stored.get(recording.customer.customer_id) != recording.customer
    ]


class CustomerBook:
    """The customers (collection `customers`) and the lists of their orders (`customer_orders`),
    with this process's copies of the details it wrote or read last in front of them."""

    def __init__(self, db: Database, capacity: int = 10_000) -> None:
        self._customers = db["customers"]
        self._orders = db["customer_orders"]
        self._epoch = db["customer_epoch"]
        self._known: RecentCopies[Customer] = RecentCopies(
            lambda customer: customer.customer_id, lambda customer: customer, capacity
        )
        self._seen_epoch: str | None = None

    # The intake -------------------------------------------------------------------------------

    def record(self, orders: Iterable[Order]) -> None:
        """Each order on its customer's list, and each customer's details as its latest order gives
        them, written only if the store does not hold them already."""
        recorded = recordings(orders)
        if not recorded:
            return
        insert_new(self._orders, [_listing(recording) for recording in recorded])
        self._catch_up()
        stored = self._known.get_many((r.customer.customer_id for r in recorded), self._stored_details)
        writes = changed(recorded, stored)
        if not writes:
            return
        existed = self._write([(r.customer, r.customer.customer_id in stored) for r in writes])
        if existed:
            # Created meanwhile by another process.
            self._write([(r.customer, True) for r in writes if r.customer.customer_id in existed])
        if existed or any(r.customer.customer_id in stored for r in writes):
            self._next_epoch()
        self._known.keep(r.customer for r in writes)

    def _catch_up(self) -> None:
        """Forget this process's copies if a record was written over since it last looked."""
        document = self._epoch.find_one({"_id": EPOCH})
        epoch = document["token"] if document else None
        if epoch != self._seen_epoch:
            self._known.clear()
            self._seen_epoch = epoch

    def _stored_details(self, customer_ids: set[str]) -> dict[str, Customer]:
        return {customer_id: record.details for customer_id, record in self.get_many(customer_ids).items()}

    def _write(self, writes: list[tuple[Customer, bool]]) -> set[str]:
        """Write each customer's details over its record, or insert the record if it has none; one
        bulk write. Returns the ids of the customers whose insert found a record after all."""
        requests = [_set_details(customer) if exists else _insert(customer) for customer, exists in writes]
        try:
            self._customers.bulk_write(requests, ordered=False)
        except BulkWriteError as e:
            problems = e.details.get("writeErrors", [])
            if any(problem["code"] != DUPLICATE_KEY for problem in problems):
                raise
            return {writes[problem["index"]][0].customer_id for problem in problems}
        return set()

    def _next_epoch(self) -> None:
        token = new_id()
        if not self._epoch.update_one({"_id": EPOCH}, {"$set": {"token": token}}).matched_count:
            insert_new(self._epoch, [{"_id": EPOCH, "token": token}])

    # Operators --------------------------------------------------------------------------------

    def get(self, customer_id: str) -> CustomerRecord | None:
        return self.get_many([customer_id]).get(customer_id)

    def get_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerRecord]:
        return {
            document["_id"]: _from_document(document)
            for document in find_by_ids(self._customers, customer_ids)
        }

    def all(self) -> list[CustomerRecord]:
        """Every customer, by id: a scan, for operators, never per message."""
        return [_from_document(document) for document in self._customers.find().sort("_id", 1)]

    def orders_of(self, customer_id: str) -> list[str]:
        """The ids of the customer's orders. A range of `_id`s: index-backed on MongoDB, a scan of
        the lists on the FerretDB stand-in; for operators, never per message."""
        listings = self._orders.find({"_id": {"$gte": f"{customer_id}/", "$lt": f"{customer_id}0"}})
        return list(dict.fromkeys(order_id for listing in listings for order_id in listing["orders"]))

    def order_counts(self) -> Counter[str]:
        """How many orders each customer placed: a scan of the lists, for operators."""
        placed: dict[str, set[str]] = {}
        for listing in self._orders.find():
            placed.setdefault(listing["_id"].split("/")[0], set()).update(listing["orders"])
        return Counter({customer_id: len(order_ids) for customer_id, order_ids in placed.items()})

    def create(self, record: CustomerRecord) -> bool:
        """Insert a customer no order has named yet; False if one has meanwhile."""
        return not insert_new(self._customers, [_to_document(record)])

    def save(self, record: CustomerRecord, read: CustomerRecord) -> bool:
        """Write what an operator changed of a customer over the record as it was read; False if
        another command changed it since."""
        written = self._customers.update_one(
            {"_id": record.customer_id, "recent_operations": read.recent_operations},
            {"$set": {key: value for key, value in _to_document(record).items() if key != "_id"}},
        ).matched_count
        if written:
            self._next_epoch()
        return bool(written)


def _listing(recording: Recording) -> dict[str, Any]:
    customer_id, order_ids = recording.customer.customer_id, list(recording.orders)
    # The same orders always make the same listing, so listing them again adds nothing.
    return {"_id": f"{customer_id}/{derive_id(*sorted(order_ids))}", "orders": order_ids}


def _details(customer: Customer) -> dict[str, str | None]:
    return {detail: getattr(customer, detail) for detail in DETAILS}


def _insert(customer: Customer) -> InsertOne[Any]:
    return InsertOne(
        _to_document(
            CustomerRecord(
                customer.customer_id, customer.name, customer.email, customer.phone, customer.address
            )
        )
    )


def _set_details(customer: Customer) -> UpdateOne:
    return UpdateOne({"_id": customer.customer_id}, {"$set": {**_details(customer), "forgotten_at": None}})


def _to_document(record: CustomerRecord) -> dict[str, Any]:
    return {
        "_id": record.customer_id,
        **_details(record.details),
        "forgotten_at": record.forgotten_at,
        "recent_operations": record.recent_operations,
    }


def _from_document(document: dict[str, Any]) -> CustomerRecord:
    return CustomerRecord(
        document["_id"],
        **{detail: document.get(detail) for detail in DETAILS},
        forgotten_at=document.get("forgotten_at"),
        recent_operations=document.get("recent_operations", []),
    )
