"""Public events on the `orderflow.events` topic exchange; the routing key is the event type.

Money is a decimal string here, as at every public edge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.contracts.base import new_id, utcnow
from shared.errors import InvalidMessage


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(default_factory=new_id)
    type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)

    @property
    def routing_key(self) -> str:
        return self.type


class EventCustomer(BaseModel):
    model_config = ConfigDict(frozen=True)

    customer_id: str
    name: str
    email: str
    phone: str | None = None


class EventLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    unit_price: str | None = None
    line_total: str | None = None


OrderStatusName = Literal["pending", "confirmed", "cancelled", "rejected"]


class OrderStatusChanged(Event):
    """`order.accepted`, `order.confirmed`, `order.cancelled` or `order.rejected`."""

    type: Literal["order.accepted", "order.confirmed", "order.cancelled", "order.rejected"]
    order_id: str
    status: OrderStatusName
    reason: str | None = None
    errors: list[str] = Field(default_factory=list)
    customer: EventCustomer | None = None
    items: list[EventLine] = Field(default_factory=list)
    total: str | None = None
    currency: str | None = None
    payment_method: str | None = None


class OrderRefunded(Event):
    """`order.refunded`: money captured for the order went back to the customer (`amount`)."""

    type: Literal["order.refunded"] = "order.refunded"
    order_id: str
    status: OrderStatusName
    reason: str | None = None
    amount: str
    currency: str
    payment_method: str | None = None
    customer: EventCustomer | None = None


class LowStock(Event):
    """Available stock of a SKU fell below its threshold."""

    type: Literal["stock.low"] = "stock.low"
    sku: str
    name: str
    available: int
    threshold: int


PublicEvent = Annotated[OrderStatusChanged | OrderRefunded | LowStock, Field(discriminator="type")]
_PUBLIC_EVENT: TypeAdapter[OrderStatusChanged | OrderRefunded | LowStock] = TypeAdapter(PublicEvent)


def decode_event(body: bytes) -> OrderStatusChanged | OrderRefunded | LowStock:
    """An event as published on `orderflow.events`; InvalidMessage if it is not one."""
    try:
        return _PUBLIC_EVENT.validate_json(body)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc']) or '(event)'}: {problem['msg']}"
            for problem in e.errors(include_url=False, include_input=False)[:10]
        )
        raise InvalidMessage(f"not a valid event: {problems}") from e
