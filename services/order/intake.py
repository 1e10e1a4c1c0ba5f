"""Decoding what upstream systems publish: a typed submission (or every problem found with it),
and requests about orders already submitted."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from shared.contracts.base import ORDER_ID_PATTERN, REQUEST_ID_PATTERN, derive_id
from shared.contracts.intake import OrderSubmission
from shared.contracts.requests import (
    REQUEST_BODIES,
    AmendBody,
    CancelBody,
    OrderRequest,
    ShipBody,
)
from shared.contracts.versions import NewerSchema, upcast
from shared.errors import InvalidMessage

ACCEPTED_MEDIA_TYPES = frozenset({"", "application/json", "text/plain"})
_MAX_ERRORS = 20


class InvalidSubmission(InvalidMessage):
    """A submission so broken that not even its order id can be read."""


@dataclass(frozen=True)
class RejectedSubmission:
    """A submission that fails validation but names a well-formed order id: recorded as rejected."""

    order_id: str
    errors: list[str]

    @property
    def reason(self) -> str:
        return "; ".join(self.errors)


Submission = OrderSubmission | RejectedSubmission


def decode_submission(body: bytes, content_type: str | None, max_bytes: int) -> Submission:
    """One intake message as a valid submission or a rejected one; InvalidSubmission if unreadable."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise InvalidSubmission(f"unsupported content type {content_type!r}: send application/json")
    if len(body) > max_bytes:
        raise InvalidSubmission(f"message is {len(body)} bytes, more than the limit of {max_bytes}")
    try:
        return OrderSubmission.model_validate_json(_current(OrderSubmission, body))
    except NewerSchema as e:
        # Not a rejection: a newer release's order, to replay once this worker is upgraded.
        raise InvalidSubmission(str(e)) from e
    except ValidationError as e:
        errors = _describe(e)
        order_id = _readable_order_id(body)
        if order_id is None:
            raise InvalidSubmission("; ".join(errors)) from e
        return RejectedSubmission(order_id, errors)


class InvalidRequest(InvalidMessage):
    """A request about an order that is not valid: dead-lettered with every problem found."""


def decode_request(
    body: bytes, routing_key: str, content_type: str | None, message_id: str | None, max_bytes: int
) -> OrderRequest:
    """A request published with routing key `order.<kind>`, as the order worker handles it. Its
    id is the body's `request_id`, else the message's AMQP message id, else derived from the body:
    a redelivered request has the same one."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise InvalidRequest(f"unsupported content type {content_type!r}: send application/json")
    if len(body) > max_bytes:
        raise InvalidRequest(f"message is {len(body)} bytes, more than the limit of {max_bytes}")
    model = REQUEST_BODIES.get(routing_key)
    if model is None:
        raise InvalidRequest(f"no request has routing key {routing_key!r}")
    try:
        request = model.model_validate_json(_current(model, body))
    except NewerSchema as e:
        raise InvalidRequest(str(e)) from e
    except ValidationError as e:
        raise InvalidRequest(f"invalid {routing_key} request: {'; '.join(_describe(e))}") from e
    if request.request_id is not None:
        request_id = request.request_id
    elif message_id and re.fullmatch(REQUEST_ID_PATTERN, message_id):
        request_id = message_id
    else:
        request_id = derive_id(routing_key, message_id or body.decode("utf-8", "replace"))
    return OrderRequest(
        message_id=request_id,
        order_id=request.order_id,
        kind=routing_key.removeprefix("order."),  # type: ignore[arg-type]
        reason=request.reason if isinstance(request, CancelBody) else None,
        items=request.items if isinstance(request, AmendBody) else [],
        payment=request.payment if isinstance(request, AmendBody) else None,
        carrier=request.carrier if isinstance(request, ShipBody) else None,
        tracking=request.tracking if isinstance(request, ShipBody) else None,
    )


def _current(contract: type[BaseModel], body: bytes) -> bytes:
    """The body as the current version of `contract`: upcast if older (NewerSchema if newer). A
    body that is not JSON is left for the contract's validation to describe."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return body
    current = upcast(contract, payload)
    return body if current is payload else json.dumps(current).encode()


def _describe(error: ValidationError) -> list[str]:
    described = []
    for problem in error.errors(include_url=False, include_input=False)[:_MAX_ERRORS]:
        where = ".".join(str(part) for part in problem["loc"]) or "(message)"
        described.append(f"{where}: {problem['msg']}")
    return described


def _readable_order_id(body: bytes) -> str | None:
    """The order id of an invalid submission, if the message is a JSON object with a well-formed one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    order_id = data.get("order_id") if isinstance(data, dict) else None
    if isinstance(order_id, str) and re.fullmatch(ORDER_ID_PATTERN, order_id):
        return order_id
    return None
