"""Requests about an order already placed, on the public intake beside submissions.

Routing keys `order.cancel`, `order.amend`, `order.ship` and `order.complete` on `orderflow.intake`.
Each request has an id: the body's `request_id` if it names one, else the message's AMQP
`message_id`, else one derived from the body, so a redelivered request is recognised and applied
once. The order records what became of each request (`orderflow status` shows it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.contracts.base import CaseId, OrderId, OrderMessage, RequestId
from shared.contracts.intake import MAX_LINES, OrderLine, PaymentDetails, _Strict

CUSTOMER_REQUEST = "customer_request"


class _Request(_Strict):
    schema_version: int = 1  # the current version (shared/contracts/versions.py); upstreams may omit it
    order_id: OrderId
    request_id: RequestId | None = None


class CancelBody(_Request):
    reason: str = Field(default=CUSTOMER_REQUEST, min_length=1, max_length=200)


class AmendBody(_Request):
    """The full new list of items; `payment` changes how the difference (or an unpaid order) is paid."""

    items: list[OrderLine] = Field(min_length=1, max_length=MAX_LINES)
    payment: PaymentDetails | None = None


class ShipBody(_Request):
    carrier: str | None = Field(default=None, min_length=1, max_length=100)
    tracking: str | None = Field(default=None, min_length=1, max_length=100)


class CompleteBody(_Request):
    pass


REQUEST_BODIES: dict[str, type[_Request]] = {
    "order.cancel": CancelBody,
    "order.amend": AmendBody,
    "order.ship": ShipBody,
    "order.complete": CompleteBody,
}
REQUEST_ROUTING_KEYS = tuple(REQUEST_BODIES)

RequestKind = Literal["cancel", "amend", "ship", "complete", "return", "exchange"]


class OrderRequest(OrderMessage):
    """A request as the order worker handles it; `message_id` is the request id."""

    kind: RequestKind
    reason: str | None = None  # of a cancel
    items: list[OrderLine] = Field(default_factory=list)  # an amendment's new list
    payment: PaymentDetails | None = None
    carrier: str | None = None
    tracking: str | None = None
    # A return or an exchange, approved on a support case: the units returned, and the replacement.
    case_id: CaseId | None = None
    returned: list[OrderLine] = Field(default_factory=list)
    replacement: list[OrderLine] = Field(default_factory=list)


class CaseSettled(OrderMessage):
    """The order worker to its support desk: the return or exchange approved on a case is done
    (`outcome` "done", with the amount refunded or charged) or was refused (with the reason)."""

    case_id: CaseId
    outcome: Literal["done", "refused"]
    reason: str | None = None  # a word: out_of_stock, not_in_order, ...
    detail: str | None = None  # a sentence
    amount: str | None = None  # a decimal string: refunded (a return) or the difference settled
