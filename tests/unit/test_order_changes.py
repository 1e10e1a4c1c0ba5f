"""Requests about placed orders: cancel, amend, ship, complete, return and exchange, as the
order's state machine carries them out, refuses them or keeps them for later."""

from datetime import UTC, datetime

import pytest

from services.order.changes import ChangeStep
from services.order.domain import Order, OrderStatus, SagaStep, TransitionNotAllowed
from shared.contracts import saga
from shared.contracts.events import Event, OrderChanged, OrderRefunded, OrderRequestRejected
from shared.contracts.intake import OrderLine, OrderSubmission, PaymentDetails
from shared.contracts.requests import OrderRequest
from tests.unit.factories import body, submission

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PRICES = {"SKU-1": 250, "SKU-2": 1000, "SKU-3": 400}


def partition_of(sku: str) -> int:
    return int(sku.rsplit("-", 1)[1]) % 2


def pending(*items: tuple[str, int]) -> Order:
    order = Order.accept(
        OrderSubmission.model_validate_json(body(submission("A-1", *items))),
        "CNY",
        NOW,
        partition_of=partition_of,
    )
    order.version = 1
    return order


def confirmed(*items: tuple[str, int]) -> Order:
    order = pending(*items)
    for partition in list(order.awaiting):
        order.stock_reserved(
            priced(order, partition, [(line.sku, line.quantity) for line in order.lines]), NOW
        )
    order.payment_captured(
        saga.PaymentCaptured(order_id="A-1", amount=order.total or 0, charge_id="ch_1"), NOW
    )
    return order


def shipped(*items: tuple[str, int]) -> Order:
    order = confirmed(*items)
    order.take_request(request("ship", carrier="SF", tracking="SF123"), NOW)
    return order


def priced(
    order: Order, partition: int, units: list[tuple[str, int]], hold: str | None = None
) -> saga.StockReserved:
    lines = [
        saga.PricedLine(sku=sku, quantity=quantity, unit_price=PRICES[sku], line_total=PRICES[sku] * quantity)
        for sku, quantity in units
        if partition_of(sku) == partition
    ]
    return saga.StockReserved(
        order_id=order.order_id,
        partition=partition,
        lines=lines,
        total=sum(line.line_total for line in lines),
        hold=hold,
    )


counter = iter(range(1, 10_000))


def request(kind: str, *items: tuple[str, int], **fields: object) -> OrderRequest:
    lines = [OrderLine(sku=sku, quantity=quantity) for sku, quantity in items]
    if kind == "exchange":
        fields.setdefault("replacement", lines)
    elif kind == "return":
        fields.setdefault("returned", lines)
    else:
        fields.setdefault("items", lines)
    return OrderRequest(message_id=f"r-{next(counter)}", order_id="A-1", kind=kind, **fields)  # type: ignore[arg-type]


def said(order: Order) -> list[Event | saga.Message]:
    return [message for message in order.news() if not isinstance(message, saga.StepDeadline)]


def of(order: Order, kind: type) -> list:
    return [message for message in said(order) if isinstance(message, kind)]


def test_a_confirmed_order_cancelled_gives_its_units_back_and_refunds_what_was_paid() -> None:
    order = confirmed(("SKU-1", 2), ("SKU-2", 1))  # 500 in partition 1, 1000 in partition 0
    order.take_request(request("cancel", reason="customer_request"), NOW)
    assert order.status is OrderStatus.CONFIRMED and order.change is not None
    assert order.change.step is ChangeStep.SETTLING
    returns, refund = of(order, saga.ReturnStock), of(order, saga.RefundAmount)
    assert sorted((r.partition, [(line.sku, line.quantity) for line in r.lines]) for r in returns) == [
        (0, [("SKU-2", 1)]),
        (1, [("SKU-1", 2)]),
    ]
    assert [(p.key, p.amount) for p in refund[0].parts] == [("A-1", 1500)]
    for returned in returns:
        order.stock_returned(
            saga.StockReturned(order_id="A-1", partition=returned.partition, returned=returned.message_id),
            NOW,
        )
    order.payment_refunded(
        saga.PaymentRefunded(order_id="A-1", amount=1500, refund_key=refund[0].refund_key), NOW
    )
    assert (order.status, order.reason, order.change) == (OrderStatus.CANCELLED, "customer_request", None)
    events = [m for m in said(order) if isinstance(m, Event)]
    assert [event.type for event in events] == ["order.cancelled", "order.refunded"]
    assert isinstance(events[1], OrderRefunded) and (events[1].amount, events[1].cause) == ("15.00", "cancel")
    assert order.paid == 0


def test_a_pending_order_is_stopped_where_its_saga_stands() -> None:
    order = pending(("SKU-1", 1))
    order.take_request(request("cancel", reason="changed my mind"), NOW)
    assert (order.step, order.reason, order.refund_required) == (
        SagaStep.RELEASING_STOCK,
        "changed my mind",
        False,
    )
    order.stock_released(saga.StockReleased(order_id="A-1", partition=1), NOW)
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, "changed my mind")


def test_a_pending_order_being_charged_is_refunded_by_key_when_cancelled() -> None:
    order = pending(("SKU-1", 1))
    order.stock_reserved(priced(order, 1, [("SKU-1", 1)]), NOW)
    order.take_request(request("cancel", reason="customer_request"), NOW)
    assert order.refund_required and order.step is SagaStep.RELEASING_STOCK
    assert "RefundPayment" in [type(m).__name__ for m in order.outbox()]


@pytest.mark.parametrize("kind", ["cancel", "amend"])
def test_a_shipped_order_can_no_longer_be_cancelled_or_amended(kind: str) -> None:
    order = shipped(("SKU-1", 1))
    order.take_request(request(kind, ("SKU-1", 2), reason="customer_request"), NOW)
    (rejected,) = of(order, OrderRequestRejected)
    assert (rejected.type, rejected.reason) == (f"order.{kind}_rejected", "shipped")
    assert "return" in rejected.detail
    assert order.status is OrderStatus.SHIPPED and order.change is None


def test_an_amendment_that_adds_units_holds_them_charges_the_difference_and_sells_them() -> None:
    order = confirmed(("SKU-1", 2))  # 500
    order.take_request(request("amend", ("SKU-1", 3), ("SKU-3", 1)), NOW)
    (reserve,) = of(order, saga.ReserveStock)
    assert reserve.hold == "A-1/change/1"
    assert [(line.sku, line.quantity) for line in reserve.lines] == [("SKU-1", 1), ("SKU-3", 1)]
    order.stock_reserved(priced(order, 1, [("SKU-1", 1), ("SKU-3", 1)], hold=reserve.hold), NOW)
    (charge,) = of(order, saga.ChargePayment)
    # The unit kept its price (250); the new SKU is priced by inventory (400).
    assert (charge.amount, charge.key, charge.token, charge.on_file) == (650, "A-1/change/1", None, "ch_1")
    order.payment_captured(
        saga.PaymentCaptured(order_id="A-1", amount=650, charge_id="ch_2", key=charge.key), NOW
    )
    (commit,) = of(order, saga.CommitStock)
    assert (commit.hold, commit.skus) == ("A-1/change/1", ["SKU-1", "SKU-3"])
    (amended,) = of(order, OrderChanged)
    assert (amended.type, amended.total, amended.previous_total, amended.amount) == (
        "order.amended",
        "11.50",
        "5.00",
        "6.50",
    )
    assert order.total == 1150 and order.paid == 1150 and order.change is None


def test_an_amendment_that_removes_units_gives_them_back_and_refunds_the_difference() -> None:
    order = confirmed(("SKU-1", 2), ("SKU-3", 1))  # 500 + 400
    order.take_request(request("amend", ("SKU-1", 1)), NOW)
    (returned,) = of(order, saga.ReturnStock)
    (refund,) = of(order, saga.RefundAmount)
    assert sorted((line.sku, line.quantity) for line in returned.lines) == [("SKU-1", 1), ("SKU-3", 1)]
    assert [(p.key, p.amount) for p in refund.parts] == [("A-1", 650)]
    order.payment_refunded(
        saga.PaymentRefunded(order_id="A-1", amount=650, refund_key=refund.refund_key), NOW
    )
    order.stock_returned(saga.StockReturned(order_id="A-1", partition=1, returned=returned.message_id), NOW)
    assert [(line.sku, line.quantity, line.line_total) for line in order.lines] == [("SKU-1", 1, 250)]
    assert [e.type for e in said(order) if isinstance(e, Event)] == ["order.amended", "order.refunded"]
    assert order.paid == 250


def test_an_amendment_beyond_stock_gives_back_what_was_held_and_leaves_the_order_as_it_was() -> None:
    order = confirmed(("SKU-1", 1))
    order.take_request(request("amend", ("SKU-1", 1), ("SKU-2", 1), ("SKU-3", 5)), NOW)
    holds = {r.partition: r for r in of(order, saga.ReserveStock)}
    assert sorted(holds) == [0, 1]
    order.stock_reserved(priced(order, 0, [("SKU-2", 1)], hold="A-1/change/1"), NOW)
    order.stock_reservation_failed(
        saga.StockReservationFailed(
            order_id="A-1", partition=1, reason="out_of_stock", skus=["SKU-3"], hold="A-1/change/1"
        ),
        NOW,
    )
    (release,) = of(order, saga.ReleaseStock)
    assert (release.partition, release.hold) == (0, "A-1/change/1")
    order.stock_released(saga.StockReleased(order_id="A-1", partition=0, hold="A-1/change/1"), NOW)
    (rejected,) = of(order, OrderRequestRejected)
    assert (rejected.type, rejected.reason) == ("order.amend_rejected", "out_of_stock")
    assert [(line.sku, line.quantity) for line in order.lines] == [("SKU-1", 1)] and order.total == 250


def test_a_declined_difference_rejects_the_amendment() -> None:
    order = confirmed(("SKU-1", 1))
    order.take_request(request("amend", ("SKU-1", 2)), NOW)
    order.stock_reserved(priced(order, 1, [("SKU-1", 1)], hold="A-1/change/1"), NOW)
    order.payment_declined(saga.PaymentDeclined(order_id="A-1", detail="no", key="A-1/change/1"), NOW)
    assert [type(m).__name__ for m in said(order)] == ["ReleaseStock"], "a declined charge needs no undoing"
    order.stock_released(saga.StockReleased(order_id="A-1", partition=1, hold="A-1/change/1"), NOW)
    (rejected,) = of(order, OrderRequestRejected)
    assert rejected.reason == "payment_declined" and order.total == 250


def test_a_change_that_hears_nothing_while_it_may_still_fail_is_refused_and_undone() -> None:
    order = confirmed(("SKU-1", 1))
    order.take_request(request("amend", ("SKU-1", 2)), NOW)
    order.stock_reserved(priced(order, 1, [("SKU-1", 1)], hold="A-1/change/1"), NOW)
    order.follow_up(NOW)
    assert order.change is not None and order.change.step is ChangeStep.UNDOING
    assert sorted(type(m).__name__ for m in order.due_commands()) == ["RefundPayment", "ReleaseStock"]


def test_requests_wait_while_the_saga_is_under_way_and_are_carried_out_once_it_is_done() -> None:
    order = pending(("SKU-1", 1))
    order.take_request(request("amend", ("SKU-1", 2)), NOW)
    order.take_request(request("ship"), NOW)
    assert len(order.queued) == 2 and order.change is None
    order.stock_reserved(priced(order, 1, [("SKU-1", 1)]), NOW)
    order.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=250, charge_id="ch_1"), NOW)
    assert order.status is OrderStatus.CONFIRMED and order.change is not None
    assert [type(m).__name__ for m in order.outbox() if isinstance(m, saga.ReserveStock)] == ["ReserveStock"]
    assert len(order.queued) == 1, "the shipping waits for the amendment"


def test_a_request_is_taken_once() -> None:
    order = confirmed(("SKU-1", 1))
    ship = request("ship")
    order.take_request(ship, NOW)
    with pytest.raises(TransitionNotAllowed):
        order.take_request(ship, NOW)


def test_an_unpaid_order_may_change_how_it_is_paid() -> None:
    order = pending(("SKU-1", 1))
    order.take_request(
        request(
            "amend",
            ("SKU-1", 1),
            payment=PaymentDetails.model_validate_json('{"method": "alipay", "token": "tok_new"}'),
        ),
        NOW,
    )
    assert (order.payment_method, order.payment_token) == ("alipay", "tok_new")
    order.stock_reserved(priced(order, 1, [("SKU-1", 1)]), NOW)
    (charge,) = [m for m in order.outbox() if isinstance(m, saga.ChargePayment)]
    assert (charge.method, charge.token) == ("alipay", "tok_new")


def test_ship_then_complete_and_the_refusals_around_them() -> None:
    order = confirmed(("SKU-1", 1))
    order.take_request(request("complete"), NOW)
    assert of(order, OrderRequestRejected)[0].reason == "not_shipped"
    order.take_request(request("ship", carrier="SF", tracking="SF1"), NOW)
    event = next(m for m in said(order) if isinstance(m, Event))
    assert (event.type, event.carrier, event.tracking) == ("order.shipped", "SF", "SF1")
    order.take_request(request("complete"), NOW)
    assert order.status is OrderStatus.COMPLETED
    assert [m.type for m in said(order) if isinstance(m, Event)] == ["order.completed"]


def test_a_return_of_some_lines_refunds_them_at_the_price_paid() -> None:
    order = shipped(("SKU-1", 3), ("SKU-2", 1))
    order.take_request(request("return", ("SKU-1", 2), case_id="case-1"), NOW)
    (returned,) = of(order, saga.ReturnStock)
    (refund,) = of(order, saga.RefundAmount)
    assert [(p.key, p.amount) for p in refund.parts] == [("A-1", 500)]
    order.stock_returned(saga.StockReturned(order_id="A-1", partition=1, returned=returned.message_id), NOW)
    order.payment_refunded(
        saga.PaymentRefunded(order_id="A-1", amount=500, refund_key=refund.refund_key), NOW
    )
    (event,) = of(order, OrderChanged)
    assert (event.type, event.amount, [(line.sku, line.quantity) for line in event.returned]) == (
        "order.returned",
        "-5.00",
        [("SKU-1", 2)],
    )
    (settled,) = [m for m in said(order) if type(m).__name__ == "CaseSettled"]
    assert (settled.case_id, settled.outcome) == ("case-1", "done")


def test_returning_more_than_the_order_has_is_refused() -> None:
    order = shipped(("SKU-1", 1))
    order.take_request(request("return", ("SKU-1", 2)), NOW)
    assert of(order, OrderRequestRejected)[0].reason == "not_in_order"


def test_an_exchange_at_the_same_price_moves_no_money() -> None:
    order = shipped(("SKU-1", 1))
    order.take_request(request("exchange", ("SKU-1", 1), returned=[OrderLine(sku="SKU-1", quantity=1)]), NOW)
    (reserve,) = of(order, saga.ReserveStock)
    order.stock_reserved(priced(order, 1, [("SKU-1", 1)], hold=reserve.hold), NOW)
    assert not of(order, saga.ChargePayment) and not of(order, saga.RefundAmount)
    (returned,) = of(order, saga.ReturnStock)
    order.stock_returned(saga.StockReturned(order_id="A-1", partition=1, returned=returned.message_id), NOW)
    (event,) = of(order, OrderChanged)
    assert (event.type, event.amount, event.total) == ("order.exchanged", "0.00", "2.50")


def test_a_refund_is_taken_from_the_newest_charges_first() -> None:
    order = confirmed(("SKU-1", 1))  # 250 under A-1
    order.take_request(request("amend", ("SKU-1", 1), ("SKU-2", 1)), NOW)
    order.stock_reserved(priced(order, 0, [("SKU-2", 1)], hold="A-1/change/1"), NOW)
    order.payment_captured(
        saga.PaymentCaptured(order_id="A-1", amount=1000, charge_id="ch_2", key="A-1/change/1"), NOW
    )
    order.take_request(request("cancel", reason="customer_request"), NOW)
    (refund,) = of(order, saga.RefundAmount)
    assert [(p.key, p.amount) for p in refund.parts] == [("A-1/change/1", 1000), ("A-1", 250)]


def test_units_still_held_for_a_change_are_sold_or_given_back_as_its_outcome_says() -> None:
    order = confirmed(("SKU-1", 1))
    order.take_request(request("amend", ("SKU-1", 2)), NOW)
    assert order.commands_for_held_stock(1, "A-1/change/1") == [], "the change is still deciding"
    order.stock_reserved(priced(order, 1, [("SKU-1", 1)], hold="A-1/change/1"), NOW)
    order.payment_captured(
        saga.PaymentCaptured(order_id="A-1", amount=250, charge_id="ch_2", key="A-1/change/1"), NOW
    )
    (commit,) = order.commands_for_held_stock(1, "A-1/change/1")
    assert isinstance(commit, saga.CommitStock) and commit.hold == "A-1/change/1"


def test_a_shipping_that_waited_for_the_saga_says_the_confirmation_and_its_commits_too() -> None:
    order = pending(("SKU-1", 1))
    order.take_request(request("ship"), NOW)
    order.stock_reserved(priced(order, 1, [("SKU-1", 1)]), NOW)
    captured = saga.PaymentCaptured(order_id="A-1", amount=250, charge_id="ch_1")
    order.payment_captured(captured, NOW)
    assert order.status is OrderStatus.SHIPPED
    said = order.outbox([captured.message_id])
    assert [m.type for m in said if isinstance(m, Event)] == ["order.confirmed", "order.shipped"]
    assert [type(m).__name__ for m in said if isinstance(m, saga.CommitStock)] == ["CommitStock"]


def test_a_cancelled_order_keeps_what_it_was_and_its_units_held_unsold_are_sold_before_they_come_back() -> (
    None
):
    order = confirmed(("SKU-1", 2))
    order.take_request(request("cancel", reason="customer_request"), NOW)
    (returned,) = of(order, saga.ReturnStock)
    (refund,) = of(order, saga.RefundAmount)
    order.stock_returned(saga.StockReturned(order_id="A-1", partition=1, returned=returned.message_id), NOW)
    order.payment_refunded(
        saga.PaymentRefunded(order_id="A-1", amount=500, refund_key=refund.refund_key), NOW
    )
    assert order.status is OrderStatus.CANCELLED
    assert ([(line.sku, line.quantity) for line in order.lines], order.total) == ([("SKU-1", 2)], 500)
    # Inventory still holds its units (the commit was lost): they were sold, then came back.
    (commit,) = order.commands_for_held_stock(1)
    assert isinstance(commit, saga.CommitStock)


def test_a_request_seen_before_says_its_outcome_again() -> None:
    order = confirmed(("SKU-1", 1))
    complete = request("complete")
    order.take_request(complete, NOW)
    order.take_request(request("ship"), NOW)
    (rejected,) = [m for m in order.said_again(complete.message_id) if isinstance(m, OrderRequestRejected)]
    assert (rejected.type, rejected.reason) == ("order.complete_rejected", "not_shipped")
