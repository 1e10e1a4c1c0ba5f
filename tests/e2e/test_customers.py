"""Customers end to end: recorded from the orders, shown, listed, set and forgotten through the CLI."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import unique, wait_for
from tests.system import System, new_order

ERASED = {"name": None, "email": None, "phone": None, "address": None}


def order_of(
    customer_id: str, sku: str, quantity: int = 1, token: str = "tok_visa", **customer: Any
) -> dict[str, Any]:
    order = new_order((sku, quantity), token=token)
    order["customer"] = {**order["customer"], "customer_id": customer_id, **customer}
    return order


def placed(system: System, order: dict[str, Any]) -> dict[str, Any]:
    system.submit(order)
    return system.outcome(order["order_id"])


def show(system: System, customer_id: str) -> dict[str, Any]:
    return system.cli_json("customers", "show", customer_id)


def test_the_first_order_creates_the_customer_and_later_ones_update_it(system: System) -> None:
    sku, customer_id = unique("MUG"), unique("C")
    system.stock(sku, 10, price="12.50")
    first = order_of(customer_id, sku, 2, name="Alice", email="alice@example.com", phone="+86 10 5555 0101")
    assert placed(system, first)["status"] == "confirmed"

    assert show(system, customer_id) == {
        "customer_id": customer_id,
        "name": "Alice",
        "email": "alice@example.com",
        "phone": "+86 10 5555 0101",
        "address": None,
        "orders": [{"order_id": first["order_id"], "status": "confirmed", "total": "25.00"}],
    }

    later = order_of(customer_id, sku, name="Alice Li", email="alice@example.com", address="1 Chang'an Ave")
    assert placed(system, later)["status"] == "confirmed"
    customer = show(system, customer_id)
    assert (customer["name"], customer["phone"], customer["address"]) == ("Alice Li", None, "1 Chang'an Ave")
    assert customer["orders"] == [
        {"order_id": first["order_id"], "status": "confirmed", "total": "25.00"},
        {"order_id": later["order_id"], "status": "confirmed", "total": "12.50"},
    ]


def test_orders_are_listed_with_their_status_and_total(system: System) -> None:
    sku, customer_id = unique("MUG"), unique("C")
    system.stock(sku, 1, price="7.00")
    sold, short = order_of(customer_id, sku), order_of(customer_id, sku, 5)
    assert placed(system, sold)["status"] == "confirmed"
    assert placed(system, short)["reason"] == "out_of_stock"
    assert show(system, customer_id)["orders"] == [
        {"order_id": sold["order_id"], "status": "confirmed", "total": "7.00"},
        {"order_id": short["order_id"], "status": "cancelled", "total": None},
    ]


def test_set_creates_or_updates_a_customer_and_list_shows_it(system: System) -> None:
    customer_id = unique("C")
    result = system.cli("customers", "set", customer_id, "--name", "Bob", "--email", "bob@example.com")
    assert customer_id in result.stdout
    assert show(system, customer_id) == {
        "customer_id": customer_id,
        "name": "Bob",
        "email": "bob@example.com",
        "phone": None,
        "address": None,
        "orders": [],
    }
    system.cli("customers", "set", customer_id, "--phone", "555-0102", "--address", "2 Main St")
    assert show(system, customer_id)["phone"] == "555-0102"
    assert show(system, customer_id)["name"] == "Bob"  # kept

    listed = {customer["customer_id"]: customer for customer in system.cli_json("customers", "list")}
    assert listed[customer_id] == {
        "customer_id": customer_id,
        "name": "Bob",
        "email": "bob@example.com",
        "phone": "555-0102",
        "address": "2 Main St",
        "order_count": 0,
    }
    assert customer_id in system.cli("customers", "list").stdout


def test_forget_erases_the_customer_from_its_record_its_orders_and_their_claims(system: System) -> None:
    sku, customer_id = unique("MUG"), unique("C")
    system.stock(sku, 10, price="12.50")
    orders = [
        order_of(
            customer_id, sku, 2, name="Carol", email="carol@example.com", phone="555", address="3 Elm St"
        ),
        order_of(customer_id, sku, 1, name="Carol", email="carol@example.com", token="tok_declined"),
    ]
    for order in orders:
        placed(system, order)
    before = {order["order_id"]: system.cli_json("status", order["order_id"]) for order in orders}

    result = system.cli("customers", "forget", customer_id)
    assert "forgotten" in result.stdout

    assert show(system, customer_id) == {
        "customer_id": customer_id,
        **ERASED,
        "orders": [
            {"order_id": orders[0]["order_id"], "status": "confirmed", "total": "25.00"},
            {"order_id": orders[1]["order_id"], "status": "cancelled", "total": "12.50"},
        ],
    }
    database = system.database("orders")
    for order in orders:
        order_id = order["order_id"]
        status = system.cli_json("status", order_id)
        assert status["customer"] == {"customer_id": customer_id, **ERASED}
        unchanged = ("status", "reason", "total", "items", "payment", "history")
        assert {key: status[key] for key in unchanged} == {key: before[order_id][key] for key in unchanged}
        stored = database.orders.find_one({"_id": order_id})
        assert stored["customer"] == {"customer_id": customer_id, **ERASED}
        claims = list(database.order_transitions.find({"order_id": order_id}))
        assert len(claims) == stored["version"]
        assert all(claim["state"]["customer"] == {"customer_id": customer_id, **ERASED} for claim in claims)
    record = database.customers.find_one({"_id": customer_id})
    assert record["forgotten_at"] is not None
    assert (
        "carol" not in str(list(database.order_transitions.find({"order_id": orders[0]["order_id"]}))).lower()
    )


def test_a_forgotten_customer_comes_back_with_its_next_order(system: System) -> None:
    sku, customer_id = unique("MUG"), unique("C")
    system.stock(sku, 10)
    first = order_of(customer_id, sku, name="Dave", email="dave@example.com")
    placed(system, first)
    system.cli("customers", "forget", customer_id)
    assert show(system, customer_id)["name"] is None

    again = order_of(customer_id, sku, name="Dave", email="dave@example.com")
    placed(system, again)
    customer = wait_for(
        lambda: (found := show(system, customer_id))["name"] == "Dave" and found, what="the customer back"
    )
    assert [order["order_id"] for order in customer["orders"]] == [first["order_id"], again["order_id"]]
    assert system.cli_json("status", first["order_id"])["customer"]["name"] is None
    assert system.cli_json("status", again["order_id"])["customer"]["name"] == "Dave"


@pytest.mark.parametrize(
    "arguments",
    [
        ("set", "C-1"),
        ("set", "C-1", "--email", "not-an-email"),
        ("set", "C-1", "--name", ""),
        ("set", "C-1", "--phone", "1" * 51),
        ("set", "not a customer id!", "--name", "Eve"),
    ],
    ids=["nothing-to-set", "bad-email", "empty-name", "long-phone", "bad-id"],
)
def test_bad_input_exits_2_with_one_line(system: System, arguments: tuple[str, ...]) -> None:
    result = system.cli("customers", *arguments, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("command", ["show", "forget"])
def test_an_unknown_customer_exits_1(system: System, command: str) -> None:
    result = system.cli("customers", command, unique("NOBODY"), check=False)
    assert result.returncode == 1
    assert "unknown customer" in result.stderr
