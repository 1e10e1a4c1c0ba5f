"""The sales report after orders change: net of cancellations, amendments, returns and refunds,
each event counted once, whatever the order it arrives in."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.reporting.domain import build_report, earlier_sale, next_sale, sale_step, sold_per_day
from services.reporting.handlers import ReportingHandlers
from shared.contracts.events import EventLine, OrderChanged, OrderRefunded, OrderStatusChanged
from tests.unit.fakes import FakeSalesFacts, batch

DAY_1 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
DAY_2 = DAY_1 + timedelta(days=1)
DAY_3 = DAY_1 + timedelta(days=2)


def line(sku: str, quantity: int, unit_price: str) -> EventLine:
    total = str(Decimal(unit_price) * quantity)
    return EventLine(sku=sku, quantity=quantity, unit_price=unit_price, line_total=total)


def status(
    kind: str, order_id: str = "A-1", at: datetime = DAY_1, reason: str | None = None, items: Any = None
) -> OrderStatusChanged:
    items = [line("SKU-1", 2, "12.50")] if items is None else items
    return OrderStatusChanged(
        event_id=f"{order_id}:{kind}",
        type=f"order.{kind}",
        occurred_at=at,
        order_id=order_id,
        status="pending" if kind == "accepted" else kind,
        reason=reason,
        items=items,
        total="25.00",
        currency="CNY",
    )


def changed(
    kind: str,
    request: str,
    amount: str,
    at: datetime = DAY_2,
    order_id: str = "A-1",
    items: Any = (),
    returned: Any = (),
    replacement: Any = (),
) -> OrderChanged:
    return OrderChanged(
        event_id=f"{order_id}:{kind}:{request}",
        type=f"order.{kind}",
        occurred_at=at,
        order_id=order_id,
        status="shipped" if kind != "amended" else "confirmed",
        request_id=request,
        items=list(items),
        total="0.00",
        previous_total="0.00",
        amount=amount,
        currency="CNY",
        returned=list(returned),
        replacement=list(replacement),
    )


def refunded(cause: str, request: str | None, amount: str, order_id: str = "A-1") -> OrderRefunded:
    return OrderRefunded(
        event_id=f"{order_id}:refunded:{request}",
        occurred_at=DAY_2,
        order_id=order_id,
        status="cancelled" if cause == "cancel" else "shipped",
        amount=amount,
        currency="CNY",
        cause=cause,
        request_id=request,
    )


def report_of(*batches: list[Any], facts: FakeSalesFacts | None = None) -> dict[str, Any]:
    facts = facts or FakeSalesFacts()
    handlers = ReportingHandlers(facts, "CNY")
    for events in batches:
        handlers.on_events(batch(*events))
    return handlers.sales_report().as_json()


AMENDED = changed("amended", "r-1", "25.00", items=[line("SKU-1", 3, "12.50"), line("SKU-2", 1, "12.50")])
AMENDED_AGAIN = changed("amended", "r-2", "-12.50", at=DAY_3, items=[line("SKU-2", 3, "12.50")])


def test_an_order_cancelled_after_confirmation_sells_nothing() -> None:
    report = report_of(
        [status("confirmed")],
        [status("cancelled", at=DAY_2, reason="customer_request"), refunded("cancel", "c-1", "25.00")],
    )
    assert (report["orders_confirmed"], report["orders_cancelled"]) == (1, 1)
    assert report["cancelled_by_reason"] == {"customer_request": 1}
    assert (report["units_sold"], report["revenue"], report["net_revenue"]) == (0, "0.00", "0.00")
    assert report["by_sku"] == []
    # Sold on its day, taken back on the day it was cancelled.
    assert report["by_day"] == [
        {"day": "2026-03-01", "units": 2, "revenue": "25.00"},
        {"day": "2026-03-02", "units": -2, "revenue": "-25.00"},
    ]
    assert (report["refunds"], report["refunded"]) == (1, "25.00")


def test_a_pending_order_cancelled_by_its_customer_never_counted_as_sold() -> None:
    report = report_of([status("cancelled", reason="customer_request")])
    assert (report["orders_cancelled"], report["units_sold"], report["by_day"]) == (1, 0, [])


def test_an_amendment_counts_its_difference_per_sku_on_its_day() -> None:
    report = report_of([status("confirmed")], [AMENDED])
    assert report["orders_amended"] == 1
    assert (report["units_sold"], report["revenue"]) == (4, "50.00")
    assert report["by_sku"] == [
        {"sku": "SKU-1", "units": 3, "revenue": "37.50"},
        {"sku": "SKU-2", "units": 1, "revenue": "12.50"},
    ]
    assert report["by_day"] == [
        {"day": "2026-03-01", "units": 2, "revenue": "25.00"},
        {"day": "2026-03-02", "units": 2, "revenue": "25.00"},
    ]


def test_an_amendment_that_refunds_lowers_the_revenue_and_counts_the_refund() -> None:
    report = report_of([status("confirmed")], [AMENDED], [AMENDED_AGAIN, refunded("amend", "r-2", "12.50")])
    assert report["orders_amended"] == 1  # one order, amended twice
    assert report["by_sku"] == [{"sku": "SKU-2", "units": 3, "revenue": "37.50"}]
    assert (report["units_sold"], report["revenue"], report["refunded"]) == (3, "37.50", "12.50")


def test_the_figures_do_not_depend_on_the_order_the_events_arrive_in() -> None:
    events = [status("confirmed"), AMENDED, AMENDED_AGAIN, status("shipped", at=DAY_3 + timedelta(hours=1))]
    expected = report_of(events)
    for arrival in itertools.permutations(events):
        assert report_of(*[[event] for event in arrival]) == expected, arrival
    cancelled = [*events[:3], status("cancelled", at=DAY_3 + timedelta(hours=2), reason="operator said so")]
    for arrival in itertools.permutations(cancelled):
        report = report_of(*[[event] for event in arrival])
        assert (report["units_sold"], report["revenue"], report["by_sku"]) == (0, "0.00", [])
        assert sum(row["units"] for row in report["by_day"]) == 0


def test_a_redelivered_event_is_counted_once() -> None:
    refund = refunded("return", "ret-1", "12.50")
    returned = changed("returned", "ret-1", "-12.50", returned=[line("SKU-1", 1, "12.50")])
    once = report_of([status("confirmed")], [AMENDED], [returned, refund])
    again = report_of(
        [status("confirmed"), status("confirmed")],
        [AMENDED, AMENDED],
        [returned, refund, AMENDED],
        [status("confirmed"), returned, refund],
    )
    assert again == once
    assert (once["refunds"], once["orders_returned"], once["units_returned"]) == (1, 1, 1)


def test_a_return_takes_back_its_units_and_revenue() -> None:
    report = report_of(
        [status("confirmed"), status("shipped", at=DAY_2)],
        [
            changed("returned", "ret-1", "-12.50", at=DAY_3, returned=[line("SKU-1", 1, "12.50")]),
            refunded("return", "ret-1", "12.50"),
        ],
        [status("completed", at=DAY_3)],
    )
    assert (report["orders_shipped"], report["orders_completed"], report["orders_returned"]) == (1, 1, 1)
    assert (report["units_sold"], report["units_returned"], report["revenue"]) == (1, 1, "12.50")
    assert (report["refunds"], report["refunded"]) == (1, "12.50")
    assert report["by_day"][-1] == {"day": "2026-03-03", "units": -1, "revenue": "-12.50"}


def test_an_exchange_swaps_the_units_it_moved() -> None:
    exchange = changed(
        "exchanged",
        "x-1",
        "0.00",
        returned=[line("SKU-1", 1, "12.50")],
        replacement=[line("SKU-3", 1, "12.50")],
    )
    report = report_of([status("confirmed")], [exchange])
    assert report["orders_exchanged"] == 1
    assert report["by_sku"] == [
        {"sku": "SKU-1", "units": 1, "revenue": "12.50"},
        {"sku": "SKU-3", "units": 1, "revenue": "12.50"},
    ]
    assert (report["units_sold"], report["units_returned"], report["revenue"]) == (2, 0, "25.00")


def test_an_unpaid_order_amended_before_confirmation_sells_what_it_was_confirmed_with() -> None:
    # Amended the evening before it was paid for and confirmed: nothing was sold that evening.
    evening = DAY_1 - timedelta(hours=11)
    before = changed("amended", "r-0", "0.00", at=evening, items=[line("SKU-9", 9, "1.00")])
    report = report_of(
        [status("accepted", at=evening - timedelta(minutes=5))], [before], [status("confirmed")]
    )
    assert report["by_sku"] == [{"sku": "SKU-1", "units": 2, "revenue": "25.00"}]
    assert report["by_day"] == [{"day": "2026-03-01", "units": 2, "revenue": "25.00"}]
    assert (report["orders_accepted"], report["orders_amended"]) == (1, 1)


def test_a_refund_of_an_order_never_confirmed_leaves_the_revenue_alone() -> None:
    report = report_of(
        [status("confirmed", order_id="A-2")],
        [status("cancelled", reason="timeout"), refunded("cancel", None, "25.00")],
    )
    assert (report["revenue"], report["refunds"], report["refunded"]) == ("25.00", 1, "25.00")


def test_a_process_that_loses_the_race_for_a_version_goes_on_from_the_winners() -> None:
    facts = FakeSalesFacts()
    handlers = ReportingHandlers(facts, "CNY")
    handlers.on_events(batch(status("confirmed")))
    rival = ReportingHandlers(facts, "CNY")
    # While this process reads version 1 and computes version 2, another one claims version 2.
    facts.before_claim = lambda: rival.on_events(batch(AMENDED))
    handlers.on_events(batch(status("cancelled", at=DAY_3, reason="customer_request")))
    assert [sale["version"] for sale in facts.sales.values()] == [1, 2, 3]
    report = handlers.sales_report().as_json()
    assert (report["units_sold"], report["revenue"], report["by_sku"]) == (0, "0.00", [])
    assert [row["units"] for row in report["by_day"]] == [2, 2, -4]


def test_facts_of_a_version_whose_writer_died_are_written_by_the_next_delivery() -> None:
    facts = FakeSalesFacts()
    handlers = ReportingHandlers(facts, "CNY")
    handlers.on_events(batch(status("confirmed")))
    facts.die_after_claim = True
    with pytest.raises(ConnectionError):
        handlers.on_events(batch(AMENDED))
    assert len(facts.sales) == 2 and handlers.sales_report().as_json()["units_sold"] == 2
    handlers.on_events(batch(AMENDED))  # the redelivery
    assert len(facts.sales) == 2 and handlers.sales_report().as_json()["units_sold"] == 4


def test_sold_per_day_takes_back_everything_on_cancellation() -> None:
    steps = [
        sale_step(status("confirmed"), "CNY"),
        sale_step(AMENDED, "CNY"),
        sale_step(status("cancelled", at=DAY_3, reason="x"), "CNY"),
    ]
    assert sold_per_day([step for step in steps if step]) == {
        ("2026-03-01", "SKU-1"): (2, 2500),
        ("2026-03-02", "SKU-1"): (1, 1250),
        ("2026-03-02", "SKU-2"): (1, 1250),
        ("2026-03-03", "SKU-1"): (-3, -3750),
        ("2026-03-03", "SKU-2"): (-1, -1250),
    }


def test_next_sale_is_none_for_steps_it_holds_already() -> None:
    step = sale_step(status("confirmed"), "CNY")
    assert step is not None
    first = next_sale("A-1", None, [step, step])
    assert first is not None and (first["_id"], len(first["steps"]), len(first["facts"])) == ("A-1:1", 1, 1)
    assert next_sale("A-1", first, [step]) is None


def test_the_report_keeps_every_field_it_had_and_adds_the_new_ones() -> None:
    report = build_report("CNY", [], [], []).as_json()
    assert {
        "currency",
        "orders_accepted",
        "orders_confirmed",
        "orders_cancelled",
        "orders_rejected",
        "cancelled_by_reason",
        "units_sold",
        "revenue",
        "by_sku",
        "by_day",
    } <= set(report)
    assert {
        "orders_shipped",
        "orders_completed",
        "orders_amended",
        "orders_returned",
        "orders_exchanged",
        "units_returned",
        "refunds",
        "refunded",
        "net_revenue",
    } <= set(report)


def test_an_order_an_earlier_release_counted_is_not_counted_again() -> None:
    # What the release before versions recorded for a confirmation: a line fact per SKU.
    earlier = [
        {
            "_id": "A-1:confirmed:SKU-1",
            "order_id": "A-1",
            "sku": "SKU-1",
            "units": 2,
            "revenue": 2500,
            "day": "2026-03-01",
        }
    ]
    facts = FakeSalesFacts()
    facts.lines = {line["_id"]: dict(line) for line in earlier}
    facts.sales = {"A-1:0": earlier_sale("A-1", earlier)}
    # Amended since: the order worker says its confirmation again, with the lines as they are now.
    resent = status("confirmed", items=AMENDED.items)
    report = report_of(
        [resent, AMENDED], [status("cancelled", at=DAY_3, reason="customer_request")], facts=facts
    )
    assert (report["units_sold"], report["revenue"], report["by_sku"]) == (0, "0.00", [])
    assert [row["units"] for row in report["by_day"]] == [2, 2, -4]
