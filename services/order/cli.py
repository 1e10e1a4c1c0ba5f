"""`orderflow submit`, `orderflow orders ...` and `orderflow status`: what an upstream system, a
warehouse and a support desk would do."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from services import commands
from services.order.changes import RequestRecord
from services.order.domain import Order, OrderStatus, SagaStep
from services.order.intake import InvalidRequest, decode_request
from services.order.store import OrderRepository
from shared import store
from shared.contracts.base import utcnow
from shared.errors import CommandError, UsageError
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
    transport = Transport(settings, "upstream")  # as an upstream system would
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


def request(
    settings: Settings, kind: str, order_id: str, fields: dict[str, Any], wait: float, as_json: bool
) -> int:
    """Publish a request about an order to the intake (`order.<kind>`), as an upstream system
    would, and wait for the order worker to carry it out or refuse it."""
    orders = OrderRepository(store.database(store.connect(settings), settings, "order"))
    if orders.get(order_id) is None:
        raise CommandError(f"unknown order: {order_id}")
    request_id = f"cli-{uuid.uuid4().hex[:20]}"
    body = json.dumps({"order_id": order_id, "request_id": request_id, **fields}).encode()
    try:
        # What the intake would dead-letter is refused here, with the same words.
        decode_request(body, f"order.{kind}", "application/json", None, settings.max_message_bytes)
    except InvalidRequest as e:
        raise UsageError(str(e)) from e
    commands.publish(settings, Outgoing(topology.INTAKE_EXCHANGE, f"order.{kind}", body))

    def settled() -> tuple[Order, RequestRecord] | None:
        order = orders.get(order_id)
        assert order is not None
        record = order.record_of(request_id)
        # A pending order's cancel is done when the order is cancelled, not when it is asked.
        if record is None or (kind == "cancel" and order.status is OrderStatus.PENDING):
            return None
        return order, record

    order, record = commands.applied(settled, wait, "order")
    view = {**request_view(order, record), "status": order.status.value}
    if as_json:
        print(json.dumps(view, indent=2))
    elif record.outcome == "rejected":
        print(f"order {order_id}: {kind} refused ({record.reason}): {record.detail}", file=sys.stderr)
    else:
        print(
            f"order {order_id}: {_DONE[kind]}, now {order.status.value}" + _money_moved(view, order.currency)
        )
    return 0 if record.outcome == "done" else 1


_DONE = {"cancel": "cancelled", "amend": "amended", "ship": "shipped", "complete": "completed"}


def _money_moved(view: dict[str, Any], currency: str) -> str:
    amount = view["amount"]
    if amount.startswith("-"):
        return f"; refunded {amount[1:]} {currency}"
    return f"; charged {amount} {currency}" if amount.strip("0.") else ""


def request_view(order: Order, record: RequestRecord) -> dict[str, Any]:
    def money(minor: int | None) -> str | None:
        return None if minor is None else to_decimal_string(minor, order.currency)

    return {
        "request_id": record.request_id,
        "kind": record.kind,
        "outcome": record.outcome,
        "reason": record.reason,
        "detail": record.detail,
        "at": record.at.isoformat(),
        "amount": ("-" if record.amount < 0 else "") + to_decimal_string(abs(record.amount), order.currency),
        "total": money(record.total),
        "previous_total": money(record.previous_total),
        "case_id": record.case_id,
    }


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
        print(
            f"  total {view['total']} {order.currency}, paid by {order.payment_method}, paid {view['paid']}"
        )
    if order.carrier or order.tracking:
        print(f"  shipped with {order.carrier or '?'}, tracking {order.tracking or '?'}")
    for item in view["items"]:
        price = f" at {item['unit_price']}" if item["unit_price"] else ""
        print(f"  {item['quantity']} x {item['sku']}{price}")
    for error in order.errors:
        print(f"  error: {error}")
    payment = view["payment"]
    if payment["captured"] or payment["refund_required"]:
        refunded = payment["refunded"] if payment["refunded"] is not None else "not yet"
        print(f"  payment: captured {payment['captured'] or '0'}, refunded {refunded}")
    for due in view["pending_compensations"]:
        where = f" in partition {due['partition']}" if "partition" in due else ""
        print(f"  outstanding: {due['kind']}{where} since {due['since']}")
    if view["change"]:
        change = view["change"]
        waiting = ", ".join(change["awaiting"])
        print(
            f"  under way: {change['kind']} ({change['request_id']}), {change['step']}, waiting for {waiting}"
        )
    for waiting in view["queued"]:
        print(f"  waiting its turn: {waiting['kind']} ({waiting['request_id']})")
    for entry in view["history"]:
        amount = f" {entry['amount']}" if "amount" in entry else ""
        reason = f" {entry['reason']}" if entry["step"] == SagaStep.CHANGED else ""
        print(
            f"  {entry['at']}  {entry['status']:<9} {entry['step']}{reason}{amount}  ({entry['message_id']})"
        )
    for taken in view["requests"]:
        said = f": {taken['reason']}, {taken['detail']}" if taken["outcome"] == "rejected" else ""
        print(f"  request {taken['request_id']}: {taken['kind']} {taken['outcome']}{said}")
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
        "attempts": order.attempts,
        "payment": {
            "method": order.payment_method,
            "total": money(order.total),
            "captured": money(order.captured),
            "charge_id": order.charge_id,
            "refund_required": order.refund_required,
            "refunded": money(order.refunded),
        },
        "paid": money(order.paid),
        "carrier": order.carrier,
        "tracking": order.tracking,
        "change": change_view(order),
        "queued": [{"request_id": request.message_id, "kind": request.kind} for request in order.queued],
        "requests": [request_view(order, record) for record in order.requests],
        "pending_compensations": pending_compensations(order),
        "history": [
            {
                "at": entry.at.isoformat(),
                "status": entry.status.value,
                "step": entry.step.value,
                "reason": entry.reason,
                "message_id": entry.cause,
                **({"amount": money(entry.amount)} if entry.amount is not None else {}),
            }
            for entry in order.history
        ],
    }


def change_view(order: Order) -> dict[str, Any] | None:
    change = order.change
    if change is None:
        return None
    return {
        "request_id": change.request_id,
        "kind": change.kind.value,
        "step": change.step.value,
        "awaiting": change.awaiting,
        "amount": None if change.amount is None else to_decimal_string(abs(change.amount), order.currency),
        "since": change.started_at.isoformat(),
    }


def pending_compensations(order: Order) -> list[dict[str, Any]]:
    """What the order still waits to see done: releases, a refund, and since when."""
    since = order.due_since.isoformat() if order.due_since else None
    pending: list[dict[str, Any]] = []
    if order.status is OrderStatus.PENDING and order.step is SagaStep.RELEASING_STOCK:
        pending += [{"kind": "release", "partition": p, "since": since} for p in order.awaiting]
    if order.refund_due:
        pending.append({"kind": "refund", "since": since})
    return pending


def stuck(settings: Settings, as_json: bool) -> int:
    """Pending orders that look stuck, the oldest first: past their step's deadline, asked for
    their step more than once (a release that keeps failing), or under way for longer than
    STUCK_AFTER step timeouts. A running order worker times them out or keeps asking."""
    orders = OrderRepository(store.database(store.connect(settings), settings, "order"))
    now = utcnow()
    pending = (order for order in orders.under_way() if order.status is OrderStatus.PENDING)
    stuck = sorted(
        (order for order in pending if _looks_stuck(order, now)), key=lambda order: order.created_at
    )
    if as_json:
        views = [
            {**order_view(order), "age_seconds": round((now - order.created_at).total_seconds(), 1)}
            for order in stuck
        ]
        print(json.dumps(views, indent=2, default=str))
        return 0
    if not stuck:
        print("no saga looks stuck")
    for order in stuck:
        age = (now - order.created_at).total_seconds()
        print(f"{order.order_id:<24} {order.step:<18} {age:>8.0f} s old, attempt {order.attempts}")
    return 0


# A saga under way for longer than this many step timeouts is listed as stuck.
STUCK_AFTER = 4


def _looks_stuck(order: Order, now: datetime) -> bool:
    return (
        order.is_overdue(now)
        or order.attempts > 1
        or now - order.created_at > STUCK_AFTER * order.step_timeout
    )
