"""`orderflow submit` and `orderflow status`: what an upstream system and a support desk would do."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from services.order.domain import Order
from services.order.store import OrderRepository
from shared import store
from shared.contracts.base import utcnow
from shared.messaging import topology
from shared.messaging.publisher import Outgoing
from shared.messaging.transport import Transport
from shared.money import to_decimal_string
from shared.settings import Settings

# How many orders `submit` publishes per confirmed burst.
SUBMIT_BATCH = 500


def split_submissions(text: str) -> list[bytes]:
    """One order, a JSON array of orders, or JSON lines (each line sent as it is, valid or not)."""
    try:
        document = json.loads(text)
    except ValueError:
        return [line.encode() for line in text.splitlines() if line.strip()]
    if isinstance(document, list):
        return [json.dumps(item).encode() for item in document]
    return [text.strip().encode()]


def submit(settings: Settings, source: str) -> int:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    bodies = split_submissions(text)
    transport = Transport(settings)
    try:
        transport.declare()
        for start in range(0, len(bodies), SUBMIT_BATCH):
            transport.publisher.publish(
                [
                    Outgoing(topology.INTAKE_EXCHANGE, topology.INTAKE_ROUTING_KEY, body)
                    for body in bodies[start : start + SUBMIT_BATCH]
                ]
            )
    finally:
        transport.close()
    print(f"submitted {len(bodies)} order{'s' if len(bodies) != 1 else ''}")
    return 0


def status(settings: Settings, order_id: str, as_json: bool) -> int:
    orders = OrderRepository(store.database(store.connect(settings), settings, "order"))
    order = orders.get(order_id)
    if order is None:
        print(f"unknown order: {order_id}", file=sys.stderr)
        return 1
    view = order_view(order)
    if as_json:
        print(json.dumps(view, indent=2, default=str))
        return 0
    reason = f" ({view['reason']})" if view["reason"] else ""
    print(f"order {order.order_id}: {view['status']}{reason}")
    if view["total"] is not None:
        print(f"  total {view['total']} {order.currency}, paid by {order.payment_method}")
    for item in view["items"]:
        price = f" at {item['unit_price']}" if item["unit_price"] else ""
        print(f"  {item['quantity']} x {item['sku']}{price}")
    for error in order.errors:
        print(f"  error: {error}")
    for entry in view["history"]:
        print(f"  {entry['at']}  {entry['status']:<9} {entry['step']}")
    return 0


def order_view(order: Order) -> dict[str, Any]:
    def money(minor: int | None) -> str | None:
        return None if minor is None else to_decimal_string(minor, order.currency)

    return {
        "order_id": order.order_id,
        "status": order.status.value,
        "step": order.step.value,
        "reason": order.reason,
        "errors": order.errors,
        "customer": vars(order.customer) if order.customer else None,
        "payment_method": order.payment_method,
        "currency": order.currency,
        "total": money(order.total),
        "items": [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": money(line.unit_price),
                "line_total": money(line.line_total),
            }
            for line in order.lines
        ],
        "created_at": order.created_at.isoformat(),
        "deadline": order.deadline.isoformat() if order.deadline else None,
        "history": [
            {
                "at": entry.at.isoformat(),
                "status": entry.status.value,
                "step": entry.step.value,
                "reason": entry.reason,
            }
            for entry in order.history
        ],
    }


def stuck(settings: Settings, as_json: bool) -> int:
    """Pending orders past their step's deadline: the order worker times them out when it runs."""
    orders = OrderRepository(store.database(store.connect(settings), settings, "order"))
    overdue = orders.overdue(utcnow(), limit=0)
    if as_json:
        print(json.dumps([order_view(order) for order in overdue], indent=2, default=str))
        return 0
    if not overdue:
        print("no saga is past its deadline")
    for order in overdue:
        assert order.deadline is not None
        late = (utcnow() - order.deadline).total_seconds()
        print(f"{order.order_id:<24} {order.step:<18} {late:>8.0f} s past its deadline")
    return 0
