"""Payment use cases with a fake provider: one charge per order, bounded retries, refunds."""

from datetime import UTC, datetime

from services.payment.domain import Payment, PaymentStatus
from services.payment.handlers import PaymentHandlers
from shared.contracts import saga
from tests.unit.fakes import FakeGateway, FakePayments, Recorder, batch


def handlers(
    gateway: FakeGateway, payments: FakePayments, outbox: Recorder, attempts: int = 3
) -> PaymentHandlers:
    return PaymentHandlers(
        payments, {"credit_card": gateway}, outbox, attempts=attempts, backoff_seconds=0, sleep=lambda s: None
    )


def charge(order_id: str = "A-1") -> saga.ChargePayment:
    return saga.ChargePayment(
        order_id=order_id, amount=1250, currency="CNY", method="credit_card", token="tok_visa"
    )


def test_a_charge_is_captured_once_however_often_it_is_asked() -> None:
    gateway, payments, outbox = FakeGateway(), FakePayments(), Recorder()
    h = handlers(gateway, payments, outbox)
    h.charge_payment(batch(charge()))
    h.charge_payment(batch(charge()))
    assert gateway.calls == 1
    assert gateway.charges == {"A-1": 1250}
    assert [type(m).__name__ for m in outbox.sent] == ["PaymentCaptured", "PaymentCaptured"]
    assert outbox.sent[0].message_id == outbox.sent[1].message_id


def test_transient_gateway_errors_are_retried_then_succeed() -> None:
    gateway, payments, outbox = FakeGateway(failures=2), FakePayments(), Recorder()
    handlers(gateway, payments, outbox).charge_payment(batch(charge()))
    assert payments.payments["A-1"].status is PaymentStatus.CAPTURED
    assert payments.payments["A-1"].attempts == 3


def test_a_gateway_that_keeps_failing_fails_the_payment_after_bounded_attempts() -> None:
    gateway, payments, outbox = FakeGateway(failures=99), FakePayments(), Recorder()
    handlers(gateway, payments, outbox, attempts=3).charge_payment(batch(charge()))
    assert gateway.calls == 3
    assert payments.payments["A-1"].status is PaymentStatus.FAILED
    assert [type(m).__name__ for m in outbox.sent] == ["PaymentFailed"]


def test_a_declined_charge_is_declined() -> None:
    gateway, payments, outbox = FakeGateway(approve=False), FakePayments(), Recorder()
    handlers(gateway, payments, outbox).charge_payment(batch(charge()))
    assert [type(m).__name__ for m in outbox.sent] == ["PaymentDeclined"]


def test_no_token_is_stored() -> None:
    gateway, payments, outbox = FakeGateway(), FakePayments(), Recorder()
    handlers(gateway, payments, outbox).charge_payment(batch(charge()))
    assert "tok_visa" not in repr(vars(payments.payments["A-1"]))


def test_a_refund_refunds_a_captured_charge_once() -> None:
    gateway, payments, outbox = FakeGateway(), FakePayments(), Recorder()
    h = handlers(gateway, payments, outbox)
    h.charge_payment(batch(charge()))
    h.refund_payment(batch(saga.RefundPayment(order_id="A-1")))
    h.refund_payment(batch(saga.RefundPayment(order_id="A-1")))
    assert len(gateway.refunds) == 1
    assert payments.payments["A-1"].status is PaymentStatus.REFUNDED


def test_a_refund_before_any_charge_voids_the_payment_so_no_charge_follows() -> None:
    gateway, payments, outbox = FakeGateway(), FakePayments(), Recorder()
    h = handlers(gateway, payments, outbox)
    h.refund_payment(batch(saga.RefundPayment(order_id="A-1")))
    h.charge_payment(batch(charge()))
    assert gateway.calls == 0
    assert payments.payments["A-1"].status is PaymentStatus.VOIDED


def test_a_batch_of_charges_charges_each_order_once() -> None:
    gateway, payments, outbox = FakeGateway(), FakePayments(), Recorder()
    h = handlers(gateway, payments, outbox)
    h.charge_payment(batch(charge("A-1"), charge("A-2"), charge("A-1")))
    h.charge_payment(batch(charge("A-2")))
    assert gateway.charges == {"A-1": 1250, "A-2": 1250}
    assert sorted(m.order_id for m in outbox.sent) == ["A-1", "A-2", "A-2"]


def test_a_charge_by_an_unknown_method_is_rejected_and_the_rest_of_its_batch_goes_on() -> None:
    gateway, payments, outbox = FakeGateway(), FakePayments(), Recorder()
    strange = charge("A-9").model_copy(update={"method": "cash"})
    charges = batch(strange, charge("A-1"))
    handlers(gateway, payments, outbox).charge_payment(charges)
    assert [(m.order_id, "no gateway" in why) for m, why in charges.rejected] == [("A-9", True)]
    assert gateway.charges == {"A-1": 1250}


# Outcomes in doubt: a failed call may have captured -------------------------------------------


def refund(order_id: str = "A-1") -> saga.RefundPayment:
    return saga.RefundPayment(order_id=order_id)


def test_replies_lost_after_a_capture_are_resolved_by_asking_the_gateway_not_settled_failed() -> None:
    gateway, payments, outbox = FakeGateway(lost_replies=3), FakePayments(), Recorder()
    handlers(gateway, payments, outbox, attempts=3).charge_payment(batch(charge()))
    assert gateway.held("A-1") == 1250, "the provider captured on the first call"
    assert payments.payments["A-1"].status is PaymentStatus.CAPTURED
    assert [type(m).__name__ for m in outbox.sent] == ["PaymentCaptured"]


def test_a_gateway_that_cannot_be_asked_leaves_the_payment_unknown_and_the_refund_settles_it() -> None:
    gateway, payments, outbox = FakeGateway(lost_replies=3, unreachable=True), FakePayments(), Recorder()
    h = handlers(gateway, payments, outbox, attempts=3)
    h.charge_payment(batch(charge()))
    assert payments.payments["A-1"].status is PaymentStatus.UNKNOWN
    assert [type(m).__name__ for m in outbox.sent] == ["PaymentFailed"], "the order gives up and refunds"
    gateway.unreachable = False
    h.refund_payment(batch(refund()))
    assert gateway.held("A-1") == 0
    assert payments.payments["A-1"].status is PaymentStatus.REFUNDED
    assert [(type(m).__name__, getattr(m, "amount", None)) for m in outbox.sent][-1] == (
        "PaymentRefunded",
        1250,
    )


def test_a_failed_payment_is_voided_at_the_gateway_so_no_charge_can_follow() -> None:
    gateway, payments, outbox = FakeGateway(failures=3), FakePayments(), Recorder()
    h = handlers(gateway, payments, outbox, attempts=3)
    h.charge_payment(batch(charge()))
    assert payments.payments["A-1"].status is PaymentStatus.FAILED
    assert gateway.keys == {"A-1": "void"}, "nothing held, and nothing can be captured under the key"
    h.refund_payment(batch(refund()))
    h.charge_payment(batch(charge()))  # redelivered after the refund: still nothing
    assert gateway.held("A-1") == 0 and gateway.charges == {}
    assert [(type(m).__name__, getattr(m, "amount", None)) for m in outbox.sent][1] == ("PaymentRefunded", 0)


def test_a_duplicate_charge_in_doubt_says_what_the_other_captured() -> None:
    gateway, payments, outbox = FakeGateway(), FakePayments(), Recorder()
    first, second = handlers(gateway, payments, outbox), handlers(gateway, payments, outbox)
    racing = {"inside": False}

    def fault(operation: str) -> str | None:
        # The second handler's calls fail; while it tries, the first one charges and settles.
        if racing["inside"]:
            return None
        if operation == "charge" and gateway.calls == 1:
            racing["inside"] = True
            first.charge_payment(batch(charge()))
            racing["inside"] = False
        return "unavailable"

    gateway.fault = fault
    payments.claim([Payment("A-1", "credit_card", 1250, "CNY", PaymentStatus.CHARGING, datetime.now(UTC))])
    second.charge_payment(batch(charge()))
    assert gateway.held("A-1") == 1250
    assert payments.payments["A-1"].status is PaymentStatus.CAPTURED, "a capture wins over a doubt"
    assert [type(m).__name__ for m in outbox.sent] == ["PaymentCaptured", "PaymentCaptured"]


def test_a_refund_the_gateway_keeps_failing_is_not_answered_until_it_is_done() -> None:
    gateway, payments, outbox = FakeGateway(refund_failures=4), FakePayments(), Recorder()
    h = handlers(gateway, payments, outbox, attempts=3)
    h.charge_payment(batch(charge()))
    h.refund_payment(batch(refund()))
    assert [type(m).__name__ for m in outbox.sent] == ["PaymentCaptured"], "no answer: the order asks again"
    assert payments.payments["A-1"].refund_attempts == 3
    h.refund_payment(batch(refund()))
    assert gateway.held("A-1") == 0
    assert payments.payments["A-1"].status is PaymentStatus.REFUNDED
    assert payments.payments["A-1"].refund_attempts == 5


def test_a_refund_of_a_charge_a_crash_interrupted_voids_the_key() -> None:
    gateway, payments, outbox = FakeGateway(), FakePayments(), Recorder()
    payments.claim([Payment("A-1", "credit_card", 1250, "CNY", PaymentStatus.CHARGING, datetime.now(UTC))])
    h = handlers(gateway, payments, outbox)
    h.refund_payment(batch(refund()))
    h.charge_payment(batch(charge()))
    assert gateway.charges == {} and payments.payments["A-1"].status is PaymentStatus.VOIDED
