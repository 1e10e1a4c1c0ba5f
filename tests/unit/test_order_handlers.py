"""Order use cases with fakes: intake, resubmission, redelivered and stale replies, deadlines."""

from datetime import UTC, datetime, timedelta

import pytest

from services.order.handlers import OrderHandlers
from services.order.intake import InvalidSubmission, decode_submission
from services.order.store import RecentOrders
from shared.contracts import saga
from shared.contracts.intake import OrderLine
from shared.contracts.requests import OrderRequest
from shared.messaging import topology
from shared.messaging.ports import Backlog, Batch
from tests.unit.factories import body, submission
from tests.unit.fakes import FakeOrders, FakeQueues, Recorder, batch


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def orders() -> FakeOrders:
    return FakeOrders()


@pytest.fixture
def outbox() -> Recorder:
    return Recorder()


@pytest.fixture
def queues() -> FakeQueues:
    return FakeQueues()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def handlers(orders: FakeOrders, outbox: Recorder, queues: FakeQueues, clock: Clock) -> OrderHandlers:
    return OrderHandlers(orders, outbox, outbox, queues, currency="CNY", clock=clock)


def submit(handlers: OrderHandlers, *submissions: object) -> Batch:
    """Decode at the edge, as the intake's entry point does, and hand the batch over."""
    decoded = batch(*(decode_submission(body(data), "application/json", 65536) for data in submissions))
    handlers.submit_orders(decoded)
    handlers.flush_timers()
    return decoded


def reserved(order_id: str = "A-1") -> saga.StockReserved:
    return saga.StockReserved(
        message_id=f"r-{order_id}",
        order_id=order_id,
        lines=[saga.PricedLine(sku="SKU-1", quantity=2, unit_price=100, line_total=200)],
        total=200,
    )


def test_a_submission_starts_the_saga(handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder) -> None:
    submit(handlers, submission("A-1"))  # and the step timers of the last second leave
    assert orders.orders["A-1"].status == "pending"
    assert outbox.kinds() == ["ReserveStock", "order.accepted"]
    ((timer, delay),) = [
        (m, d) for m, d in zip(outbox.sent, outbox.delays, strict=True) if m in outbox.timers
    ]
    assert (timer.order_id, timer.version, delay) == ("A-1", 0, timedelta(seconds=30))


def test_a_batch_of_submissions_starts_each_saga_once(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder
) -> None:
    submit(handlers, submission("A-1"), submission("A-2"), submission("A-1"))
    assert sorted(orders.orders) == ["A-1", "A-2"]
    assert sorted({m.order_id for m in outbox.sent if isinstance(m, saga.ReserveStock)}) == ["A-1", "A-2"]


def test_resubmitting_an_order_that_moved_on_starts_nothing_and_announces_it_again(
    handlers: OrderHandlers, outbox: Recorder
) -> None:
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    accepted = outbox.published[0]
    outbox.clear()
    submit(handlers, submission("A-1"))
    assert outbox.kinds() == ["order.accepted"]
    assert outbox.published[0].event_id == accepted.event_id, "subscribers drop it by its id"


def test_resubmitting_before_it_moved_on_says_the_same_again(
    handlers: OrderHandlers, outbox: Recorder
) -> None:
    submit(handlers, submission("A-1"))
    submit(handlers, submission("A-1"))
    assert sorted(outbox.kinds()) == ["ReserveStock", "ReserveStock", "order.accepted", "order.accepted"]
    assert len({m.message_id for m in outbox.sent if isinstance(m, saga.ReserveStock)}) == 1
    assert len({e.event_id for e in outbox.published}) == 1


def test_an_invalid_submission_with_an_id_is_recorded_announced_and_dead_lettered(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder
) -> None:
    data = submission("A-2")
    data["items"] = []
    decoded = submit(handlers, data)
    assert orders.orders["A-2"].status == "rejected"
    assert [(e.type, e.reason) for e in outbox.published] == [("order.rejected", "invalid")]
    ((_, reason),) = decoded.rejected
    assert reason.startswith("items:")


def test_a_submission_without_a_readable_id_is_refused_at_the_edge() -> None:
    with pytest.raises(InvalidSubmission):
        decode_submission(b'{"items": []}', "application/json", 65536)
    with pytest.raises(InvalidSubmission, match="content type"):
        decode_submission(body(submission("A-1")), "application/xml", 65536)
    assert decode_submission(body(submission("A-1")), "application/json; charset=utf-8", 65536)


def test_an_invalid_submission_never_overwrites_an_accepted_order(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder
) -> None:
    submit(handlers, submission("A-3"))
    handlers.stock_reserved(batch(reserved("A-3")))
    data = submission("A-3")
    data["items"] = []
    submit(handlers, data)
    assert orders.orders["A-3"].status == "pending"
    assert "order.rejected" not in outbox.kinds()


def test_a_redelivered_reply_resends_what_it_caused(handlers: OrderHandlers, outbox: Recorder) -> None:
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    handlers.stock_reserved(batch(reserved()))
    charges = [m for m in outbox.sent if isinstance(m, saga.ChargePayment)]
    assert len(charges) == 2
    assert charges[0].model_dump(exclude={"occurred_at"}) == charges[1].model_dump(exclude={"occurred_at"})


def test_a_reply_for_an_unknown_order_is_rejected_and_the_rest_of_its_batch_goes_on(
    handlers: OrderHandlers, orders: FakeOrders
) -> None:
    submit(handlers, submission("A-1"))
    replies = batch(reserved("NOPE"), reserved("A-1"))
    handlers.stock_reserved(replies)
    assert [(reply.order_id, "unknown order" in reason) for reply, reason in replies.rejected] == [
        ("NOPE", True)
    ]
    assert orders.orders["A-1"].step == "charging_payment"


def test_a_stale_reply_is_ignored(handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder) -> None:
    submit(handlers, submission("A-1"))
    handlers.payment_captured(batch(saga.PaymentCaptured(order_id="A-1", amount=1, charge_id="c")))
    assert orders.orders["A-1"].step == "reserving_stock"
    assert outbox.kinds() == ["ReserveStock", "order.accepted"]


def test_the_full_path_to_confirmation(handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder) -> None:
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    handlers.payment_captured(batch(saga.PaymentCaptured(order_id="A-1", amount=200, charge_id="c")))
    assert orders.orders["A-1"].status == "confirmed"
    assert [type(m).__name__ for m in outbox.sent if m not in outbox.timers] == [
        "ReserveStock",
        "ChargePayment",
        "CommitStock",
    ]
    assert [e.type for e in outbox.published] == ["order.accepted", "order.confirmed"]


def test_a_reply_racing_another_writer_is_applied_to_the_state_that_won(
    orders: FakeOrders, outbox: Recorder, queues: FakeQueues, clock: Clock
) -> None:
    class RacingOrders(FakeOrders):
        """Another worker times the order out between our read and our write, once."""

        raced = False

        def save(self, to_save):  # type: ignore[no-untyped-def]
            if not self.raced and to_save:
                self.raced = True
                rival = self.get(to_save[0].order_id)
                assert rival is not None
                rival.time_out(clock())
                FakeOrders.save(self, [rival])
            return FakeOrders.save(self, to_save)

    racing = RacingOrders()
    handlers = OrderHandlers(racing, outbox, outbox, queues, currency="CNY", clock=clock)
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    assert (racing.orders["A-1"].step, racing.orders["A-1"].reason) == ("releasing_stock", "timeout")
    assert "ChargePayment" not in outbox.kinds(), "the reservation came after the timeout: too late"


def two_processes(
    orders: FakeOrders, outbox: Recorder, queues: FakeQueues, clock: Clock, max_in_flight: int = 500
) -> tuple[OrderHandlers, OrderHandlers]:
    """Two order processes on one store, each with its own recent copies of the orders."""

    def process() -> OrderHandlers:
        return OrderHandlers(
            RecentOrders(orders),
            outbox,
            outbox,
            queues,
            currency="CNY",
            max_in_flight=max_in_flight,
            clock=clock,
        )

    return process(), process()


def test_a_reply_that_does_not_fit_a_stale_copy_is_applied_to_the_order_as_it_is(
    orders: FakeOrders, outbox: Recorder, queues: FakeQueues, clock: Clock
) -> None:
    first, second = two_processes(orders, outbox, queues, clock)
    submit(first, submission("A-1"))
    second.stock_reserved(batch(reserved()))  # `second` now holds a copy at charging_payment
    first.payment_captured(batch(saga.PaymentCaptured(order_id="A-1", amount=200, charge_id="c")))
    assert orders.orders["A-1"].status == "confirmed", "`first` held a copy still reserving stock"


def test_a_timer_judged_on_a_stale_copy_is_decided_on_the_order_as_it_is(
    orders: FakeOrders, outbox: Recorder, queues: FakeQueues, clock: Clock
) -> None:
    first, second = two_processes(orders, outbox, queues, clock)
    submit(first, submission("A-1"))
    second.stock_reserved(batch(reserved()))
    waiting_for_payment = deadline_of(orders).model_copy(update={"extended": True})
    first.step_deadlines(batch(waiting_for_payment))  # `first` holds version 0: not that timer's
    assert (orders.orders["A-1"].step, orders.orders["A-1"].reason) == ("releasing_stock", "timeout")


def confirm(handlers: OrderHandlers, order_id: str) -> None:
    handlers.stock_reserved(batch(reserved(order_id)))
    handlers.payment_captured(batch(saga.PaymentCaptured(order_id=order_id, amount=200, charge_id="c")))


def test_a_saga_finished_by_another_process_makes_room_where_it_is_counted(
    orders: FakeOrders, outbox: Recorder, queues: FakeQueues, clock: Clock
) -> None:
    first, second = two_processes(orders, outbox, queues, clock, max_in_flight=2)
    submit(first, submission("A-1"), submission("A-2"))
    submit(second, submission("B-1"))
    assert not first.admits() and second.admits()
    confirm(first, "B-1")  # replies go to whichever process takes them
    assert first.admits(), "two sagas are under way in the pool, one of them counted here"
    assert second.admits()
    confirm(second, "A-1")
    confirm(second, "A-2")
    assert first.admits() and second.admits()
    submit(first, submission("A-3"), submission("A-4"))
    assert not first.admits(), "a full count again once it starts two more"


def deadline_of(orders: FakeOrders, order_id: str = "A-1") -> saga.StepDeadline:
    order = orders.get(order_id)
    assert order is not None
    return order.deadline_timer()


def test_a_step_whose_timer_fires_times_out_and_a_late_capture_is_refunded(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder
) -> None:
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    # Its command was taken (the queue is empty, a consumer is there) and the step had its extra time.
    handlers.step_deadlines(batch(deadline_of(orders).model_copy(update={"extended": True})))
    assert (orders.orders["A-1"].step, orders.orders["A-1"].reason) == ("releasing_stock", "timeout")
    outbox.clear()
    handlers.payment_captured(batch(saga.PaymentCaptured(order_id="A-1", amount=200, charge_id="c")))
    assert outbox.kinds() == ["RefundPayment"]
    handlers.stock_released(batch(saga.StockReleased(order_id="A-1")))
    assert (orders.orders["A-1"].status, orders.orders["A-1"].reason) == ("cancelled", "timeout")


def test_the_timer_of_a_step_the_order_has_left_does_nothing(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder
) -> None:
    submit(handlers, submission("A-1"))
    first = deadline_of(orders)
    handlers.stock_reserved(batch(reserved()))
    handlers.step_deadlines(batch(first))
    assert orders.orders["A-1"].step == "charging_payment"


def test_a_command_queued_behind_work_being_done_is_given_more_time(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder, queues: FakeQueues
) -> None:
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    queues.backlogs[topology.PAYMENT_QUEUE] = Backlog(ready=5000, consumers=2)
    handlers.flush_timers()
    outbox.clear()
    handlers.step_deadlines(batch(deadline_of(orders)))
    handlers.flush_timers()
    assert orders.orders["A-1"].step == "charging_payment", "a backlog is not a failure"
    (timer,) = outbox.timers
    assert (timer.version, timer.extended, outbox.delays[0]) == (1, False, timedelta(seconds=30))
    # The backlog is worked off, and the command was taken: one more step timeout, then no more.
    queues.backlogs[topology.PAYMENT_QUEUE] = Backlog(ready=0, consumers=2)
    outbox.clear()
    handlers.step_deadlines(batch(timer))
    handlers.flush_timers()
    (extended,) = outbox.timers
    assert extended.extended and orders.orders["A-1"].step == "charging_payment"
    handlers.step_deadlines(batch(extended))
    assert (orders.orders["A-1"].step, orders.orders["A-1"].reason) == ("releasing_stock", "timeout")


def test_a_step_nobody_consumes_for_times_out_at_its_first_timer(
    handlers: OrderHandlers, orders: FakeOrders, queues: FakeQueues
) -> None:
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    queues.backlogs[topology.PAYMENT_QUEUE] = Backlog(ready=3, consumers=0)
    handlers.step_deadlines(batch(deadline_of(orders)))
    assert (orders.orders["A-1"].step, orders.orders["A-1"].reason) == ("releasing_stock", "timeout")


def test_the_sweep_times_out_sagas_long_past_their_deadline_whose_timer_was_lost(
    handlers: OrderHandlers, orders: FakeOrders, queues: FakeQueues, clock: Clock
) -> None:
    submit(handlers, submission("A-1"), submission("A-2"))
    handlers.stock_reserved(batch(reserved("A-2")))
    queues.backlogs[topology.stock_queue(0)] = Backlog(ready=0, consumers=0)
    assert handlers.sweep() == 0
    clock.now += timedelta(seconds=61)
    assert handlers.sweep() == 2
    assert {order.reason for order in orders.orders.values()} == {"timeout"}


# Compensations and follow-ups are done when their effect is recorded ----------------------------


def cancelled_after_a_timeout_while_charging(handlers: OrderHandlers, orders: FakeOrders) -> None:
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    handlers.step_deadlines(batch(deadline_of(orders).model_copy(update={"extended": True})))
    handlers.stock_released(batch(saga.StockReleased(order_id="A-1")))


def test_a_refund_is_asked_again_with_backoff_until_it_is_recorded_then_announced(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder, clock: Clock
) -> None:
    cancelled_after_a_timeout_while_charging(handlers, orders)
    assert orders.orders["A-1"].status == "cancelled" and orders.orders["A-1"].refund_due
    for backoff in (1, 2, 4):
        outbox.clear()
        handlers.flush_timers()
        timer = outbox.timers[-1]  # the one of the order's version; earlier ones mean nothing
        assert (timer.version, outbox.delays[-1]) == (
            orders.orders["A-1"].version,
            backoff * handlers.step_timeout,
        )
        clock.now += backoff * handlers.step_timeout
        handlers.step_deadlines(batch(timer))  # the payment worker did not answer: ask again
        assert outbox.kinds() == ["RefundPayment"]
    outbox.clear()
    refunded = saga.PaymentRefunded(order_id="A-1", amount=200)
    handlers.payment_refunded(batch(refunded))
    handlers.payment_refunded(batch(refunded))  # redelivered
    assert orders.orders["A-1"].refunded == 200 and not orders.orders["A-1"].has_dues
    assert [entry.step for entry in orders.orders["A-1"].history][-1] == "refunded"
    assert [e.type for e in outbox.published].count("order.refunded") == 2, "said again, same event id"
    assert len({e.event_id for e in outbox.published if e.type == "order.refunded"}) == 1
    outbox.clear()
    handlers.flush_timers()  # the timer the last follow-up set
    handlers.step_deadlines(batch(*outbox.timers))
    assert outbox.kinds() == [], "it finds nothing left to follow up"


def test_the_sweep_asks_again_for_a_refund_whose_timer_was_lost(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder, clock: Clock
) -> None:
    cancelled_after_a_timeout_while_charging(handlers, orders)
    outbox.clear()
    handlers._timers.clear()  # lost with the broker's data
    clock.now += timedelta(minutes=10)
    assert handlers.sweep() == 0, "no saga timed out"
    assert outbox.kinds() == ["RefundPayment"]


def test_stock_still_held_is_sold_or_given_back_as_each_order_says(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder
) -> None:
    submit(handlers, submission("A-1"), submission("A-2"), submission("A-3"))
    confirm(handlers, "A-1")
    handlers.stock_reserved(batch(reserved("A-2")))
    handlers.payment_declined(batch(saga.PaymentDeclined(order_id="A-2", detail="no")))
    handlers.stock_released(batch(saga.StockReleased(order_id="A-2")))
    outbox.clear()
    questions = batch(*(saga.StockStillHeld(order_id=order_id) for order_id in ("A-1", "A-2", "A-3", "A-9")))
    handlers.stock_still_held(questions)
    assert [(type(m).__name__, m.order_id) for m in outbox.sent] == [
        ("CommitStock", "A-1"),
        ("ReleaseStock", "A-2"),
    ], "A-3 is still reserving: its saga decides"
    assert [m.order_id for m, _ in questions.rejected] == ["A-9"]


def confirmed(handlers: OrderHandlers) -> None:
    submit(handlers, submission("A-1"))
    handlers.stock_reserved(batch(reserved()))
    handlers.payment_captured(batch(saga.PaymentCaptured(order_id="A-1", amount=200, charge_id="c")))


def test_a_change_that_hears_nothing_is_refused_undone_and_said_so_and_the_next_request_goes_on(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder, clock: Clock
) -> None:
    confirmed(handlers)
    amend = OrderRequest(
        message_id="amend-1", order_id="A-1", kind="amend", items=[OrderLine(sku="SKU-1", quantity=3)]
    )
    ship = OrderRequest(message_id="ship-1", order_id="A-1", kind="ship")
    outbox.clear()
    handlers.take_requests(batch(amend, ship))
    assert outbox.kinds() == ["ReserveStock"] and len(orders.orders["A-1"].queued) == 1
    handlers.stock_reserved(
        batch(
            saga.StockReserved(
                order_id="A-1",
                lines=[saga.PricedLine(sku="SKU-1", quantity=1, unit_price=100, line_total=100)],
                total=100,
                hold="A-1/change/1",
            )
        )
    )
    assert outbox.kinds()[-1] == "ChargePayment"
    for _ in range(2):  # the charge may be in the payment worker's hands: one more step timeout
        outbox.clear()
        handlers.flush_timers()
        clock.now += handlers.step_timeout
        handlers.step_deadlines(batch(outbox.timers[-1]))  # the payment worker never answered
    assert sorted(outbox.kinds()) == ["RefundPayment", "ReleaseStock"]
    outbox.clear()
    handlers.payment_refunded(batch(saga.PaymentRefunded(order_id="A-1", amount=0, key="A-1/change/1")))
    handlers.stock_released(batch(saga.StockReleased(order_id="A-1", hold="A-1/change/1")))
    assert sorted(outbox.kinds()) == ["order.amend_rejected", "order.shipped"]
    assert next(e for e in outbox.published if e.type == "order.amend_rejected").reason == "timeout"
    order = orders.orders["A-1"]
    assert (order.status, order.total, order.queued) == ("shipped", 200, [])
    outbox.clear()
    handlers.take_requests(batch(amend))  # redelivered long after: it changes nothing
    assert orders.orders["A-1"].version == order.version


def test_a_redelivered_request_says_its_outcome_again_after_the_order_moved_on(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder
) -> None:
    confirmed(handlers)
    complete = OrderRequest(message_id="complete-1", order_id="A-1", kind="complete")
    ship = OrderRequest(message_id="ship-1", order_id="A-1", kind="ship")
    handlers.take_requests(batch(complete, ship))
    outbox.clear()
    handlers.take_requests(batch(complete))  # the first handling died before saying it
    assert outbox.kinds() == ["order.complete_rejected"]
    assert orders.orders["A-1"].status == "shipped"


def test_orders_shipped_long_enough_ago_are_asked_to_complete_once_each(
    handlers: OrderHandlers, orders: FakeOrders, outbox: Recorder, clock: Clock
) -> None:
    confirmed(handlers)
    handlers.take_requests(batch(OrderRequest(message_id="ship-1", order_id="A-1", kind="ship")))
    outbox.clear()
    assert handlers.complete_shipped() == 0
    clock.now += handlers.complete_after
    assert handlers.complete_shipped() == 1
    handlers.complete_shipped()
    asked = [m for m in outbox.sent if isinstance(m, OrderRequest)]
    assert [(m.kind, m.order_id) for m in asked] == [("complete", "A-1")] * 2
    assert len({m.message_id for m in asked}) == 1, "one request per order, however often it is sent"
    handlers.take_requests(batch(*asked))
    assert orders.orders["A-1"].status == "completed"
