"""What to tell whom: customers about their confirmed and cancelled orders, operators about low stock."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.events import LowStock, OrderStatusChanged

CANCEL_EXPLANATIONS = {
    "out_of_stock": "some items are out of stock",
    "unknown_sku": "some items are not in our catalog",
    "payment_declined": "the payment was declined",
    "payment_failed": "the payment could not be processed",
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
        summary = f"We are sorry: your order was cancelled because {why}. You have not been charged."
    body = f"Hello {event.customer.name},\n\n{summary}\n\n{lines}\n\nOrder: {event.order_id}\n"
    return Notification(
        notification_id=event.event_id,
        kind=f"order.{event.status}",
        recipient=event.customer.email,
        subject=subject,
        body=body,
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
