"""Schema versions: older messages and documents are read in the current shape, newer ones refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.inventory.store import _product, _reservation
from services.order.domain import OrderStatus, SagaStep
from services.order.intake import InvalidRequest, InvalidSubmission, decode_request, decode_submission
from services.order.store import ORDERS, _from_document
from services.payment.store import PAYMENTS, _payment
from shared.contracts import customers, events, requests, saga, support
from shared.contracts.base import Message
from shared.contracts.versions import NewerSchema, check_upcasters, current_version, upcast
from shared.documents import NewerDocument
from shared.errors import InvalidMessage
from shared.messaging.saga_bus import _decode
from tests.unit.factories import body, submission

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def contracts() -> list[type]:
    modules = (saga, requests, customers, support, events)
    found = {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Message | events.Event)
    }
    return sorted(found, key=lambda contract: contract.__name__)


def test_every_contract_reads_every_version_up_to_its_current_one() -> None:
    assert check_upcasters(contracts()) == []
    assert current_version(saga.PaymentRefunded) == 2
    assert saga.PaymentRefunded(order_id="A-1", amount=1).schema_version == 2


def test_a_version_1_refund_of_a_change_names_its_refund_key_apart() -> None:
    # As the payment worker of the last release sent it: the refund key in `key`.
    old = {"schema_version": 1, "order_id": "A-1", "amount": 500, "key": "A-1/change/1/refund"}
    refunded = saga.PaymentRefunded.model_validate(upcast(saga.PaymentRefunded, old))
    assert (refunded.key, refunded.refund_key, refunded.schema_version) == (None, "A-1/change/1/refund", 2)
    # An undone charge of a change keeps its key; the release before named no key at all.
    undone = upcast(saga.PaymentRefunded, {**old, "key": "A-1/change/1"})
    assert (undone["key"], undone.get("refund_key")) == ("A-1/change/1", None)
    assert upcast(saga.PaymentRefunded, {"order_id": "A-1", "amount": 0}).get("key") is None


def test_a_message_newer_than_the_worker_is_dead_lettered_with_the_reason_not_raised() -> None:
    class Source:
        queue = "q"

    payload = {"schema_version": 3, "order_id": "A-1", "amount": 1, "message_id": "m"}
    received = _decode(Source(), saga.PaymentRefunded, payload, 0)  # type: ignore[arg-type]
    assert received.message is None
    assert received.problem is not None and "schema version 3" in received.problem
    assert "reads up to 2" in received.problem


def test_a_newer_submission_or_request_is_dead_lettered_not_rejected() -> None:
    newer = json.loads(body(submission("A-1", ("SKU-1", 1))))
    with pytest.raises(InvalidSubmission, match="schema version 2"):
        decode_submission(json.dumps({**newer, "schema_version": 2}).encode(), "application/json", 65536)
    assert (
        decode_submission(json.dumps({**newer, "schema_version": 1}).encode(), None, 65536).order_id == "A-1"
    )
    with pytest.raises(InvalidRequest, match="schema version 9"):
        decode_request(b'{"order_id": "A-1", "schema_version": 9}', "order.cancel", None, None, 65536)


def test_a_newer_event_is_invalid_and_an_older_one_reads_with_its_defaults() -> None:
    refunded = {"type": "order.refunded", "order_id": "A-1", "status": "cancelled", "amount": "1.00"}
    # As the release before the last published it: no `cause`.
    event = events.decode_event(json.dumps({**refunded, "currency": "CNY"}).encode())
    assert isinstance(event, events.OrderRefunded) and event.cause == "cancel"
    with pytest.raises(NewerSchema):
        events.decode_event(json.dumps({**refunded, "currency": "CNY", "schema_version": 2}).encode())
    with pytest.raises(InvalidMessage):
        events.decode_event(b"[1, 2")


def old_order(**fields: object) -> dict[str, object]:
    """An order as the release before the last stored it (git show a206b4a:services/order/store.py)."""
    return {
        "_id": "A-1",
        "customer": {"customer_id": "C-1", "name": "Ann", "email": "ann@example.com"},
        "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 500, "line_total": 1000}],
        "payment_method": "alipay",
        "payment_token": None,
        "currency": "CNY",
        "created_at": NOW,
        "status": "confirmed",
        "step": "done",
        "reason": None,
        "errors": [],
        "total": 1000,
        "history": [{"at": NOW, "status": "confirmed", "step": "done", "cause": "m-1", "reason": None}],
        "last_cause": "m-1",
        "step_timeout_seconds": 30.0,
        "deadline": None,
        "refund_required": False,
        "refunded": None,
        "captured": 1000,
        "charge_id": "ch_A-1",
        "due_since": None,
        "attempts": 1,
        "follow_ups": 0,
        "awaiting": [],
        "refused": [],
        "version": 3,
        **fields,
    }


def test_an_order_of_the_release_before_is_upgraded_explicitly() -> None:
    document = ORDERS.current(old_order())
    assert document["schema"] == 2
    assert (document["change"], document["queued"], document["requests"], document["shipped_at"]) == (
        None,
        [],
        [],
        None,
    )
    order = _from_document(old_order())
    assert (order.status, order.step, order.version, order.requests) == (
        OrderStatus.CONFIRMED,
        SagaStep.DONE,
        3,
        [],
    )
    with pytest.raises(NewerDocument, match="schema 3"):
        _from_document({**document, "schema": 3})


def test_a_payment_and_a_reservation_of_the_release_before_are_upgraded() -> None:
    stored = {"_id": "A-1", "method": "alipay", "amount": 1000, "currency": "CNY", "status": "captured"}
    payment = _payment({**stored, "created_at": NOW, "captured": 1000, "charge_id": "ch_A-1"})
    assert (payment.order_id, payment.key, payment.refunds, payment.idempotency_key) == (
        "A-1",
        None,
        {},
        "A-1",
    )
    assert PAYMENTS.current({**stored, "created_at": NOW})["order_id"] == "A-1"
    reservation = _reservation(
        {"_id": "A-1:0", "order_id": "A-1", "partition": 0, "status": "reserved", "lines": [], "skus": []}
    )
    assert (reservation.order_id, reservation.order) == ("A-1", None)


def test_a_product_with_holds_as_a_list_is_upgraded_to_packed_holds() -> None:
    product = _product(
        {
            "_id": "SKU-1",
            "name": "n",
            "price": 1,
            "available": 1,
            "reserved": 2,
            "holds": [{"order_id": "A-1", "quantity": 2}],
        }
    )
    assert (product.holds, product.sold, product.version) == ({"A-1": 2}, 0, 0)
