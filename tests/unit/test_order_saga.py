"""The saga state machine: transitions, what each state says, and refusal of stale replies."""

from datetime import UTC, datetime, timedelta

import pytest

from services.order.domain import Order, OrderStatus, SagaStep, TransitionNotAllowed
from shared.contracts import saga
from shared.contracts.events import OrderRefunded, OrderStatusChanged
from shared.contracts.intake import OrderSubmission
from tests.unit.factories import body, submission

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def new_order(*items: tuple[str, int], token: str = "tok_visa", partitions: int = 1) -> Order:
    return Order.accept(
        OrderSubmission.model_validate_json(body(submission("A-1", *items, token=token))),
        "CNY",
        NOW,
        partition_of=lambda sku: int(sku.rsplit("-", 1)[1]) % partitions,
    )


def reserved(order: Order, partition: int = 0) -> saga.StockReserved:
    lines = [
        saga.PricedLine(sku=line.sku, quantity=line.quantity, unit_price=250, line_total=250 * line.quantity)
        for line in order.lines
        if line.partition == partition
    ]
    return saga.StockReserved(
        order_id=order.order_id,
        partition=partition,
        lines=lines,
        total=sum(line.line_total for line in lines),
    )


def kinds(order: Order) -> list[str]:
    """What the order's state says, but the timer of its step (see the deadline tests)."""
    return [
        m.type if isinstance(m, OrderStatusChanged | OrderRefunded) else type(m).__name__
        for m in order.outbox()
        if not isinstance(m, saga.StepDeadline)
    ]


def test_an_accepted_order_reserves_stock_and_announces_itself() -> None:
    order = new_order(("SKU-1", 2), ("SKU-2", 1), ("SKU-1", 3))
    assert (order.status, order.step) == (OrderStatus.PENDING, SagaStep.RESERVING_STOCK)
    assert [(line.sku, line.quantity) for line in order.lines] == [("SKU-1", 5), ("SKU-2", 1)]
    assert kinds(order) == ["order.accepted", "ReserveStock"]


def test_reserved_stock_is_priced_then_charged() -> None:
    order = new_order(("SKU-1", 2))
    order.stock_reserved(reserved(order), NOW)
    assert order.step is SagaStep.CHARGING_PAYMENT
    assert order.total == 500
    charge, _timer = order.outbox()
    assert isinstance(charge, saga.ChargePayment)
    assert (charge.amount, charge.method, charge.token) == (500, "credit_card", "tok_visa")


def test_a_captured_payment_confirms_and_commits_stock() -> None:
    order = new_order()
    order.stock_reserved(reserved(order), NOW)
    order.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=500, charge_id="ch_1"), NOW)
    assert (order.status, order.step, order.reason) == (OrderStatus.CONFIRMED, SagaStep.DONE, None)
    assert kinds(order) == ["order.confirmed", "CommitStock"]
    assert order.payment_token is None, "the token is forgotten once no charge can follow"
    event = order.outbox()[0]
    assert (event.total, event.items[0].unit_price, event.items[0].line_total) == ("5.00", "2.50", "5.00")


@pytest.mark.parametrize(
    ("reply", "reason", "undo"),
    [
        (saga.PaymentDeclined(order_id="A-1", detail="no"), "payment_declined", []),
        # A failure may hide a capture: the payment is undone by its key (refunded, or voided).
        (saga.PaymentFailed(order_id="A-1", detail="down"), "payment_failed", ["RefundPayment"]),
    ],
)
def test_a_failed_payment_releases_stock_before_cancelling(reply, reason: str, undo: list[str]) -> None:
    order = new_order()
    order.stock_reserved(reserved(order), NOW)
    getattr(order, type(reply).__name__.replace("Payment", "payment_").lower())(reply, NOW)
    assert (order.status, order.step, order.reason) == (OrderStatus.PENDING, SagaStep.RELEASING_STOCK, reason)
    assert kinds(order) == ["ReleaseStock", *undo]
    order.stock_released(saga.StockReleased(order_id="A-1"), NOW)
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, reason)
    assert kinds(order) == ["order.cancelled", *undo]


def test_a_refund_is_due_until_the_payment_worker_says_what_it_refunded() -> None:
    order = new_order()
    order.stock_reserved(reserved(order), NOW)
    order.time_out(LATER)  # while charging: whatever was captured must come back
    order.stock_released(saga.StockReleased(order_id="A-1"), LATER)
    assert (order.status, order.reason, order.refund_due) == (OrderStatus.CANCELLED, "timeout", True)
    assert kinds(order) == ["order.cancelled", "RefundPayment"]
    assert order.deadline == LATER + order.step_timeout, "its follow-up timer"
    order.follow_up(LATER)
    order.follow_up(LATER)
    assert order.deadline == LATER + 4 * order.step_timeout, "asked again with backoff"
    order.payment_refunded(saga.PaymentRefunded(order_id="A-1", amount=500), LATER)
    assert (order.refunded, order.refund_due, order.deadline, order.due_since) == (500, False, None, None)
    assert [(entry.step, entry.amount) for entry in order.history][-1] == (SagaStep.REFUNDED, 500)
    assert kinds(order) == ["order.cancelled", "order.refunded"]
    (refunded,) = [m for m in order.outbox() if isinstance(m, OrderRefunded)]
    assert (refunded.amount, refunded.status, refunded.reason) == ("5.00", "cancelled", "timeout")
    with pytest.raises(TransitionNotAllowed):
        order.payment_refunded(saga.PaymentRefunded(order_id="A-1", amount=500), LATER)


def test_a_void_settles_the_refund_quietly() -> None:
    order = new_order()
    order.stock_reserved(reserved(order), NOW)
    order.payment_failed(saga.PaymentFailed(order_id="A-1", detail="down"), NOW)
    order.payment_refunded(saga.PaymentRefunded(order_id="A-1", amount=0), NOW)
    order.stock_released(saga.StockReleased(order_id="A-1"), NOW)
    assert (order.status, order.refunded, order.has_dues) == (OrderStatus.CANCELLED, 0, False)
    assert kinds(order) == ["order.cancelled"], "nothing was taken: no refund to announce"


def test_stock_still_held_for_an_order_is_sold_or_given_back_as_its_state_says() -> None:
    order = new_order(("SKU-1", 1), ("SKU-2", 1), partitions=2)
    for partition in (0, 1):
        order.stock_reserved(reserved(order, partition=partition), NOW)
    assert order.commands_for_held_stock(1) == [], "charging: the saga decides, by its own deadline"
    order.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=500, charge_id="c"), NOW)
    assert kinds(order) == ["order.confirmed", "CommitStock", "CommitStock"]
    (commit,) = order.commands_for_held_stock(1)
    assert (type(commit).__name__, commit.partition, commit.skus) == ("CommitStock", 1, ["SKU-1"])
    assert commit.message_id in [m.message_id for m in order.outbox() if isinstance(m, saga.CommitStock)]
    cancelled = new_order()
    cancelled.time_out(LATER)
    assert [type(m).__name__ for m in cancelled.commands_for_held_stock(0)] == ["ReleaseStock"]


def test_the_payment_token_is_forgotten_once_no_command_needs_it() -> None:
    order = new_order()
    assert order.payment_token
    order.time_out(LATER)  # reserving: it will never be charged
    assert order.payment_token is None


@pytest.mark.parametrize("reason", ["out_of_stock", "unknown_sku"])
def test_a_failed_reservation_cancels_at_once(reason: str) -> None:
    order = new_order()
    order.stock_reservation_failed(
        saga.StockReservationFailed(order_id="A-1", reason=reason, skus=["SKU-1"]), NOW
    )
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, reason)
    assert kinds(order) == ["order.cancelled"]


def test_replies_that_do_not_fit_the_step_are_refused() -> None:
    order = new_order()
    with pytest.raises(TransitionNotAllowed):
        order.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=1, charge_id="c"), NOW)
    order.stock_reservation_failed(
        saga.StockReservationFailed(order_id="A-1", reason="out_of_stock", skus=[]), NOW
    )
    with pytest.raises(TransitionNotAllowed):
        order.stock_reserved(reserved(order), NOW)


def test_outgoing_ids_are_deterministic_so_resending_is_harmless() -> None:
    first, second = new_order(), new_order()
    assert [
        m.model_dump()["message_id" if hasattr(m, "message_id") else "event_id"] for m in first.outbox()
    ] == [m.model_dump()["message_id" if hasattr(m, "message_id") else "event_id"] for m in second.outbox()]


def test_every_transition_is_in_the_history() -> None:
    order = new_order()
    order.stock_reserved(reserved(order), NOW)
    order.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=500, charge_id="c"), NOW)
    assert [(h.status, h.step) for h in order.history] == [
        (OrderStatus.PENDING, SagaStep.RESERVING_STOCK),
        (OrderStatus.PENDING, SagaStep.CHARGING_PAYMENT),
        (OrderStatus.CONFIRMED, SagaStep.DONE),
    ]


def test_a_rejected_order_announces_its_errors() -> None:
    order = Order.reject("A-9", ["items: too short"], "CNY", NOW)
    (event,) = order.outbox()
    assert (event.type, event.status, event.reason, event.errors) == (
        "order.rejected",
        "rejected",
        "invalid",
        ["items: too short"],
    )


LATER = NOW + timedelta(seconds=31)


def test_a_pending_step_gets_a_deadline_and_a_finished_order_none() -> None:
    order = new_order()
    assert order.deadline == NOW + timedelta(seconds=30)
    assert not order.is_overdue(NOW + timedelta(seconds=29)) and order.is_overdue(LATER)
    order.stock_reservation_failed(
        saga.StockReservationFailed(order_id="A-1", reason="out_of_stock", skus=[]), NOW
    )
    assert order.deadline is None and not order.is_overdue(LATER)


def test_a_reservation_that_times_out_is_released_then_cancelled() -> None:
    order = new_order()
    order.time_out(LATER)
    assert (order.status, order.step, order.reason) == (
        OrderStatus.PENDING,
        SagaStep.RELEASING_STOCK,
        "timeout",
    )
    assert kinds(order) == ["ReleaseStock"]
    order.stock_released(saga.StockReleased(order_id="A-1"), LATER)
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, "timeout")
    assert kinds(order) == ["order.cancelled"]


def test_a_charge_that_times_out_is_refunded_and_its_stock_released() -> None:
    order = new_order()
    order.stock_reserved(reserved(order), NOW)
    order.time_out(LATER)
    assert order.refund_required and order.payment_token is None
    assert kinds(order) == ["ReleaseStock", "RefundPayment"]
    order.stock_released(saga.StockReleased(order_id="A-1"), LATER)
    assert kinds(order) == ["order.cancelled", "RefundPayment"]
    assert [type(m).__name__ for m in order.compensations_for_late_capture()] == ["RefundPayment"]


def test_a_release_that_times_out_is_asked_again() -> None:
    order = new_order()
    order.time_out(LATER)
    first_cause = order.last_cause
    order.time_out(LATER + timedelta(seconds=31))
    assert order.step is SagaStep.RELEASING_STOCK and order.last_cause != first_cause
    assert kinds(order) == ["ReleaseStock"]


def test_a_finished_order_does_not_time_out() -> None:
    order = new_order()
    order.stock_reservation_failed(
        saga.StockReservationFailed(order_id="A-1", reason="out_of_stock", skus=[]), NOW
    )
    with pytest.raises(TransitionNotAllowed):
        order.time_out(LATER)


def test_every_pending_state_sets_the_timer_of_its_step_and_a_finished_one_none() -> None:
    order = new_order()
    (timer,) = [m for m in order.outbox() if isinstance(m, saga.StepDeadline)]
    assert (timer.order_id, timer.version) == ("A-1", order.version)
    order.version = 1  # as the store does when it writes the transition
    order.stock_reserved(reserved(order), NOW)
    (timer,) = [m for m in order.outbox() if isinstance(m, saga.StepDeadline)]
    assert timer.version == 1
    order.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=500, charge_id="c"), NOW)
    assert not [m for m in order.outbox() if isinstance(m, saga.StepDeadline)]


def test_an_order_across_partitions_reserves_in_each_then_charges_once_all_did() -> None:
    order = new_order(("SKU-1", 1), ("SKU-2", 2), ("SKU-3", 1), partitions=2)
    reserve = [m for m in order.outbox() if isinstance(m, saga.ReserveStock)]
    assert sorted((m.partition, [line.sku for line in m.lines]) for m in reserve) == [
        (0, ["SKU-2"]),
        (1, ["SKU-1", "SKU-3"]),
    ]
    order.stock_reserved(reserved(order, 1), NOW)
    assert order.step is SagaStep.RESERVING_STOCK and kinds(order) == ["order.accepted", "ReserveStock"]
    with pytest.raises(TransitionNotAllowed):
        order.stock_reserved(reserved(order, 1), NOW)  # a duplicate
    order.stock_reserved(reserved(order, 0), NOW)
    assert order.step is SagaStep.CHARGING_PAYMENT and order.total == 1000
    order.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=1000, charge_id="c"), NOW)
    commits = [m for m in order.outbox() if isinstance(m, saga.CommitStock)]
    assert sorted((m.partition, m.skus) for m in commits) == [(0, ["SKU-2"]), (1, ["SKU-1", "SKU-3"])]


def test_a_partition_that_refuses_releases_the_others_before_the_order_is_cancelled() -> None:
    order = new_order(("SKU-1", 1), ("SKU-2", 2), partitions=2)
    order.stock_reserved(reserved(order, 1), NOW)
    order.stock_reservation_failed(
        saga.StockReservationFailed(order_id="A-1", partition=0, reason="out_of_stock", skus=["SKU-2"]), NOW
    )
    assert (order.status, order.step, order.reason) == (
        OrderStatus.PENDING,
        SagaStep.RELEASING_STOCK,
        "out_of_stock",
    )
    (release,) = [m for m in order.outbox() if isinstance(m, saga.ReleaseStock)]
    assert (release.partition, release.skus) == (1, ["SKU-1"]), "the refusing partition holds nothing"
    order.stock_released(saga.StockReleased(order_id="A-1", partition=1), NOW)
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, "out_of_stock")


def test_a_timeout_while_reserving_releases_every_partition_that_may_hold_stock() -> None:
    order = new_order(("SKU-1", 1), ("SKU-2", 2), partitions=2)
    order.stock_reserved(reserved(order, 1), NOW)
    order.time_out(LATER)
    assert sorted(m.partition for m in order.outbox() if isinstance(m, saga.ReleaseStock)) == [0, 1]
