"""The shapes of ids and addresses on the wire: what the system generates and upstreams send passes,
and a forged event cannot name arbitrary recipients or carry a header into a mail."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from shared.contracts import saga
from shared.contracts.base import (
    MAX_EMAIL_LENGTH,
    ORDER_ID_PATTERN,
    CaseId,
    CustomerId,
    EmailAddress,
    MessageId,
    OrderId,
    OrderKey,
    RequestId,
    Sku,
    SubmittedEmail,
    derive_id,
    new_id,
)
from shared.contracts.customers import UpdateCustomer
from shared.contracts.events import EventCustomer, LowStock, OrderStatusChanged, decode_event
from shared.contracts.intake import Customer
from shared.errors import InvalidMessage

ORDER_ID = TypeAdapter[str](OrderId)
SKU = TypeAdapter[str](Sku)
CUSTOMER_ID = TypeAdapter[str](CustomerId)
REQUEST_ID = TypeAdapter[str](RequestId)
CASE_ID = TypeAdapter[str](CaseId)
MESSAGE_ID = TypeAdapter[str](MessageId)
ORDER_KEY = TypeAdapter[str](OrderKey)
EMAIL = TypeAdapter[str](EmailAddress)
SUBMITTED_EMAIL = TypeAdapter[str](SubmittedEmail)

# Ids that would smuggle something past a token: a header (CR/LF), a second value (a comma, a
# space), a path, an over-long value, a leading dash (an option to a shell command).
BAD_IDS = [
    "",
    "A" * 65,
    "-A-1",
    ".A-1",
    "A 1",
    "A-1,A-2",
    "A-1\r\nBcc: mallory@example.net",
    "A-1\n",
    "A-1/change/1",
    "Ä-1",
]


def confirmed(**changes: Any) -> dict[str, Any]:
    """An `order.confirmed` event as the order worker publishes it (the previous release too)."""
    event: dict[str, Any] = {
        "event_id": derive_id("A-1", "order.confirmed"),
        "type": "order.confirmed",
        "schema_version": 1,
        "occurred_at": "2025-01-02T03:04:05Z",
        "order_id": "A-1",
        "status": "confirmed",
        "reason": None,
        "errors": [],
        "customer": {"customer_id": "C-1", "name": "Alice", "email": "alice@example.com", "phone": None},
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "12.50", "line_total": "25.00"}],
        "total": "25.00",
        "currency": "CNY",
        "payment_method": "alipay",
        "carrier": None,
        "tracking": None,
    }
    for field, value in changes.items():
        if field.startswith("customer_"):
            event["customer"] = {**event["customer"], field.removeprefix("customer_"): value}
        else:
            event[field] = value
    return event


def decode(event: dict[str, Any]) -> Any:
    return decode_event(json.dumps(event).encode())


@pytest.mark.parametrize(
    ("adapter", "generated"),
    [
        (ORDER_ID, ["A-1", "o-3f9a1c2b7d", "shop:2025.01-0042", "A" * 64]),
        (SKU, ["SKU-1", "mug.blue_XL", "S" * 64]),
        (CUSTOMER_ID, ["C-1", "alice@example.com", "crm:4711"]),
        (REQUEST_ID, [f"cli-{uuid.uuid4().hex[:20]}", derive_id("order.cancel", "m-1"), "r-1"]),
        (CASE_ID, [f"case-{uuid.uuid4().hex[:12]}", "case-1"]),
        (MESSAGE_ID, [new_id(), derive_id("A-1", "order.confirmed"), f"cli-{uuid.uuid4().hex[:20]}"]),
        (ORDER_KEY, ["A-1", "A-1/change/2", "A-1/change/2/refund", f"{'A' * 64}/change/123456789/refund"]),
    ],
)
def test_every_id_the_system_generates_or_upstreams_send_is_accepted(
    adapter: TypeAdapter[str], generated: list[str]
) -> None:
    for value in generated:
        assert adapter.validate_python(value) == value


@pytest.mark.parametrize("adapter", [ORDER_ID, SKU, CUSTOMER_ID, REQUEST_ID, CASE_ID, MESSAGE_ID])
@pytest.mark.parametrize("bad", BAD_IDS)
def test_an_id_is_a_token_of_at_most_64_characters(adapter: TypeAdapter[str], bad: str) -> None:
    with pytest.raises(ValidationError):
        adapter.validate_python(bad)


@pytest.mark.parametrize(
    "bad", ["", "A-1/", "/A-1", "A-1//change", "A-1/../x", "A-1/change/1\n", "A-1/a/b/c/d", "A-1/" + "c" * 65]
)
def test_a_key_is_an_order_id_or_a_short_path_below_one(bad: str) -> None:
    with pytest.raises(ValidationError):
        ORDER_KEY.validate_python(bad)
    with pytest.raises(ValidationError):
        saga.RefundAmount(order_id="A-1", refund_key=bad, parts=[saga.RefundPart(key="A-1", amount=1)])


def test_an_email_address_is_normalised_as_the_intake_normalises_it() -> None:
    assert EMAIL.validate_python("alice@example.com") == "alice@example.com"
    assert EMAIL.validate_python("Alice@EXAMPLE.Com") == "Alice@example.com"
    assert EMAIL.validate_python(" alice@example.com ") == "alice@example.com"
    assert EMAIL.validate_python("josé@exämple.com") == "josé@exämple.com"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("alice@example.com\r\nBcc: mallory@example.net", "Carriage return"),
        ("alice@example.com\nBcc: mallory@example.net", "Carriage return"),
        ("alice@example.com, mallory@example.net", "invalid characters"),
        ("alice@example.com;mallory@example.net", "invalid characters"),
        ("alice@example.com mallory@example.net", "invalid characters"),
        ("Mallory <mallory@example.net>", "without a display name"),
        ('"Alice" <mallory@example.net>', "without a display name"),
        ("<mallory@example.net>", "without a display name"),
        ("a" * 64 + "@" + "b" * 180 + ".example.com", f"at most {MAX_EMAIL_LENGTH}"),
        ("alice@orderflow.invalid", "special-use"),
        ("alice@shop.test", "special-use"),
        ("alice@localhost", "should have a period"),
        ("alice@[127.0.0.1]", "bracketed IP"),
        ('"a b"@example.com', "Quoting"),
        ("alice", "@-sign"),
        ("", "@-sign"),
    ],
)
def test_an_email_address_is_one_bare_deliverable_address(bad: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        EMAIL.validate_python(bad)


@given(st.emails() | st.emails().map(lambda address: f"Alice Example <{address}>"))
def test_every_address_the_intake_ever_stored_is_still_accepted_as_it_is(written: str) -> None:
    # Events name the address the intake (or `customers set`) stored: its EmailStr normalisation.
    try:
        stored = SUBMITTED_EMAIL.validate_python(written)
    except ValidationError:
        assume(False)
        raise
    assert EMAIL.validate_python(stored) == stored
    assert EventCustomer(customer_id="C-1", name="Alice", email=stored).email == stored


@given(st.from_regex(ORDER_ID_PATTERN, fullmatch=True), st.integers(min_value=1, max_value=999_999_999))
def test_every_key_the_order_derives_from_an_accepted_order_id_is_accepted(order_id: str, n: int) -> None:
    assume("\n" not in order_id)  # Python's `$` lets a final newline through; the contract does not
    for key in (order_id, f"{order_id}/change/{n}", f"{order_id}/change/{n}/refund"):
        assert ORDER_KEY.validate_python(key) == key
    assert saga.ReserveStock(
        message_id=derive_id(order_id, "reserve-stock/0"),
        order_id=order_id,
        lines=[saga.StockLine(sku="SKU-1", quantity=1)],
        hold=f"{order_id}/change/{n}",
    )


def test_the_edges_still_accept_a_named_address_and_keep_the_bare_one() -> None:
    # Upstreams and operators have always been able to write "Name <address>": only the address is kept.
    named = "Alice Example <Alice@Example.com>"
    assert Customer(customer_id="C-1", name="Alice", email=named).email == "Alice@example.com"
    assert UpdateCustomer(customer_id="C-1", email=named).email == "Alice@example.com"
    with pytest.raises(ValidationError):
        Customer(customer_id="C-1", name="Alice", email="alice@example.com, mallory@example.net")


def test_an_event_as_the_order_worker_publishes_it_is_read() -> None:
    event = decode(confirmed(customer_email="Alice@Example.COM"))
    assert isinstance(event, OrderStatusChanged) and event.customer is not None
    assert (event.order_id, event.customer.email) == ("A-1", "Alice@example.com")
    # Published again, it reads the same: nothing is normalised twice.
    assert decode_event(event.model_dump_json().encode()) == event


@pytest.mark.parametrize(
    ("forged", "named"),
    [
        (confirmed(customer_email="alice@example.com\r\nBcc: mallory@example.net"), "customer.email"),
        (confirmed(customer_email="alice@example.com, mallory@example.net"), "customer.email"),
        (confirmed(customer_email="Alice <mallory@example.net>"), "customer.email"),
        (confirmed(customer_email="m" * 64 + "@" + "x" * 250 + ".com"), "customer.email"),
        (confirmed(customer_email=["alice@example.com", "mallory@example.net"]), "customer.email"),
        (confirmed(customer_name="A" * 201), "customer.name"),
        (confirmed(customer_customer_id="C-1\r\nX: y"), "customer.customer_id"),
        # The order id goes into the subject, the event id into the Message-ID header.
        (confirmed(order_id="A-1\r\nBcc: mallory@example.net"), "order_id"),
        (confirmed(order_id="A" * 65), "order_id"),
        (confirmed(event_id="e-1>\r\nBcc: mallory@example.net"), "event_id"),
        (confirmed(event_id="e" * 65), "event_id"),
        (confirmed(items=[{"sku": "SKU-1\r\nX: y", "quantity": 1}]), "items.0.sku"),
    ],
)
def test_a_forged_event_is_invalid_and_the_reason_names_the_field(forged: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidMessage, match=re.escape(f"order.confirmed.{named}: ")) as refused:
        decode(forged)
    assert "mallory" not in str(refused.value), "the forged value is not echoed into the reason"


def test_a_forged_low_stock_alert_cannot_put_a_header_into_the_operators_subject() -> None:
    low = LowStock(sku="SKU-1", name="Blue mug", available=1, threshold=3).model_dump(mode="json")
    assert isinstance(decode(low), LowStock)
    with pytest.raises(InvalidMessage, match=r"stock\.low\.sku: "):
        decode({**low, "sku": "SKU-1\r\nBcc: mallory@example.net"})
