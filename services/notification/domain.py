"""What to tell whom: customers about their confirmed and cancelled orders, operators about low stock."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.events import LowStock, OrderRefunded, OrderStatusChanged

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


@dataclass(frozen=True)
class Notification:
    notification_id: str  # the event's id: one notification per event, however often it arrives
    kind: str
    recipient: str
    subject: str
    body: str
    order_id: str | None = None


def for_order(event: OrderStatusChanged) -> Notification | None:
    """The customer's notification of a confirmed or cancelled order; None for other changes."""
    if event.customer is None or event.status not in ("confirmed", "cancelled"):
        return None
    lines = "\n".join(
        f"  {item.quantity} x {item.sku}"
        + (f" at {item.unit_price} = {item.line_total}" if item.line_total else "")
        for item in event.items
    )
    if event.status == "confirmed":
        subject = f"Your order {event.order_id} is confirmed"
        summary = f"Thank you! Your order is confirmed and paid: {event.total} {event.currency}."
    else:
        subject = f"Your order {event.order_id} was cancelled"
        why = CANCEL_EXPLANATIONS.get(event.reason or "", event.reason or "of a problem")
        money = (
            "You have not been charged."
            if event.reason in NEVER_CHARGED
            else "If any amount was taken for it, it will be refunded, and we will tell you when."
        )
        summary = f"We are sorry: your order was cancelled because {why}. {money}"
    body = f"Hello {event.customer.name},\n\n{summary}\n\n{lines}\n\nOrder: {event.order_id}\n"
    return Notification(
        notification_id=event.event_id,
        kind=f"order.{event.status}",
        recipient=event.customer.email,
        subject=subject,
        body=body,
        order_id=event.order_id,
    )


def for_refund(event: OrderRefunded) -> Notification | None:
    """The customer's notification that the money taken for an order went back."""
    if event.customer is None:
        return None
    return Notification(
        notification_id=event.event_id,
        kind="order.refunded",
        recipient=event.customer.email,
        subject=f"Refund for your order {event.order_id}",
        body=(
            f"Hello {event.customer.name},\n\nWe have refunded {event.amount} {event.currency} for your "
            f"order {event.order_id}. Depending on your bank, it may take a few days to show.\n\n"
            f"Order: {event.order_id}\n"
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
