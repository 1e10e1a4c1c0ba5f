"""Order use cases with fakes: intake, idempotent resubmission, redelivered and stale replies."""

from datetime import UTC, datetime, timedelta

import pytest

from services.order.handlers import OrderHandlers
from services.order.intake import InvalidSubmission
from shared.contracts import saga
from shared.messaging.exchanges import Delivery
from tests.unit.factories import body, submission
from tests.unit.fakes import FakeOrders, Outbox


@pytest.fixture
def orders() -> FakeOrders:
    return FakeOrders()


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
def handlers(orders: FakeOrders, outbox: Outbox) -> OrderHandlers:
    return OrderHandlers(
        orders,
        outbox,
        outbox,
        currency="CNY",
        max_message_bytes=65536,
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
    )


def delivery(data: object) -> Delivery:
    return Delivery(body=body(data), content_type="application/json", routing_key="order.submit", headers={})


def reserved(order_id: str = "A-1") -> saga.StockReserved:
    return saga.StockReserved(
        message_id="r1",
        order_id=order_id,
        lines=[saga.PricedLine(sku="SKU-1", quantity=2, unit_price=100, line_total=200)],
        total=200,
    )


def test_a_submission_starts_the_saga(handlers: OrderHandlers, orders: FakeOrders, outbox: Outbox) -> None:
    handlers.submit_order(delivery(submission("A-1")))
    assert orders.orders["A-1"].status == "pending"
    assert outbox.kinds() == ["ReserveStock", "order.accepted"]


def test_resubmitting_an_order_starts_nothing_new_once_it_moved_on(
    handlers: OrderHandlers, outbox: Outbox
) -> None:
    handlers.submit_order(delivery(submission("A-1")))
    handlers.stock_reserved(reserved())
    outbox.sent.clear(), outbox.published.clear()
    handlers.submit_order(delivery(submission("A-1")))
    assert outbox.kinds() == []


def test_resubmitting_before_it_moved_on_says_the_same_again(handlers: OrderHandlers, outbox: Outbox) -> None:
    handlers.submit_order(delivery(submission("A-1")))
    handlers.submit_order(delivery(submission("A-1")))
    assert sorted(outbox.kinds()) == ["ReserveStock", "ReserveStock", "order.accepted", "order.accepted"]
    assert len({m.message_id for m in outbox.sent}) == 1, "the same message, so it is deduplicated downstream"
    assert len({e.event_id for e in outbox.published}) == 1


def test_an_invalid_submission_with_an_id_is_recorded_and_announced(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Outbox
) -> None:
    data = submission("A-2")
    data["items"] = []
    with pytest.raises(InvalidSubmission):
        handlers.submit_order(delivery(data))
    assert orders.orders["A-2"].status == "rejected"
    assert [(e.type, e.reason) for e in outbox.published] == [("order.rejected", "invalid")]


def test_an_invalid_submission_never_overwrites_an_accepted_order(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Outbox
) -> None:
    handlers.submit_order(delivery(submission("A-3")))
    handlers.stock_reserved(reserved("A-3"))
    data = submission("A-3")
    data["items"] = []
    with pytest.raises(InvalidSubmission):
        handlers.submit_order(delivery(data))
    assert orders.orders["A-3"].status == "pending"
    assert "order.rejected" not in outbox.kinds()


def test_a_redelivered_reply_resends_what_it_caused(handlers: OrderHandlers, outbox: Outbox) -> None:
    handlers.submit_order(delivery(submission("A-1")))
    handlers.stock_reserved(reserved())
    handlers.stock_reserved(reserved())
    assert outbox.kinds().count("ChargePayment") == 2
    charges = [m for m in outbox.sent if isinstance(m, saga.ChargePayment)]
    assert charges[0].message_id == charges[1].message_id
    assert charges[0].model_dump(exclude={"occurred_at"}) == charges[1].model_dump(exclude={"occurred_at"})


def test_a_stale_reply_is_ignored(handlers: OrderHandlers, orders: FakeOrders, outbox: Outbox) -> None:
    handlers.submit_order(delivery(submission("A-1")))
    handlers.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=1, charge_id="c"))
    assert orders.orders["A-1"].step == "reserving_stock"
    assert outbox.kinds() == ["ReserveStock", "order.accepted"]


def test_the_full_path_to_confirmation(handlers: OrderHandlers, orders: FakeOrders, outbox: Outbox) -> None:
    handlers.submit_order(delivery(submission("A-1")))
    handlers.stock_reserved(reserved())
    handlers.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=200, charge_id="c"))
    assert orders.orders["A-1"].status == "confirmed"
    assert [type(m).__name__ for m in outbox.sent] == ["ReserveStock", "ChargePayment", "CommitStock"]
    assert [e.type for e in outbox.published] == ["order.accepted", "order.confirmed"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_overdue_sagas_are_timed_out_and_a_late_capture_is_refunded(
    orders: FakeOrders, outbox: Outbox
) -> None:
    clock = Clock()
    handlers = OrderHandlers(orders, outbox, outbox, currency="CNY", max_message_bytes=65536, clock=clock)
    handlers.submit_order(delivery(submission("A-1")))
    handlers.stock_reserved(reserved())
    assert handlers.expire_overdue() == 0
    clock.now += timedelta(seconds=31)
    assert handlers.expire_overdue() == 1
    assert (orders.orders["A-1"].step, orders.orders["A-1"].reason) == ("releasing_stock", "timeout")
    outbox.sent.clear()
    handlers.payment_captured(saga.PaymentCaptured(order_id="A-1", amount=200, charge_id="c"))
    assert [type(m).__name__ for m in outbox.sent] == ["RefundPayment"]
    handlers.stock_released(saga.StockReleased(order_id="A-1"))
    assert (orders.orders["A-1"].status, orders.orders["A-1"].reason) == ("cancelled", "timeout")


def test_resuming_after_a_restart_says_again_what_pending_orders_wait_for(
    handlers: OrderHandlers, outbox: Outbox
) -> None:
    handlers.submit_order(delivery(submission("A-1")))
    handlers.submit_order(delivery(submission("A-2")))
    handlers.stock_reserved(reserved("A-2"))
    outbox.sent.clear()
    assert handlers.resume_pending() == 2
    assert sorted(type(m).__name__ for m in outbox.sent) == ["ChargePayment", "ReserveStock"]
