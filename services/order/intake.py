"""Decoding what upstream systems submit: a typed submission, or every problem found with it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import ValidationError

from shared.contracts.base import ORDER_ID_PATTERN
from shared.contracts.intake import OrderSubmission
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
        return OrderSubmission.model_validate_json(body)
    except ValidationError as e:
        errors = _describe(e)
        order_id = _readable_order_id(body)
        if order_id is None:
            raise InvalidSubmission("; ".join(errors)) from e
        return RejectedSubmission(order_id, errors)


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
