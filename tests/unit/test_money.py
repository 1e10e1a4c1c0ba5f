"""Money in minor units of the configured currency: ISO 4217 decides how many a major unit holds."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.order.domain import Order
from services.reporting.domain import build_report, outcome_fact, sale_step
from shared.contracts import saga
from shared.contracts.intake import OrderSubmission
from shared.money import InvalidAmount, UnknownCurrency, exponent, to_decimal_string, to_minor
from shared.settings import Settings
from tests.unit.factories import body, submission

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "CNY", 1250),
        ("3", "CNY", 300),
        ("0.01", "CNY", 1),
        ("0", "CNY", 0),
        (" 7.5 ", "CNY", 750),
        ("1.500", "CNY", 150),
        ("12.50", "USD", 1250),
        ("1500", "JPY", 1500),
        ("1500.0", "JPY", 1500),
        ("0", "JPY", 0),
        ("50000", "KRW", 50000),
        ("1.234", "KWD", 1234),
        ("0.005", "BHD", 5),
        ("2", "JOD", 2000),
        ("92233720368547758.07", "CNY", 2**63 - 1),
    ],
)
def test_decimal_strings_become_minor_units_of_the_currency(text: str, currency: str, minor: int) -> None:
    assert to_minor(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("1.001", "CNY"),
        ("1500.5", "JPY"),
        ("0.1", "KRW"),
        ("1.2345", "KWD"),
        ("-1", "CNY"),
        ("abc", "CNY"),
        ("NaN", "CNY"),
        ("Infinity", "CNY"),
        ("", "CNY"),
        # Beyond a 64-bit count, and beyond the 28 digits a Decimal keeps: no cent may be rounded away.
        ("92233720368547758.08", "CNY"),
        ("12345678901234567890123456789.01", "CNY"),
        ("1e1000000000", "CNY"),
    ],
)
def test_invalid_amounts_are_refused(text: str, currency: str) -> None:
    with pytest.raises(InvalidAmount):
        to_minor(text, currency)


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1250, "CNY", "12.50"),
        (5, "CNY", "0.05"),
        (0, "CNY", "0.00"),
        (-150, "CNY", "-1.50"),
        (1500, "JPY", "1500"),
        (0, "JPY", "0"),
        (-7, "KRW", "-7"),
        (1234, "KWD", "1.234"),
        (5, "OMR", "0.005"),
        (1, "CLF", "0.0001"),
    ],
)
def test_minor_units_format_as_decimal_strings_of_the_currency(minor: int, currency: str, text: str) -> None:
    assert to_decimal_string(minor, currency) == text


@pytest.mark.parametrize(
    ("currency", "places"),
    [("JPY", 0), ("KRW", 0), ("CNY", 2), ("USD", 2), ("EUR", 2), ("BHD", 3), ("KWD", 3), ("TND", 3)],
)
def test_each_currency_has_its_iso_4217_exponent(currency: str, places: int) -> None:
    assert exponent(currency) == places
    assert to_minor(to_decimal_string(123456, currency), currency) == 123456


@pytest.mark.parametrize("currency", ["XYZ", "cny", "XAU", ""])
def test_an_unknown_currency_is_refused(currency: str) -> None:
    with pytest.raises(UnknownCurrency, match="unknown currency"):
        to_minor("1", currency)
    with pytest.raises(UnknownCurrency):
        to_decimal_string(1, currency)


def test_settings_refuse_an_unknown_currency_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERFLOW_CURRENCY", "XYZ")
    with pytest.raises(ValidationError, match="unknown currency 'XYZ'"):
        Settings()
    monkeypatch.setenv("ORDERFLOW_CURRENCY", "JPY")
    assert Settings().currency == "JPY"


def test_a_yen_order_announces_whole_yen_and_reports_them() -> None:
    order = Order.accept(
        OrderSubmission.model_validate_json(body(submission("A-1", ("SKU-1", 2)))), "JPY", NOW
    )
    line = saga.PricedLine(sku="SKU-1", quantity=2, unit_price=1500, line_total=3000)
    order.stock_reserved(saga.StockReserved(order_id="A-1", lines=[line], total=3000), NOW)
    charge = order.outbox()[0]
    assert isinstance(charge, saga.ChargePayment) and (charge.amount, charge.currency) == (3000, "JPY")
    order.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=3000, charge_id="ch_1"), NOW)
    event = order.outbox()[0]
    assert (event.total, event.items[0].unit_price, event.items[0].line_total) == ("3000", "1500", "3000")

    step = sale_step(event, "CNY")  # the event's own currency wins over the fallback
    assert step is not None and [line["revenue"] for line in step["lines"]] == [3000]
    assert outcome_fact(event, "CNY")["total"] == 3000
    by_sku = [{"_id": "SKU-1", "units": 2, "revenue": 3000}]
    report = build_report("JPY", [], by_sku, [{"_id": "2026-01-02", "units": 2, "revenue": 3000}]).as_json()
    assert (report["revenue"], report["by_sku"][0]["revenue"], report["by_day"][0]["revenue"]) == (
        "3000",
        "3000",
        "3000",
    )
