"""The customer book on the real store: what orders record, from many processes at once, what a
process skips and when it stops skipping, and erasing a customer from the claims of its orders."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from services.order.customers import CustomerBook
from services.order.domain import Customer, Order
from services.order.store import OrderRepository
from shared import store
from shared.contracts.intake import OrderSubmission
from shared.settings import Settings
from tests.unit.factories import body, submission

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    client: MongoClient = store.connect(settings)
    yield store.database(client, settings, "order")
    client.close()


def order(order_id: str, customer_id: str = "C-1", name: str = "Alice", **details: str) -> Order:
    data = submission(order_id)
    data["customer"] = {"customer_id": customer_id, "name": name, "email": "alice@example.com", **details}
    return Order.accept(OrderSubmission.model_validate_json(body(data)), "CNY", NOW)


def details(book: CustomerBook, customer_id: str) -> Customer:
    record = book.get(customer_id)
    assert record is not None
    return record.details


def test_orders_create_and_update_their_customers_and_are_listed(db: Database) -> None:
    book = CustomerBook(db)
    book.record([order("A-1", phone="1"), order("B-1", "C-2")])
    book.record([order("A-2", name="Alice B.", address="Main St"), order("C1-1", "C-10")])
    book.record([order("A-2", name="Alice B.", address="Main St")])  # listed once, whatever happens

    reader = CustomerBook(db)
    assert details(reader, "C-1") == Customer("C-1", "Alice B.", "alice@example.com", None, "Main St")
    assert sorted(reader.orders_of("C-1")) == ["A-1", "A-2"]
    assert (reader.orders_of("C-2"), reader.orders_of("C-10")) == (["B-1"], ["C1-1"])
    assert reader.order_counts() == {"C-1": 2, "C-2": 1, "C-10": 1}


def test_a_process_writes_details_only_when_they_differ_from_what_it_last_wrote(db: Database) -> None:
    book = CustomerBook(db)
    book.record([order("A-1")])
    db["customers"].update_one({"_id": "C-1"}, {"$set": {"name": "not through the book"}})
    book.record([order("A-2")])  # the same details as this process wrote: not written again
    assert details(book, "C-1").name == "not through the book"
    book.record([order("A-3", name="Alice B.")])
    assert details(book, "C-1").name == "Alice B."


def test_a_process_stops_skipping_once_another_wrote_over_a_record(db: Database) -> None:
    """Another process's order, `set` or `forget` changes the epoch: copies are read afresh."""
    book, other = CustomerBook(db), CustomerBook(db)
    book.record([order("A-1")])
    other.record([order("A-2", phone="555")])
    book.record([order("A-3")])  # the details this process wrote last, which are no longer stored
    assert details(other, "C-1").phone is None

    read = other.get("C-1")
    assert read is not None
    erased = read.copy()
    erased.name = erased.email = None
    erased.forgotten_at = NOW
    assert other.save(erased, read)
    book.record([order("A-4")])  # the customer comes back with the same details
    back = other.get("C-1")
    assert back is not None
    assert (back.name, back.forgotten_at) == ("Alice", None)


def test_processes_recording_the_same_new_customers_at_once_lose_nothing(db: Database) -> None:
    """Every order is listed and every customer created once, whichever process got there
    first (upserts, or updates of one list from many writers, lose some on FerretDB)."""
    books = [CustomerBook(db) for _ in range(6)]
    errors: list[BaseException] = []

    def record(process: int) -> None:
        try:
            for round_ in range(10):
                books[process].record(
                    [order(f"O-{process}-{round_}-{n}", f"C-{round_}-{n}") for n in range(15)]
                )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=record, args=(process,)) for process in range(len(books))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(CustomerBook(db).all()) == 10 * 15
    assert sum(CustomerBook(db).order_counts().values()) == 10 * 15 * len(books)


def test_a_write_over_a_customer_another_command_changed_since_it_was_read_is_refused(db: Database) -> None:
    book = CustomerBook(db)
    book.record([order("A-1")])
    read = book.get("C-1")
    assert read is not None
    first, second = read.copy(), read.copy()
    first.recent_operations, second.recent_operations = ["op-1"], ["op-2"]
    second.phone = "555"
    assert book.save(first, read)
    assert not book.save(second, read)
    assert details(book, "C-1").phone is None


def test_erasing_a_customer_from_the_claims_of_its_orders(db: Database) -> None:
    orders = OrderRepository(db)
    placed, other = order("A-1", phone="555"), order("B-1", "C-2")
    orders.add([placed, other])
    for moved in (placed, other):
        orders.save([moved])
        orders.save([moved])
    placed.forget_customer()
    orders.save([placed])

    orders.erase_customer_from_claims([placed])

    claims = {claim["_id"]: claim["state"]["customer"] for claim in db["order_transitions"].find()}
    erased = {"customer_id": "C-1", "name": None, "email": None, "phone": None, "address": None}
    assert {claim: customer for claim, customer in claims.items() if claim.startswith("A-1")} == {
        "A-1:1": erased,
        "A-1:2": erased,
        "A-1:3": erased,
    }
    assert claims["B-1:2"]["name"] == "Alice"
    assert orders.get("A-1").customer == Customer("C-1", None, None)  # type: ignore[union-attr]
