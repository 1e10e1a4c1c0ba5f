from dataclasses import dataclass

import pytest

from services.order.intake import InvalidSubmission, RejectedSubmission, decode_submission
from shared.contracts.intake import OrderSubmission
from tests.unit.factories import body, submission

LIMIT = 64 * 1024


@dataclass
class Refusal:
    order_id: str | None  # set when the order is recorded as rejected
    errors: list[str]


def rejected(raw: bytes, content_type: str | None = "application/json") -> Refusal:
    try:
        decoded = decode_submission(raw, content_type, LIMIT)
    except InvalidSubmission as e:
        return Refusal(None, [str(e)])
    assert isinstance(decoded, RejectedSubmission), f"accepted: {decoded}"
    return Refusal(decoded.order_id, decoded.errors)


def parse_submission(raw: bytes, content_type: str | None, limit: int) -> OrderSubmission:
    decoded = decode_submission(raw, content_type, limit)
    assert isinstance(decoded, OrderSubmission), decoded
    return decoded


def test_a_valid_submission_parses() -> None:
    parsed = parse_submission(body(submission("A-1", ("SKU-1", 2), ("SKU-2", 1))), "application/json", LIMIT)
    assert parsed.order_id == "A-1"
    assert [(item.sku, item.quantity) for item in parsed.items] == [("SKU-1", 2), ("SKU-2", 1)]
    assert parsed.payment.method == "credit_card"


def test_malformed_json_has_no_readable_order_id() -> None:
    error = rejected(b'{"order_id": "A-1", "items": [')
    assert error.order_id is None
    assert "Invalid JSON" in error.errors[0]


def test_wrong_types_are_named_field_by_field() -> None:
    data = submission("A-2")
    data["items"][0]["quantity"] = "2"
    data["customer"]["name"] = 42
    error = rejected(body(data))
    assert error.order_id == "A-2"
    assert any(e.startswith("items.0.quantity:") for e in error.errors)
    assert any(e.startswith("customer.name:") for e in error.errors)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(items=[]), "items:"),
        (lambda d: d["items"][0].update(quantity=-3), "items.0.quantity:"),
        (lambda d: d["items"][0].update(quantity=0), "items.0.quantity:"),
        (lambda d: d["payment"].update(method="bitcoin"), "payment.method:"),
        (lambda d: d["customer"].update(name="x" * 201), "customer.name:"),
        (lambda d: d["customer"].update(email="not-an-email"), "customer.email:"),
        (lambda d: d["items"][0].update(sku="bad sku!"), "items.0.sku:"),
        (lambda d: d.update(items=[{"sku": f"S{i}", "quantity": 1} for i in range(101)]), "items:"),
        (
            lambda d: d.update(items=[{"sku": "S", "quantity": 6000}, {"sku": "S", "quantity": 6000}]),
            "(message)",
        ),
        (lambda d: d.pop("payment"), "payment:"),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_named(change, field: str) -> None:
    data = submission("A-3")
    change(data)
    error = rejected(body(data))
    assert error.order_id == "A-3"
    assert any(e.startswith(field) for e in error.errors), error.errors


def test_an_unreadable_order_id_is_not_used() -> None:
    data = submission("A-4")
    data["order_id"] = "x" * 500
    assert rejected(body(data)).order_id is None


def test_oversized_messages_are_rejected_before_parsing() -> None:
    data = submission("A-5")
    data["padding"] = "x" * LIMIT
    error = rejected(body(data))
    assert "more than the limit" in error.errors[0]


def test_unknown_content_types_are_rejected() -> None:
    error = rejected(body(submission("A-6")), content_type="application/xml")
    assert "unsupported content type" in error.errors[0]


def test_deep_nesting_is_rejected_without_crashing() -> None:
    error = rejected(b"[" * 100_000 + b"]" * 100_000)
    assert error.order_id is None


@pytest.mark.parametrize("content_type", [None, "", "application/json; charset=utf-8", "TEXT/PLAIN"])
def test_json_is_accepted_with_any_of_its_usual_content_types(content_type: str | None) -> None:
    assert parse_submission(body(submission("A-8")), content_type, LIMIT).order_id == "A-8"


def test_unknown_fields_are_ignored() -> None:
    data = submission("A-7")
    data["channel"] = "web"
    assert parse_submission(body(data), None, LIMIT).order_id == "A-7"
