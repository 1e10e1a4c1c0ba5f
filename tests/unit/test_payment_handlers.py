"""Payment use cases with a fake provider: one charge per order, bounded retries, refunds."""

import contextlib
from datetime import UTC, datetime

from services.payment.domain import Payment, PaymentStatus
from services.payment.handlers import PaymentHandlers
from services.payment.ledger import EntryKind
from shared.contracts import saga
from shared.contracts.base import derive_id
from tests.unit.fakes import FakeGateway, FakeLedger, FakePayments, Recorder, batch


def handlers(
    gateway: FakeGateway,
    payments: FakePayments,
    outbox: Recorder,
    attempts: int = 3,
    ledger: FakeLedger | None = None,
) -> PaymentHandlers:
    return PaymentHandlers(
        payments,
        {"credit_card": gateway},
        outbox,
        ledger=ledger or FakeLedger(),
        attempts=attempts,
        backoff_seconds=0,
        sleep=lambda s: None,
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


# The ledger ------------------------------------------------------------------------------------


def test_a_burst_of_charges_is_recorded_in_one_write_once_however_often_it_is_asked() -> None:
    gateway, payments, outbox, ledger = FakeGateway(), FakePayments(), Recorder(), FakeLedger()
    h = handlers(gateway, payments, outbox, ledger=ledger)
    burst = batch(charge("A-1"), charge("A-2"), charge("A-3"))
    h.charge_payment(burst)
    assert ledger.writes == 1
    h.charge_payment(batch(charge("A-1"), charge("A-2"), charge("A-3")))  # redelivered: settled already
    assert ledger.amounts(EntryKind.CAPTURE) == {"ch_A-1": 1250, "ch_A-2": 1250, "ch_A-3": 1250}
    entry = ledger.entries["capture:credit_card:ch_A-1"]
    assert (entry.method, entry.currency, entry.order_id, entry.key) == ("credit_card", "CNY", "A-1", "A-1")


def test_a_charge_retried_after_a_crash_before_its_outcome_was_stored_is_recorded_once() -> None:
    gateway, payments, outbox, ledger = FakeGateway(), FakePayments(), Recorder(), FakeLedger()
    crashed = handlers(gateway, payments, outbox, ledger=ledger)
    crashed.payments = CrashOnSettle(payments)  # type: ignore[assignment]
    with contextlib.suppress(ConnectionError):
        crashed.charge_payment(batch(charge()))
    assert payments.payments["A-1"].status is PaymentStatus.CHARGING, "the outcome was never stored"
    handlers(gateway, payments, outbox, ledger=ledger).charge_payment(batch(charge()))
    assert payments.payments["A-1"].status is PaymentStatus.CAPTURED
    assert list(ledger.entries) == ["capture:credit_card:ch_A-1"]


def test_declines_record_nothing_and_a_failed_charge_records_its_void_once() -> None:
    ledger = FakeLedger()
    handlers(FakeGateway(approve=False), FakePayments(), Recorder(), ledger=ledger).charge_payment(
        batch(charge())
    )
    assert ledger.entries == {}
    gateway, payments, outbox = FakeGateway(failures=3), FakePayments(), Recorder()
    h = handlers(gateway, payments, outbox, ledger=ledger)
    h.charge_payment(batch(charge()))
    h.refund_payment(batch(refund()))  # voids the key again at the provider: the same void
    assert [(e.kind, e.reference, e.amount) for e in ledger.entries.values()] == [
        (EntryKind.VOID, "A-1", 1250)
    ]


def test_a_refund_and_the_refunds_of_parts_are_recorded_once_each() -> None:
    gateway, payments, outbox, ledger = FakeGateway(), FakePayments(), Recorder(), FakeLedger()
    h = handlers(gateway, payments, outbox, ledger=ledger)
    change = saga.ChargePayment(
        order_id="A-1", amount=500, currency="CNY", method="credit_card", token="tok_visa", key="A-1/change/1"
    )
    h.charge_payment(batch(charge(), change))
    part = saga.RefundAmount(
        order_id="A-1",
        refund_key="A-1/refund/1",
        parts=[saga.RefundPart(key="A-1/change/1", amount=500), saga.RefundPart(key="A-1", amount=250)],
    )
    h.refund_amount(batch(part))
    h.refund_amount(batch(part))  # redelivered
    h.refund_payment(batch(refund()))
    h.refund_payment(batch(refund()))
    assert ledger.amounts(EntryKind.CAPTURE) == {"ch_A-1": 1250, "ch_A-1/change/1": 500}
    assert sorted(ledger.amounts(EntryKind.REFUND).values()) == [250, 500, 1000]
    assert sum(ledger.amounts(EntryKind.REFUND).values()) == sum(gateway.refunds.values())
    (partial,) = [e for e in ledger.entries.values() if e.kind is EntryKind.REFUND and e.amount == 500]
    assert (partial.charge_id, partial.key) == ("ch_A-1/change/1", "A-1/change/1")


def test_a_capture_found_by_a_refund_is_recorded_with_its_refund() -> None:
    gateway, payments, outbox, ledger = FakeGateway(lost_replies=1), FakePayments(), Recorder(), FakeLedger()
    payments.claim([Payment("A-1", "credit_card", 1250, "CNY", PaymentStatus.CHARGING, datetime.now(UTC))])
    with contextlib.suppress(Exception):
        gateway.charge(idempotency_key="A-1", amount=1250, currency="CNY", token="tok_visa")  # reply lost
    handlers(gateway, payments, outbox, ledger=ledger).refund_payment(batch(refund()))
    assert ledger.amounts(EntryKind.CAPTURE) == {"ch_A-1": 1250}
    assert ledger.amounts(EntryKind.REFUND) == {"re_" + derive_id("A-1", "refund"): 1250}


class CrashOnSettle:
    """The payments repository of a worker that dies as it stores the outcomes of its charges."""

    def __init__(self, payments: FakePayments) -> None:
        self._payments = payments

    def __getattr__(self, name: str) -> object:
        return getattr(self._payments, name)

    def settle(self, payments: list[Payment]) -> set[str]:
        raise ConnectionError("the worker died")
