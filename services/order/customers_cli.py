"""`orderflow customers ...`: changes go to the order worker, which owns the customers, and the CLI
waits until its database shows them; what a customer is and has ordered is read from there."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from services import commands
from services.order.customers import CustomerBook, CustomerRecord
from services.order.domain import Order
from services.order.store import OrderRepository
from shared import store
from shared.contracts.customers import DETAILS, ForgetCustomer, UpdateCustomer
from shared.errors import UsageError
from shared.money import to_decimal_string
from shared.settings import Settings


def set_customer(settings: Settings, customer_id: str, details: dict[str, str | None], wait: float) -> int:
    """Set the details given; a customer no order has named yet is created."""
    given = {detail: value for detail, value in details.items() if value is not None}
    if not given:
        raise UsageError("customers set: give at least one of --name, --email, --phone, --address")
    try:
        command = UpdateCustomer.model_validate({"customer_id": customer_id, **given})
    except ValidationError as e:
        raise UsageError(f"customers set: {_problems(e)}") from e

    def done(record: CustomerRecord) -> None:
        print(f"customer {record.customer_id}: {', '.join(given)} set")

    return _send_and_wait(settings, command, wait, done)


def forget_customer(settings: Settings, customer_id: str, wait: float) -> int:
    """Erase the customer's personal data from its record and its orders."""
    customers = _customers(settings)
    if customers.get(customer_id) is None:
        print(f"unknown customer: {customer_id}", file=sys.stderr)
        return 1

    def done(record: CustomerRecord) -> None:
        erased = f"erased from the record and its {len(customers.orders_of(customer_id))} order(s)"
        print(f"customer {record.customer_id} forgotten: {erased}")

    return _send_and_wait(settings, ForgetCustomer(customer_id=customer_id), wait, done)


def show_customer(settings: Settings, customer_id: str, as_json: bool) -> int:
    customers = _customers(settings)
    record = customers.get(customer_id)
    if record is None:
        print(f"unknown customer: {customer_id}", file=sys.stderr)
        return 1
    repository = OrderRepository(store.database(store.connect(settings), settings, "order"))
    orders = sorted(
        repository.get_many(customers.orders_of(customer_id)).values(),
        key=lambda order: (order.created_at, order.order_id),
    )
    view = customer_view(record, orders)
    if as_json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"customer {record.customer_id}")
    for detail in DETAILS:
        if view[detail] is not None:
            print(f"  {detail:<8} {view[detail]}")
    if record.forgotten_at:
        print(f"  forgotten at {record.forgotten_at.isoformat()}")
    print(f"  {len(orders)} order(s)")
    for order, listed in zip(orders, view["orders"], strict=True):
        total = f"{listed['total']} {order.currency}" if listed["total"] else ""
        print(f"    {order.order_id:<24} {listed['status']:<10} {total}")
    return 0


def list_customers(settings: Settings, as_json: bool) -> int:
    customers = _customers(settings)
    counts = customers.order_counts()
    views = [{**_details(record), "order_count": counts[record.customer_id]} for record in customers.all()]
    if as_json:
        print(json.dumps(views, indent=2))
        return 0
    print(f"{'CUSTOMER':<24} {'NAME':<24} {'EMAIL':<32} {'ORDERS':>6}")
    for view in views:
        name = view["name"] or ("(forgotten)" if view["email"] is None else "")
        email = view["email"] or ""
        print(f"{view['customer_id']:<24} {name[:24]:<24} {email[:32]:<32} {view['order_count']:>6}")
    return 0


def customer_view(record: CustomerRecord, orders: list[Order]) -> dict[str, Any]:
    """`customers show --json`: the details, and each order's status and total."""
    return {
        **_details(record),
        "orders": [
            {
                "order_id": order.order_id,
                "status": order.status.value,
                "total": None if order.total is None else to_decimal_string(order.total, order.currency),
            }
            for order in orders
        ],
    }


def _details(record: CustomerRecord) -> dict[str, Any]:
    return {"customer_id": record.customer_id, **{detail: getattr(record, detail) for detail in DETAILS}}


def _customers(settings: Settings) -> CustomerBook:
    return CustomerBook(store.database(store.connect(settings), settings, "order"))


def _problems(error: ValidationError) -> str:
    """Each problem with the argument it is about: `ID` or `--email`, say."""
    return "; ".join(
        f"{_argument(problem['loc'])}: {problem['msg']}" for problem in error.errors(include_url=False)[:5]
    )


def _argument(location: tuple[int | str, ...]) -> str:
    field = ".".join(map(str, location))
    return "ID" if field == "customer_id" else f"--{field}"


def _send_and_wait(
    settings: Settings,
    command: UpdateCustomer | ForgetCustomer,
    wait: float,
    done: Callable[[CustomerRecord], None],
) -> int:
    commands.send(settings, command)
    customers = _customers(settings)

    def applied() -> CustomerRecord | None:
        record = customers.get(command.customer_id)
        return record if record is not None and command.message_id in record.recent_operations else None

    done(commands.applied(applied, wait, "order"))
    return 0
