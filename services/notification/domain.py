"""What to tell whom: customers about their orders (confirmed, shipped, completed, cancelled, changed,
refunded) and their requests refused, operators about low stock."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.events import (
    EventLine,
    LowStock,
    OrderChanged,
    OrderRefunded,
    OrderRequestRejected,
    OrderStatusChanged,
    SupportEvent,
)
from shared.contracts.requests import CUSTOMER_REQUEST
from shared.money import to_decimal_string, to_signed_minor

CANCEL_EXPLANATIONS = {
    "out_of_stock": "some items are out of stock",
    "unknown_sku": "some items are not in our catalog",
    "payment_declined": "the payment was declined",
    "payment_failed": "the payment could not be processed",
    "timeout": "it could not be completed in time",
}
# Cancelled for these, the order was never charged; for any other reason a charge may have gone
# through before the saga gave up, and is refunded (the customer then hears of the refund).
NEVER_CHARGED = ("out_of_stock", "unknown_sku", "payment_declined")
# Cancelled by the customer or an operator, the order may have been paid: that is refunded, and
# `order.refunded` follows.
REFUNDED_IF_PAID = "Whatever you paid for it will be refunded, and we will tell you when."
# What a refund was for, by its cause (cancel, amend, return, exchange).
REFUND_CAUSES = {
    "cancel": "your cancelled order {order_id}",
    "amend": "your order {order_id}: the difference after you changed it",
    "return": "your order {order_id}: the items you returned",
    "exchange": "your order {order_id}: the difference on the items you exchanged",
}
CHANGE_SUBJECTS = {
    "order.amended": "Your order {order_id} was changed",
    "order.returned": "Your return from order {order_id} is done",
    "order.exchanged": "Your exchange on order {order_id} is done",
}
# Requests customers make of their orders, refused: what they asked for. (Operators' requests are
# answered to the operator, and returns and exchanges on their support case.)
REFUSED_REQUESTS = {
    "order.cancel_rejected": ("We could not cancel your order {order_id}", "cancel your order"),
    "order.amend_rejected": ("We could not change your order {order_id}", "change your order"),
}


@dataclass(frozen=True)
class Notification:
    notification_id: str  # the event's id: one notification per event, however often it arrives
    kind: str
    recipient: str
    subject: str
    body: str
    order_id: str | None = None


def for_order(event: OrderStatusChanged) -> Notification | None:
    """The customer's notification of a confirmed, shipped, completed or cancelled order; None for
    other changes."""
    if event.customer is None or event.status not in ("confirmed", "shipped", "completed", "cancelled"):
        return None
    if event.status == "confirmed":
        subject = f"Your order {event.order_id} is confirmed"
        summary = f"Thank you! Your order is confirmed and paid: {event.total} {event.currency}."
    elif event.status == "shipped":
        subject = f"Your order {event.order_id} is on its way"
        summary = (
            "Good news: your order has shipped"
            + (f" with {event.carrier}" if event.carrier else "")
            + "."
            + (f" Tracking number: {event.tracking}." if event.tracking else "")
        )
    elif event.status == "completed":
        subject = f"Your order {event.order_id} is complete"
        summary = "Your order is complete. Thank you for shopping with us!"
    else:
        subject = f"Your order {event.order_id} was cancelled"
        summary = _cancellation(event.reason)
    body = f"Hello {event.customer.name},\n\n{summary}\n\n{_lines(event.items)}\n\nOrder: {event.order_id}\n"
    return Notification(
        notification_id=event.event_id,
        kind=f"order.{event.status}",
        recipient=event.customer.email,
        subject=subject,
        body=body,
        order_id=event.order_id,
    )


def for_refund(event: OrderRefunded) -> Notification | None:
    """The customer's notification that money taken for an order went back, and what for."""
    if event.customer is None:
        return None
    what = REFUND_CAUSES.get(event.cause, "your order {order_id}").format(order_id=event.order_id)
    return Notification(
        notification_id=event.event_id,
        kind="order.refunded",
        recipient=event.customer.email,
        subject=f"Refund for your order {event.order_id}",
        body=(
            f"Hello {event.customer.name},\n\nWe have refunded {event.amount} {event.currency} for "
            f"{what}. Depending on your bank, it may take a few days to show.\n\n"
            f"Order: {event.order_id}\n"
        ),
        order_id=event.order_id,
    )


def for_change(event: OrderChanged) -> Notification | None:
    """The customer's notification that their order was amended, or a return or exchange of it done:
    the lines, and the money that moved."""
    if event.customer is None:
        return None
    if event.type == "order.amended":
        said = (
            f"Your order is changed as you asked. It now holds:\n\n{_lines(event.items)}\n\n"
            f"New total: {event.total} {event.currency} (it was {event.previous_total} {event.currency})."
        )
    elif event.type == "order.returned":
        said = f"We have taken back:\n\n{_lines(event.returned)}"
    else:
        said = (
            f"We have taken back:\n\n{_lines(event.returned)}\n\n"
            f"and are sending you instead:\n\n{_lines(event.replacement)}"
        )
    return Notification(
        notification_id=event.event_id,
        kind=event.type,
        recipient=event.customer.email,
        subject=CHANGE_SUBJECTS[event.type].format(order_id=event.order_id),
        body=(
            f"Hello {event.customer.name},\n\n{said}\n\n{_difference(event.amount, event.currency)}\n\n"
            f"Order: {event.order_id}\n"
        ),
        order_id=event.order_id,
    )


def for_refused_request(event: OrderRequestRejected) -> Notification | None:
    """The customer's notification that their request to cancel or change an order was refused, and
    why; None for other refusals."""
    if event.customer is None or event.type not in REFUSED_REQUESTS:
        return None
    subject, asked = REFUSED_REQUESTS[event.type]
    return Notification(
        notification_id=event.event_id,
        kind=event.type,
        recipient=event.customer.email,
        subject=subject.format(order_id=event.order_id),
        body=(
            f"Hello {event.customer.name},\n\nWe are sorry: we could not {asked} as you asked. "
            f"{event.detail or event.reason}\n\nYour order is unchanged.\n\nOrder: {event.order_id}\n"
        ),
        order_id=event.order_id,
    )


def for_low_stock(event: LowStock, operators: str) -> Notification:
    return Notification(
        notification_id=event.event_id,
        kind="stock.low",
        recipient=operators,
        subject=f"Low stock: {event.sku} ({event.available} left)",
        body=(
            f"{event.name} ({event.sku}) has {event.available} units available, "
            f"below its threshold of {event.threshold}. Restock with:\n\n"
            f"  orderflow stock add {event.sku} <units>\n"
        ),
    )


SUPPORT_SUBJECTS = {
    "support.opened": "We have your {what} about order {order_id}",
    "support.answered": "Re: your {what} about order {order_id}",
    "support.closed": "Your {what} about order {order_id} is closed",
}
CASE_KINDS = {"question": "question", "return": "return request", "exchange": "exchange request"}


def for_support(event: SupportEvent) -> Notification | None:
    """The customer's notification that their support case was opened, answered or closed."""
    if event.customer is None:
        return None
    what = CASE_KINDS[event.kind]
    if event.type == "support.opened":
        said = f"We have received your {what} and will answer soon. You wrote:\n\n{event.text}"
    elif event.type == "support.answered":
        said = event.text or ""
    else:
        said = f"We have closed your {what}." + (f"\n\n{event.text}" if event.text else "")
    return Notification(
        notification_id=event.event_id,
        kind=event.type,
        recipient=event.customer.email,
        subject=SUPPORT_SUBJECTS[event.type].format(what=what, order_id=event.order_id),
        body=f"Hello {event.customer.name},\n\n{said}\n\nCase: {event.case_id}\nOrder: {event.order_id}\n",
        order_id=event.order_id,
    )


def _lines(items: list[EventLine]) -> str:
    return "\n".join(
        f"  {item.quantity} x {item.sku}"
        + (f" at {item.unit_price} = {item.line_total}" if item.line_total else "")
        for item in items
    )


def _cancellation(reason: str | None) -> str:
    """Why the order was cancelled, and what becomes of the money."""
    if reason == CUSTOMER_REQUEST:
        return f"As you asked, your order was cancelled. {REFUNDED_IF_PAID}"
    if reason is None or reason in CANCEL_EXPLANATIONS:
        why = CANCEL_EXPLANATIONS.get(reason or "", "of a problem")
        money = (
            "You have not been charged."
            if reason in NEVER_CHARGED
            else "If any amount was taken for it, it will be refunded, and we will tell you when."
        )
        return f"We are sorry: your order was cancelled because {why}. {money}"
    # An operator's words, as given.
    return f"We are sorry: your order was cancelled. Reason: {reason}\n\n{REFUNDED_IF_PAID}"


def _difference(amount: str, currency: str) -> str:
    """The money a change moved: charged if positive, refunded if negative."""
    minor = to_signed_minor(amount, currency)
    moved = to_decimal_string(abs(minor), currency)
    if minor > 0:
        return f"We have charged the difference, {moved} {currency}."
    if minor < 0:
        return f"{moved} {currency} is refunded to you; a separate note confirms the refund."
    return "Nothing more to pay, and nothing to refund."
