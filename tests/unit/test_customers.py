"""Customers with fakes: what orders record of them, what this process skips, set and forget."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.order.customer_handlers import CustomerHandlers
from services.order.customers import RECENT_OPERATIONS, CustomerRecord, Recording, changed, recordings
from services.order.domain import Customer, Order
from services.order.handlers import OrderHandlers
from services.order.intake import decode_submission
from shared.contracts.customers import ForgetCustomer, UpdateCustomer
from shared.contracts.intake import OrderSubmission
from tests.unit.factories import body, submission
from tests.unit.fakes import FakeOrders, FakeQueues, Recorder, batch

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def order(order_id: str, customer_id: str = "C-1", **details: str) -> Order:
    data = submission(order_id)
    data["customer"] = {"customer_id": customer_id, "name": "Alice", "email": "alice@example.com", **details}
    return Order.accept(OrderSubmission.model_validate_json(body(data)), "CNY", NOW)


# The intake contract ------------------------------------------------------------------------


def test_an_order_may_give_the_customer_s_phone_and_address() -> None:
    placed = order("A-1", phone="+86 10 1234 5678", address="1 Chang'an Ave, Beijing")
    assert placed.customer == Customer(
        "C-1", "Alice", "alice@example.com", "+86 10 1234 5678", "1 Chang'an Ave, Beijing"
    )
    (event,) = [message for message in placed.outbox() if getattr(message, "type", "") == "order.accepted"]
    # Events name the phone; the address stays out of them.
    assert event.customer.model_dump() == {
        "customer_id": "C-1",
        "name": "Alice",
        "email": "alice@example.com",
        "phone": "+86 10 1234 5678",
    }


@pytest.mark.parametrize(
    ("detail", "value"), [("phone", ""), ("phone", "1" * 51), ("address", "x" * 501), ("phone", 123)]
)
def test_a_phone_or_address_out_of_bounds_is_invalid(detail: str, value: object) -> None:
    data = submission("A-1")
    data["customer"][detail] = value
    with pytest.raises(ValidationError):
        OrderSubmission.model_validate_json(body(data))


def test_a_customer_stored_before_phones_and_addresses_reads_without_them() -> None:
    assert Customer(**{"customer_id": "C-1", "name": "Alice", "email": "a@example.com"}).phone is None


# Forgetting an order's customer -------------------------------------------------------------


def test_forgetting_erases_the_personal_data_and_keeps_the_books() -> None:
    placed = order("A-1", phone="555", address="Main St")
    placed.total = 250
    assert placed.forget_customer()
    assert placed.customer == Customer("C-1", None, None, None, None)
    assert placed.customer.forgotten
    assert (placed.total, [line.sku for line in placed.lines]) == (250, ["SKU-1"])
    assert not placed.forget_customer()  # nothing left to erase


def test_the_events_of_a_forgotten_customer_s_order_name_no_customer() -> None:
    placed = order("A-1")
    placed.forget_customer()
    assert placed.accepted_event().customer is None


# What a batch of orders records -------------------------------------------------------------


def test_each_customer_is_recorded_once_as_its_latest_order_gives_it() -> None:
    orders = [order("A-1", phone="1"), order("B-1", "C-2"), order("A-2", phone="2"), order("A-2", phone="2")]
    assert recordings(orders) == [
        Recording(Customer("C-1", "Alice", "alice@example.com", "2"), ("A-1", "A-2")),
        Recording(Customer("C-2", "Alice", "alice@example.com"), ("B-1",)),
    ]


def test_rejected_orders_and_forgotten_customers_record_nothing() -> None:
    forgotten = order("A-1")
    forgotten.forget_customer()
    rejected = Order.reject("A-2", ["bad"], "CNY", NOW)
    assert recordings([forgotten, rejected]) == []


def test_only_details_the_store_does_not_hold_are_written() -> None:
    alice = Customer("C-1", "Alice", "alice@example.com")
    same = Recording(alice, ("A-2",))
    moved = Recording(Customer("C-1", "Alice", "alice@example.com", address="New St"), ("A-3",))
    stranger = Recording(Customer("C-2", "Bob", "bob@example.com"), ("B-1",))
    assert changed([same, moved, stranger], {"C-1": alice}) == [moved, stranger]
    # A forgotten customer's next order brings the details back, even the same ones.
    assert changed([same], {"C-1": alice.forget()}) == [same]


def test_the_intake_records_the_customers_of_new_orders_and_of_resubmissions_not_yet_started() -> None:
    class Book:
        def __init__(self) -> None:
            self.recorded: list[list[str]] = []

        def record(self, orders: list[Order]) -> None:
            self.recorded.append([placed.order_id for placed in orders])

    book, orders = Book(), FakeOrders()
    handlers = OrderHandlers(orders, Recorder(), Recorder(), FakeQueues(), currency="CNY", customers=book)  # type: ignore[arg-type]

    def submit(*order_ids: str) -> None:
        handlers.submit_orders(
            batch(*(decode_submission(body(submission(i)), "application/json", 65536) for i in order_ids))
        )

    submit("A-1", "A-2")
    orders.orders["A-2"].last_cause = "moved-on"
    submit("A-1", "A-2", "A-3")
    assert book.recorded == [["A-1", "A-2"], ["A-1", "A-3"]]


# Operator commands --------------------------------------------------------------------------


def test_a_set_changes_the_details_given_once_and_brings_a_forgotten_customer_back() -> None:
    record = CustomerRecord("C-1", "Alice", "alice@example.com", forgotten_at=NOW)
    command = UpdateCustomer(customer_id="C-1", phone="555", address="Main St")
    assert record.update(command)
    assert (record.name, record.phone, record.address, record.forgotten_at) == (
        "Alice",
        "555",
        "Main St",
        None,
    )
    record.phone = "changed by an order since"
    assert not record.update(command)  # a redelivery
    assert record.phone == "changed by an order since"


def test_a_customer_remembers_a_bounded_number_of_operations() -> None:
    record = CustomerRecord("C-1")
    for n in range(RECENT_OPERATIONS + 5):
        record.update(UpdateCustomer(customer_id="C-1", name=f"Alice {n}"))
    assert len(record.recent_operations) == RECENT_OPERATIONS


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"email": "not an email"},
        {"name": ""},
        {"phone": "1" * 51},
        {"name": "A", "customer_id": "bad id"},
    ],
)
def test_an_update_needs_valid_details(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        UpdateCustomer.model_validate({"customer_id": "C-1", **fields})


class FakeCustomers:
    """Customer records in memory, written back only over the record as it was read, and the
    orders listed for each."""

    def __init__(self) -> None:
        self.records: dict[str, CustomerRecord] = {}
        self.orders: dict[str, list[str]] = {}
        self.listed_meanwhile: list[str] = []  # an order the intake records while a command runs

    def get(self, customer_id: str) -> CustomerRecord | None:
        record = self.records.get(customer_id)
        return record.copy() if record else None

    def orders_of(self, customer_id: str) -> list[str]:
        return list(self.orders.get(customer_id, []))

    def create(self, record: CustomerRecord) -> bool:
        if record.customer_id in self.records:
            return False
        self.records[record.customer_id] = record.copy()
        return True

    def save(self, record: CustomerRecord, read: CustomerRecord) -> bool:
        self.orders.setdefault(record.customer_id, []).extend(self.listed_meanwhile)
        self.listed_meanwhile = []
        if self.records[record.customer_id].recent_operations != read.recent_operations:
            return False
        self.records[record.customer_id] = record.copy()
        return True


class ErasingOrders(FakeOrders):
    def __init__(self) -> None:
        super().__init__()
        self.claims_erased: list[tuple[str, int]] = []

    def erase_customer_from_claims(self, orders: list[Order]) -> None:
        self.claims_erased += [(placed.order_id, placed.version) for placed in orders]


@pytest.fixture
def desk() -> tuple[CustomerHandlers, FakeCustomers, ErasingOrders, Recorder]:
    customers, orders, commands = FakeCustomers(), ErasingOrders(), Recorder()
    return CustomerHandlers(customers, orders, commands, clock=lambda: NOW), customers, orders, commands  # type: ignore[arg-type]


def test_forgetting_erases_the_customer_from_its_orders_and_their_claims_then_from_its_record(desk) -> None:
    handlers, customers, orders, commands = desk
    orders.add([order("A-1", phone="555"), order("A-2")])
    orders.orders["A-2"].deadline = None  # finished: no timer runs
    customers.records["C-1"] = CustomerRecord("C-1", "Alice", "alice@example.com", "555")
    customers.orders["C-1"] = ["A-1", "A-2"]

    handlers.forget_customers(batch(ForgetCustomer(customer_id="C-1")))

    assert all(stored.customer == Customer("C-1", None, None) for stored in orders.orders.values())
    assert sorted(orders.claims_erased) == [("A-1", 1), ("A-2", 1)]
    record = customers.records["C-1"]
    assert (record.name, record.email, record.phone, record.forgotten_at) == (None, None, None, NOW)
    # The saga's timer of A-1 was about the version before the erasure: it is set for this one.
    ((timer, delay),) = zip(commands.timers, commands.delays, strict=True)
    assert (timer.order_id, timer.version, delay) == ("A-1", 1, timedelta(seconds=30))


def test_an_order_a_saga_moved_meanwhile_is_erased_from_a_fresh_read(desk) -> None:
    handlers, customers, orders, _ = desk
    orders.add([order("A-1")])
    customers.records["C-1"] = CustomerRecord("C-1", "Alice", "alice@example.com")
    customers.orders["C-1"] = ["A-1"]
    stale = orders.get_many

    def moved_first(order_ids: object) -> dict[str, Order]:
        found = stale(order_ids)  # type: ignore[arg-type]
        orders.orders["A-1"].version += 1  # a saga step won the next claim
        orders.get_many = stale  # type: ignore[method-assign]
        return found

    orders.get_many = moved_first  # type: ignore[method-assign]
    handlers.forget_customers(batch(ForgetCustomer(customer_id="C-1")))
    assert orders.orders["A-1"].customer == Customer("C-1", None, None)
    assert orders.orders["A-1"].version == 2


def test_an_order_recorded_while_forgetting_is_erased_too(desk) -> None:
    handlers, customers, orders, _ = desk
    orders.add([order("A-1"), order("A-2")])
    customers.records["C-1"] = CustomerRecord("C-1", "Alice", "alice@example.com")
    customers.orders["C-1"] = ["A-1"]
    customers.listed_meanwhile = ["A-2"]

    handlers.forget_customers(batch(ForgetCustomer(customer_id="C-1")))

    assert orders.orders["A-2"].customer == Customer("C-1", None, None)
    assert customers.records["C-1"].forgotten_at == NOW


def test_a_redelivered_forget_changes_nothing_and_an_unknown_customer_is_dead_lettered(desk) -> None:
    handlers, customers, orders, _ = desk
    orders.add([order("A-1")])
    customers.records["C-1"] = CustomerRecord("C-1", "Alice", "alice@example.com")
    customers.orders["C-1"] = ["A-1"]
    command = ForgetCustomer(customer_id="C-1")
    handlers.forget_customers(batch(command))
    # The customer comes back: a redelivery of the forget leaves the new order alone.
    orders.add([order("A-2")])
    customers.orders["C-1"].append("A-2")
    versions = {order_id: stored.version for order_id, stored in orders.orders.items()}
    forgotten = copy.deepcopy(customers.records["C-1"])

    again = batch(command, ForgetCustomer(customer_id="C-404"))
    handlers.forget_customers(again)

    assert {order_id: stored.version for order_id, stored in orders.orders.items()} == versions
    assert orders.orders["A-2"].customer.name == "Alice"
    assert customers.records["C-1"] == forgotten
    assert [(message.customer_id, reason) for message, reason in again.rejected] == [
        ("C-404", "unknown customer C-404")
    ]


def test_a_set_creates_a_customer_no_order_has_named(desk) -> None:
    handlers, customers, _, _ = desk
    command = UpdateCustomer(customer_id="C-9", name="Carol", email="carol@example.com")
    handlers.update_customers(batch(command))
    handlers.update_customers(batch(command))
    record = customers.records["C-9"]
    assert (record.name, record.email, record.recent_operations) == (
        "Carol",
        "carol@example.com",
        [command.message_id],
    )


def test_a_set_retries_over_a_command_applied_meanwhile(desk) -> None:
    handlers, customers, _, _ = desk
    customers.records["C-1"] = CustomerRecord("C-1", "Alice", "alice@example.com")
    first, second = (
        UpdateCustomer(customer_id="C-1", phone="1"),
        UpdateCustomer(customer_id="C-1", address="Main St"),
    )
    stale = customers.get

    def raced(customer_id: str) -> CustomerRecord | None:
        read = stale(customer_id)
        customers.get = stale  # type: ignore[method-assign]
        handlers.update_customers(batch(first))  # another thread applies another command first
        return read

    customers.get = raced  # type: ignore[method-assign]
    handlers.update_customers(batch(second))
    record = customers.records["C-1"]
    assert (record.phone, record.address, record.recent_operations) == (
        "1",
        "Main St",
        [first.message_id, second.message_id],
    )
