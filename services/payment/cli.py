"""`orderflow payments show`: an order's payment, and its changes' charges, as the gateway answered."""

from __future__ import annotations

import json
import sys
from typing import Any

from services.payment.domain import Payment
from services.payment.store import PaymentRepository
from shared import store
from shared.money import to_decimal_string
from shared.settings import Settings


def show(settings: Settings, order_id: str, as_json: bool) -> int:
    payments = PaymentRepository(store.database(store.connect(settings), settings, "payment"))
    found = payments.of_order(order_id)
    payment = next((payment for payment in found if payment.key is None), None)
    if payment is None:
        print(f"no payment for order {order_id}", file=sys.stderr)
        return 1
    further = [payment_view(other, settings.currency) for other in found if other.key is not None]
    view = {**payment_view(payment, settings.currency), "changes": further}
    if as_json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"payment of {order_id}: {view['status']} ({view['method']})")
    print(f"  asked {view['amount']} {view['currency']}", end="")
    print(f", captured {view['captured']}, refunded {view['refunded']}")
    if view["charge_id"]:
        print(f"  charge {view['charge_id']}" + (f", {view['instrument']}" if view["instrument"] else ""))
    print(f"  charge attempts {view['attempts']}, refund attempts {view['refund_attempts']}")
    if view["detail"]:
        print(f"  {view['detail']}")
    for other in further:
        amounts = f"captured {other['captured']}, refunded {other['refunded']}"
        print(f"  change {other['key']}: {other['status']}, {amounts}")
    return 0


def payment_view(payment: Payment, default_currency: str) -> dict[str, Any]:
    """Amounts as decimal strings; `captured` and `refunded` are what the gateway said it did."""
    currency = payment.currency or default_currency
    return {
        "order_id": payment.order_id,
        "key": payment.idempotency_key,
        "method": payment.method,
        "status": payment.status.value,
        "currency": currency,
        "amount": to_decimal_string(payment.amount, currency),
        "captured": to_decimal_string(payment.captured, currency),
        "refunded": to_decimal_string(payment.refunded, currency),
        "charge_id": payment.charge_id,
        "instrument": payment.instrument,
        "attempts": payment.attempts,
        "refund_attempts": payment.refund_attempts,
        "detail": payment.detail,
        "created_at": payment.created_at.isoformat(),
    }
