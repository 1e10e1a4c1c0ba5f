"""Payment use cases: charge each amount once per key, refund it once, reply to the saga either way."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from services.payment.domain import Payment, PaymentStatus
from services.payment.gateways import GatewayUnavailable, PaymentGateway
from services.payment.ledger import LedgerEntry, capture_entry, refund_entry, void_entry
from services.payment.store import PaymentLedger, PaymentRepository
from shared import metrics
from shared.contracts import saga
from shared.contracts.base import Message, derive_id, utcnow
from shared.logs import message_context
from shared.messaging.ports import Batch, CommandSender

log = logging.getLogger(__name__)


class PaymentHandlers:
    def __init__(
        self,
        payments: PaymentRepository,
        gateways: Mapping[str, PaymentGateway],
        replies: CommandSender,
        *,
        ledger: PaymentLedger,
        attempts: int,
        backoff_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.payments = payments
        self.gateways = gateways
        self.replies = replies
        self.ledger = ledger
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.clock = clock
        self.sleep = sleep

    # Charges ----------------------------------------------------------------------------------

    def charge_payment(self, batch: Batch[saga.ChargePayment]) -> None:
        """Charge each amount through its method's gateway, once per key; a redelivered command
        gets the first outcome again."""
        commands: dict[str, saga.ChargePayment] = {}
        for command in batch:
            if command.method not in self.gateways:
                batch.reject(command, f"no gateway for payment method {command.method!r}")
            elif command.token is None and command.on_file is None:
                batch.reject(command, "a charge needs a token or a capture on file")
            else:
                commands.setdefault(command.key or command.order_id, command)
        claims = {
            key: Payment(
                order_id=command.order_id,
                key=command.key,
                method=command.method,
                amount=command.amount,
                currency=command.currency,
                status=PaymentStatus.CHARGING,
                created_at=self.clock(),
            )
            for key, command in commands.items()
        }
        taken = self.payments.claim(claims.values())
        payments = {**claims, **self.payments.get_many(taken)}
        # Unsettled: ours, one a crash interrupted, or one in doubt. Asking the provider again
        # under the same idempotency key is safe: it charges once.
        unsettled = [payment for payment in payments.values() if not payment.settled]
        entries: list[LedgerEntry] = []
        for payment in unsettled:
            command = commands[payment.idempotency_key]
            with message_context(message_id=command.message_id, order_id=payment.order_id):
                self._charge(payment, self.gateways[payment.method], command, entries)
        # The ledger before the outcomes: after a crash between the two, the charges are asked
        # again under their keys, get the same captures and record nothing twice; outcomes stored
        # first would be settled on redelivery, and their captures never recorded.
        self.ledger.record(entries)
        # A concurrent duplicate, or a refund, settled some first: say what is stored.
        beaten = self.payments.settle(unsettled)
        payments.update(self.payments.get_many(beaten))
        for payment in unsettled:
            if payment.idempotency_key not in beaten:
                log.info("payment of %s: %s", payment.order_id, payment.status)
                metrics.PAYMENTS.labels(payment.method, payment.status.value).inc()
                if payment.status is PaymentStatus.CAPTURED:
                    metrics.PAYMENT_AMOUNT.labels(payment.method, payment.currency).inc(payment.captured)
        for key in commands:
            reply = _charge_reply(payments[key])
            if reply is not None:
                self.replies.send(reply)

    def _charge(
        self,
        payment: Payment,
        gateway: PaymentGateway,
        command: saga.ChargePayment,
        entries: list[LedgerEntry],
    ) -> None:
        error: GatewayUnavailable | None = None
        for attempt in range(1, self.attempts + 1):
            payment.attempts += 1
            try:
                if command.token is not None:
                    result = gateway.charge(
                        idempotency_key=payment.idempotency_key,
                        amount=payment.amount,
                        currency=payment.currency,
                        token=command.token,
                    )
                else:
                    assert command.on_file is not None
                    result = gateway.charge_on_file(
                        idempotency_key=payment.idempotency_key,
                        charge_id=command.on_file,
                        amount=payment.amount,
                        currency=payment.currency,
                    )
            except GatewayUnavailable as e:
                error = e
                metrics.GATEWAY_REQUESTS.labels(payment.method, "error").inc()
                log.warning("charge of %s, attempt %d/%d: %s", payment.order_id, attempt, self.attempts, e)
                if attempt < self.attempts:
                    self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
                continue
            metrics.GATEWAY_REQUESTS.labels(
                payment.method, "approved" if result.approved else "declined"
            ).inc()
            if result.approved:
                assert result.charge_id is not None
                payment.capture(result.charge_id, result.instrument, result.amount or payment.amount)
                entries.append(capture_entry(payment, result.at or self.clock()))
            else:
                payment.decline(result.decline_reason or "declined")
                if result.voided:  # by a void of ours whose reply was lost: on the books now
                    entries.append(void_entry(payment, self.clock()))
            return
        self._resolve(payment, gateway, error, entries)

    def _resolve(
        self, payment: Payment, gateway: PaymentGateway, error: Exception | None, entries: list[LedgerEntry]
    ) -> None:
        """Every charge call failed, yet the provider may have captured: ask it by idempotency
        key, and if it holds nothing, void the key so that nothing can be captured later."""
        try:
            capture = gateway.lookup(idempotency_key=payment.idempotency_key) or gateway.void(
                idempotency_key=payment.idempotency_key
            )
        except GatewayUnavailable as e:
            log.warning("charge of %s: outcome unknown, the gateway cannot be asked: %s", payment.order_id, e)
            payment.in_doubt(f"outcome unknown after {payment.attempts} attempts: {error}; {e}")
            return
        if capture is not None:
            log.info("charge of %s: the gateway captured it after all", payment.order_id)
            payment.capture(capture.charge_id, capture.instrument, capture.amount)
            entries.append(capture_entry(payment, capture.at or self.clock()))
        else:
            payment.fail(f"gateway unavailable after {payment.attempts} attempts, nothing charged: {error}")
            entries.append(void_entry(payment, self.clock()))

    # Refunds ----------------------------------------------------------------------------------

    def refund_payment(self, batch: Batch[saga.RefundPayment]) -> None:
        """Undo each order's payment, whatever is stored locally: refund what the provider
        captured under the order's key, or void the key so nothing is captured later. Replies
        with the amount refunded once that is certain; if the provider cannot be reached, says
        nothing (the order asks again, with backoff, until it hears)."""
        for command in batch:
            with message_context(message_id=command.message_id, order_id=command.order_id):
                self._refund(command)

    def _refund(self, command: saga.RefundPayment) -> None:
        # No charge ever reached this worker: a void on record means none will be made.
        voided = Payment(
            order_id=command.order_id,
            key=command.key,
            method="none",
            amount=0,
            currency="",
            status=PaymentStatus.VOIDED,
            created_at=self.clock(),
        )
        key = voided.idempotency_key
        payment = self.payments.get(key) if self.payments.claim([voided]) else voided
        assert payment is not None
        if payment.status not in (PaymentStatus.REFUNDED, PaymentStatus.VOIDED, PaymentStatus.DECLINED):
            entries: list[LedgerEntry] = []
            undone = self._undo(payment, self.gateways[payment.method], entries)
            # Before the payment: stored undone, it would not be undone (nor recorded) again.
            self.ledger.record(entries)
            if not undone:
                self.payments.record_refund_attempts(payment)
                return
            self.payments.save(payment)
        self.replies.send(
            saga.PaymentRefunded(
                message_id=derive_id(key, "payment-refunded"),
                order_id=command.order_id,
                amount=payment.refunded,
                key=command.key,
            )
        )

    def refund_amount(self, batch: Batch[saga.RefundAmount]) -> None:
        """Refund part of each order's money, charge by charge, each part once under its refund
        key. Replies with the amount once every part is refunded; if the provider cannot be
        reached, says nothing (the order asks again until it hears)."""
        for command in batch:
            with message_context(message_id=command.message_id, order_id=command.order_id):
                payments = self.payments.get_many(part.key for part in command.parts)
                missing = [part.key for part in command.parts if part.key not in payments]
                if missing:
                    batch.reject(command, f"no capture to refund under {', '.join(missing)}")
                    continue
                if all(
                    self._refund_part(payments[part.key], command.refund_key, part.amount)
                    for part in command.parts
                ):
                    self.replies.send(
                        saga.PaymentRefunded(
                            message_id=derive_id(command.refund_key, "payment-refunded"),
                            order_id=command.order_id,
                            amount=sum(part.amount for part in command.parts),
                            refund_key=command.refund_key,
                        )
                    )

    def _refund_part(self, payment: Payment, refund_key: str, amount: int) -> bool:
        """Refund `amount` of one capture under the refund key, once; False if the provider could
        not be reached."""
        if refund_key in payment.refunds:
            return True
        assert payment.charge_id is not None, f"{payment.idempotency_key} was never captured"
        for attempt in range(1, self.attempts + 1):
            payment.refund_attempts += 1
            try:
                result = self.gateways[payment.method].refund(
                    idempotency_key=derive_id(refund_key, payment.idempotency_key),
                    charge_id=payment.charge_id,
                    amount=amount,
                    currency=payment.currency,
                )
            except GatewayUnavailable as e:
                metrics.GATEWAY_REQUESTS.labels(payment.method, "error").inc()
                log.warning("refund %s, attempt %d/%d: %s", refund_key, attempt, self.attempts, e)
                if attempt < self.attempts:
                    self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
                continue
            # Recorded before the payment, which says the part is refunded and ends its retries.
            self.ledger.record(
                [refund_entry(payment, result.refund_id, result.amount, result.at or self.clock())]
            )
            payment.refund_part(refund_key, result.amount)
            self.payments.save(payment)
            metrics.REFUNDS.labels(payment.method).inc()
            log.info("payment %s: refunded %d of it", payment.idempotency_key, result.amount)
            return True
        self.payments.record_refund_attempts(payment)
        return False

    def _undo(self, payment: Payment, gateway: PaymentGateway, entries: list[LedgerEntry]) -> bool:
        """Refund the capture under the payment's key, or void the key; False if the provider
        could not be reached. What the provider did goes to `entries`."""
        for attempt in range(1, self.attempts + 1):
            payment.refund_attempts += 1
            try:
                if payment.status is not PaymentStatus.CAPTURED:
                    capture = gateway.void(idempotency_key=payment.idempotency_key)
                    if capture is None:
                        payment.void()
                        entries.append(void_entry(payment, self.clock()))
                        return True
                    payment.capture(capture.charge_id, capture.instrument, capture.amount)
                    entries.append(capture_entry(payment, capture.at or self.clock()))
                assert payment.charge_id is not None
                result = gateway.refund(
                    idempotency_key=derive_id(payment.idempotency_key, "refund"),
                    charge_id=payment.charge_id,
                    amount=payment.refundable,
                    currency=payment.currency,
                )
            except GatewayUnavailable as e:
                metrics.GATEWAY_REQUESTS.labels(payment.method, "error").inc()
                log.warning("refund of %s, attempt %d/%d: %s", payment.order_id, attempt, self.attempts, e)
                payment.detail = f"refund not done yet: {e}"
                if attempt < self.attempts:
                    self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
                continue
            payment.refund(result.refund_id, result.amount)
            entries.append(refund_entry(payment, result.refund_id, result.amount, result.at or self.clock()))
            metrics.REFUNDS.labels(payment.method).inc()
            log.info("payment of %s: refunded %d", payment.order_id, result.amount)
            return True
        return False


def _charge_reply(payment: Payment) -> Message | None:
    order_id, key = payment.order_id, payment.idempotency_key
    if payment.status is PaymentStatus.CAPTURED:
        assert payment.charge_id is not None
        return saga.PaymentCaptured(
            message_id=derive_id(key, "payment-captured"),
            order_id=order_id,
            amount=payment.captured,
            charge_id=payment.charge_id,
            key=payment.key,
        )
    if payment.status is PaymentStatus.DECLINED:
        return saga.PaymentDeclined(
            message_id=derive_id(key, "payment-declined"),
            order_id=order_id,
            detail=payment.detail or "",
            key=payment.key,
        )
    if payment.status in (PaymentStatus.FAILED, PaymentStatus.UNKNOWN):
        # In doubt, the order gives up and asks for a refund: that settles it by idempotency key.
        return saga.PaymentFailed(
            message_id=derive_id(key, "payment-failed"),
            order_id=order_id,
            detail=payment.detail or "",
            key=payment.key,
        )
    log.warning("charge under %s arrived after its payment was %s; not charging", key, payment.status)
    return None
