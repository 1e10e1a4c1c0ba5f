"""Public events on the `orderflow.events` topic exchange; the routing key is the event type.

Money is a decimal string here, as at every public edge. Ids and addresses have the shapes of
`shared/contracts/base.py`, checked as the intake checks them: the notification worker mails the
customer an event names, so a forged or malformed event (a list of recipients, a CR/LF in an
address or an id that goes into a header) is dead-lettered, not mailed.
"""

from __future__ import annotations

import json
import typing
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.contracts.base import (
    CaseId,
    CustomerId,
    CustomerName,
    EmailAddress,
    MessageId,
    OrderId,
    Phone,
    RequestId,
    Sku,
    new_id,
    utcnow,
)
from shared.contracts.versions import upcast
from shared.errors import InvalidMessage


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: MessageId = Field(default_factory=new_id)
    type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)

    @property
    def routing_key(self) -> str:
        return self.type


class EventCustomer(BaseModel):
    model_config = ConfigDict(frozen=True)

    customer_id: CustomerId
    name: CustomerName
    email: EmailAddress
    phone: Phone | None = None


class EventLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: Sku
    quantity: int
    unit_price: str | None = None
    line_total: str | None = None


OrderStatusName = Literal["pending", "confirmed", "shipped", "completed", "cancelled", "rejected"]


class OrderStatusChanged(Event):
    """`order.accepted`, `order.confirmed`, `order.shipped`, `order.completed`, `order.cancelled`
    or `order.rejected`. A shipped order's event names its `carrier` and `tracking` number."""

    type: Literal[
        "order.accepted",
        "order.confirmed",
        "order.shipped",
        "order.completed",
        "order.cancelled",
        "order.rejected",
    ]
    order_id: OrderId
    status: OrderStatusName
    reason: str | None = None
    errors: list[str] = Field(default_factory=list)
    customer: EventCustomer | None = None
    items: list[EventLine] = Field(default_factory=list)
    total: str | None = None
    currency: str | None = None
    payment_method: str | None = None
    carrier: str | None = None
    tracking: str | None = None


class OrderRefunded(Event):
    """`order.refunded`: money captured for the order went back to the customer (`amount`)."""

    type: Literal["order.refunded"] = "order.refunded"
    order_id: OrderId
    status: OrderStatusName
    reason: str | None = None
    amount: str
    currency: str
    payment_method: str | None = None
    customer: EventCustomer | None = None
    # What the refund was for: "cancel" (the order was cancelled), "amend" (an amendment lowered
    # its total), "return" or "exchange" (a support case), with the request's id.
    cause: str = "cancel"
    request_id: RequestId | None = None


class OrderChanged(Event):
    """`order.amended`, `order.returned` or `order.exchanged`: a change to the order's lines is
    done. `items` and `total` are the order's after it; `returned` and `replacement` the units
    that came back and went out; `amount` what moved: charged if positive, refunded if negative."""

    type: Literal["order.amended", "order.returned", "order.exchanged"]
    order_id: OrderId
    status: OrderStatusName
    request_id: RequestId
    case_id: CaseId | None = None
    items: list[EventLine] = Field(default_factory=list)
    total: str | None  # None: a pending order, not priced yet (its payment details changed)
    previous_total: str | None
    amount: str
    currency: str
    returned: list[EventLine] = Field(default_factory=list)
    replacement: list[EventLine] = Field(default_factory=list)
    payment_method: str | None = None
    customer: EventCustomer | None = None


class OrderRequestRejected(Event):
    """`order.<kind>_rejected`: a request about an order was refused and the order is unchanged.
    `reason` is a word (`shipped`, `out_of_stock`, `payment_declined`, ...), `detail` a sentence."""

    type: Literal[
        "order.cancel_rejected",
        "order.amend_rejected",
        "order.ship_rejected",
        "order.complete_rejected",
        "order.return_rejected",
        "order.exchange_rejected",
    ]
    order_id: OrderId
    request_id: RequestId
    status: OrderStatusName | None = None
    reason: str
    detail: str
    case_id: CaseId | None = None
    customer: EventCustomer | None = None


class LowStock(Event):
    """Available stock of a SKU fell below its threshold."""

    type: Literal["stock.low"] = "stock.low"
    sku: Sku
    name: str
    available: int
    threshold: int


class SupportEvent(Event):
    """`support.opened`, `support.answered` or `support.closed`: a support case changed. `text`
    is what was said (the question, the answer, the closing note)."""

    type: Literal["support.opened", "support.answered", "support.closed"]
    case_id: CaseId
    order_id: OrderId
    kind: Literal["question", "return", "exchange"]
    status: str
    text: str | None = None
    customer: EventCustomer | None = None


AnyEvent = OrderStatusChanged | OrderRefunded | OrderChanged | OrderRequestRejected | LowStock | SupportEvent
PublicEvent = Annotated[AnyEvent, Field(discriminator="type")]
_PUBLIC_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(PublicEvent)
# Each event type's contract, whose schema version and upcasters apply to it.
_EVENT_TYPES: dict[str, type[Event]] = {
    name: contract
    for contract in (
        OrderStatusChanged,
        OrderRefunded,
        OrderChanged,
        OrderRequestRejected,
        LowStock,
        SupportEvent,
    )
    for name in typing.get_args(contract.model_fields["type"].annotation)
}


def decode_event(body: bytes) -> AnyEvent:
    """An event as published on `orderflow.events`, an older version upcast; InvalidMessage if it
    is not one (NewerSchema if a newer release published it)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise InvalidMessage(f"not a valid event: not JSON ({e})") from e
    contract = _EVENT_TYPES.get(str(payload.get("type"))) if isinstance(payload, dict) else None
    try:
        return _PUBLIC_EVENT.validate_python(upcast(contract, payload) if contract else payload)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc']) or '(event)'}: {problem['msg']}"
            for problem in e.errors(include_url=False, include_input=False)[:10]
        )
        raise InvalidMessage(f"not a valid event: {problems}") from e
