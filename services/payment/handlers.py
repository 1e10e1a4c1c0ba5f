"""Payment use cases: charge the order total once, refund it once, reply to the saga either way."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from services.payment.domain import Payment, PaymentStatus
from services.payment.gateways import GatewayUnavailable, PaymentGateway
from services.payment.store import PaymentRepository
from shared import metrics
from shared.contracts import saga
from shared.contracts.base import Message, derive_id, utcnow
from shared.errors import TransientError
from shared.logs import message_context
from shared.messaging.ports import Batch, CommandSender

log = logging.getLogger(__name__)


class ChargeInProgress(TransientError):
    """A refund arrived while the charge it undoes is still being made: retry once it settled."""


class PaymentHandlers:
    def __init__(
        self,
        payments: PaymentRepository,
        gateways: Mapping[str, PaymentGateway],
        replies: CommandSender,
        *,
        attempts: int,
        backoff_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.payments = payments
        self.gateways = gateways
        self.replies = replies
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.clock = clock
        self.sleep = sleep

    def charge_payment(self, batch: Batch[saga.ChargePayment]) -> None:
        """Charge each order through its method's gateway, once; a redelivered command gets the
        first outcome again."""
        commands: dict[str, saga.ChargePayment] = {}
        for command in batch:
            if command.method not in self.gateways:
                batch.reject(command, f"no gateway for payment method {command.method!r}")
            else:
                commands.setdefault(command.order_id, command)
        claims = {
            order_id: Payment(
                order_id=order_id,
                method=command.method,
                amount=command.amount,
                currency=command.currency,
                status=PaymentStatus.CHARGING,
                created_at=self.clock(),
            )
            for order_id, command in commands.items()
        }
        taken = self.payments.claim(claims.values())
        payments = {**claims, **self.payments.get_many(taken)}
        # Still charging: ours, or one a crash interrupted (the gateway's idempotency key makes
        # asking again safe).
        charging = [payment for payment in payments.values() if payment.status is PaymentStatus.CHARGING]
        for payment in charging:
            with message_context(message_id=commands[payment.order_id].message_id, order_id=payment.order_id):
                self._charge(payment, self.gateways[payment.method], commands[payment.order_id].token)
        if self.payments.settle(charging):
            for payment in charging:
                log.info("payment of %s: %s", payment.order_id, payment.status)
                metrics.PAYMENTS.labels(payment.method, payment.status.value).inc()
                if payment.status is PaymentStatus.CAPTURED:
                    metrics.PAYMENT_AMOUNT.labels(payment.method, payment.currency).inc(payment.amount)
        else:
            # A concurrent duplicate settled some first: say what is stored.
            payments.update(self.payments.get_many(payment.order_id for payment in charging))
        for order_id in commands:
            reply = _charge_reply(payments[order_id])
            if reply is not None:
                self.replies.send(reply)

    def _charge(self, payment: Payment, gateway: PaymentGateway, token: str) -> None:
        for attempt in range(1, self.attempts + 1):
            payment.attempts = attempt
            try:
                result = gateway.charge(
                    idempotency_key=payment.order_id,
                    amount=payment.amount,
                    currency=payment.currency,
                    token=token,
                )
            except GatewayUnavailable as e:
                metrics.GATEWAY_REQUESTS.labels(payment.method, "error").inc()
                log.warning("charge of %s, attempt %d/%d: %s", payment.order_id, attempt, self.attempts, e)
                if attempt == self.attempts:
                    payment.fail(f"gateway unavailable after {attempt} attempts: {e}")
                    return
                self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
                continue
            metrics.GATEWAY_REQUESTS.labels(
                payment.method, "approved" if result.approved else "declined"
            ).inc()
            if result.approved:
                assert result.charge_id is not None
                payment.capture(result.charge_id, result.instrument)
            else:
                payment.decline(result.decline_reason or "declined")
            return

    def refund_payment(self, batch: Batch[saga.RefundPayment]) -> None:
        """Refund captured charges; with nothing charged, void the payment so no charge can follow."""
        for command in batch:
            with message_context(message_id=command.message_id, order_id=command.order_id):
                self._refund(command)

    def _refund(self, command: saga.RefundPayment) -> None:
        voided = Payment(
            order_id=command.order_id,
            method="none",
            amount=0,
            currency="",
            status=PaymentStatus.VOIDED,
            created_at=self.clock(),
        )
        payment = self.payments.get(command.order_id) if self.payments.claim([voided]) else voided
        assert payment is not None
        if payment.status is PaymentStatus.CHARGING:
            raise ChargeInProgress(f"the charge of {command.order_id} is not settled yet; refund after it is")
        if payment.status is PaymentStatus.CAPTURED:
            assert payment.charge_id is not None
            refund_id = self.gateways[payment.method].refund(
                idempotency_key=derive_id(payment.order_id, "refund"),
                charge_id=payment.charge_id,
                amount=payment.amount,
                currency=payment.currency,
            )
            payment.refunded(refund_id)
            self.payments.save(payment)
            metrics.REFUNDS.labels(payment.method).inc()
        refunded = payment.amount if payment.status is PaymentStatus.REFUNDED else 0
        self.replies.send(
            saga.PaymentRefunded(
                message_id=derive_id(command.order_id, "payment-refunded"),
                order_id=command.order_id,
                amount=refunded,
            )
        )


def _charge_reply(payment: Payment) -> Message | None:
    order_id = payment.order_id
    if payment.status is PaymentStatus.CAPTURED:
        assert payment.charge_id is not None
        return saga.PaymentCaptured(
            message_id=derive_id(order_id, "payment-captured"),
            order_id=order_id,
            amount=payment.amount,
            charge_id=payment.charge_id,
        )
    if payment.status is PaymentStatus.DECLINED:
        return saga.PaymentDeclined(
            message_id=derive_id(order_id, "payment-declined"), order_id=order_id, detail=payment.detail or ""
        )
    if payment.status is PaymentStatus.FAILED:
        return saga.PaymentFailed(
            message_id=derive_id(order_id, "payment-failed"), order_id=order_id, detail=payment.detail or ""
        )
    log.warning("charge for %s arrived after its payment was %s; not charging", order_id, payment.status)
    return None
