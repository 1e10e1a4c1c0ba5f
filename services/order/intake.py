"""Validation of what upstream systems submit: a clear list of errors, never an exception escaping."""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from shared.contracts.base import ORDER_ID_PATTERN
from shared.contracts.intake import OrderSubmission
from shared.errors import InvalidMessage

ACCEPTED_CONTENT_TYPES = frozenset({None, "", "application/json", "text/plain"})
_MAX_ERRORS = 20


class InvalidSubmission(InvalidMessage):
    """A submission that fails validation; `order_id` is set when the id itself could be read."""

    def __init__(self, errors: list[str], order_id: str | None) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors
        self.order_id = order_id


def parse_submission(body: bytes, content_type: str | None, max_bytes: int) -> OrderSubmission:
    """Validate one intake message, or raise InvalidSubmission with every problem found."""
    if content_type not in ACCEPTED_CONTENT_TYPES:
        raise InvalidSubmission([f"unsupported content type {content_type!r}: send application/json"], None)
    if len(body) > max_bytes:
        raise InvalidSubmission([f"message is {len(body)} bytes, more than the limit of {max_bytes}"], None)
    try:
        return OrderSubmission.model_validate_json(body)
    except ValidationError as e:
        raise InvalidSubmission(_describe(e), _readable_order_id(body)) from e


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
